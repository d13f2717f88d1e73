"""Read CloudTrail objects from a source into the event store: nothing duplicated, nothing lost.

Every object listed ends as exactly one of: ingested, skipped (digest, insight, already ingested, not a
log file) or quarantined (its bytes kept with the reason). Every record read ends as new, duplicate or
quarantined (kept with the reason). The counts in :class:`IngestSummary` add up.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import orjson
import pyarrow.compute as pc

from trailguard.schema import RecordError, dumps, normalise, rows_to_table
from trailguard.sources import Source, SourceObject, skip_reason
from trailguard.store import EventStore, new_run_id

log = logging.getLogger(__name__)

MAX_OBJECT_BYTES = 512 * 1024 * 1024  # a CloudTrail file is at most tens of MB uncompressed


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


@dataclass
class DecodedObject:
    """What one object gave: event rows, records rejected (with reasons) and a note for the manifest."""

    rows: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    records_read: int
    note: str | None = None


def decode_object(key: str, data: bytes) -> DecodedObject:
    """Turn one CloudTrail file's bytes into event rows; raise ObjectError if the file is unreadable."""
    if not data:
        raise ObjectError("empty file (0 bytes)")
    note = None
    if data[:2] == b"\x1f\x8b":
        try:
            data = _gunzip(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ObjectError(f"not a readable gzip file: {exc}") from exc
        if not data:
            raise ObjectError("empty file after gunzip")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        note = "UTF-8 byte order mark removed"
    document, parse_note = _parse_json(data)
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
    return DecodedObject(rows=rows, rejected=rejected, records_read=len(records), note=note)


def _gunzip(data: bytes) -> bytes:
    out = gzip.decompress(data)
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


def ingest(
    source: Source,
    store: EventStore,
    *,
    start: date | None = None,
    end: date | None = None,
    batch_records: int = 250_000,
    progress: Callable[[int, int], None] | None = None,
) -> IngestSummary:
    """Ingest every object the source lists (within ``start``..``end`` by delivery date).

    Objects are read in batches of about ``batch_records`` records; each batch is deduplicated and
    written before its objects are recorded in the manifest, so a crash mid-run re-reads at most one
    batch and the eventID check keeps the store free of duplicates. ``progress(objects, records)`` is
    called after each object.
    """
    run_id = new_run_id()
    summary = IngestSummary(source=source.uri, run_id=run_id)
    started = time.perf_counter()
    seen = store.manifest_index()
    batch = _Batch()
    touched: set[str] = set()

    def flush() -> None:
        if batch.empty:
            return
        _flush(batch, store, run_id, summary, touched)
        batch.clear()

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
            _read_into(obj, batch, store, run_id, summary)
        if progress:
            progress(summary.objects, summary.records)
        if batch.records >= batch_records:
            flush()
    flush()
    summary.dates = sorted(touched)
    summary.seconds = time.perf_counter() - started
    log.info("ingest %s: %s", source.uri, "; ".join(summary.lines()[1:]))
    return summary


@dataclass
class _Batch:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    manifest: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0

    @property
    def empty(self) -> bool:
        return not (self.rows or self.rejected or self.manifest)

    def clear(self) -> None:
        self.rows, self.rejected, self.manifest, self.records = [], [], [], 0


def _read_into(obj: SourceObject, batch: _Batch, store: EventStore, run_id: str, summary: IngestSummary) -> None:
    data = b""
    try:
        data = obj.fetch()
        decoded = decode_object(obj.key, data)
    except ObjectError as exc:
        store.quarantine_object(obj.key, data, str(exc), run_id)
        summary.objects_quarantined += 1
        batch.manifest.append(_entry(obj, "quarantined", error=str(exc)))
        log.warning("quarantined %s: %s", obj.key, exc)
        return
    if decoded.note:
        # the file was read with a repair: keep its original bytes too, so nothing is lost to the repair
        store.quarantine_object(obj.key, data, f"ingested with repair: {decoded.note}", run_id)
    summary.objects_ingested += 1
    summary.records += decoded.records_read
    summary.quarantined += len(decoded.rejected)
    batch.rows.extend(decoded.rows)
    batch.rejected.extend(decoded.rejected)
    batch.records += decoded.records_read
    batch.manifest.append(
        _entry(
            obj,
            "ingested",
            error=decoded.note,
            records_read=decoded.records_read,
            records_quarantined=len(decoded.rejected),
        )
    )


def _flush(batch: _Batch, store: EventStore, run_id: str, summary: IngestSummary, touched: set[str]) -> None:
    table = rows_to_table(batch.rows)
    written, duplicates = store.append_events(table, run_id)
    summary.new += written.num_rows
    summary.duplicates += duplicates
    new_per_key = _count_by(written.column("source_key").to_pylist()) if written.num_rows else {}
    rows_per_key = _count_by(row["source_key"] for row in batch.rows)
    for entry in batch.manifest:
        entry["run_id"] = run_id
        if entry["status"] == "ingested":
            entry["records_new"] = new_per_key.get(entry["key"], 0)
            entry["records_duplicate"] = rows_per_key.get(entry["key"], 0) - entry["records_new"]
    if written.num_rows:
        days = pc.unique(pc.strftime(written.column("eventTime"), format="%Y-%m-%d", locale="C"))
        touched.update(days.to_pylist())
    for rejected in batch.rejected:
        rejected["run_id"] = run_id
    store.quarantine_records(batch.rejected, run_id)
    store.write_manifest(batch.manifest, run_id)


def _count_by(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _entry(obj: SourceObject, status: str, *, error: str | None = None, **counts: int) -> dict[str, Any]:
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
