"""Quarantine: rows that break a critical row-level expectation leave the partition, with their reason.

They are written to ``quarantine/date=D/rows-<run>.parquet`` (with ``quarantine_reason``, the broken
expectations' names, and ``run_id``) before the partition is rewritten without them, so a crash in between
leaves a copy in both places, recognised by the next run, never a lost row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trailguard.quality.checks import DayBounds, row_masks
from trailguard.quality.expectations import ROW_LEVEL
from trailguard.store.events import EventStore, write_parquet_atomic
from trailguard.store.fs import DataPath, parquet_file, read_parquet
from trailguard.store.schema import EVENT_SCHEMA

log = logging.getLogger(__name__)

# the columns the row-level checks read
CHECKED_COLUMNS = (
    "eventID", "eventTime", "eventSource", "awsRegion", "sourceIPAddress", "userIdentity.type", "eventType",
    "errorCode",
)  # fmt: skip
_FINGERPRINT = ("eventID", "eventTime", "source_key", "raw")  # recognises a row already in quarantine

QUARANTINE_SCHEMA = pa.schema(
    [field_.with_nullable(True) for field_ in EVENT_SCHEMA]
    + [pa.field("quarantine_reason", pa.string()), pa.field("run_id", pa.string())]
)
_NULLABLE_EVENTS = pa.schema([field_.with_nullable(True) for field_ in EVENT_SCHEMA])


@dataclass
class DayRows:
    """The day's rows as the row-level checks see them."""

    part: pa.Table  # the partition's checked columns
    union: pa.Table  # part, then rows earlier runs quarantined
    masks: dict[str, np.ndarray]  # per critical row-level expectation, over union
    move: np.ndarray  # partition rows to quarantine now


def read_quarantined_rows(store: EventStore, day_text: str) -> pa.Table:
    """Every row earlier runs moved to the day's quarantine."""
    folder = store.quarantine_dir / f"date={day_text}"
    files = sorted(folder.glob("rows-*.parquet")) if folder.exists() else []
    if not files:
        return QUARANTINE_SCHEMA.empty_table()
    return pa.concat_tables([read_parquet(f, schema=QUARANTINE_SCHEMA) for f in files])


def find_rows(part: pa.Table, earlier: pa.Table, bounds: DayBounds) -> DayRows:
    """The day's rows and which of them break a critical row-level expectation."""
    union = _union(part, earlier)
    masks = row_masks(union, bounds)
    return DayRows(part, union, masks, _any(masks, union.num_rows)[: part.num_rows])


def move_rows(
    store: EventStore,
    day_text: str,
    files: list[DataPath],
    earlier: pa.Table,
    bounds: DayBounds,
    rows: DayRows,
    run_id: str,
) -> tuple[DayRows, DataPath | None]:
    """Write the bad rows to quarantine, then rewrite the partition without them.

    Rows an earlier run already copied to quarantine (it died before rewriting) are only dropped from the
    partition, not copied again; the checks are then redone without them."""
    kept, moving = _split_files(files, rows.move)
    stale = _in_quarantine(moving, earlier)
    if stale.any():
        log.warning("%s: %d rows already in quarantine were still in the partition", day_text, stale.sum())
        stale_rows = np.zeros(len(rows.move), bool)
        stale_rows[np.flatnonzero(rows.move)[stale]] = True
        rows = find_rows(rows.part.filter(~stale_rows), earlier, bounds)
        remove = stale_rows.copy()
        remove[~stale_rows] = rows.move
        kept, moving = _split_files(files, remove)
        moving = moving.filter(~stale_rows[remove])
    quarantine_path = None
    if moving.num_rows:
        moved_masks = {name: mask[: rows.part.num_rows][rows.move] for name, mask in rows.masks.items()}
        quarantine_path = _write_quarantine(store, day_text, moving, moved_masks, run_id)
    del moving
    _rewrite_if_unchanged(store, day_text, files, kept)
    return rows, quarantine_path


