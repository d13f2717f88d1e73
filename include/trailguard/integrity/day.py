"""Verify one day of a CloudTrail source and keep the outcome in ``integrity/date=YYYY-MM-DD/result.json``.

What is read: the day's digest files (and the day before's, for the first link of each chain), and the log
files those digests list (the day's and the day before's: a digest just after midnight lists files
delivered before it). A log file is hashed only when a digest lists it; when ingestion recorded the
SHA-256 of the object it read (same key, size and etag), that hash is used, so the check is against what
is in the store, not only what is in the bucket now.

Public keys are never taken from beside the logs by themselves: whoever can write to the bucket could put
their own key there. They come from ``cloudtrail:ListPublicKeys`` or from a key folder the user names.
"""

from __future__ import annotations

import logging
import time as clock
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from trailguard.ingest.sources import Source, SourceObject, key_date, skip_reason
from trailguard.integrity.digest import MAX_DIGEST_BYTES, METADATA_SUFFIX, Digest, is_digest_key
from trailguard.integrity.keys import KeyRing, fetch_public_keys, load_key_folder
from trailguard.integrity.verify import (
    GAP_NOTE,
    STATUSES,
    TAMPERED,
    FoundDigest,
    HourResult,
    delivery_gaps,
    hash_log_file,
    layout_of,
    not_verified,
    object_id,
    verify_digests,
)
from trailguard.store.events import EventStore, new_run_id
from trailguard.store.fs import DataPath, as_path, write_bytes_atomic
from trailguard.store.settings import Settings

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
MAX_METADATA_BYTES = 64 * 1024


@dataclass
class DayIntegrity:
    """A day's verification: the rows (one per account/region/hour) and the counts over them."""

    date: str
    rows: list[HourResult]
    seconds: float = 0.0
    keys: str = ""
    run_id: str = ""
    summary: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.summary:
            self.summary = summarise(self.rows)

    @property
    def status(self) -> str:
        return self.summary["status"]

    def lines(self) -> list[str]:
        """One line for the day, then one per row that is not valid (the findings first)."""
        s = self.summary
        head = (
            f"{self.date}: {s['status']}: {s['digests_valid']}/{s['digests']} digests valid, "
            f"{s['log_files_valid']}/{s['log_files_listed']} log files valid, {s['log_files_missing']} missing, "
            f"{s['log_files_modified']} modified, {s['gaps']} delivery gaps, {s['not_verified']} account/regions without digests"
        )
        findings = sorted(
            (
                r
                for r in self.rows
                if r.status not in ("valid", "delivery_gap", "not_verified", "no_key_available")
            ),
            key=lambda r: (STATUSES.index(r.status), r.hour),
        )
        lines = [head] + [
            f"{r.status}: {r.account} {r.region} {r.hour}: {r.problems[0] if r.problems else ''}"
            for r in findings
        ]
        gaps: dict[tuple[str, str], list[str]] = {}
        for r in self.rows:
            if r.status == "delivery_gap":
                gaps.setdefault((r.account, r.region), []).append(r.hour[11:])
        for (account, region), hours in sorted(gaps.items()):
            lines.append(
                f"delivery_gap: {account} {region}: nothing delivered at {', '.join(hours)} (not proof of tampering)"
            )
        no_key = [r for r in self.rows if r.status == "no_key_available"]
        if no_key:
            where = sorted({f"{r.account} {r.region}" for r in no_key})
            lines.append(
                f"no_key_available: {len(no_key)} digests of {', '.join(where)}: {no_key[0].problems[0]}"
            )
        unverified = sorted(f"{r.account} {r.region}" for r in self.rows if r.status == "not_verified")
        if unverified:
            lines.append(f"not_verified: no digest files for {', '.join(unverified)}")
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "date": self.date,
            "status": self.status,
            "summary": self.summary,
            "keys": self.keys,
            "run_id": self.run_id,
            "seconds": round(self.seconds, 3),
            "gap_note": GAP_NOTE,
            "rows": [r.as_dict() for r in self.rows],
        }


