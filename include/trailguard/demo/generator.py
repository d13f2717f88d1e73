"""Deterministic demo CloudTrail logs, laid out exactly as AWS delivers them to S3, with labelled attacks.

Why: the demo, the tests and the benchmarks need CloudTrail data with known attacks in it, and real
customer logs cannot be shipped. This imitates a small company (three accounts, three regions, fifteen
IAM users, CI, Lambda, EC2 and AWS services) closely enough that parsing, data-quality checks, GeoIP
enrichment and detections meet the shapes they meet in production, and it writes down the attacks it
plants (``ground_truth.csv``) so models and reports can be scored against them.

Layout (what ``trailguard ingest --source <out>`` reads)::

    <out>/AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<id16>.json.gz
    <out>/AWSLogs/<account>/CloudTrail-Digest/<region>/YYYY/MM/DD/<account>_CloudTrail-Digest_<region>_<trail>_<home>_<YYYYMMDDTHHMMSSZ>.json.gz
    <out>/AWSLogs/.../CloudTrail-Digest/.../<digest>.json.gz.metadata.json   the digest's S3 metadata (signature)
    <out>/cloudtrail-public-keys/<fingerprint>.pem   the public key the digests are signed with
    <out>/ground_truth.csv      eventID, date, scenario, attack_technique, risk_score (attack events only)
    <out>/demo_summary.json     counts, scenarios with their days, the deliberately bad files, the tampered files

Digests (the prod account, the last two days) are signed as CloudTrail signs them, with an RSA key derived
from the seed (:func:`trailguard.integrity.signing.seeded_rsa_key`; its public key is written beside the
logs for offline verification). On the last day an attacker covers their tracks: one log file of the prod
account is deleted and another loses its last record after delivery, so its hash no longer matches.

As in S3, the date folders and the file-name time are the *delivery* time: a file holding 23:58 events
is delivered just after midnight, in the next day's folder. Everything comes from ``random.Random``
seeded by the caller (one stream per day), never the clock: the same arguments give byte-identical files.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import logging
import random
import shutil
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson
from trailguard.demo.attacks import SCENARIOS, Scenario
from trailguard.demo.organisation import (
    ACCOUNT,
    ACCOUNTS,
    DEFAULT_END,
    DEFAULT_EVENTS_PER_DAY,
    DIGEST_ACCOUNT,
    FILES_PER_DAY,
    GROUND_TRUTH_COLUMNS,
    GZIP_LEVEL,
    HOME_REGION,
    LOG_BUCKET,
    REGIONS,
    TRAIL_NAME,
    WEEKEND_VOLUME,
    WINDOW_MINUTES,
)
from trailguard.demo.traffic import ALNUM, DayTraffic, normal_traffic
from trailguard.integrity.keys import fingerprint_of
from trailguard.integrity.signing import (
    Link,
    ListedLogFile,
    digest_document,
    public_pem,
    seeded_rsa_key,
    signed,
    write_metadata_sidecar,
)

log = logging.getLogger(__name__)





# -- public API -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoSummary:
    """What :func:`generate` wrote. ``records`` counts the records ingest should accept; ``files`` counts
    CloudTrail log files (bad ones included, digests not); ``attacks`` counts ground-truth events."""

    out_dir: Path
    start: date
    end: date
    files: int
    records: int
    bad_files: int
    attacks: int
    ground_truth: Path


def generate(
    out_dir: Path | str,
    *,
    end: date | None = None,
    days: int = 30,
    events: int | None = None,
    seed: int = 7,
    bad_files: bool = True,
    progress: Callable[[int], None] | None = None,
) -> DemoSummary:
    """Write ``days`` days of demo CloudTrail logs ending on ``end`` (inclusive) under ``out_dir``.

    ``events`` is the total number of normal events (default about 1,500 a day); attack events come on
    top. ``progress`` gets the running total of records written after each file. A previous demo in
    ``out_dir`` is replaced; a folder that holds other CloudTrail logs is refused rather than mixed.
    """
    end = end or DEFAULT_END
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    if events is not None and events < 1:
        raise ValueError(f"events must be a positive number, not {events}")
    total = DEFAULT_EVENTS_PER_DAY * days if events is None else events
    out = Path(out_dir)
    _check_target(out)
    staging = out / ".demo-partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)

    dates = [end - timedelta(days=days - 1 - i) for i in range(days)]
    targets = _daily_targets(dates, total)
    occurrences = _scenario_days(dates)
    bad_plan = _bad_file_days(dates) if bad_files else {}
    writer = _Writer(staging, seed, progress, digest_days=dates[-DIGEST_DAYS:])
    truth: list[tuple[str, str, str, str, int]] = []
    templates: dict[tuple, tuple] = {}  # shared by all days: a principal's calls look the same every day
    for day, target in zip(dates, targets, strict=True):
        gen = DayTraffic(seed, day, templates)
        normal_traffic(gen, target)
        if day == dates[0]:
            _launch_instances(gen, seed)
        for scenario, occurrence in occurrences.get(day, ()):
            gen.scenario, gen.occurrence = scenario, occurrence
            scenario.build(gen, gen.attack_start(scenario))
        truth.extend(gen.truth)
        writer.write_day(day, gen.buckets, {row[1] for row in gen.truth}, bad_plan.get(day, ()))
        log.debug("demo day %s: %d events, %d attack events", day, gen.count, len(gen.truth))
    writer.write_digests()

    truth.sort()
    _write_ground_truth(staging / "ground_truth.csv", truth)
    summary_json = _summary_json(seed, dates, events, writer, truth)
    (staging / "demo_summary.json").write_bytes(
        orjson.dumps(summary_json, option=orjson.OPT_INDENT_2) + b"\n"
    )
    _publish(staging, out)
    log.info(
        "wrote %d CloudTrail files (%d records, %d attack events, %d bad files) for %s..%s to %s",
        writer.files,
        writer.records,
        len(truth),
        len(writer.bad),
        dates[0],
        end,
        out,
    )
    return DemoSummary(
        out_dir=out,
        start=dates[0],
        end=end,
        files=writer.files,
        records=writer.records,
        bad_files=len(writer.bad),
        attacks=len(truth),
        ground_truth=out / "ground_truth.csv",
    )

def _launch_instances(gen: DayTraffic, seed: int) -> None:
    """The instances' RunInstances (their interfaces, for the join of flow logs to CloudTrail), from a
    stream of their own: the day's other records stay as they were without them."""
    from trailguard.demo.flows import launch_instances

    launches = DayTraffic(seed, gen.day, {})
    launches.rng = random.Random(f"trailguard-demo:{seed}:{gen.day.isoformat()}:launches")
    launch_instances(launches)
    for key, items in launches.buckets.items():
        gen.buckets[key].extend(items)
    gen.count += launches.count


