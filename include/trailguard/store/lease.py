"""A lease in the bucket that keeps committers into an ``s3://`` data root apart, on any machine.

A local root is locked with a POSIX record lock (:meth:`trailguard.store.events.EventStore.commit_lock`);
an S3 root has no locks, and the machines that commit into it share nothing but the bucket. So the
commit takes a **lease**: the object ``<root>/_locks/<name>.json``, created with a conditional write
(``PutObject`` with ``If-None-Match: *``, which S3 refuses with 412 when the object exists), holding its
owner (host, pid, purpose, a random token) and how long it lasts without renewal.

* **Why a conditional write, not an Airflow pool with one slot**: a pool only orders Airflow tasks of
  one Airflow deployment. The lease also holds for ``trailguard ingest`` from the command line, for any
  executor (local, Celery, Kubernetes) and for two deployments sharing one bucket; it needs nothing
  but the bucket that is already shared.
* **Renewal**: while the lease is held a heartbeat thread rewrites it every third of its duration
  (``TRAILGUARD_COMMIT_LEASE_SECONDS``, default 60) with ``If-Match`` on its last ETag, so a long
  commit keeps it and a holder that dies (``kill -9``, a lost machine) lets it lapse within that time.
* **Expiry is judged by the S3 server's clock**: a lease is stale when the ``Date`` of the response
  that read it is more than the holder's own lease duration after its ``LastModified``. The machines'
  clocks need not agree.
* **Takeover**: a stale lease is overwritten with ``If-Match`` on the stale ETag (of two waiters, one
  wins, the other's write is refused) and the takeover is logged with the owner it replaced.
* **Waiting** is bounded (``TRAILGUARD_COMMIT_WAIT_SECONDS``, default 3600): past it the committer fails
  with one line naming the holder.
* **Release**: a delete with ``If-Match`` on the lease's ETag (a lease taken over meanwhile is left to
  its new owner); where the server does not support a conditional delete, the lease is read back and
  deleted only if it still holds our token.
* **A lease lost while held** (its holder stalled for longer than the lease, and another took it over)
  is noticed by the heartbeat, or by the holder's own clock (no renewal for 0.8 of the lease);
  :meth:`Lease.check`, called before each part is moved in and before the manifest is written, then
  stops the commit with :class:`LeaseLost`. What was written is whole files; a rerun is idempotent. A
  lease is not a fencing token: a holder frozen inside one write for longer than the lease could still
  finish that write after a takeover; at 60 s that takes a frozen machine, not a slow one.
* **A write whose answer was lost** (botocore's retry then refused with 412) is recognised by the token
  read back: the lease is ours, not another's.
* **An endpoint that ignores conditional writes** would let two committers in at once, silently: the
  first lease of a process on a bucket is preceded by a probe (the same key created twice with
  ``If-None-Match``; the second must be refused), and such an endpoint is refused with a clear error.

AWS S3 supports all three (conditional writes since 2024, conditional deletes on general purpose
buckets; an ``If-Match`` delete needs ``s3:GetObject`` as well as ``s3:DeleteObject``). moto's server (the
tests' S3) honours ``If-None-Match: *`` and ``If-Match`` on ``PutObject`` and ``If-Match`` on
``DeleteObject`` (``moto/s3/responses.py``: ``put_object``, ``delete_object``); its check and its write are
not one atomic step, a window S3 itself does not have (200 rounds of 4 racing creates: one winner each).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

log = logging.getLogger(__name__)

LOCKS_FOLDER = "_locks"

# the errors S3 gives a conditional write that lost: 412 (the condition failed), 409 (a concurrent
# conditional write to the same key is in flight), 404 (If-Match on a key that is gone)
_LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404", "409", "412"}
# a holder stops trusting its lease once this share of its duration passed without a renewal: before a
# waiter, judging by the server's clock to the second, may take it over (renewals come every third)
_SAFE_SHARE = 0.8
_UNSUPPORTED = {"NotImplemented", "501", "InvalidArgument", "InvalidRequest"}


class LeaseTimeout(RuntimeError):
    """Waited ``wait_seconds`` for a lease another owner holds (the message names it)."""


class LeaseLost(RuntimeError):
    """The lease was taken over or removed while held: the work under it stops (a rerun is idempotent)."""


class ConditionalWritesUnsupported(RuntimeError):
    """The S3 endpoint ignores or refuses conditional writes: committers could not be kept apart."""


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    return str(error.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _is_client_error(exc: Exception) -> bool:
    return hasattr(exc, "response") and isinstance(exc.response, dict)  # type: ignore[attr-defined]


def split_root(root: Any) -> tuple[str, str]:
    """(bucket, key prefix without a trailing slash) of an ``s3://bucket/prefix`` root."""
    text = str(root)
    scheme, _, rest = text.partition("://")
    bucket, _, prefix = rest.partition("/")
    if not scheme or not bucket:
        raise ValueError(f"not an s3://bucket/prefix root: {text!r}")
    return bucket, prefix.strip("/")


