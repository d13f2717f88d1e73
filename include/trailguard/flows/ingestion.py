"""VPC Flow Log files from a source into ``flows/date=D/``: nothing duplicated, nothing lost.

Every object listed ends as exactly one of: ingested, skipped (not a flow log file, already ingested) or
quarantined (its bytes kept with the reason in ``quarantine/flows/objects/``). Every line read ends as a
stored record or a rejected line kept with its number and reason (``quarantine/flows/records/``).

Flow records carry no id of their own, so a rerun is kept idempotent by the object, not the record: the
manifest (``manifest/flows/``) says which objects (key, size, etag) are in, and each batch is committed
through a journal: its parts are staged, the journal naming them and their manifest entries is written,
then the parts are moved into place and the manifest written; a run that finds a journal left by a crash
finishes it first. Memory is bounded by a batch of records (``batch_records``) plus the files being read.
Files are read by ``workers`` threads (gunzip, pyarrow's CSV reader and the parquet writer release the GIL).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trailguard.flows.logs import (
    FLOW_SCHEMA,
    PARQUET_MAGIC,
    DecodedFlows,
    FlowFileError,
    FlowLimits,
    is_flow_log_key,
    read_flow_parquet,
    read_flow_text,
)
from trailguard.ingest.limits import INFLATE_ERRORS, LimitError, gunzip
from trailguard.ingest.sources import Source, SourceObject
from trailguard.store import fs
from trailguard.store.events import (
    MANIFEST_SCHEMA,
    REJECTED_RECORD_SCHEMA,
    day_text,
    new_run_id,
    safe_name,
)
from trailguard.store.fs import DataPath, as_path, read_parquet, visible_files

log = logging.getLogger(__name__)

# A dictionary only for the columns with few values (accounts, interfaces, actions, statuses, the VPC
# fields, the service port): addresses, ephemeral ports, counts and times are nearly unique per row, where
# a dictionary is wasted work (measured: a quarter of the writing time, for files 12% smaller); snappy is
# the cheapest codec that still shrinks them (zstd took half the ingest time, for files 40% smaller).
_FEW_VALUES = {
    "version", "account_id", "interface_id", "dstport", "protocol", "action", "log_status", "vpc_id", "subnet_id",
    "instance_id", "type", "region", "az_id", "sublocation_type", "sublocation_id", "pkt_src_aws_service",
    "pkt_dst_aws_service", "flow_direction", "traffic_path", "source_key",
}  # fmt: skip
FLOW_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "snappy",
    "use_dictionary": [f.name for f in FLOW_SCHEMA if f.name in _FEW_VALUES],
    "write_statistics": ["start", "end", "account_id", "interface_id", "action", "log_status", "dstport"],
}


@dataclass
class FlowIngestSummary:
    source: str
    run_id: str
    objects: int = 0
    objects_ingested: int = 0
    objects_skipped: int = 0
    objects_already_ingested: int = 0
    objects_quarantined: int = 0
    records: int = 0
    stored: int = 0
    nodata: int = 0
    quarantined: int = 0
    seconds: float = 0.0
    dates: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        rate = f" ({self.records / self.seconds:,.0f} records/s)" if self.seconds > 0 and self.records else ""
        return [
            f"source       {self.source} (VPC Flow Logs)",
            f"objects      {self.objects} listed: {self.objects_ingested} ingested, "
            f"{self.objects_skipped} skipped ({self.objects_already_ingested} already ingested), "
            f"{self.objects_quarantined} quarantined",
            f"records      {self.records} read: {self.stored} stored ({self.nodata} NODATA/SKIPDATA), "
            f"{self.quarantined} quarantined",
            f"dates        {', '.join(self.dates) if len(self.dates) <= 4 else f'{self.dates[0]} .. {self.dates[-1]}'}",
            f"seconds      {self.seconds:.1f}{rate}",
        ]


@dataclass
class FlowStore:
    """Flow partitions, their manifest, journal and quarantine under one data root."""

    root: DataPath

    def __post_init__(self) -> None:
        self.root = as_path(self.root)

    @property
    def flows_dir(self) -> DataPath:
        return self.root / "flows"

    @property
    def manifest_dir(self) -> DataPath:
        return self.root / "manifest" / "flows"

    @property
    def quarantine_dir(self) -> DataPath:
        return self.root / "quarantine" / "flows"

    @property
    def staging_root(self) -> DataPath:
        return self.root / "staging"

    def partition_dir(self, day: date | str) -> DataPath:
        return self.flows_dir / f"date={day_text(day)}"

    def partition_files(self, day: date | str) -> list[DataPath]:
        return visible_files(self.partition_dir(day))

    def dates(self) -> list[str]:
        if not self.flows_dir.is_dir():
            return []
        return sorted(
            c.name[5:] for c in self.flows_dir.iterdir() if c.name.startswith("date=") and visible_files(c)
        )

    def read_partition(self, day: date | str, columns: list[str] | None = None) -> pa.Table:
        """A day's flow records (empty, with the schema, when there are none)."""
        files = self.partition_files(day)
        schema = FLOW_SCHEMA if columns is None else pa.schema([FLOW_SCHEMA.field(c) for c in columns])
        if not files:
            return schema.empty_table()
        return pa.concat_tables([read_parquet(f, columns=columns, schema=FLOW_SCHEMA) for f in files])

    def manifest_index(self) -> dict[str, tuple[int, str, str]]:
        """Latest (size, etag, status) per object key."""
        index: dict[str, tuple[int, str, str]] = {}
        for path in visible_files(self.manifest_dir):
            table = read_parquet(path, columns=["key", "size", "etag", "status"], schema=MANIFEST_SCHEMA)
            for key, size, etag, status in zip(
                *(table.column(c).to_pylist() for c in table.column_names), strict=True
            ):
                index[key] = (size, etag, status)
        return index

    def read_manifest(self) -> pa.Table:
        files = visible_files(self.manifest_dir)
        if not files:
            return MANIFEST_SCHEMA.empty_table()
        return pa.concat_tables([read_parquet(f, schema=MANIFEST_SCHEMA) for f in files])

    def read_quarantined_records(self) -> pa.Table:
        files = visible_files(self.quarantine_dir / "records")
        if not files:
            return REJECTED_RECORD_SCHEMA.empty_table()
        return pa.concat_tables([read_parquet(f, schema=REJECTED_RECORD_SCHEMA) for f in files])

    def quarantine_object(self, key: str, data: bytes, reason: str, run_id: str) -> DataPath:
        """Keep a rejected file's bytes with the reason beside it (as CloudTrail's quarantine does)."""
        target = self.quarantine_dir / "objects" / safe_name(key)
        fs.write_bytes_atomic(data, target)
        doc = {"key": key, "reason": reason, "run_id": run_id, "bytes": len(data)}
        fs.write_bytes_atomic(
            json.dumps(doc, indent=2).encode(), target.with_name(target.name + ".reason.json")
        )
        return target