def _scenario_days(dates: list[date]) -> dict[date, list[tuple[Scenario, int]]]:
    """Each scenario on the last day (occurrence 0) and on its earlier days that fall inside the range."""
    out: dict[date, list[tuple[Scenario, int]]] = defaultdict(list)
    for scenario in SCENARIOS:
        for occurrence, days_before in enumerate((0, *scenario.earlier)):
            if days_before < len(dates):
                out[dates[-1 - days_before]].append((scenario, occurrence))
    return out


# -- volumes --------------------------------------------------------------------------------------------
def _daily_targets(dates: list[date], total: int) -> list[int]:
    """Split ``total`` over the days, weekends lighter, so that the sum is exactly ``total``."""
    weights = [WEEKEND_VOLUME if d.weekday() >= 5 else 1.0 for d in dates]
    scale = total / sum(weights)
    targets = [int(w * scale) for w in weights]
    targets[-1] += total - sum(targets)
    return targets


# -- delivery: files, bad files, digests ----------------------------------------------------------------
# fmt: off
BAD_FILES = (  # kind, days before the last day, the problem as the summary states it
    ("truncated_gzip", 2, "gzip stream cut off part-way (an interrupted upload)"),
    ("not_json", 4, "gzip of plain text (a CSV export), not JSON"),
    ("no_records", 6, "JSON without a Records array (one EventBridge event)"),
    ("bad_records", 1, "valid file; one record lacks eventID and one has an unparseable eventTime, the others are fine"),
)
# fmt: on
_BAD_PROBLEMS = {kind: problem for kind, _, problem in BAD_FILES}
DIGEST_DAYS = 2  # the digest account's last days get signed digests; the last is the tampered one
PUBLIC_KEYS = "cloudtrail-public-keys"  # beside AWSLogs/: the demo's public key, named by its fingerprint
TAMPERING = (
    ("deleted", "deleted after delivery (ATT&CK T1070): its digest still lists it"),
    ("edited", "its last record cut out after delivery (ATT&CK T1565.001): the hash its digest states no longer matches"),
)


