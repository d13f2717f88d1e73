"""Validate a day's CloudTrail digests against the log files read, and find delivery gaps.

For each digest file (one per trail, account, region and hour) the outcome is one of :data:`STATUSES`:

* ``valid``: signed by CloudTrail's key, linked to the previous digest, every log file it lists present
  with the SHA-256 it states;
* ``log_file_missing`` / ``log_file_modified``: a listed log file is absent, or its uncompressed content
  (as ingestion read it) no longer has the hash CloudTrail recorded (ATT&CK T1070, T1565.001);
* ``signature_invalid``: the digest was edited, signed by another key, or carries no signature;
* ``chain_broken``: the digest does not link to the previous one (its hash or signature changed, or a
  new chain starts where the old one continues);
* ``digest_missing``: a digest the chain names is absent (placed at the hour its file name gives);
* ``digest_invalid``: a file named like a digest that cannot be read as one (kept in quarantine);
* ``no_key_available``: no public key with the digest's fingerprint: nothing can be said.

A ``delivery_gap`` row is an hour in which an account/region that delivers most hours of the day sent no
log file and no digest. A gap is not proof of tampering (the trail may have been idle, stopped, or AWS
late); it is where to look. Account/regions with log files but no digests at all get one
``not_verified`` row: log file validation is off for their trail (or its digests are elsewhere).
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from trailguard.integrity.digest import (
    Digest,
    DigestError,
    digest_key_time,
    is_digest_key,
    parse_digest,
    verify_signature,
)
from trailguard.integrity.keys import KeyRing

log = logging.getLogger(__name__)

# worst first: a row's status is its worst problem
STATUSES = (
    "log_file_missing",
    "log_file_modified",
    "signature_invalid",
    "chain_broken",
    "digest_missing",
    "digest_invalid",
    "no_key_available",
    "delivery_gap",
    "not_verified",
    "valid",
)
TAMPERED = frozenset(STATUSES[:6])
ATTACK_TECHNIQUES = {
    "log_file_missing": "T1070",
    "log_file_modified": "T1565.001",
    "signature_invalid": "T1565.001",
    "chain_broken": "T1070",
    "digest_missing": "T1070",
    "digest_invalid": "T1565.001",
}
GAP_NOTE = "a delivery gap is not proof of tampering: the trail may have been idle or stopped, or AWS late"
# an account/region that delivered in fewer hours of the day is not "normally delivering": no gaps for it
MIN_ACTIVE_HOURS = 20
MAX_LISTED_PROBLEMS = 20  # per row; the counts say how many there were

# [AWSLogs/][o-orgid/]<account>/CloudTrail[-Digest]/<region>/YYYY/MM/DD/<file> (a folder source may start at
# AWSLogs/ itself, so its keys begin with the account)
_LAYOUT = re.compile(
    r"(?:^|/)(?:AWSLogs/)?(?:o-[a-z0-9]{10,32}/)?((\d{12})/(CloudTrail|CloudTrail-Digest)/([a-z0-9-]{1,32})/"
    r"\d{4}/\d{2}/\d{2}/([^/]+))$"
)
_LOG_TIME = re.compile(r"_(\d{8}T\d{4})Z_[^_/]+\.json(?:\.gz)?$")
_DIGEST_STREAM = re.compile(r"_\d{8}T\d{6}Z(?:_backfill)?\.json\.gz$")


@dataclass
class HourResult:
    """The outcome for one account/region/hour (and, for digests, one trail's chain)."""

    date: str
    account: str
    region: str
    hour: str  # YYYY-MM-DDTHH:00Z, UTC
    status: str
    stream: str = ""  # the digest chain: account, region and trail as in the digest's file name
    digest_key: str = ""
    log_files_listed: int = 0
    log_files_valid: int = 0
    log_files_missing: int = 0
    log_files_modified: int = 0
    missing_files: list[str] = field(default_factory=list)
    modified_files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, status: str, problem: str) -> None:
        if STATUSES.index(status) < STATUSES.index(self.status):
            self.status = status
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FoundDigest:
    """A digest object as listed: where, its bytes and its S3 user metadata (or sidecar)."""

    key: str
    data: bytes
    metadata: Mapping[str, Any] | None
    error: str | None = None  # why it was not read (too large): reported as digest_invalid


