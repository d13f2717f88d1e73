"""Read CloudTrail objects from a source into the event store: nothing duplicated, nothing lost.

Every object listed ends as exactly one of: ingested, skipped (digest, insight, already ingested, not a
log file) or quarantined (its bytes kept with the reason). Every record read ends as new, duplicate or
quarantined (kept with the reason). The counts in :class:`IngestSummary` add up.

How the work is split: this process lists the source, skips what the manifest says was read, and hands
the rest out in chunks of a few MB; a chunk is fetched and decoded into one Arrow table (here, or in a
pool of worker processes), and the tables come back in listing order. This process alone deduplicates,
writes the event parts and records the manifest, one batch at a time, so memory is bounded by a batch
plus the chunks in flight, whatever the size of the day.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import shutil
import sys
import tempfile
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from trailguard.schema import EVENT_SCHEMA, RecordError, dumps, file_to_table, normalise, rows_to_table
from trailguard.sources import Source, SourceObject, skip_reason
from trailguard.store import EventStore, event_days, new_run_id

try:  # ISA-L inflates about twice as fast as zlib, with the gzip module's API and errors
    from isal.igzip import decompress as _decompress_gzip
    from isal.isal_zlib import error as _inflate_error
except ImportError:
    from gzip import decompress as _decompress_gzip
    from zlib import error as _inflate_error

log = logging.getLogger(__name__)

MAX_OBJECT_BYTES = 512 * 1024 * 1024  # a CloudTrail file is at most tens of MB uncompressed
CHUNK_BYTES = 4 * 1024 * 1024  # compressed bytes handed to a worker at once (about 25,000 records)


class ObjectError(ValueError):
    """A source object that cannot be read as a CloudTrail file; the message is the reason."""


@dataclass
class IngestSummary:
    source: str
    run_id: str
    objects: int = 0
    objects_ingested: int = 0
    objects_skipped: int = 0
    objects_already_ingested: int = 0
    objects_quarantined: int = 0
    records: int = 0
    new: int = 0
    duplicates: int = 0
    quarantined: int = 0
    seconds: float = 0.0
    dates: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        return [
            f"source       {self.source}",
            f"objects      {self.objects} listed: {self.objects_ingested} ingested, "
            f"{self.objects_skipped} skipped ({self.objects_already_ingested} already ingested), "
            f"{self.objects_quarantined} quarantined",
            f"records      {self.records} read: {self.new} new, {self.duplicates} duplicates, "
            f"{self.quarantined} quarantined",
            f"dates        {_date_span(self.dates)}",
            f"seconds      {self.seconds:.1f}"
            + (f" ({self.records / self.seconds:,.0f} records/s)" if self.seconds > 0 and self.records else ""),
        ]


def _date_span(dates: list[str]) -> str:
    if len(dates) <= 4:
        return ", ".join(dates) or "-"
    return f"{dates[0]} .. {dates[-1]} ({len(dates)} days)"


# -- one object ---------------------------------------------------------------------------------------
@dataclass
class DecodedObject:
    """What one object gave: its events, records rejected (with reasons) and a note for the manifest."""

    table: pa.Table
    rejected: list[dict[str, Any]]
    records_read: int
    note: str | None = None


def decode_object(key: str, data: bytes) -> DecodedObject:
    """Turn one CloudTrail file's bytes into events; raise ObjectError if the file is unreadable.

    An ordinary file is decoded straight into columns (:func:`~trailguard.schema.file_to_table`);
    anything else goes record by record, so that each odd record is kept or rejected on its own.
    """
    document, note = _unpack(data)
    table = file_to_table(document, key)
    if table is None:
        return _decode_records(key, document, note)
    return DecodedObject(table=table, rejected=[], records_read=table.num_rows, note=note)


def _unpack(data: bytes) -> tuple[bytes, str | None]:
    """The JSON document inside an object's bytes (gunzipped, byte order mark removed), with a note of
    any repair."""
    if not data:
        raise ObjectError("empty file (0 bytes)")
    if data[:2] == b"\x1f\x8b":
        try:
            data = _gunzip(data)
        except (OSError, EOFError, zlib.error, _inflate_error) as exc:
            raise ObjectError(f"not a readable gzip file: {exc}") from exc
        if not data:
            raise ObjectError("empty file after gunzip")
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:], "UTF-8 byte order mark removed"
    return data, None


def _decode_records(key: str, document: bytes, note: str | None) -> DecodedObject:
    """The record-by-record path: any JSON, each record kept or rejected with its reason."""
    document, parse_note = _parse_json(document)
    note = "; ".join(n for n in (note, parse_note) if n) or None
    if not isinstance(document, dict):
        raise ObjectError(f"top-level JSON is a {_kind(document)}, expected an object with a Records list")
    records = document.get("Records")
    if records is None:
        raise ObjectError("JSON object has no Records key: not a CloudTrail log file")
    if not isinstance(records, list):
        raise ObjectError(f"Records is a {_kind(records)}, expected a list")
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        try:
            rows.append(normalise(record, key))
        except RecordError as exc:
            rejected.append(_rejection(key, index, str(exc), record))
    return DecodedObject(table=rows_to_table(rows), rejected=rejected, records_read=len(records), note=note)


def _gunzip(data: bytes) -> bytes:
    out = _decompress_gzip(data)
    if len(out) > MAX_OBJECT_BYTES:
        raise ObjectError(f"gunzipped size {len(out)} bytes is over the {MAX_OBJECT_BYTES} byte limit")
    return out


def _parse_json(data: bytes) -> tuple[Any, str | None]:
    """orjson first (fast); the stdlib for what orjson refuses but CloudTrail-ish files contain
    (NaN, integers beyond 64 bits); invalid UTF-8 is replaced, not fatal, and noted."""
    try:
        return orjson.loads(data), None
    except orjson.JSONDecodeError as fast_error:
        note = None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("utf-8", errors="replace")
            note = "invalid UTF-8 replaced with U+FFFD"
        try:
            return json.loads(text), note
        except RecursionError as exc:
            raise ObjectError("JSON nested too deeply to read") from exc
        except ValueError as exc:
            raise ObjectError(f"not valid JSON: {fast_error}") from exc


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(type(value), type(value).__name__)


def _rejection(key: str, index: int, reason: str, record: Any) -> dict[str, Any]:
    event_id = record.get("eventID") if isinstance(record, dict) else None
    return {
        "source_key": key,
        "record_index": index,
        "reason": reason,
        "eventID": event_id if isinstance(event_id, str) else None,
        "raw": dumps(record),
    }


# -- chunks: the work a worker does -------------------------------------------------------------------
@dataclass
class _Task:
    """One object to read: its manifest identity and either its bytes or a fetch that can travel."""

    key: str
    size: int
    etag: str
    fetch: Callable[[], bytes] | None = None
    data: bytes | None = None


@dataclass
class _ObjectOutcome:
    """What became of one object; ``data`` holds its bytes only when they go to quarantine."""

    key: str
    size: int
    etag: str
    status: str  # ingested | quarantined
    records_read: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None
    data: bytes | None = None


@dataclass
class _ChunkResult:
    outcomes: list[_ObjectOutcome]
    events: pa.Table | None = None
    events_file: str | None = None  # an Arrow IPC file holding the events, from a worker

    def table(self) -> pa.Table:
        """The events; a worker's file is memory-mapped (no copy) and unlinked at once."""
        if self.events_file is None:
            return self.events if self.events is not None else EVENT_SCHEMA.empty_table()
        with pa.memory_map(self.events_file) as source:
            table = pa.ipc.open_file(source).read_all()
        os.unlink(self.events_file)
        return table