def _bad_file_days(dates: list[date]) -> dict[date, list[str]]:
    out: dict[date, list[str]] = defaultdict(list)
    for kind, days_before, _ in BAD_FILES:
        out[dates[max(0, len(dates) - 1 - days_before)]].append(kind)
    return out


@dataclass
class _FileInfo:
    key: str
    sha256: str
    oldest: str
    newest: str
    delivered: datetime


class _Writer:
    """Cuts each day's buckets into delivery windows and writes them as AWS names them."""

    def __init__(
        self, root: Path, seed: int, progress: Callable[[int], None] | None, digest_days: list[date]
    ) -> None:
        self.root = root
        self.seed = seed
        self.progress = progress
        self.digest_days = digest_days
        self.tampered: list[dict[str, str]] = []
        self.files = 0
        self.records = 0
        self.bad_records = 0
        self.bad: list[dict[str, str]] = []
        self.digest_files = 0
        self._digest_log: dict[str, list[_FileInfo]] = defaultdict(list)  # region: digest account's files
        self._dirs: set[Path] = set()

    def write_day(
        self,
        day: date,
        buckets: dict[tuple[str, str], list[tuple[int, dict]]],
        attack_ids: set[str],
        bad_kinds: Iterable[str],
    ) -> None:
        rng = random.Random(f"trailguard-demo:{self.seed}:{day.isoformat()}:delivery")
        for items in buckets.values():
            items.sort(key=itemgetter(0))
        window = _window_seconds({k: [s for s, _ in v] for k, v in buckets.items()})
        files = []  # (account, region, delivered, records)
        midnight = datetime.combine(day, time(), timezone.utc)
        for account, region in sorted(buckets):
            items = buckets[(account, region)]
            secs = [s for s, _ in items]
            edge = 0
            while edge < 86400:
                nxt = min(86400, edge + int(window * (0.7 + 0.6 * rng.random())))
                lo, hi = bisect.bisect_left(secs, edge), bisect.bisect_left(secs, nxt)
                if hi > lo:
                    delivered = midnight + timedelta(seconds=nxt + rng.randint(20, 300))
                    files.append((account, region, delivered, [r for _, r in items[lo:hi]]))
                edge = nxt
        bad = self._pick_bad(files, attack_ids, list(bad_kinds), rng)
        tamper = self._pick_tampered(day, files, attack_ids, bad) if day == self.digest_days[-1] else {}
        for i, (account, region, delivered, records) in enumerate(files):
            self._write_log(account, region, delivered, records, rng, bad.get(i), tamper.get(i))

    @staticmethod
    def _pick_bad(files: list, attack_ids: set[str], kinds: list[str], rng: random.Random) -> dict[int, str]:
        """Windows to spoil on purpose: several records, none of them an attack."""
        candidates = [
            i
            for i, (_, _, _, records) in enumerate(files)
            if len(records) >= 4 and not any(r["eventID"] in attack_ids for r in records)
        ]
        chosen = rng.sample(candidates, min(len(kinds), len(candidates)))
        return dict(zip(chosen, kinds[: len(chosen)], strict=True))

    def _pick_tampered(self, day: date, files: list, attack_ids: set[str], bad: dict[int, str]) -> dict[int, str]:
        """The digest account's files the attacker deletes and edits: normal ones (the ground truth stays
        whole), well inside the day's digests. Its own random stream: the other files stay byte-identical."""
        rng = random.Random(f"trailguard-demo:{self.seed}:{day.isoformat()}:tamper")
        midnight = datetime.combine(day, time(), timezone.utc)
        candidates = [
            i
            for i, (account, _, delivered, records) in enumerate(files)
            if account == ACCOUNT[DIGEST_ACCOUNT].id and i not in bad and len(records) >= 3
            and midnight + timedelta(hours=2) <= delivered <= midnight + timedelta(hours=22)
            and not any(r["eventID"] in attack_ids for r in records)
        ]
        chosen = rng.sample(candidates, min(len(TAMPERING), len(candidates)))
        return {i: kind for i, (kind, _) in zip(chosen, TAMPERING, strict=False)}

    def _path(self, account: str, kind: str, region: str, delivered: datetime, name: str) -> Path:
        folder = self.root / "AWSLogs" / account / kind / region / f"{delivered:%Y/%m/%d}"
        if folder not in self._dirs:
            folder.mkdir(parents=True, exist_ok=True)
            self._dirs.add(folder)
        return folder / name

    def _write_log(
        self,
        account: str,
        region: str,
        delivered: datetime,
        records: list[dict],
        rng: random.Random,
        bad: str | None,
        tamper: str | None = None,
    ) -> None:
        file_id = "".join(rng.choices(ALNUM, k=16))
        path = self._path(
            account,
            "CloudTrail",
            region,
            delivered,
            f"{account}_CloudTrail_{region}_{delivered:%Y%m%dT%H%MZ}_{file_id}.json.gz",
        )
        good = len(records)
        if bad is None:
            payload = orjson.dumps({"Records": records})
            if tamper is None:
                path.write_bytes(_gzip(payload))
            else:
                good = self._tamper(path, tamper, records)
            if account == ACCOUNT[DIGEST_ACCOUNT].id and delivered.date() >= self.digest_days[0]:
                self._digest_log[region].append(
                    _FileInfo(
                        str(path.relative_to(self.root)),
                        hashlib.sha256(payload).hexdigest(),
                        records[0]["eventTime"],
                        records[-1]["eventTime"],
                        delivered,
                    )
                )
        else:
            data, good = _spoil(bad, records)
            path.write_bytes(data)
            if bad == "bad_records":
                self.bad_records += len(records) - good
            self.bad.append(
                {"key": str(path.relative_to(self.root)), "kind": bad, "problem": _BAD_PROBLEMS[bad]}
            )
        if tamper == "deleted":
            return  # never delivered as far as a reader can tell: not counted, no progress
        self.files += 1
        self.records += good
        if self.progress:
            self.progress(self.records)

    def _tamper(self, path: Path, kind: str, records: list[dict]) -> int:
        """Delete or edit a delivered file as an attacker would; how many records a reader still gets."""
        problem = dict(TAMPERING)[kind]
        entry = {"key": str(path.relative_to(self.root)), "kind": kind, "problem": problem}
        if kind == "deleted":
            self.tampered.append({**entry, "events_lost": str(len(records))})
            return 0
        path.write_bytes(_gzip(orjson.dumps({"Records": records[:-1]})))
        self.tampered.append({**entry, "removed_event": records[-1]["eventID"]})
        return len(records) - 1

    def write_digests(self) -> None:
        """Hourly digest files of the digest account for the digest days, chained and signed like AWS's
        (the signature in a ``.metadata.json`` sidecar, as S3 keeps it in the object's metadata)."""
        key = seeded_rsa_key(f"demo:{self.seed}")
        keys = self.root / PUBLIC_KEYS
        keys.mkdir(parents=True, exist_ok=True)
        (keys / f"{fingerprint_of(key.public_key())}.pem").write_bytes(public_pem(key.public_key()))
        account = ACCOUNT[DIGEST_ACCOUNT].id
        for ri, region in enumerate(REGIONS):
            previous: Link | None = None
            offset = timedelta(minutes=7 + 13 * ri, seconds=31)
            for day in self.digest_days:
                midnight = datetime.combine(day, time(), timezone.utc)
                for hour in range(24):
                    start = midnight + offset + timedelta(hours=hour)
                    end = start + timedelta(hours=1)
                    logs = [f for f in self._digest_log[region] if start <= f.delivered < end]
                    name = f"{account}_CloudTrail-Digest_{region}_{TRAIL_NAME}_{HOME_REGION}_{end:%Y%m%dT%H%M%SZ}.json.gz"
                    path = self._path(account, "CloudTrail-Digest", region, end, name)
                    document = digest_document(
                        account=account,
                        bucket=LOG_BUCKET,
                        key=str(path.relative_to(self.root)),
                        start=start,
                        end=end,
                        public_key=key.public_key(),
                        log_files=[ListedLogFile(LOG_BUCKET, f.key, f.sha256, f.oldest, f.newest) for f in logs],
                        previous=previous,
                    )
                    content, metadata, previous = signed(document, key)
                    path.write_bytes(_gzip(content))
                    write_metadata_sidecar(path, metadata)
                    self.digest_files += 1