def object_id(key: str) -> str:
    """A key from the account id on (``<account>/CloudTrail/<region>/...``): the same for
    ``s3://bucket/prefix/AWSLogs/...``, a folder's relative path and a digest's ``s3Object``, so a copy of
    the bucket in a folder still matches its digests."""
    normalised = key.replace("\\", "/")
    match = _LAYOUT.search(normalised)
    return match.group(1) if match else normalised


def layout_of(key: str) -> tuple[str, str, str, str] | None:
    """(account, region, kind, file name) of an AWS-layout key, kind ``CloudTrail`` or ``CloudTrail-Digest``."""
    match = _LAYOUT.search(key.replace("\\", "/"))
    if not match:
        return None
    _, account, kind, region, name = match.groups()
    return account, region, kind, name


def delivery_hour(key: str) -> datetime | None:
    """The UTC hour a log file (from its name) or a digest (its end time) was delivered."""
    if is_digest_key(key):
        moment = digest_key_time(key)
    else:
        match = _LOG_TIME.search(key)
        try:
            moment = (
                datetime.strptime(match.group(1), "%Y%m%dT%H%M").replace(tzinfo=timezone.utc)
                if match
                else None
            )
        except ValueError:
            moment = None
    return moment.replace(minute=0, second=0, microsecond=0) if moment else None


def hash_log_file(data: bytes, limit: int = 1 << 34) -> str:
    """Hex SHA-256 of a log file's uncompressed content (what a digest's ``hashValue`` states), inflated
    a megabyte at a time; plain (not gzip) bytes are hashed as they are."""
    if data[:2] != b"\x1f\x8b":
        return hashlib.sha256(data).hexdigest()
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    digest = hashlib.sha256()
    view = memoryview(data)
    try:
        return _inflate_hash(inflater, view, digest, limit)
    except zlib.error as exc:
        raise ValueError(f"not a readable gzip file: {exc}") from exc


def _inflate_hash(inflater: Any, view: memoryview, digest: Any, limit: int) -> str:
    done, total = 0, 0
    while done < len(view):
        chunk = inflater.decompress(view[done : done + (1 << 20)], 1 << 22)
        done += 1 << 20
        while True:
            digest.update(chunk)
            total += len(chunk)
            if total > limit:
                raise ValueError(f"uncompressed size over {limit} bytes")
            if not inflater.unconsumed_tail:
                break
            chunk = inflater.decompress(inflater.unconsumed_tail, 1 << 22)
    digest.update(inflater.flush())
    return digest.hexdigest()


def verify_digests(
    day: date,
    digests: Iterable[FoundDigest],
    log_hashes: Mapping[str, str | None],
    keys: Callable[[Digest], KeyRing] | KeyRing,
    *,
    earlier: Iterable[FoundDigest] = (),
    listed_days: Iterable[date] = (),
    on_invalid: Callable[[FoundDigest, str], None] | None = None,
) -> list[HourResult]:
    """One :class:`HourResult` per digest delivered on ``day`` (plus one per digest its chain names that is
    absent).

    ``log_hashes`` maps :func:`object_id` of every log file present to the SHA-256 of its uncompressed
    content as ingestion read it (None when it could not be hashed). ``earlier`` are digests of the day
    before, to check the first link of each chain; ``listed_days`` are the days whose digest folders were
    listed completely (a named digest absent from them is missing; outside them nothing is claimed).
    ``on_invalid`` receives each unreadable digest with the reason (to quarantine it).
    """
    ring_for = keys if callable(keys) else (lambda _digest, ring=keys: ring)
    listed = {d.isoformat() for d in listed_days} | {day.isoformat()}
    known: dict[str, Digest | None] = {}
    for found in earlier:
        try:
            known[object_id(found.key)] = parse_digest(found.key, found.data, found.metadata)
        except DigestError:
            known[object_id(found.key)] = None  # reported on its own day
    results: list[HourResult] = []
    parsed: list[tuple[Digest, HourResult]] = []
    for found in digests:
        row = _row(day, found.key, "valid")
        row.digest_key = found.key
        try:
            if found.error:
                raise DigestError(found.error)
            digest = parse_digest(found.key, found.data, found.metadata)
        except DigestError as exc:
            known[object_id(found.key)] = None
            row.add("digest_invalid", f"digest {found.key} is not a readable digest: {exc}")
            if on_invalid is not None:
                on_invalid(found, str(exc))
            results.append(row)
            continue
        known[object_id(found.key)] = digest
        parsed.append((digest, row))
    by_stream: dict[str, list[tuple[Digest, HourResult]]] = defaultdict(list)
    for digest, row in parsed:
        by_stream[row.stream].append((digest, row))
    for chain in by_stream.values():
        chain.sort(key=lambda pair: (pair[0].end, pair[0].found_at))
        before: Digest | None = _latest_earlier(known, chain[0][0]) if chain else None
        for digest, row in chain:
            _check_location(digest, row)
            _check_signature(digest, row, ring_for(digest))
            missing = _check_chain(digest, before, known, listed, row)
            if missing is not None:
                results.append(missing)
            _check_log_files(digest, log_hashes, row)
            results.append(row)
            before = digest
    return sorted(results, key=lambda r: (r.account, r.region, r.hour, r.stream, r.status))