# -- reading one object ----------------------------------------------------------------------------------
@dataclass
class _Outcome:
    obj: SourceObject
    status: str  # ingested | quarantined
    decoded: DecodedFlows | None = None
    reason: str | None = None
    data: bytes | None = None


def decode_flow_object(key: str, data: bytes, limits: FlowLimits | None = None) -> DecodedFlows:
    """One flow log file's bytes as records, its format told from its content, not its name: gzip (then
    what it holds), Parquet (``PAR1`` at both ends) or text with a header line. FlowFileError when it is
    none of them, or cannot be read."""
    limits = limits or FlowLimits()
    if not data:
        raise FlowFileError("empty file (0 bytes)")
    if data[:2] == b"\x1f\x8b":
        try:
            data = gunzip(data, limits.max_file_bytes)
        except LimitError as exc:
            raise FlowFileError(
                f"gunzipped, it {exc}".replace("TRAILGUARD_INGEST_", "TRAILGUARD_FLOW_")
            ) from exc
        except INFLATE_ERRORS as exc:
            raise FlowFileError(f"not a readable gzip file: {exc}") from exc
        if not data:
            raise FlowFileError("empty file (a gzip of 0 bytes)")
    elif len(data) > limits.max_file_bytes:
        raise FlowFileError(
            f"{len(data):,} bytes, over the {limits.max_file_bytes:,}-byte limit (TRAILGUARD_FLOW_MAX_FILE_BYTES)"
        )
    if data[:4] == PARQUET_MAGIC:
        if data[-4:] != PARQUET_MAGIC:
            raise FlowFileError("a Parquet file cut short (no PAR1 footer): truncated in transfer?")
        return read_flow_parquet(key, data, limits)
    return read_flow_text(key, data, limits)


def _read(obj: SourceObject, limits: FlowLimits) -> _Outcome:
    data = obj.fetch()
    try:
        return _Outcome(obj, "ingested", decoded=decode_flow_object(obj.key, data, limits))
    except FlowFileError as exc:
        return _Outcome(obj, "quarantined", reason=str(exc), data=data)


def _read_ahead(objects: Iterator[SourceObject], workers: int, limits: FlowLimits) -> Iterator[_Outcome]:
    """Outcomes in listing order, ``workers`` threads reading a few objects ahead."""
    if workers <= 1:
        for obj in objects:
            yield _read(obj, limits)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="flows") as pool:
        pending: deque[Future[_Outcome]] = deque()
        for obj in objects:
            pending.append(pool.submit(_read, obj, limits))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# -- the run -------------------------------------------------------------------------------------------