def _union(part: pa.Table, earlier: pa.Table) -> pa.Table:
    """Every row that came in for the day: the partition first (so its copy of an id counts as the first),
    then rows earlier runs quarantined."""
    columns = list(CHECKED_COLUMNS)
    schema = pa.schema([_NULLABLE_EVENTS.field(c) for c in columns])
    return pa.concat_tables([part.cast(schema), earlier.select(columns)])


def _any(masks: dict[str, np.ndarray], n: int) -> np.ndarray:
    return np.logical_or.reduce(list(masks.values())) if masks and n else np.zeros(n, bool)


def _split_files(files: list[DataPath], remove: np.ndarray) -> tuple[pa.Table, pa.Table]:
    """All columns of the partition split into (kept, removed) rows, streamed batch by batch so a day of
    events is held in memory once, not twice."""
    kept: list[pa.RecordBatch] = []
    removed: list[pa.RecordBatch] = []
    offset = 0
    for path in files:
        for batch in parquet_file(path).iter_batches(batch_size=65_536, columns=list(EVENT_SCHEMA.names)):
            batch = batch.cast(_NULLABLE_EVENTS)
            mask = pa.array(remove[offset : offset + batch.num_rows])
            offset += batch.num_rows
            kept.append(batch.filter(pc.invert(mask)))
            removed.append(batch.filter(mask))
    if offset != len(remove):
        raise RuntimeError(
            f"partition changed while it was validated ({offset} rows, expected {len(remove)})"
        )
    return (
        pa.Table.from_batches(kept, schema=_NULLABLE_EVENTS),
        pa.Table.from_batches(removed, schema=_NULLABLE_EVENTS),
    )


def _in_quarantine(moving: pa.Table, earlier: pa.Table) -> np.ndarray:
    """Which rows about to be moved are already in the day's quarantine (same id, time, source and text)."""
    stale = np.zeros(moving.num_rows, bool)
    if not earlier.num_rows or not moving.num_rows:
        return stale
    known = set(zip(*(earlier.column(c).to_pylist() for c in _FINGERPRINT), strict=True))
    keys = zip(*(moving.column(c).to_pylist() for c in _FINGERPRINT), strict=True)
    for i, key in enumerate(keys):
        stale[i] = key in known
    return stale


def _reasons(masks: dict[str, np.ndarray]) -> pa.Array:
    """The names of the failed expectations per row, comma-joined, in ROW_LEVEL order."""
    parts = [pa.array(np.where(masks[name], name, None), pa.string()) for name in ROW_LEVEL]
    return pc.binary_join_element_wise(*parts, ",", null_handling="skip")


def _write_quarantine(
    store: EventStore, day_text: str, rows: pa.Table, masks: dict[str, np.ndarray], run_id: str
) -> DataPath:
    """Keep the moved rows with the expectations they broke; written before the partition is rewritten, so
    a crash in between leaves a copy in both places (recognised next run), never a lost row."""
    table = rows.cast(_NULLABLE_EVENTS).append_column("quarantine_reason", _reasons(masks))
    table = table.append_column("run_id", pa.array([run_id] * rows.num_rows, pa.string()))
    path = store.quarantine_dir / f"date={day_text}" / f"rows-{run_id}.parquet"
    write_parquet_atomic(table.cast(QUARANTINE_SCHEMA), path)
    log.warning("%s: moved %d rows to %s", day_text, rows.num_rows, path)
    return path


def _rewrite_if_unchanged(store: EventStore, day_text: str, files: list[DataPath], kept: pa.Table) -> None:
    """Rewrite the partition unless another writer added a part since we read it (its rows would be lost)."""
    if store.partition_files(day_text) != files:
        raise RuntimeError(
            f"{store.partition_dir(day_text)} changed while it was validated (a concurrent ingest?); "
            "the quarantined rows are saved, the partition is left as it was: validate the day again"
        )
    store.rewrite_partition(day_text, kept)