def delivery_gaps(
    day: date,
    keys: Iterable[str],
    *,
    until: datetime | None = None,
    min_active_hours: int = MIN_ACTIVE_HOURS,
) -> list[HourResult]:
    """``delivery_gap`` rows: hours of ``day`` (before ``until``) in which an account/region that delivered
    in at least ``min_active_hours`` hours of it sent neither a log file nor a digest."""
    midnight = datetime.combine(day, time(), timezone.utc)
    active: dict[tuple[str, str], set[datetime]] = defaultdict(set)
    for key in keys:
        where = layout_of(key)
        hour = delivery_hour(key)
        if where is None or hour is None or hour.date() != day:
            continue
        active[(where[0], where[1])].add(hour)
    rows = []
    for (account, region), hours in sorted(active.items()):
        if len(hours) < min_active_hours:
            continue
        for h in range(24):
            hour = midnight + timedelta(hours=h)
            if hour in hours or (until is not None and hour + timedelta(hours=1) > until):
                continue
            row = HourResult(
                date=day.isoformat(),
                account=account,
                region=region,
                hour=_hour_text(hour),
                status="delivery_gap",
            )
            row.problems.append(
                f"no log file and no digest delivered in this hour ({len(hours)} of 24 hours delivered); {GAP_NOTE}"
            )
            rows.append(row)
    return rows


def not_verified(day: date, log_keys: Iterable[str], digest_keys: Iterable[str]) -> list[HourResult]:
    """One ``not_verified`` row per account/region that delivered log files but no digest on ``day``."""
    with_digests = {w[:2] for w in map(layout_of, digest_keys) if w}
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for where in map(layout_of, log_keys):
        if where and where[:2] not in with_digests:
            counts[where[:2]] += 1
    rows = []
    for (account, region), n in sorted(counts.items()):
        row = HourResult(
            date=day.isoformat(),
            account=account,
            region=region,
            hour=f"{day.isoformat()}T00:00Z",
            status="not_verified",
        )
        row.problems.append(
            f"{n} log files and no digest file: log file validation is off for this trail, or its digests are elsewhere"
        )
        rows.append(row)
    return rows


# -- the checks ---------------------------------------------------------------------------------------
def _row(day: date, key: str, status: str, moment: datetime | None = None) -> HourResult:
    where = layout_of(key) or ("unknown", "unknown", "", key)
    moment = moment or digest_key_time(key)
    name = key.replace("\\", "/").rsplit("/", 1)[-1]
    return HourResult(
        date=day.isoformat(),
        account=where[0],
        region=where[1],
        hour=_hour_text(moment) if moment else f"{day.isoformat()}T00:00Z",
        status=status,
        stream=_DIGEST_STREAM.sub("", name),
    )


def _hour_text(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H}:00Z"


def _latest_earlier(known: Mapping[str, Digest | None], first: Digest) -> Digest | None:
    """The digest of the same chain that ends last before ``first`` starts (from the day before)."""
    stream = _DIGEST_STREAM.sub("", first.found_at.replace("\\", "/").rsplit("/", 1)[-1])
    candidates = [
        d
        for d in known.values()
        if d is not None
        and d is not first
        and d.end <= first.start + timedelta(minutes=5)
        and _DIGEST_STREAM.sub("", d.found_at.replace("\\", "/").rsplit("/", 1)[-1]) == stream
    ]
    return max(candidates, key=lambda d: d.end, default=None)