def s3_client_for(root: Any) -> Any:
    """A boto3 S3 client for a data root: the endpoint and keys its filesystem was given, else the
    standard AWS chain (``AWS_ENDPOINT_URL`` and the rest), as s3fs uses."""
    import boto3
    from botocore.config import Config

    fs = getattr(root, "fs", None)
    kwargs: dict[str, Any] = {}
    endpoint = getattr(fs, "endpoint_url", None) or (getattr(fs, "client_kwargs", None) or {}).get(
        "endpoint_url"
    )
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if getattr(fs, "key", None) and getattr(fs, "secret", None):
        kwargs.update(aws_access_key_id=fs.key, aws_secret_access_key=fs.secret)
        if getattr(fs, "token", None):
            kwargs["aws_session_token"] = fs.token
    return boto3.client("s3", config=Config(retries={"max_attempts": 3, "mode": "standard"}), **kwargs)


def describe(owner: dict[str, Any] | None) -> str:
    """Who a lease document says holds it, as text."""
    if not isinstance(owner, dict):
        return "an unknown owner"
    since = f", since {owner['acquired']}" if owner.get("acquired") else ""
    return f"pid {owner.get('pid')} on {owner.get('host')} ({owner.get('purpose')}{since})"


@dataclass
class _Seen:
    """A lease as read: its document, ETag and age by the server's clock."""

    owner: dict[str, Any] | None
    etag: str
    age: float

    def stale(self, default_seconds: float) -> bool:
        seconds = default_seconds
        if isinstance(self.owner, dict):
            try:
                seconds = float(self.owner.get("lease_seconds", default_seconds))
            except (TypeError, ValueError):
                pass
        return self.age > seconds


_PROBED: set[tuple[str, str]] = set()
_PROBE_LOCK = threading.Lock()