def ingest_flows(
    source: Source,
    data_root: DataPath | str,
    *,
    start: date | None = None,
    end: date | None = None,
    batch_records: int = 250_000,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    limits: FlowLimits | None = None,
) -> FlowIngestSummary:
    """Ingest every flow log file the source lists (within ``start``..``end`` by delivery date); ``limits``
    bound what one file may take (default :class:`FlowLimits`)."""
    store = FlowStore(as_path(data_root))
    with _lock(store, f"flow ingest {source.uri}"):
        return _ingest(source, store, start, end, batch_records, workers, progress, limits or FlowLimits())


@contextmanager
def _lock(store: FlowStore, purpose: str = "flow ingest") -> Iterator[None]:
    """One flow ingest at a time per data root (a run finishes the journals of a crashed one): a lock file
    in a local root; on an ``s3://`` root the lease ``_locks/flows.json`` in the bucket, as the event
    store's commit, so that runs on several machines are kept apart too."""
    if fs.is_remote(store.root):
        from trailguard.store.lease import held
        from trailguard.store.settings import load_settings

        settings = load_settings()
        with held(
            store.root,
            "flows",
            purpose,
            lease_seconds=settings.commit_lease_seconds,
            wait_seconds=settings.commit_wait_seconds,
        ):
            yield
        return
    import fcntl

    path = fs.lock_file(store.root).with_name(".flows.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ingest(
    source: Source,
    store: FlowStore,
    start: date | None,
    end: date | None,
    batch_records: int,
    workers: int,
    progress: Callable[[int, int], None] | None,
    limits: FlowLimits,
) -> FlowIngestSummary:
    run_id = new_run_id()
    summary = FlowIngestSummary(source=source.uri, run_id=run_id)
    started = time.perf_counter()
    recover(store)
    seen = store.manifest_index()
    batch = _Batch(store, run_id, 1)
    # one batch is written while the next is read: at most two batches in memory, and writing overlaps reading
    committer = ThreadPoolExecutor(1, thread_name_prefix="flows-commit")
    writing: Future[set[str]] | None = None
    touched: set[str] = set()

    def wanted() -> Iterator[SourceObject]:
        for obj in source.objects(start, end):
            summary.objects += 1
            if obj.skip or not is_flow_log_key(obj.key):  # obj.skip: a link the source does not follow
                summary.objects_skipped += 1  # CloudTrail and anything else in the same bucket: not ours
                continue
            previous = seen.get(obj.key)
            if previous and previous[0] == obj.size and previous[1] == obj.etag:
                summary.objects_skipped += 1
                summary.objects_already_ingested += 1
                continue
            yield obj

    try:
        for outcome in _read_ahead(wanted(), workers, limits):
            if outcome.status == "quarantined":
                store.quarantine_object(outcome.obj.key, outcome.data or b"", outcome.reason or "", run_id)
                summary.objects_quarantined += 1
                batch.manifest.append(_entry(outcome.obj, "quarantined", error=outcome.reason))
                log.warning("quarantined %s: %s", outcome.obj.key, outcome.reason)
            else:
                decoded = outcome.decoded
                assert decoded is not None
                summary.objects_ingested += 1
                summary.records += decoded.lines_read
                summary.stored += decoded.table.num_rows
                summary.quarantined += len(decoded.rejected)
                traffic = pc.sum(pc.equal(decoded.table.column("log_status"), "OK")).as_py() or 0
                summary.nodata += decoded.table.num_rows - traffic
                batch.add(outcome.obj, decoded)
            if progress:
                progress(summary.objects, summary.records)
            if batch.rows >= batch_records:
                if writing is not None:
                    touched |= writing.result()
                writing, batch = committer.submit(batch.commit), _Batch(store, run_id, batch.seq + 1)
        if writing is not None:
            touched |= writing.result()
        touched |= batch.commit()
    finally:
        committer.shutdown(wait=True)
    fs.rmtree(store.staging_root / f"flows-{run_id}")  # every batch committed: only empty folders are left
    summary.dates = sorted(touched)
    summary.seconds = time.perf_counter() - started
    log.info("ingest flows %s: %s", source.uri, "; ".join(summary.lines()[1:]))
    return summary


