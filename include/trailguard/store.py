"""The partitioned event store under the data root.

Layout (see CONTRACTS.md): ``events/date=YYYY-MM-DD/*.parquet`` with one row per ``eventID`` across the
store, ``manifest/objects/*.parquet`` (every source object seen), ``quarantine/`` (files and rows rejected,
each with its reason). Every file is written atomically: a temporary name in the same folder, then a rename.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trailguard.schema import EVENT_SCHEMA

log = logging.getLogger(__name__)

MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("size", pa.int64()),
        ("etag", pa.string()),
        ("status", pa.string()),  # ingested | skipped | quarantined
        ("records_read", pa.int64()),
        ("records_new", pa.int64()),
        ("records_duplicate", pa.int64()),
        ("records_quarantined", pa.int64()),
        ("error", pa.string()),
        ("run_id", pa.string()),
        ("seen_at", pa.timestamp("us", tz="UTC")),
    ]
)

REJECTED_RECORD_SCHEMA = pa.schema(
    [
        ("source_key", pa.string()),
        ("record_index", pa.int64()),
        ("reason", pa.string()),
        ("eventID", pa.string()),
        ("raw", pa.string()),
        ("run_id", pa.string()),
    ]
)

_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def new_run_id() -> str:
    """A sortable id for one run: files it writes carry it, so reruns never overwrite each other's parts."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{uuid.uuid4().hex}-{final.name}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_parquet_atomic(table: pa.Table, final: Path) -> Path:
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return final


def write_bytes_atomic(data: bytes, final: Path) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return final


def safe_name(key: str, limit: int = 180) -> str:
    """A file name derived from an untrusted object key (no path traversal, bounded length)."""
    name = _UNSAFE.sub("_", key).strip("._") or "object"
    if len(name) > limit:
        name = name[: limit - 9] + "_" + uuid.uuid5(uuid.NAMESPACE_URL, key).hex[:8]
    return name