def _decode_to_file(tasks: list[_Task], folder: str) -> _ChunkResult:
    """decode_chunk in a worker: the events go back as an Arrow IPC file in ``folder``, not through a pipe."""
    result = decode_chunk(tasks)
    if result.events is not None and result.events.num_rows:
        path = os.path.join(folder, f"{uuid.uuid4().hex}.arrow")
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, EVENT_SCHEMA) as writer:
            writer.write_table(result.events)
        result.events, result.events_file = None, path
    return result


def decode_chunk(tasks: list[_Task]) -> _ChunkResult:
    """Fetch and decode a chunk of objects into one table of events, in object order."""
    outcomes: list[_ObjectOutcome] = []
    tables: list[pa.Table] = []
    for task in tasks:
        data = task.data if task.data is not None else task.fetch()  # type: ignore[misc]
        outcome = _ObjectOutcome(task.key, task.size, task.etag, "ingested")
        try:
            decoded = decode_object(task.key, data)
        except ObjectError as exc:
            outcome.status, outcome.note, outcome.data = "quarantined", str(exc), data
        else:
            outcome.records_read, outcome.rejected, outcome.note = decoded.records_read, decoded.rejected, decoded.note
            if decoded.note:  # read with a repair: the original bytes are kept too
                outcome.data = data
            tables.append(decoded.table)
        outcomes.append(outcome)
    return _ChunkResult(outcomes, pa.concat_tables(tables) if tables else None)