class _Batch:
    """Records of a few objects waiting to be committed together, one part per day."""

    def __init__(self, store: FlowStore, run_id: str, seq: int) -> None:
        self.store, self.run_id, self.seq = store, run_id, seq
        self.tables: list[pa.Table] = []
        self.rejected: list[dict[str, Any]] = []
        self.manifest: list[dict[str, Any]] = []
        self.rows = 0

    def add(self, obj: SourceObject, decoded: DecodedFlows) -> None:
        if decoded.table.num_rows:
            self.tables.append(decoded.table)
        self.rejected += decoded.rejected
        self.rows += decoded.table.num_rows
        self.manifest.append(
            _entry(
                obj,
                "ingested",
                error=decoded.note,
                records_read=decoded.lines_read,
                records_new=decoded.table.num_rows,
                records_quarantined=len(decoded.rejected),
            )
        )

    def commit(self) -> set[str]:
        """Stage the batch's parts, journal them with their manifest entries, then move them into place."""
        if not (self.tables or self.manifest):
            return set()
        stage = self.store.staging_root / f"flows-{self.run_id}"
        journal: dict[str, Any] = {"run_id": self.run_id, "parts": [], "rejected": None}
        days: set[str] = set()
        if self.tables:
            table = pa.concat_tables(self.tables)  # every table is in FLOW_SCHEMA already
            for day, part in _split_by_day(table):
                name = f"part-{self.run_id}-{self.seq:05d}-{uuid.uuid4().hex[:8]}.parquet"
                fs.write_parquet_atomic(part, stage / name, **FLOW_WRITE_OPTIONS)
                journal["parts"].append({"staged": name, "day": day})
                days.add(day)
        if self.rejected:
            rejected = pa.Table.from_pylist(
                [{**r, "run_id": self.run_id} for r in self.rejected], schema=REJECTED_RECORD_SCHEMA
            )
            name = f"rejected-{self.run_id}-{self.seq:05d}.parquet"
            fs.write_parquet_atomic(rejected, stage / name, compression="zstd")
            journal["rejected"] = name
        journal["manifest"] = [
            {**e, "run_id": self.run_id, "seen_at": e["seen_at"].isoformat()} for e in self.manifest
        ]
        journal_path = stage / f"journal-{self.seq:05d}.json"
        fs.write_bytes_atomic(json.dumps(journal).encode(), journal_path)
        _apply(self.store, stage, journal_path, journal)
        self.tables, self.rejected, self.manifest, self.rows = [], [], [], 0
        return days


def _apply(store: FlowStore, stage: DataPath, journal_path: DataPath, journal: dict[str, Any]) -> None:
    """Finish one journalled batch: parts into their partitions, rejected lines into quarantine, then the
    manifest, then the journal goes. Each step can be repeated: a part already moved is not there to move."""
    for part in journal["parts"]:
        staged = stage / part["staged"]
        if staged.exists():
            fs.move(staged, store.partition_dir(part["day"]) / part["staged"])
    if journal.get("rejected"):
        staged = stage / journal["rejected"]
        if staged.exists():
            fs.move(staged, store.quarantine_dir / "records" / journal["rejected"])
    entries = [{**e, "seen_at": datetime.fromisoformat(e["seen_at"])} for e in journal["manifest"]]
    if entries:
        name = journal_path.name.replace("journal-", f"part-{journal['run_id']}-").replace(
            ".json", ".parquet"
        )
        fs.write_parquet_atomic(
            pa.Table.from_pylist(entries, schema=MANIFEST_SCHEMA), store.manifest_dir / name
        )
    journal_path.unlink()


def recover(store: FlowStore) -> int:
    """Finish batches a crashed run journalled but did not complete; returns how many."""
    if not store.staging_root.is_dir():
        return 0
    done = 0
    for stage in sorted(store.staging_root.iterdir()):
        if not stage.name.startswith("flows-") or not stage.is_dir():
            continue
        for journal_path in sorted(stage.glob("journal-*.json")):
            _apply(store, stage, journal_path, json.loads(journal_path.read_bytes()))
            done += 1
            log.warning("finished the flow batch %s a crashed run left", journal_path)
        fs.rmtree(stage)  # parts staged without a journal were never committed: the manifest reruns them
    return done


def _split_by_day(table: pa.Table) -> Iterator[tuple[str, pa.Table]]:
    """The rows of each day by ``start``; a batch of one day (the usual case) is passed on without a copy."""
    days = table.column("start").cast(pa.date32())
    extremes = pc.min_max(days)
    if extremes["min"] == extremes["max"]:
        yield str(extremes["min"].as_py()), table
        return
    values = np.asarray(days.to_numpy(), dtype="datetime64[D]")
    for day in np.unique(values):
        yield str(day), table.filter(pa.array(values == day))


def _entry(obj: SourceObject, status: str, *, error: str | None = None, **counts: int) -> dict[str, Any]:
    return {
        "key": obj.key,
        "size": obj.size,
        "etag": obj.etag,
        "status": status,
        "records_read": counts.get("records_read", 0),
        "records_new": counts.get("records_new", 0),
        "records_duplicate": 0,
        "records_quarantined": counts.get("records_quarantined", 0),
        "error": error,
        "run_id": None,
        "seen_at": datetime.now(timezone.utc),
    }