@dataclass
class EventStore:
    """Events, manifest and quarantine under one local data root."""

    root: Path
    _ids: dict[str, pa.Array] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # -- paths -------------------------------------------------------------------------------------
    @property
    def events_dir(self) -> Path:
        return self.root / "events"

    @property
    def manifest_dir(self) -> Path:
        return self.root / "manifest" / "objects"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    def partition_dir(self, day: date | str) -> Path:
        return self.events_dir / f"date={_day(day)}"

    # -- events ------------------------------------------------------------------------------------
    def dates(self) -> list[str]:
        """Partition dates present in the store, oldest first."""
        if not self.events_dir.exists():
            return []
        found = []
        for child in self.events_dir.iterdir():
            match = _DATE_DIR.match(child.name)
            if match and any(child.glob("*.parquet")):
                found.append(match.group(1))
        return sorted(found)

    def partition_files(self, day: date | str) -> list[Path]:
        folder = self.partition_dir(day)
        return sorted(folder.glob("*.parquet")) if folder.exists() else []

    def read_partition(self, day: date | str, columns: Iterable[str] | None = None) -> pa.Table:
        """One day's events as an Arrow table (empty, with the schema, when the day has none)."""
        files = self.partition_files(day)
        cols = list(columns) if columns is not None else None
        if not files:
            schema = EVENT_SCHEMA if cols is None else pa.schema([EVENT_SCHEMA.field(c) for c in cols])
            return schema.empty_table()
        tables = [pq.read_table(f, columns=cols, schema=EVENT_SCHEMA) for f in files]
        return pa.concat_tables(tables)

    def partition_ids(self, day: date | str) -> pa.Array:
        """The eventIDs already stored for a day (read once per store object, then kept up to date)."""
        key = _day(day)
        if key not in self._ids:
            ids = self.read_partition(key, columns=["eventID"]).column("eventID").combine_chunks()
            self._ids[key] = ids
        return self._ids[key]

    def append_events(self, table: pa.Table, run_id: str) -> tuple[pa.Table, int]:
        """Add events not yet in the store; returns (the rows written, duplicates dropped).

        Deduplicates by eventID within the batch and against the day's partition; writes one new part
        file per touched day, atomically.
        """
        if table.num_rows == 0:
            return table, 0
        before = table.num_rows
        table = _first_per_id(table)
        within_batch_dups = before - table.num_rows
        days = pc.strftime(table.column("eventTime"), format="%Y-%m-%d", locale="C")
        written = []
        duplicates = 0
        for day in pc.unique(days).to_pylist():
            part = table.filter(pc.equal(days, day))
            existing = self.partition_ids(day)
            if len(existing):
                fresh_mask = pc.invert(pc.is_in(part.column("eventID"), value_set=existing))
                fresh = part.filter(fresh_mask)
            else:
                fresh = part
            duplicates += part.num_rows - fresh.num_rows
            if fresh.num_rows:
                write_parquet_atomic(fresh, self.partition_dir(day) / f"part-{run_id}-{uuid.uuid4().hex[:8]}.parquet")
                self._ids[day] = pa.concat_arrays([existing, fresh.column("eventID").combine_chunks()])
                written.append(fresh)
        new = pa.concat_tables(written) if written else table.schema.empty_table()
        return new, duplicates + within_batch_dups

    def rewrite_partition(self, day: date | str, table: pa.Table) -> None:
        """Replace a day's partition with ``table`` as one file (used by validation's quarantine).

        The new file is in place before the old parts go, so a crash leaves extra rows, never lost ones,
        and the next rewrite of the day removes the leftovers.
        """
        key = _day(day)
        old = self.partition_files(key)
        final = self.partition_dir(key) / f"part-{new_run_id()}-compact.parquet"
        write_parquet_atomic(table.cast(EVENT_SCHEMA), final)
        for path in old:
            if path != final:
                path.unlink(missing_ok=True)
        self._ids.pop(key, None)

    # -- manifest ----------------------------------------------------------------------------------
    def read_manifest(self) -> pa.Table:
        """Every manifest entry ever written (one row per object and run)."""
        files = sorted(self.manifest_dir.glob("*.parquet")) if self.manifest_dir.exists() else []
        if not files:
            return MANIFEST_SCHEMA.empty_table()
        return pa.concat_tables([pq.read_table(f, schema=MANIFEST_SCHEMA) for f in files])

    def manifest_index(self) -> dict[str, tuple[int, str, str]]:
        """Latest (size, etag, status) per object key, for skipping what was already read."""
        table = self.read_manifest()
        index: dict[str, tuple[int, str, str]] = {}
        for key, size, etag, status in zip(
            table.column("key").to_pylist(),
            table.column("size").to_pylist(),
            table.column("etag").to_pylist(),
            table.column("status").to_pylist(),
            strict=True,
        ):
            index[key] = (size, etag, status)
        return index

    def write_manifest(self, entries: list[dict], run_id: str) -> None:
        if not entries:
            return
        table = pa.Table.from_pylist(entries, schema=MANIFEST_SCHEMA)
        write_parquet_atomic(table, self.manifest_dir / f"part-{run_id}-{uuid.uuid4().hex[:8]}.parquet")

    # -- quarantine --------------------------------------------------------------------------------
    def quarantine_object(self, key: str, data: bytes, reason: str, run_id: str) -> Path:
        """Keep a rejected source object's bytes and the reason beside it."""
        folder = self.quarantine_dir / "objects"
        target = folder / safe_name(key)
        write_bytes_atomic(data, target)
        reason_doc = {"key": key, "reason": reason, "run_id": run_id, "bytes": len(data)}
        write_bytes_atomic(json.dumps(reason_doc, indent=2).encode(), target.with_name(target.name + ".reason.json"))
        return target

    def quarantine_records(self, rejected: list[dict], run_id: str) -> Path | None:
        """Keep records that could not become events (no eventID, no eventTime, not an object...)."""
        if not rejected:
            return None
        table = pa.Table.from_pylist(rejected, schema=REJECTED_RECORD_SCHEMA)
        target = self.quarantine_dir / "records" / f"part-{run_id}-{uuid.uuid4().hex[:8]}.parquet"
        return write_parquet_atomic(table, target)

    def read_quarantined_records(self) -> pa.Table:
        folder = self.quarantine_dir / "records"
        files = sorted(folder.glob("*.parquet")) if folder.exists() else []
        if not files:
            return REJECTED_RECORD_SCHEMA.empty_table()
        return pa.concat_tables([pq.read_table(f, schema=REJECTED_RECORD_SCHEMA) for f in files])


def _first_per_id(table: pa.Table) -> pa.Table:
    """Keep the first row of each eventID within one batch."""
    ids = table.column("eventID").to_pylist()
    if len(set(ids)) == len(ids):
        return table
    seen: set[str] = set()
    keep = []
    for i, event_id in enumerate(ids):
        if event_id not in seen:
            seen.add(event_id)
            keep.append(i)
    return table.take(pa.array(keep, type=pa.int64()))


def _day(day: date | str) -> str:
    if isinstance(day, (date, datetime)):
        return day.strftime("%Y-%m-%d")
    text = str(day)
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError as exc:
        raise ValueError(f"not a date (YYYY-MM-DD): {text!r}") from exc