def _decode_in_order(chunks: Iterable[list[_Task]], workers: int) -> Iterator[_ChunkResult]:
    """Decode the chunks here, or in ``workers`` processes a few chunks ahead; results in chunk order."""
    if workers <= 1:
        yield from map(decode_chunk, chunks)
        return
    pool = ProcessPoolExecutor(workers, mp_context=_pool_context())
    scratch = tempfile.TemporaryDirectory(prefix="trailguard-ingest-", dir=_scratch_root())
    try:
        pending: deque[Future[_ChunkResult]] = deque()
        for chunk in chunks:
            pending.append(pool.submit(_decode_to_file, chunk, scratch.name))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        scratch.cleanup()


def _scratch_root() -> str | None:
    """Shared memory (/dev/shm) when it has room for the chunks in flight, else the temp folder."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and shutil.disk_usage(shm).free > 1024**3:
        return shm
    return None


def _pool_context() -> multiprocessing.context.BaseContext:
    """Fork on Linux: instant, and the caller's main module is not imported again (spawn and forkserver
    would run an unguarded script a second time). Workers only decode: no logging, no threads of their own."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _travels(fetch: Callable[[], bytes]) -> bool:
    """Whether a fetch can be sent to a worker (a local file's can; one holding an AWS client cannot)."""
    try:
        pickle.dumps(fetch)
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True