def _window_seconds(secs_by_bucket: dict[Any, list[int]]) -> int:
    """The shortest delivery window (from WINDOW_MINUTES) that keeps the day within FILES_PER_DAY files."""
    for minutes in WINDOW_MINUTES:
        width = minutes * 60
        if sum(len({s // width for s in secs}) for secs in secs_by_bucket.values()) <= FILES_PER_DAY:
            return width
    return WINDOW_MINUTES[-1] * 60


def _gzip(data: bytes) -> bytes:
    """gzip with a fixed header (no name, mtime 0), so equal input gives equal bytes."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def _spoil(kind: str, records: list[dict]) -> tuple[bytes, int]:
    """The bytes of a deliberately bad file and how many of its records ingest should still accept."""
    if kind == "truncated_gzip":
        data = _gzip(orjson.dumps({"Records": records}))
        return data[: len(data) * 2 // 3], 0
    if kind == "not_json":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["eventTime", "eventSource", "eventName", "awsRegion", "sourceIPAddress"])
        for r in records:
            writer.writerow(
                [r["eventTime"], r["eventSource"], r["eventName"], r["awsRegion"], r["sourceIPAddress"]]
            )
        return _gzip(out.getvalue().encode()), 0
    if kind == "no_records":
        r = records[0]
        event = {
            "version": "0",
            "id": r["eventID"],
            "detail-type": "AWS API Call via CloudTrail",
            "source": "aws." + r["eventSource"].split(".")[0],
            "account": r["recipientAccountId"],
            "time": r["eventTime"],
            "region": r["awsRegion"],
            "resources": [],
            "detail": r,
        }
        return _gzip(orjson.dumps(event)), 0
    if kind == "bad_records":
        spoilt = [dict(r) for r in records]
        del spoilt[0]["eventID"]
        moment = datetime.fromisoformat(spoilt[1]["eventTime"].replace("Z", "+00:00"))
        spoilt[1]["eventTime"] = f"{moment:%d/%m/%Y %H:%M:%S}"
        return _gzip(orjson.dumps({"Records": spoilt})), len(records) - 2
    raise ValueError(f"unknown bad file kind {kind!r}")


# -- outputs --------------------------------------------------------------------------------------------
def _write_ground_truth(path: Path, truth: list[tuple[str, str, str, str, int]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(GROUND_TRUTH_COLUMNS)
        for event_time, event_id, scenario, technique, risk in truth:
            writer.writerow([event_id, event_time[:10], scenario, technique, risk])


def _summary_json(
    seed: int, dates: list[date], events: int | None, writer: _Writer, truth: list
) -> dict[str, Any]:
    scenarios = []
    for s in SCENARIOS:
        rows = [t for t in truth if t[2] == s.name]
        scenarios.append(
            {
                "scenario": s.name,
                "attack_technique": s.technique,
                "events": len(rows),
                "dates": sorted({t[0][:10] for t in rows}),
                "techniques": sorted({t[3] for t in rows}),
                "marks": s.marks,
            }
        )
    return {
        "generator": "trailguard.demo_data",
        "seed": seed,
        "start": dates[0].isoformat(),
        "end": dates[-1].isoformat(),
        "days": len(dates),
        "events_requested": events,
        "files": writer.files,
        "digest_files": writer.digest_files,
        "records": writer.records,
        "bad_files": len(writer.bad),
        "bad_records": writer.bad_records,
        "attacks": len(truth),
        "accounts": {a.env: a.id for a in ACCOUNTS},
        "regions": list(REGIONS),
        "log_bucket": LOG_BUCKET,
        "scenarios": scenarios,
        "bad_file_keys": writer.bad,
        "tampered_files": writer.tampered,
        "public_keys": PUBLIC_KEYS,
    }


def _check_target(out: Path) -> None:
    """Refuse to mix demo files into a folder that holds CloudTrail logs from somewhere else."""
    if (out / "AWSLogs").exists() and not (out / "demo_summary.json").exists():
        raise FileExistsError(f"{out / 'AWSLogs'} exists and is not a previous demo: choose an empty folder")


def _publish(staging: Path, out: Path) -> None:
    """Replace the previous demo with the staged one (the summary goes last: its presence marks a whole demo)."""
    for name in ("demo_summary.json", "ground_truth.csv", "AWSLogs", PUBLIC_KEYS):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for name in ("AWSLogs", PUBLIC_KEYS, "ground_truth.csv", "demo_summary.json"):
        (staging / name).rename(out / name)
    staging.rmdir()