def summarise(rows: list[HourResult]) -> dict[str, Any]:
    """Counts over a day's rows and the day's status: ``tampered`` (any row in :data:`TAMPERED`),
    ``unverified`` (a digest without a usable key, or no digest at all), else ``valid``."""
    digests = [r for r in rows if r.digest_key and r.status != "digest_missing"]
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    if any(r.status in TAMPERED for r in rows):
        status = "tampered"
    elif not digests or by_status.get("no_key_available"):
        status = "unverified"
    else:
        status = "valid"
    return {
        "status": status,
        "digests": len(digests),
        "digests_valid": sum(r.status == "valid" for r in digests),
        "hours": len({(r.account, r.region, r.hour) for r in digests}),
        "log_files_listed": sum(r.log_files_listed for r in rows),
        "log_files_valid": sum(r.log_files_valid for r in rows),
        "log_files_missing": sum(r.log_files_missing for r in rows),
        "log_files_modified": sum(r.log_files_modified for r in rows),
        "gaps": by_status.get("delivery_gap", 0),
        "not_verified": by_status.get("not_verified", 0),
        "by_status": dict(sorted(by_status.items())),
    }


def verify_day(
    root: DataPath | str,
    source: Source,
    day: date,
    keys: KeyRing | Callable[[Digest], KeyRing],
    *,
    ingested: Mapping[str, tuple[int, str, str]] | None = None,
    now: datetime | None = None,
    lateness_hours: float = 2.0,
    run_id: str | None = None,
) -> DayIntegrity:
    """Verify ``day`` of ``source`` and write ``integrity/date=D/result.json`` under ``root`` (a rerun
    overwrites it). ``ingested`` maps source keys to the (size, etag, sha256) ingestion recorded.
    Unreadable digests are quarantined with the reason."""
    started = clock.perf_counter()
    run_id = run_id or new_run_id()
    store = EventStore(as_path(root))
    ingested = ingested or {}
    logs: dict[str, SourceObject] = {}
    today_logs: list[str] = []
    today_digests: list[SourceObject] = []
    earlier_digests: list[SourceObject] = []
    for obj in list_day(source, day):
        delivered = key_date(obj.key)
        if is_digest_key(obj.key):
            (today_digests if delivered == day else earlier_digests).append(obj)
        elif skip_reason(obj.key) is None and layout_of(obj.key):
            logs[object_id(obj.key)] = obj
            if delivered == day:
                today_logs.append(obj.key)

    def quarantine(found: FoundDigest, reason: str) -> None:
        store.quarantine_object(found.key, found.data, f"digest file: {reason}", run_id)

    hashes = _LazyHashes(logs, ingested)
    rows = verify_digests(
        day,
        (_found(source, o) for o in today_digests),
        hashes,
        keys,
        earlier=(_found(source, o) for o in earlier_digests),
        listed_days=(day - timedelta(days=1), day),
        on_invalid=quarantine,
    )
    until = (now or datetime.now(timezone.utc)) - timedelta(hours=lateness_hours)
    rows += delivery_gaps(day, today_logs + [o.key for o in today_digests], until=until)
    rows += not_verified(day, today_logs, [o.key for o in today_digests])
    origin = keys.origin if isinstance(keys, KeyRing) else getattr(keys, "origin", "")
    result = DayIntegrity(day.isoformat(), rows, clock.perf_counter() - started, origin, run_id)
    write_result(store.root, result)
    log.info("%s (%d log files hashed, %.2f s)", result.lines()[0], hashes.hashed, result.seconds)
    return result


def list_day(source: Source, day: date) -> Iterator[SourceObject]:
    """The day's and the day before's objects, digests included, each once."""
    lister = getattr(source, "objects_with_digests", None)
    listing = (
        lister(day - timedelta(days=1), day)
        if lister
        else source.objects(start=day - timedelta(days=1), end=day)
    )
    seen: set[str] = set()
    for obj in listing:
        if obj.key not in seen:
            seen.add(obj.key)
            yield obj


def verify_with_settings(
    settings: Settings,
    source: Source,
    day: date,
    *,
    keys: str | None = None,
    client_for: Callable[[str], Any] | None = None,
) -> DayIntegrity:
    """:func:`verify_day` as the command line and the DAGs run it: the data root, lateness and key folder
    from the settings (``keys`` overrides the folder; without one, ``client_for(region)`` gives the
    CloudTrail client for ListPublicKeys), the hashes ingestion recorded from the manifest."""
    store = EventStore(settings.data_path)
    return verify_day(
        store.root,
        source,
        day,
        key_provider(keys or settings.integrity_keys, client_for=client_for),
        ingested=store.manifest_hashes(),
        lateness_hours=settings.allowed_lateness_hours,
    )


def result_dir(root: DataPath, day: date | str) -> DataPath:
    return as_path(root) / "integrity" / f"date={day if isinstance(day, str) else day.isoformat()}"


def write_result(root: DataPath, result: DayIntegrity) -> DataPath:
    target = result_dir(root, result.date) / RESULT_FILE
    return write_bytes_atomic(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2) + b"\n", target)


