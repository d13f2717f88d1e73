"""Read CloudTrail objects from a source into the event store: nothing duplicated, nothing lost.

Every object listed ends as exactly one of: ingested, skipped (digest, insight, already ingested, not a
log file) or quarantined (its bytes kept with the reason). Every record read ends as new, duplicate or
quarantined (kept with the reason). The counts in :class:`IngestSummary` add up.

How the work is split: this process lists the source, skips what the manifest says was read, and hands
the rest out in chunks of a few MB. A chunk is fetched, decoded and written as staged parquet parts, one
per event day (here, or in a pool of worker processes: only the parts' names and eventID keys travel
back). This process alone commits the parts into the store in listing order, dropping eventIDs already
stored (a part with none to drop is renamed into place, not rewritten), and records the manifest one
batch at a time; memory is bounded by the chunks in flight and the days' eventID indexes.

For Airflow, the same steps run as separate tasks: :func:`plan_partitions` lists the work per account,
region and delivery day, :func:`stage` reads one partition into staging (mapped tasks, on any worker
sharing the data root), :func:`commit` moves every staged partition into the store.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import heapq
import json
import logging
import multiprocessing
import os
import pickle
import re
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from trailguard.ingest.limits import (
    INFLATE_ERRORS,
    RECORDS_START,
    SCAN_ABOVE_BYTES,
    IngestLimits,
    LimitError,
    gunzip,
    record_spans,
)
from trailguard.ingest.normalise import (
    RecordError,
    dumps,
    exact_id,
    file_to_table,
    files_to_tables,
    normalise,
    rows_to_table,
)
from trailguard.ingest.sources import Source, SourceObject, inside, partition_of, skip_reason
from trailguard.store import fs
from trailguard.store.events import (
    REJECTED_RECORD_SCHEMA,
    EventStore,
    KeyIndex,
    StagedIds,
    event_days,
    new_run_id,
    parquet_write_options,
    split_by_day,
)
from trailguard.store.fs import as_path, read_parquet

log = logging.getLogger(__name__)

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
    conflicts: int = 0  # of the duplicates: a known eventID with other content, kept in quarantine/conflicts/
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
            f"{self.quarantined} quarantined"
            + (
                f"; {self.conflicts} CONFLICTING (known eventID, other content: kept in quarantine/conflicts/, "
                "a sign of tampering)"
                if self.conflicts
                else ""
            ),
            f"dates        {_date_span(self.dates)}",
            f"seconds      {self.seconds:.1f}"
            + (
                f" ({self.records / self.seconds:,.0f} records/s)"
                if self.seconds > 0 and self.records
                else ""
            ),
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


def decode_object(key: str, data: bytes, limits: IngestLimits | None = None) -> DecodedObject:
    """Turn one CloudTrail file's bytes into events; raise ObjectError if the file is unreadable.

    An ordinary file is decoded straight into columns (:func:`~trailguard.schema.file_to_table`);
    anything else goes record by record, so that each odd record is kept or rejected on its own.
    """
    limits = limits or IngestLimits()
    document, note = _unpack(data, limits)
    return decode_object_document(key, document, note, limits)


_BOM = b"\xef\xbb\xbf"
_BOM_NOTE = "UTF-8 byte order mark removed"


def _unpack(data: bytes, limits: IngestLimits) -> tuple[bytes, str | None]:
    """The JSON document inside an object's bytes (gunzipped, byte order mark removed), with a note of
    any repair. Never holds more than ``limits.max_file_bytes`` of document."""
    if not data:
        raise ObjectError("empty file (0 bytes)")
    if data[:2] == b"\x1f\x8b":
        try:
            data = gunzip(data, limits.max_file_bytes)
        except LimitError as exc:
            raise ObjectError(str(exc)) from exc
        except INFLATE_ERRORS as exc:
            raise ObjectError(f"not a readable gzip file: {exc}") from exc
        if not data:
            raise ObjectError("empty file after gunzip")
    elif len(data) > limits.max_file_bytes:
        raise ObjectError(_too_large(len(data), limits))
    if data.startswith(_BOM):
        return data[3:], _BOM_NOTE
    return data, None


def _too_large(size: int, limits: IngestLimits) -> str:
    return (
        f"is {size:,} bytes, over the {limits.max_file_bytes:,}-byte limit on a file's size "
        "(TRAILGUARD_INGEST_MAX_FILE_BYTES)"
    )


def _check_count(records: int, limits: IngestLimits) -> None:
    if records > limits.max_records:
        raise ObjectError(
            f"holds {records:,} records, over the limit of {limits.max_records:,} records in one "
            "file (TRAILGUARD_INGEST_MAX_RECORDS_PER_FILE)"
        )


def _spans(document: bytes, limits: IngestLimits) -> list[tuple[int, int]] | None:
    """The records' boundaries of a document large enough to matter (None for the ordinary small file):
    found before anything is decoded, so that an over-full file is refused at no cost in memory."""
    if len(document) <= min(SCAN_ABOVE_BYTES, limits.max_record_bytes) or not RECORDS_START.match(document):
        return None  # small, or another shape (NDJSON, an array...): read whole, its records then counted
    try:
        return record_spans(document, limits)
    except LimitError as exc:
        raise ObjectError(str(exc)) from exc
    except ValueError as exc:
        raise ObjectError(
            f"not readable record by record: {exc} (this file is {len(document):,} bytes)"
        ) from exc


def _short_records(spans: list[tuple[int, int]], limits: IngestLimits) -> bool:
    return all(end - start <= limits.max_record_bytes for start, end in spans)


def _decode_records(
    key: str,
    document: bytes,
    note: str | None,
    limits: IngestLimits,
    spans: list[tuple[int, int]] | None = None,
) -> DecodedObject:
    """The record-by-record path: any JSON, each record kept or rejected with its reason. A large file
    (``spans`` found) is parsed one record at a time, so memory follows the largest record, not the file."""
    if spans is not None:
        return _decode_spans(key, document, spans, note, limits)
    records, rejected, shape_note = records_of(key, document)
    note = "; ".join(n for n in (note, shape_note) if n) or None
    _check_count(len(records), limits)
    rows: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        if record is _REJECTED:
            continue
        try:
            rows.append(normalise(record, key))
        except RecordError as exc:
            rejected.append(_rejection(key, index, str(exc), record))
    return DecodedObject(table=rows_to_table(rows), rejected=rejected, records_read=len(records), note=note)


def _decode_spans(
    key: str, document: bytes, spans: list[tuple[int, int]], note: str | None, limits: IngestLimits
) -> DecodedObject:
    """Each record of a large file parsed on its own; a record over ``max_record_bytes`` is rejected with
    the start of its text (the file's bytes are kept whole in quarantine)."""
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    notes = {note} if note else set()
    for index, (start, end) in enumerate(spans):
        text = document[start:end]
        if end - start > limits.max_record_bytes:
            reason = (
                f"record is {end - start:,} bytes, over the {limits.max_record_bytes:,}-byte limit on one "
                "record (TRAILGUARD_INGEST_MAX_RECORD_BYTES)"
            )
            rejected.append(
                {
                    "source_key": key,
                    "record_index": index,
                    "reason": reason,
                    "eventID": None,
                    "raw": text[:4096].decode("utf-8", "replace") + "…[truncated]",
                }
            )
            notes.add("a record over the size limit was rejected")
            continue
        try:
            record, parse_note = _parse_json(text)
        except ObjectError as exc:
            rejected.append(
                {
                    "source_key": key,
                    "record_index": index,
                    "reason": str(exc),
                    "eventID": None,
                    "raw": text[:4096].decode("utf-8", "replace"),
                }
            )
            continue
        if parse_note:
            notes.add(parse_note)
        try:
            rows.append(normalise(record, key))
        except RecordError as exc:
            rejected.append(_rejection(key, index, str(exc), record))
    return DecodedObject(
        table=rows_to_table(rows),
        rejected=rejected,
        records_read=len(spans),
        note="; ".join(sorted(notes)) or None,
    )


_REJECTED = object()  # a place in ``records`` whose record was rejected while its shape was read
_RECORD_KEYS = ("eventID", "eventTime", "eventName", "eventSource")


def records_of(key: str, document: bytes) -> tuple[list[Any], list[dict[str, Any]], str | None]:
    """The records of a document in any shape CloudTrail evidence comes in, told from the content:
    CloudTrail's ``{"Records": [...]}``, a JSON array of records, ``aws cloudtrail lookup-events`` output
    (``{"Events": [{"CloudTrailEvent": "<JSON>"}, ...]}``), NDJSON (one record per line: SIEM, Athena and
    CloudTrail Lake exports), or one bare record. Returns the records (index = record index), rejections
    of records that could not be read as JSON (same rules and fields as any other rejection), and a note of
    any repair (the shape itself is no repair: the manifest keeps no copy for it). Raises ObjectError for
    none of these."""
    try:
        parsed, note = _parse_json(document)
    except ObjectError as not_json:
        lines = _ndjson_records(key, document)
        if lines is None:
            raise not_json from None
        return lines
    if isinstance(parsed, dict) and "Records" in parsed:
        records = parsed["Records"]
        if not isinstance(records, list):
            raise ObjectError(f"Records is a {_kind(records)}, expected a list")
        return records, [], note
    if isinstance(parsed, dict) and isinstance(parsed.get("Events"), list):
        return _lookup_events(key, parsed["Events"], note)
    if isinstance(parsed, list) and any(isinstance(r, dict) for r in parsed):
        return parsed, [], note
    if isinstance(parsed, dict) and any(k in parsed for k in _RECORD_KEYS):
        return [parsed], [], note
    if isinstance(parsed, dict):
        raise ObjectError("JSON object has no Records key: not a CloudTrail log file")
    raise ObjectError(f"top-level JSON is a {_kind(parsed)}, expected an object with a Records list, a list of "
                      "records, lookup-events output or NDJSON")  # fmt: skip


def _lookup_events(
    key: str, events: list[Any], note: str | None
) -> tuple[list[Any], list[dict[str, Any]], str | None]:
    """``aws cloudtrail lookup-events`` output: each event's ``CloudTrailEvent`` is the record as a JSON string."""
    records: list[Any] = []
    rejected: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        text = event.get("CloudTrailEvent") if isinstance(event, dict) else None
        try:
            record = orjson.loads(text) if isinstance(text, str) else None
        except orjson.JSONDecodeError as exc:
            records.append(_REJECTED)
            rejected.append(_rejection(key, index, f"CloudTrailEvent is not valid JSON: {exc}", event))
            continue
        if not isinstance(record, dict):
            records.append(_REJECTED)
            rejected.append(
                _rejection(key, index, "lookup-events entry without a CloudTrailEvent JSON object", event)
            )
            continue
        records.append(record)
    return records, rejected, note


def _ndjson_records(key: str, document: bytes) -> tuple[list[Any], list[dict[str, Any]], str | None] | None:
    """One JSON record per line; None unless the first non-blank line is a JSON object (so plain text and
    broken JSON stay "not valid JSON"). A line that is not JSON is rejected as a record, with its number."""
    lines = document.split(b"\n")
    first = next((line for line in lines if line.strip()), b"")
    try:
        if not isinstance(orjson.loads(first), dict):
            return None
    except orjson.JSONDecodeError:
        return None
    records: list[Any] = []
    rejected: list[dict[str, Any]] = []
    note = None
    index = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record, line_note = _parse_json(line)
            note = note or line_note
        except ObjectError as exc:
            records.append(_REJECTED)
            rejected.append(
                _rejection(key, index, f"line {number}: {exc}", line.decode("utf-8", errors="replace"))
            )
        else:
            records.append(record)
        index += 1
    return records, rejected, note


def _parse_json(data: bytes) -> tuple[Any, str | None]:
    """orjson first (fast); the stdlib for what orjson refuses but CloudTrail-ish files contain
    (NaN, integers beyond 64 bits); invalid UTF-8 is replaced, not fatal, and noted. eventIDs keep their
    exact bytes (see :func:`exact_id`): a lossy repair must never make two ids one."""
    try:
        return orjson.loads(data), None
    except orjson.JSONDecodeError as fast_error:
        note = None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("utf-8", errors="replace")
            note = "invalid UTF-8 replaced with U+FFFD (in eventIDs escaped as \\xNN)"
        try:
            document = json.loads(text)
            if note:
                _restore_ids(document, json.loads(data.decode("utf-8", errors="surrogateescape")))
            return document, note
        except RecursionError as exc:
            raise ObjectError("JSON nested too deeply to read") from exc
        except ValueError as exc:
            raise ObjectError(f"not valid JSON: {fast_error}") from exc


def _restore_ids(repaired: Any, exact: Any) -> None:
    """Put back the exact eventIDs (escaped where they are not UTF-8) into records read with U+FFFD."""
    if isinstance(repaired, dict) and isinstance(repaired.get("Records"), list) and isinstance(exact, dict):
        pairs = zip(repaired["Records"], exact.get("Records") or [], strict=False)
    else:
        pairs = zip([repaired], [exact], strict=True)
    for record, original in pairs:
        if (
            isinstance(record, dict)
            and isinstance(original, dict)
            and isinstance(original.get("eventID"), str)
        ):
            record["eventID"] = exact_id(original["eventID"])


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


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
    sha256: str | None = None  # of the uncompressed content, for files (not CloudWatch hours)


@dataclass
class _StagedPart:
    """One day's events from one chunk, written as a parquet file in the staging folder."""

    day: str
    path: str
    rows: int
    ids: StagedIds | None


@dataclass
class _ChunkResult:
    outcomes: list[_ObjectOutcome]
    parts: list[_StagedPart]


def decode_chunk(
    tasks: list[_Task], limits: IngestLimits | None = None
) -> tuple[list[_ObjectOutcome], pa.Table | None]:
    """Fetch and decode a chunk of objects: what became of each, and their events in object order.

    Ordinary files are decoded together (:func:`~trailguard.schema.files_to_tables`); a file that needs
    care goes record by record, as in :func:`decode_object`."""
    limits = limits or IngestLimits()
    outcomes: list[_ObjectOutcome] = []
    unpacked: list[tuple[_ObjectOutcome, bytes, bytes, str | None]] = []
    tables: dict[int, pa.Table] = {}  # by the object's place in the chunk: events stay in listing order
    place: dict[int, int] = {}
    for task in tasks:
        outcome = _ObjectOutcome(task.key, task.size, task.etag, "ingested")
        place[id(outcome)] = len(outcomes)
        outcomes.append(outcome)
        if task.data is None and task.size > limits.max_file_bytes:  # not even read: it stays at its source
            outcome.status, outcome.note = "quarantined", _too_large(task.size, limits) + "; not copied"
            continue
        data = task.data if task.data is not None else task.fetch()  # type: ignore[misc]
        try:
            document, note = _unpack(data, limits)
        except ObjectError as exc:
            outcome.status, outcome.note, outcome.data = "quarantined", str(exc), data
            continue
        if not task.key.startswith("cloudwatch://"):  # a file as delivered, which a digest may list
            outcome.sha256 = _content_sha256(document, note)
        if len(document) <= min(SCAN_ABOVE_BYTES, limits.max_record_bytes):
            unpacked.append((outcome, data, document, note))
            continue
        try:  # a large file: on its own, now (scanned before it is decoded), so that one at a time is held
            tables[place[id(outcome)]] = _decode_large(outcome, document, note, limits)
        except ObjectError as exc:
            outcome.status, outcome.note, outcome.data = "quarantined", str(exc), data
            continue
        if outcome.note:
            outcome.data = data
    fast = files_to_tables([(document, outcome.key) for outcome, _, document, _ in unpacked])
    for (outcome, data, document, note), table in zip(unpacked, fast, strict=True):
        if table is None:
            try:
                decoded = _decode_records(outcome.key, document, note, limits)
            except ObjectError as exc:
                outcome.status, outcome.note, outcome.data = "quarantined", str(exc), data
                continue
            table, outcome.rejected, outcome.note = decoded.table, decoded.rejected, decoded.note
            outcome.records_read = decoded.records_read
        elif table.num_rows > limits.max_records:
            outcome.status, outcome.data = "quarantined", data
            outcome.note = f"holds {table.num_rows:,} records, over the limit of {limits.max_records:,} (TRAILGUARD_INGEST_MAX_RECORDS_PER_FILE)"
            continue
        else:
            outcome.records_read, outcome.note = table.num_rows, note
        if outcome.note:  # read with a repair: the original bytes are kept too
            outcome.data = data
        tables[place[id(outcome)]] = table
    return outcomes, (pa.concat_tables([tables[i] for i in sorted(tables)]) if tables else None)


def _content_sha256(document: bytes, note: str | None) -> str:
    """SHA-256 of the uncompressed file as delivered (a removed byte order mark counted back in): what
    CloudTrail's digest states for it, checked later by :mod:`trailguard.integrity`."""
    digest = hashlib.sha256(_BOM if note == _BOM_NOTE else b"")
    digest.update(document)
    return digest.hexdigest()


def _decode_large(
    outcome: _ObjectOutcome, document: bytes, note: str | None, limits: IngestLimits
) -> pa.Table:
    """A large document: scanned for its records' boundaries first (refused if over the limits), then
    decoded whole when its records are within bounds, else record by record."""
    decoded = decode_object_document(outcome.key, document, note, limits)
    outcome.rejected, outcome.note, outcome.records_read = (
        decoded.rejected,
        decoded.note,
        decoded.records_read,
    )
    return decoded.table


def decode_object_document(
    key: str, document: bytes, note: str | None, limits: IngestLimits
) -> DecodedObject:
    """A document's events, refused past the limits (see :mod:`trailguard.ingest.limits`)."""
    spans = _spans(document, limits)
    table = file_to_table(document, key) if spans is None or _short_records(spans, limits) else None
    if table is None:
        return _decode_records(key, document, note, limits, spans)
    _check_count(table.num_rows, limits)
    return DecodedObject(table=table, rejected=[], records_read=table.num_rows, note=note)


def stage_chunk(
    tasks: list[_Task], folder: str, seq: int, limits: IngestLimits | None = None
) -> _ChunkResult:
    """Decode a chunk and write its events, one parquet part per day, into ``folder`` (a worker's whole job:
    only the outcomes and the parts' names travel back)."""
    outcomes, table = decode_chunk(tasks, limits)
    parts: list[_StagedPart] = []
    if table is not None and table.num_rows:
        days = event_days(table.column("eventTime"))
        for day, part in split_by_day(table, days, np.ones(len(days), dtype=bool)):
            part = part.combine_chunks()  # one batch per file or group: the writer is faster on one
            path = os.path.join(folder, f"{seq:08d}-{day}.parquet")
            pq.write_table(part, path, **parquet_write_options(part.schema))
            parts.append(_StagedPart(day, path, part.num_rows, StagedIds.of(part)))
    return _ChunkResult(outcomes, parts)


def _stage_in_order(
    chunks: Iterable[list[_Task]], workers: int, folder: Path, limits: IngestLimits | None = None
) -> Iterator[_ChunkResult]:
    """Stage the chunks here, or in ``workers`` processes a few chunks ahead; results in chunk order."""
    if workers <= 1:
        for seq, chunk in enumerate(chunks):
            yield stage_chunk(chunk, str(folder), seq, limits)
        return
    pool = ProcessPoolExecutor(
        workers, mp_context=_pool_context(), initializer=_start_worker, initargs=(os.getpid(),)
    )
    try:
        pending: deque[Future[_ChunkResult]] = deque()
        for seq, chunk in enumerate(chunks):
            pending.append(pool.submit(stage_chunk, chunk, str(folder), seq, limits))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _pool_context() -> multiprocessing.context.BaseContext:
    """Fork on Linux: instant, and the caller's main module is not imported again (spawn and forkserver
    would run an unguarded script a second time). Workers only decode: no logging, no threads of their own."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _start_worker(parent: int | None = None) -> None:
    """Set up a worker for a stream of like chunks. The objects it inherited (modules, the parent's data)
    live as long as it does: the garbage collector stops walking them. Freed memory is kept for the next
    chunk (glibc only) instead of being handed back to the system and faulted in again: each chunk
    allocates and frees the same few hundred MB, and by default glibc maps large blocks afresh each time
    (those page faults were about half the workers' system time). Arrow allocates through glibc too, for
    the same reason: its default allocator hands memory back between chunks (measured: a third fewer page
    faults, 5-8% faster). A worker dies with its parent (Linux: the parent-death signal), so a ``kill -9``
    of the ingest leaves no orphan decoding on."""
    if parent is not None and sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was asked for
            os._exit(1)
    gc.freeze()
    pa.set_memory_pool(pa.system_memory_pool())
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's largest: blocks up to 32 MB come from the heap
        mallopt(_M_TRIM_THRESHOLD, 256 * 2**20)  # keep up to 256 MB free at the heap's top


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


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
    limits: IngestLimits | None = None,
    only: Callable[[str], bool] | None = None,
    reread: bool = False,
) -> IngestSummary:
    """Ingest every object the source lists (within ``start``..``end`` by delivery date).

    Chunks of objects are decoded and written as staged parquet parts (here, or by ``workers``
    processes); this process alone moves the parts into the store, less the eventIDs already there, in
    listing order. Objects are recorded in the manifest every ``batch_records`` records, after their
    events are in, so a crash re-reads at most one batch and the eventID check keeps the store free of
    duplicates. The result is the same with any number of workers. ``progress(objects, records)`` is
    called as objects are listed and read. ``limits`` bound what one object may hold (memory); ``only``
    keeps the keys it accepts and ``reread`` reads them even if the manifest has them (a repair).
    """
    keep_apart(source, store)
    run_id = new_run_id()
    summary = IngestSummary(source=source.uri, run_id=run_id)
    started = time.perf_counter()
    batch = _Batch()
    touched: set[str] = set()

    def report() -> None:
        if progress:
            progress(summary.objects, summary.records)

    staging = store.local_staging_dir(run_id)
    staging.mkdir(parents=True, exist_ok=True)
    try:
        with store.commit_lock(f"ingest {source.uri} ({run_id})"):
            store.record_run(run_id, source.uri)
            listing = _list(
                source,
                store,
                start,
                end,
                summary,
                batch,
                workers,
                _chunk_bytes(batch_records),
                report,
                only,
                reread=reread,
            )
            for result in _stage_in_order(listing, workers, staging, limits):
                _take_outcomes(result.outcomes, batch, store, run_id, summary)
                _commit_parts(result.parts, batch, store, run_id, summary, touched)
                report()
                if batch.records >= batch_records:
                    _flush(batch, store, run_id)
            _flush(batch, store, run_id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary.dates = sorted(touched)
    summary.seconds = time.perf_counter() - started
    log.info("ingest %s: %s", source.uri, "; ".join(summary.lines()[1:]))
    return summary


def keep_apart(source: Source, store: EventStore) -> None:
    """The data root is never read as a source: a source folder inside it is refused, and a data root
    inside the source folder is left out of the listing (else each run would read its own quarantine)."""
    folder = getattr(source, "folder", None)
    if folder is None or fs.is_remote(store.root):
        return
    root, real = os.path.realpath(store.root), os.path.realpath(folder)
    if inside(real, root):
        raise ValueError(
            f"the source folder {folder} is inside the data root {store.root}: point --source at "
            "the CloudTrail logs, not at TrailGuard's own data"
        )
    if inside(root, real):
        source.exclude(store.root)  # type: ignore[attr-defined]


def _chunk_bytes(batch_records: int) -> int:
    return min(CHUNK_BYTES, max(batch_records * 32, 1))


@dataclass
class _Batch:
    rejected: list[dict[str, Any]] = field(default_factory=list)
    manifest: list[dict[str, Any]] = field(default_factory=list)
    new_per_key: dict[str, int] = field(default_factory=dict)
    records: int = 0
    keys: KeyIndex = field(default_factory=KeyIndex)  # eventIDs committed in this batch, on any day
    conflicts: list[dict[str, Any]] = field(default_factory=list)

    def clear(self) -> None:
        self.rejected, self.manifest, self.new_per_key, self.records = [], [], {}, 0
        self.conflicts = []
        self.keys = KeyIndex()


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
    only: Callable[[str], bool] | None = None,
    prefix: str | None = None,
    reread: bool = False,
) -> Iterator[list[_Task]]:
    """The objects to read, in chunks of about ``chunk_bytes``; objects to skip go straight to the batch.
    ``only`` keeps the keys of one partition."""
    seen = {} if reread else store.manifest_index()
    chunk: list[_Task] = []
    size = 0
    for obj in source.objects(start, end, prefix=prefix) if prefix else source.objects(start, end):
        if only is not None and not only(obj.key):
            continue
        summary.objects += 1
        reason = obj.skip or (skip_reason(obj.key) if obj.is_file else None)
        if reason is None and _already_ingested(seen, obj):
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


def _already_ingested(seen: dict[str, tuple[int, str, str]], obj: SourceObject) -> bool:
    """Whether the manifest holds this object with the same size and etag (read before, not changed since)."""
    previous = seen.get(obj.key)
    return bool(previous) and previous[0] == obj.size and previous[1] == obj.etag


def _task(obj: SourceObject, workers: int) -> _Task:
    task = _Task(obj.key, obj.size, obj.etag)
    if workers <= 1 or _travels(obj.fetch):
        task.fetch = obj.fetch
    else:
        task.data = obj.fetch()
    return task


def _take_outcomes(
    outcomes: list[_ObjectOutcome], batch: _Batch, store: EventStore, run_id: str, summary: IngestSummary
) -> None:
    """Count a chunk's objects into the batch; quarantine the bytes of bad and repaired objects."""
    for outcome in outcomes:
        if outcome.status == "quarantined":
            store.quarantine_object(outcome.key, outcome.data or b"", outcome.note or "", run_id)
            summary.objects_quarantined += 1
            batch.manifest.append(_entry(outcome, "quarantined", error=outcome.note))
            log.warning("quarantined %s: %s", outcome.key, outcome.note)
            continue
        if outcome.note:
            store.quarantine_object(
                outcome.key, outcome.data or b"", f"ingested with repair: {outcome.note}", run_id
            )
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


def _commit_parts(
    parts: Iterable[_StagedPart],
    batch: _Batch,
    store: EventStore,
    run_id: str,
    summary: IngestSummary,
    touched: set[str],
) -> None:
    """Move staged parts into the store (less duplicates), counting new events per object."""
    for part in parts:

        def dropped(rows: pa.Table, day: str = part.day) -> None:
            found = find_conflicts(store, rows, [day, *sorted(touched - {day})], run_id)
            batch.conflicts += found
            summary.conflicts += len(found)

        new_per_key = store.add_staged_part(
            as_path(part.path), part.day, run_id, batch.keys, part.ids, dropped
        )
        new = sum(new_per_key.values())
        summary.new += new
        summary.duplicates += part.rows - new
        if new:
            touched.add(part.day)
        for key, count in new_per_key.items():
            batch.new_per_key[key] = batch.new_per_key.get(key, 0) + count


def find_conflicts(
    store: EventStore, dropped: pa.Table, days: list[str], run_id: str
) -> list[dict[str, Any]]:
    """The dropped duplicates whose content differs from the stored version under their eventID, each with
    a pointer to that version. The stored version is looked for on the duplicate's day first, then on the
    other days this run wrote (an eventID seen earlier in the run at another eventTime)."""
    versions: dict[str, tuple[str, str, str, Any]] = {}
    wanted = set(dropped.column("eventID").to_pylist())
    for day in days:
        for path, rows in store.find_events(
            day, wanted - versions.keys(), ["raw", "source_key", "eventTime"]
        ):
            for event_id, raw, key, moment in zip(
                *(rows.column(c).to_pylist() for c in rows.column_names), strict=True
            ):
                versions.setdefault(event_id, (raw, str(path.relative_to(store.root)), key, moment))
        if versions.keys() >= wanted:
            break
    conflicts = []
    for row in dropped.select(["eventID", "eventTime", "raw", "source_key"]).to_pylist():
        stored = versions.get(row["eventID"])
        if stored is None or _same_record(row["raw"], stored[0]):
            continue  # a plain redelivery (or a version validation has moved to its own quarantine)
        conflicts.append(
            {
                **row,
                "day": str(row["eventTime"].date()),
                "stored_file": stored[1],
                "stored_source_key": stored[2],
                "stored_eventTime": stored[3],
                "run_id": run_id,
            }
        )
        log.warning(
            "eventID %r came again with other content (%s; stored version in %s): kept in "
            "quarantine/conflicts/",
            row["eventID"],
            row["source_key"],
            stored[1],
        )
    return conflicts


def _same_record(a: str | None, b: str | None) -> bool:
    """Same content: the same text, or the same JSON value (key order and spacing aside)."""
    if a == b:
        return True
    try:
        return orjson.loads(a or "null") == orjson.loads(b or "null")
    except orjson.JSONDecodeError:
        try:
            return json.loads(a or "null") == json.loads(b or "null")
        except (ValueError, RecursionError):
            return False


def _flush(batch: _Batch, store: EventStore, run_id: str) -> None:
    """Record a batch whose events are in: rejected records first, then the manifest that says so."""
    if not (batch.rejected or batch.manifest or batch.conflicts):
        return
    for entry in batch.manifest:
        entry["run_id"] = run_id
        if entry["status"] == "ingested":
            entry["records_new"] = batch.new_per_key.get(entry["key"], 0)
            entry["records_duplicate"] = (
                entry["records_read"] - entry["records_quarantined"] - entry["records_new"]
            )
    for rejected in batch.rejected:
        rejected["run_id"] = run_id
    store.quarantine_records(batch.rejected, run_id)
    store.quarantine_conflicts(batch.conflicts, run_id)
    store.write_manifest(batch.manifest, run_id)
    batch.clear()


def _entry(
    obj: SourceObject | _ObjectOutcome, status: str, *, error: str | None = None, **counts: int
) -> dict[str, Any]:
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
        "sha256": getattr(obj, "sha256", None),
    }


# -- the same run as Airflow tasks: plan, stage per partition (mapped), commit ---------------------------
def plan_partitions(
    source: Source, store: EventStore, *, start: date | None = None, end: date | None = None
) -> list[dict[str, Any]]:
    """The source's partitions (account x region x delivery day) holding objects not yet ingested, with
    their object count and bytes; objects outside the AWS layout form one partition of their own.

    Digest and Insight files are left out: they hold no events (a one-process :func:`ingest` records them
    in the manifest as skipped)."""
    keep_apart(source, store)
    seen = store.manifest_index()
    found: dict[str | None, dict[str, Any]] = {}
    for obj in source.objects(start, end):
        if obj.skip or (obj.is_file and skip_reason(obj.key)):
            continue
        if _already_ingested(seen, obj):
            continue
        part = partition_of(obj.key)
        prefix = part["prefix"] if part else None
        entry = found.setdefault(prefix, {**(part or _OTHER_PARTITION), "objects": 0, "bytes": 0})
        entry["objects"] += 1
        entry["bytes"] += obj.size
    return sorted(found.values(), key=lambda p: (p["day"] or "", p["account"] or "", p["region"] or ""))


_OTHER_PARTITION = {"account": None, "region": None, "day": None, "prefix": None}


def partition_label(partition: dict[str, Any]) -> str:
    """``account/region/day`` (what the Airflow UI shows for a mapped task)."""
    if partition.get("prefix") is None:
        return "other (not in the AWS layout)"
    return f"{partition['account']}/{partition['region']}/{partition['day']}"


def group_partitions(
    partitions: list[dict[str, Any]], max_groups: int = 32, weight: str = "bytes"
) -> list[list[dict[str, Any]]]:
    """Partitions as at most ``max_groups`` lists of about equal ``weight`` (one task each); each partition
    its own group when there are few. Groups keep the plan's order within them."""
    if len(partitions) <= max_groups:
        return [[p] for p in partitions]
    loads = [(0, i) for i in range(max_groups)]
    members: list[list[int]] = [[] for _ in range(max_groups)]
    for index in sorted(range(len(partitions)), key=lambda i: -partitions[i][weight]):
        load, group = heapq.heappop(loads)
        members[group].append(index)
        heapq.heappush(loads, (load + partitions[index][weight], group))
    return [[partitions[i] for i in sorted(group)] for group in members if group]


def group_label(partitions: list[dict[str, Any]]) -> str:
    """What the Airflow UI shows for one stage task."""
    if len(partitions) == 1:
        return partition_label(partitions[0])
    return (
        f"{len(partitions)} partitions: {partition_label(partitions[0])} .. {partition_label(partitions[-1])}"
    )


def stage(
    source: Source,
    store: EventStore,
    partition: dict[str, Any],
    stage_id: str,
    *,
    start: date | None = None,
    end: date | None = None,
    workers: int = 1,
    limits: IngestLimits | None = None,
) -> dict[str, Any]:
    """Read one partition's new objects into the staging folder ``stage_id`` (parts, rejected records and
    manifest entries, committed later by :func:`commit`); bad objects go to quarantine at once.

    A retry starts the stage afresh. Returns the stage's counts.
    """
    keep_apart(source, store)
    target = store.staging_dir(stage_id)
    fs.rmtree(target)
    prefix = partition.get("prefix")
    if prefix is None:

        def only(key: str) -> bool:
            return partition_of(key) is None
    else:

        def only(key: str) -> bool:
            return key.startswith(prefix)

    summary = IngestSummary(source=source.uri, run_id=stage_id)
    batch = _Batch()
    parts: list[dict[str, Any]] = []
    listing = _list(
        source, store, start, end, summary, batch, workers, CHUNK_BYTES, lambda: None, only, prefix
    )
    with fs.written_locally(
        target, last="stage.json"
    ) as folder:  # on S3: uploaded at the end, stage.json last
        folder.mkdir(parents=True, exist_ok=True)
        for result in _stage_in_order(listing, workers, folder, limits):
            _take_outcomes(result.outcomes, batch, store, stage_id, summary)
            parts += [{"day": p.day, "file": os.path.basename(p.path), "rows": p.rows} for p in result.parts]
        if batch.rejected:
            table = pa.Table.from_pylist(
                [{**r, "run_id": stage_id} for r in batch.rejected], schema=REJECTED_RECORD_SCHEMA
            )
            pq.write_table(table, folder / "rejected.parquet")
        counts = {name: value for name, value in summary.as_dict().items() if isinstance(value, int)}
        document = {
            "source": source.uri,
            "partition": partition,
            "counts": counts,
            "parts": parts,
            "manifest": [{**e, "seen_at": e["seen_at"].isoformat()} for e in batch.manifest],
        }
        (folder / "stage.json").write_text(json.dumps(document, indent=1))
    return counts


def commit(
    store: EventStore, stage_ids: Iterable[str], *, source: str = "", run_id: str | None = None
) -> IngestSummary:
    """Move staged partitions into the store, in the order given, less duplicates; record their objects
    in the manifest. A stage already committed (its folder gone) is skipped, so a retry is safe."""
    run_id = run_id or new_run_id()
    summary = IngestSummary(source=source, run_id=run_id)
    started = time.perf_counter()
    touched: set[str] = set()
    with store.commit_lock(f"commit {run_id}"):
        store.record_run(run_id, source)
        keys = KeyIndex()
        for stage_id in stage_ids:
            folder = store.staging_dir(stage_id)
            if not (folder / "stage.json").exists():
                log.warning("stage %s: nothing staged or already committed", stage_id)
                continue
            document = json.loads((folder / "stage.json").read_text())
            for name, value in document["counts"].items():
                setattr(summary, name, getattr(summary, name) + value)
            batch = _Batch(keys=keys)
            batch.manifest = [
                {**e, "seen_at": datetime.fromisoformat(e["seen_at"])} for e in document["manifest"]
            ]
            if (folder / "rejected.parquet").exists():
                batch.rejected = read_parquet(folder / "rejected.parquet").to_pylist()
            staged = [
                _StagedPart(p["day"], str(folder / p["file"]), p["rows"], None) for p in document["parts"]
            ]
            _commit_parts(
                (p for p in staged if as_path(p.path).exists()), batch, store, run_id, summary, touched
            )
            _flush(batch, store, run_id)
            fs.rmtree(folder)
    summary.dates = sorted(touched)
    summary.seconds = time.perf_counter() - started
    log.info("commit %s: %s", run_id, "; ".join(summary.lines()[1:]))
    return summary


# -- a damaged day read again -------------------------------------------------------------------------------
_PART_RUN = re.compile(r"^part-(\d{8}T\d{6}-[0-9a-f]{8})-")


@dataclass
class RepairResult:
    day: str
    damaged_files: list[str]
    sources: list[str]
    objects: int
    summaries: list[IngestSummary]
    missing: list[str]
    repaired: bool

    def lines(self) -> list[str]:
        out = [
            f"repair {self.day}: {len(self.damaged_files)} damaged file(s) aside: {', '.join(self.damaged_files) or '-'}",
            f"  read again {self.objects} object(s) from {', '.join(self.sources) or '-'}",
        ]
        for summary in self.summaries:
            out += [f"  {line}" for line in summary.lines()[1:4]]
        if self.missing:
            out.append(
                f"  {len(self.missing)} object(s) are no longer at the source: their events are not restored; "
                "the day stays marked damaged"
            )
        out.append(
            f"  repaired: now validate, score and report {self.day} again"
            if self.repaired
            else "  NOT repaired"
        )
        return out


def repair_day(
    store: EventStore,
    day: date | str,
    *,
    source: Source | None = None,
    open_source: Callable[[str], Source] | None = None,
    workers: int = 1,
    limits: IngestLimits | None = None,
) -> RepairResult:
    """Read a damaged day's objects again from their sources (those the manifest says the damaged parts'
    runs read; with no such record, every object delivered the day before, on the day and after it). The
    eventID index skips what the store still holds, so only the lost events come back. The day is marked
    whole once every object was read again."""
    from trailguard.ingest.sources import key_date

    day = date.fromisoformat(str(day)[:10]) if not isinstance(day, date) else day
    store.partition_files(day, allow_damaged=True)  # finds a truncated file not seen yet
    damage = store.damaged(day) or {"files": []}
    files = [f["file"] for f in damage["files"]]
    runs = {m.group(1) for f in files if (m := _PART_RUN.match(f.rsplit("/", 1)[-1]))}
    manifest = store.read_manifest().to_pylist()
    ingested = {e["key"]: e for e in manifest if e["status"] == "ingested"}
    keys = {e["key"] for e in manifest if e["status"] == "ingested" and e["run_id"] in runs}
    if (
        not keys
    ):  # no record of the runs (a compacted part, an older store): the objects delivered around the day
        near = {day.fromordinal(day.toordinal() + d) for d in (-1, 0, 1)}
        keys = {k for k in ingested if key_date(k) in near or key_date(k) is None}
    recorded = store.run_sources()
    uris = sorted({recorded[r] for r in runs if r in recorded} or set(recorded.values()))
    sources = [source] if source is not None else [open_source(u) for u in uris] if open_source else []
    if not sources:
        raise ValueError(f"no recorded source for {day}: pass --source")
    listed: set[str] = set()

    def wanted(key: str) -> bool:
        if key in keys:
            listed.add(key)
            return True
        return False

    summaries = [ingest(s, store, workers=workers, limits=limits, only=wanted, reread=True) for s in sources]
    missing = sorted(keys - listed)
    repaired = not missing
    if repaired:
        store.mark_repaired(day)
    return RepairResult(
        day.isoformat(), files, [s.uri for s in sources], len(keys), summaries, missing, repaired
    )