@dataclass
class Lease:
    """One lease object in a bucket, acquired by :meth:`acquire` (see the module's docstring)."""

    client: Any
    bucket: str
    key: str
    purpose: str
    name: str = "commit"
    lease_seconds: float = 60.0
    wait_seconds: float = 3600.0
    where: str = ""  # what the lease guards, for messages (the data root)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    etag: str | None = None
    acquired: str | None = None
    lost: str | None = None
    _renewed_at: float = 0.0  # time.monotonic() of the last write that succeeded
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _state: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def label(self) -> str:
        return f"the {self.name} lease of {self.where or self.bucket} ({self.key})"

    # -- the document ------------------------------------------------------------------------------
    def _document(self) -> bytes:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.acquired = self.acquired or now
        return json.dumps(
            {
                "owner": self.token,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "purpose": self.purpose,
                "acquired": self.acquired,
                "renewed": now,
                "lease_seconds": self.lease_seconds,
            }
        ).encode()

    def read(self) -> _Seen | None:
        """The lease as it is in the bucket now, or None when there is none."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:
            if _is_client_error(exc) and _code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        body = response["Body"].read()
        try:
            owner = json.loads(body)
        except ValueError:
            owner = None
        served = response["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(served) if served else datetime.now(timezone.utc)
        age = (now - response["LastModified"]).total_seconds()
        return _Seen(owner, response["ETag"], age)

    def _put(self, **condition: str) -> bool:
        """Write our document under a condition; False when the condition failed (another owner won)."""
        sent = time.monotonic()  # no later than the server's LastModified: our view of the lease ends first
        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=self._document(),
                ContentType="application/json",
                **condition,
            )
        except Exception as exc:
            if _is_client_error(exc) and _code(exc) in _LOST_RACE:
                return False
            raise
        with self._state:
            self.etag = response["ETag"]
            self._renewed_at = sent
        return True

    # -- acquire, hold, release --------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the lease: create it, or take over a stale one; wait (bounded) while another holds it."""
        self._probe()
        deadline = time.monotonic() + self.wait_seconds
        poll = min(2.0, max(0.05, self.lease_seconds / 20))
        announced = False
        while True:
            if self._put(IfNoneMatch="*"):
                return
            seen = self.read()
            if seen is None:
                continue  # released between our write and our read: try again at once
            if self._ours(seen):
                return  # our create went through, but its answer was lost and the retry refused
            if seen.stale(self.lease_seconds):
                if self._put(IfMatch=seen.etag):
                    log.warning(
                        "took over %s from %s: not renewed for %.0fs, longer than it lasts (its owner is "
                        "gone or stalled; what it wrote is whole files, what it had not is done again)",
                        self.label,
                        describe(seen.owner),
                        seen.age,
                    )
                    return
                continue  # another waiter took it over first
            if not announced:
                log.warning("waiting for %s, held by %s", self.label, describe(seen.owner))
                announced = True
            if time.monotonic() >= deadline:
                raise LeaseTimeout(
                    f"{self.label} is held by {describe(seen.owner)}; waited "
                    f"{self.wait_seconds:g}s (TRAILGUARD_COMMIT_WAIT_SECONDS). If that owner is gone, its "
                    "lease lapses a lease duration after its last renewal; then run again"
                )
            time.sleep(poll)

    def start_heartbeat(self) -> None:
        """Renew the lease every third of its duration until :meth:`release`."""
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.key}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                if self._put(IfMatch=self.etag or ""):
                    continue
            except Exception as exc:  # a network fault: try again at the next beat
                log.warning("could not renew %s: %s", self.label, exc)
                continue
            try:
                seen = self.read()
            except Exception as exc:  # a network fault: try again at the next beat
                log.warning("could not renew %s: %s", self.label, exc)
                continue
            if seen is not None and self._ours(seen):
                continue  # our renewal went through, but its answer was lost and the retry refused
            by = describe(seen.owner) if seen else "nobody (it was removed)"
            with self._state:
                self.lost = f"taken over by {by}"
            log.error("lost %s: %s", self.label, self.lost)
            return

    def _ours(self, seen: _Seen) -> bool:
        """Whether the lease read holds our token (then it is ours, renewed when it was last written)."""
        if not (isinstance(seen.owner, dict) and seen.owner.get("owner") == self.token):
            return False
        with self._state:
            self.etag = seen.etag
            self._renewed_at = time.monotonic() - max(seen.age, 0.0) - 1.0  # its age, to the second
        return True

    def check(self) -> None:
        """Raise :class:`LeaseLost` when the lease was taken over, or not renewed for its whole duration
        (another committer may have taken it over by now)."""
        with self._state:
            lost = self.lost
            unrenewed = time.monotonic() - self._renewed_at
        if lost is None and unrenewed > self.lease_seconds * _SAFE_SHARE:
            lost = f"not renewed for {unrenewed:.0f}s of the {self.lease_seconds:g}s it lasts"
        if lost is not None:
            raise LeaseLost(
                f"lost {self.label} while holding it ({lost}); the files written are whole: run again to "
                "finish (a rerun skips what is in)"
            )

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.lost is not None or self.etag is None:
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except Exception as exc:
            code = _code(exc) if _is_client_error(exc) else ""
            if code in _LOST_RACE:
                log.warning("%s was taken over before its release", self.label)
            elif code in _UNSUPPORTED:
                try:
                    self._release_unconditionally()
                except Exception as again:  # noqa: BLE001 - the lease lapses; the commit's own outcome stands
                    log.warning(
                        "could not release %s (%s): it lapses after %gs",
                        self.label,
                        again,
                        self.lease_seconds,
                    )
            else:
                log.warning(
                    "could not release %s (%s): it lapses after %gs", self.label, exc, self.lease_seconds
                )

    def _release_unconditionally(self) -> None:
        """For a server without conditional deletes: delete the lease if it still holds our token."""
        seen = self.read()
        if seen is not None and self._ours(seen):
            self.client.delete_object(Bucket=self.bucket, Key=self.key)

    def _probe(self) -> None:
        """Once per process and bucket: check that the endpoint refuses a second ``If-None-Match`` create."""
        endpoint = str(getattr(getattr(self.client, "meta", None), "endpoint_url", ""))
        with _PROBE_LOCK:
            if (endpoint, self.bucket) in _PROBED:
                return
            probe = f"{self.key.rsplit('/', 1)[0]}/probe-{uuid.uuid4().hex}.json"
            unsupported = None
            try:
                for attempt in ("first", "second"):
                    try:
                        self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"{}", IfNoneMatch="*")
                    except Exception as exc:
                        code = _code(exc) if _is_client_error(exc) else ""
                        if code in _UNSUPPORTED:
                            unsupported = f"refuses them ({code})"
                            break
                        elif attempt == "first" and code in _LOST_RACE:
                            continue  # created, its answer lost (the key is new: only we made it)
                        elif attempt == "second" and code in _LOST_RACE:
                            break  # refused as it should be
                        else:
                            raise
                else:
                    unsupported = "ignores them (a second create of one key succeeded)"
            finally:
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=probe)
                except Exception:  # noqa: BLE001 - a leftover probe key is harmless
                    pass
            if unsupported:
                raise ConditionalWritesUnsupported(
                    f"{self.where}: the S3 endpoint {endpoint or '(default)'} does not honour conditional "
                    f"writes (If-None-Match): it {unsupported}, so committers on several machines could not "
                    "be kept apart. Use AWS S3 or an S3-compatible store that supports them"
                )
            _PROBED.add((endpoint, self.bucket))


@contextmanager
def held(
    root: Any,
    name: str,
    purpose: str,
    *,
    lease_seconds: float = 60.0,
    wait_seconds: float = 3600.0,
    client: Any = None,
) -> Iterator[Lease]:
    """Hold the lease ``<root>/_locks/<name>.json`` for the block, renewed all along; released however the
    block ends. The block should call :meth:`Lease.check` before each write it makes; a lease found lost
    at the end raises :class:`LeaseLost` too."""
    bucket, prefix = split_root(root)
    key = "/".join(p for p in (prefix, LOCKS_FOLDER, f"{name}.json") if p)
    lease = Lease(
        client=client if client is not None else s3_client_for(root),
        bucket=bucket,
        key=key,
        purpose=purpose,
        name=name,
        lease_seconds=float(lease_seconds),
        wait_seconds=float(wait_seconds),
        where=str(root),
    )
    lease.acquire()
    lease.start_heartbeat()
    try:
        yield lease
        lease.check()
    finally:
        lease.release()