def read_result(root: DataPath | str, day: date | str) -> dict[str, Any] | None:
    """The day's stored result (``None`` when the day was never verified)."""
    path = result_dir(as_path(root), day) / RESULT_FILE
    if not path.exists():
        return None
    return orjson.loads(path.read_bytes())


def key_provider(
    folder: str | Path | None, *, client_for: Callable[[str], Any] | None = None
) -> Callable[[Digest], KeyRing]:
    """Keys for each digest: from ``folder`` when given (offline); otherwise ``cloudtrail:ListPublicKeys``
    in the digest's region (``client_for(region)`` gives a boto3 client; default: boto3 with the standard
    credential chain), fetched once per region; a failure becomes an empty ring whose origin says why."""
    if folder:
        ring = load_key_folder(folder)

        def from_folder(_digest: Digest) -> KeyRing:
            return ring

        from_folder.origin = ring.origin  # type: ignore[attr-defined]
        return from_folder
    rings: dict[str, KeyRing] = {}

    def online(digest: Digest) -> KeyRing:
        where = layout_of(digest.found_at)
        region = where[1] if where else "us-east-1"
        if region not in rings:
            rings[region] = _fetch(region, digest, client_for)
        return rings[region]

    online.origin = "cloudtrail:ListPublicKeys"  # type: ignore[attr-defined]
    return online


def _fetch(region: str, digest: Digest, client_for: Callable[[str], Any] | None) -> KeyRing:
    try:
        if client_for is None:
            import boto3

            session = boto3.Session()
            if session.get_credentials() is None:
                return KeyRing(
                    origin="no AWS credentials for cloudtrail:ListPublicKeys and no key folder (TRAILGUARD_INTEGRITY_KEYS)"
                )
            client = session.client("cloudtrail", region_name=region)
        else:
            client = client_for(region)
        return fetch_public_keys(client, digest.start - timedelta(days=1), digest.end + timedelta(days=1))
    except Exception as exc:  # noqa: BLE001 - any AWS/network failure means "no key", said in one line
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        log.warning("cloudtrail:ListPublicKeys in %s failed: %s", region, reason)
        return KeyRing(origin=f"cloudtrail:ListPublicKeys in {region} failed: {reason}")


def _found(source: Source, obj: SourceObject) -> FoundDigest:
    """A digest object's bytes and metadata; one larger than any digest can be is not read at all."""
    if obj.size > MAX_DIGEST_BYTES:
        return FoundDigest(
            obj.key,
            b"",
            None,
            f"{obj.size} bytes, over the {MAX_DIGEST_BYTES} byte limit for a digest: not read",
        )
    return FoundDigest(obj.key, obj.fetch(), _metadata(source, obj))


def _metadata(source: Source, obj: SourceObject) -> Mapping[str, Any] | None:
    """The digest object's user metadata: from S3 itself, or from its sidecar file in a folder."""
    reader = getattr(source, "object_metadata", None)
    if reader is not None:
        return reader(obj.key)
    folder = getattr(source, "folder", None)
    if folder is None:
        return None
    sidecar = Path(folder) / (obj.key + METADATA_SUFFIX)
    try:
        if sidecar.stat().st_size > MAX_METADATA_BYTES:
            return None
        doc = orjson.loads(sidecar.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


class _LazyHashes(Mapping[str, str | None]):
    """Object id -> SHA-256 of the uncompressed log file, computed only for files a digest lists: the
    hash ingestion recorded when the object is unchanged since, else read and hashed now."""

    def __init__(
        self, objects: dict[str, SourceObject], ingested: Mapping[str, tuple[int, str, str]]
    ) -> None:
        self._objects, self._ingested = objects, ingested
        self._cache: dict[str, str | None] = {}
        self.hashed = 0

    def __contains__(self, key: object) -> bool:
        return key in self._objects

    def __getitem__(self, key: str) -> str | None:
        if key not in self._cache:
            obj = self._objects[key]
            recorded = self._ingested.get(obj.key)
            if recorded and recorded[2] and (recorded[0], recorded[1]) == (obj.size, obj.etag):
                self._cache[key] = recorded[2]
            else:
                try:
                    self._cache[key] = hash_log_file(obj.fetch())
                except (OSError, ValueError, EOFError) as exc:
                    log.warning("log file %s could not be hashed: %s", obj.key, exc)
                    self._cache[key] = None
                self.hashed += 1
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._objects)

    def __len__(self) -> int:
        return len(self._objects)