def _check_location(digest: Digest, row: HourResult) -> None:
    if object_id(digest.key) != object_id(digest.found_at):
        row.add(
            "signature_invalid",
            f"digest {digest.found_at} says it was delivered as {digest.key[:200]}: moved or copied",
        )
    where = layout_of(digest.found_at)
    if where and where[0] != digest.account:
        row.add(
            "signature_invalid",
            f"digest {digest.found_at} is for account {digest.account[:20]}, not {where[0]}",
        )


def _check_signature(digest: Digest, row: HourResult, ring: KeyRing) -> None:
    key = ring.get(digest.fingerprint)
    if key is None:
        origin = f" in {ring.origin}" if ring.origin else ""
        row.add("no_key_available", f"no public key with fingerprint {digest.fingerprint[:40]}{origin}")
        return
    reason = verify_signature(digest, key)
    if reason is not None:
        row.add("signature_invalid", f"digest {digest.found_at}: {reason}")


def _check_chain(
    digest: Digest,
    before: Digest | None,
    known: Mapping[str, Digest | None],
    listed: set[str],
    row: HourResult,
) -> HourResult | None:
    """Check the link to the previous digest; return a ``digest_missing`` row when it names an absent one."""
    if digest.previous_key is None:
        if digest.previous_signature is not None or digest.previous_sha256 is not None:
            row.add(
                "chain_broken",
                f"digest {digest.found_at} has a previous signature or hash but names no previous digest",
            )
        elif before is not None and before.end >= digest.start - timedelta(minutes=5):
            row.add(
                "chain_broken",
                f"digest {digest.found_at} starts a new chain although {before.found_at} ends where it starts",
            )
        return None
    target_id = object_id(digest.previous_key)
    if target_id not in known:
        named = digest_key_time(digest.previous_key)
        if named is None or named.date().isoformat() not in listed:
            return None  # outside what was listed: nothing to claim
        missing = _row(date.fromisoformat(row.date), digest.previous_key, "valid", named)
        missing.stream = row.stream
        missing.digest_key = digest.previous_key
        missing.add(
            "digest_missing",
            f"digest {digest.previous_key[:300]} is named by {digest.found_at} but is absent",
        )
        return missing
    target = known[target_id]
    if target is None:
        row.add("chain_broken", f"the previous digest {digest.previous_key[:300]} is not a readable digest")
        return None
    if before is not None and object_id(before.found_at) != target_id:
        row.add(
            "chain_broken",
            f"digest {digest.found_at} links to {digest.previous_key[:300]}, not to the digest before it, {before.found_at}",
        )
    if digest.previous_sha256 is not None and digest.previous_sha256 != target.sha256:
        row.add(
            "chain_broken",
            f"the previous digest {target.found_at} changed after this digest was signed (hash differs)",
        )
    if (
        target.signature is not None
        and digest.previous_signature is not None
        and digest.previous_signature.lower() != target.signature
    ):
        row.add(
            "chain_broken",
            f"the previous digest {target.found_at} carries another signature than the one this digest names",
        )
    return None


def _check_log_files(digest: Digest, log_hashes: Mapping[str, str | None], row: HourResult) -> None:
    row.log_files_listed = len(digest.log_files)
    for entry in digest.log_files:
        seen = object_id(entry.key)
        if seen not in log_hashes:
            row.log_files_missing += 1
            if len(row.missing_files) < MAX_LISTED_PROBLEMS:
                row.missing_files.append(entry.key)
            row.add("log_file_missing", f"log file {entry.key[:300]} listed by the digest is absent")
        elif log_hashes[seen] != entry.sha256:
            row.log_files_modified += 1
            if len(row.modified_files) < MAX_LISTED_PROBLEMS:
                row.modified_files.append(entry.key)
            row.add(
                "log_file_modified",
                f"log file {entry.key[:300]} does not have the SHA-256 the digest states: changed after delivery",
            )
        else:
            row.log_files_valid += 1