# -- the run ------------------------------------------------------------------------------------------
def ingest(
    source: Source,
    store: EventStore,
    *,
    start: date | None = None,
    end: date | None = None,
    batch_records: int = 250_000,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> IngestSummary:
    """Ingest every object the source lists (within ``start``..``end`` by delivery date).

    Objects are read in batches of about ``batch_records`` records; each batch is deduplicated and
    written before its objects are recorded in the manifest, so a crash mid-run re-reads at most one
    batch and the eventID check keeps the store free of duplicates. With ``workers`` > 1 that many
    processes fetch and decode; the result is the same as with one. ``progress(objects, records)`` is
    called as objects are listed and read.
    """
    run_id = new_run_id()
    summary = IngestSummary(source=source.uri, run_id=run_id)
    started = time.perf_counter()
    batch = _Batch()
    touched: set[str] = set()

    def report() -> None:
        if progress:
            progress(summary.objects, summary.records)

    listing = _list(source, store, start, end, summary, batch, workers, min(CHUNK_BYTES, batch_records * 32), report)
    for result in _decode_in_order(listing, workers):
        _merge(result, batch, store, run_id, summary)
        report()
        if batch.records >= batch_records:
            _flush(batch, store, run_id, summary, touched)
    _flush(batch, store, run_id, summary, touched)
    summary.dates = sorted(touched)
    summary.seconds = time.perf_counter() - started
    log.info("ingest %s: %s", source.uri, "; ".join(summary.lines()[1:]))
    return summary


@dataclass
class _Batch:
    tables: list[pa.Table] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    manifest: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0

    def clear(self) -> None:
        self.tables, self.rejected, self.manifest, self.records = [], [], [], 0


def _list(
    source: Source,
    store: EventStore,
    start: date | None,
    end: date | None,
    summary: IngestSummary,
    batch: _Batch,
    workers: int,
    chunk_bytes: int,
    report: Callable[[], None],
) -> Iterator[list[_Task]]:
    """The objects to read, in chunks of about ``chunk_bytes``; objects to skip go straight to the batch."""
    seen = store.manifest_index()
    chunk: list[_Task] = []
    size = 0
    for obj in source.objects(start, end):
        summary.objects += 1
        reason = skip_reason(obj.key) if obj.is_file else None
        previous = seen.get(obj.key)
        if reason is None and previous and previous[0] == obj.size and previous[1] == obj.etag:
            summary.objects_skipped += 1
            summary.objects_already_ingested += 1
        elif reason is not None:
            summary.objects_skipped += 1
            batch.manifest.append(_entry(obj, "skipped", error=reason))
        else:
            chunk.append(_task(obj, workers))
            size += obj.size
            if size >= chunk_bytes:
                yield chunk
                chunk, size = [], 0
            continue
        report()
    if chunk:
        yield chunk


def _task(obj: SourceObject, workers: int) -> _Task:
    task = _Task(obj.key, obj.size, obj.etag)
    if workers <= 1 or _travels(obj.fetch):
        task.fetch = obj.fetch
    else:
        task.data = obj.fetch()
    return task


def _merge(result: _ChunkResult, batch: _Batch, store: EventStore, run_id: str, summary: IngestSummary) -> None:
    """Count a decoded chunk and add it to the batch; quarantine the bytes of bad and repaired objects."""
    for outcome in result.outcomes:
        if outcome.status == "quarantined":
            store.quarantine_object(outcome.key, outcome.data or b"", outcome.note or "", run_id)
            summary.objects_quarantined += 1
            batch.manifest.append(_entry(outcome, "quarantined", error=outcome.note))
            log.warning("quarantined %s: %s", outcome.key, outcome.note)
            continue
        if outcome.note:
            store.quarantine_object(outcome.key, outcome.data or b"", f"ingested with repair: {outcome.note}", run_id)
        summary.objects_ingested += 1
        summary.records += outcome.records_read
        summary.quarantined += len(outcome.rejected)
        batch.rejected.extend(outcome.rejected)
        batch.records += outcome.records_read
        batch.manifest.append(
            _entry(
                outcome,
                "ingested",
                error=outcome.note,
                records_read=outcome.records_read,
                records_quarantined=len(outcome.rejected),
            )
        )
    events = result.table()
    if events.num_rows:
        batch.tables.append(events)


def _flush(batch: _Batch, store: EventStore, run_id: str, summary: IngestSummary, touched: set[str]) -> None:
    """Write a batch: new events first, then rejected records, then the manifest that says they are in."""
    if not (batch.tables or batch.rejected or batch.manifest):
        return
    table = pa.concat_tables(batch.tables) if batch.tables else EVENT_SCHEMA.empty_table()
    written, duplicates = store.append_events(table, run_id)
    summary.new += written.num_rows
    summary.duplicates += duplicates
    new_per_key: dict[str, int] = {}
    if written.num_rows:
        counts = pc.value_counts(written.column("source_key"))
        new_per_key = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True))
        touched.update(map(str, np.unique(event_days(written.column("eventTime")))))
    for entry in batch.manifest:
        entry["run_id"] = run_id
        if entry["status"] == "ingested":
            entry["records_new"] = new_per_key.get(entry["key"], 0)
            entry["records_duplicate"] = entry["records_read"] - entry["records_quarantined"] - entry["records_new"]
    for rejected in batch.rejected:
        rejected["run_id"] = run_id
    store.quarantine_records(batch.rejected, run_id)
    store.write_manifest(batch.manifest, run_id)
    batch.clear()


def _entry(obj: SourceObject | _ObjectOutcome, status: str, *, error: str | None = None, **counts: int) -> dict[str, Any]:
    return {
        "key": obj.key,
        "size": obj.size,
        "etag": obj.etag,
        "status": status,
        "records_read": counts.get("records_read", 0),
        "records_new": 0,
        "records_duplicate": 0,
        "records_quarantined": counts.get("records_quarantined", 0),
        "error": error,
        "run_id": None,
        "seen_at": datetime.now(timezone.utc),
    }
