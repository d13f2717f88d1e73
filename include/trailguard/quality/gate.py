"""The data-quality gate for one day's events partition: validate, quarantine, record the verdict.

Great Expectations (1.x, suites built once from :mod:`trailguard.quality.expectations`, run through a
Checkpoint in an in-memory context: :mod:`trailguard.quality.suites`) evaluates and records every
expectation; :mod:`trailguard.quality.checks` says what each suite is run on. Rows breaking a critical
row-level expectation are moved to ``quarantine/date=D/rows-<run>.parquet`` with the reason and the
partition is rewritten without them (:mod:`trailguard.quality.quarantine`); a schema failure or a day
without events fails the whole partition and nothing is rewritten. Each run writes
``quality/date=D/result-<run>.json``, ``result.json`` (latest) and ``index.html`` (latest, the page of
:mod:`trailguard.quality.page`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa

from trailguard.quality.checks import DayBounds, check_incoming, check_partition, check_schema
from trailguard.quality.expectations import ERROR_SHARE_BOUNDS, FUTURE_TOLERANCE, VOLUME_BAND, known_regions
from trailguard.quality.page import render_html
from trailguard.quality.quarantine import (
    CHECKED_COLUMNS,
    QUARANTINE_SCHEMA,
    find_rows,
    move_rows,
    read_quarantined_rows,
)
from trailguard.quality.results import FAILED, ExpectationOutcome, QualityResult, status_of
from trailguard.store.events import EventStore, new_run_id, write_bytes_atomic
from trailguard.store.events import day_text as _day_text
from trailguard.store.fs import DataPath, parquet_file, read_parquet
from trailguard.store.schema import EVENT_SCHEMA

log = logging.getLogger(__name__)

# the gate's public names; the records, the quarantine schema and the region list are re-exported from their
# modules for callers that know them from here
__all__ = [
    "QUARANTINE_SCHEMA",
    "ExpectationOutcome",
    "QualityResult",
    "is_scorable",
    "known_regions",
    "read_quality_status",
    "validate_partition",
]


def validate_partition(
    store: EventStore,
    day: date | str,
    *,
    now: datetime | None = None,
    history_days: int = 7,
    allowed_lateness_hours: float = 2.0,
    volume_band: tuple[float, float] = VOLUME_BAND,
    error_share_bounds: tuple[float, float] = ERROR_SHARE_BOUNDS,
) -> QualityResult:
    """Validate a day's partition, quarantine rows that break critical row-level expectations, save and
    return the result. Never raises on bad data: a broken partition comes back with status ``failed``."""
    started = time.perf_counter()
    day_text = _day_text(day)
    now = _utc(now) if now is not None else datetime.now(timezone.utc)
    day_start = datetime.fromisoformat(day_text).replace(tzinfo=timezone.utc)
    bounds = DayBounds(day_text, day_start, day_start + timedelta(days=1), now)
    run_id = new_run_id()
    files = store.partition_files(day_text)  # pinned: every read below uses exactly these files
    earlier = read_quarantined_rows(store, day_text)

    outcomes, schema_ok = check_schema(files)
    quarantine_path: DataPath | None = None
    rows_moved = 0
    if not schema_ok:  # nothing is read with a broken schema, nothing rewritten
        rows_passed = sum(parquet_file(f).metadata.num_rows for f in files)
        rows_quarantined = earlier.num_rows
    else:
        rows = find_rows(_read_files(files, CHECKED_COLUMNS), earlier, bounds)
        if rows.move.any():
            rows, quarantine_path = move_rows(store, day_text, files, earlier, bounds, rows, run_id)
            rows_moved = int(rows.move.sum())
        union = rows.union
        outcomes += check_incoming(union, rows.masks, bounds)
        kept = rows.part.filter(~rows.move)
        rows_passed = kept.num_rows
        rows_quarantined = union.num_rows - rows_passed
        if union.num_rows:
            history = _history_counts(store, day_text, history_days)
            outcomes += check_partition(
                kept,
                bounds,
                history,
                volume_band,
                timedelta(hours=allowed_lateness_hours),
                error_share_bounds,
            )
    rows_in = rows_passed + rows_quarantined
    status = status_of(outcomes, rows_quarantined)
    seconds = time.perf_counter() - started
    result_path, html_path = (
        _quality_dir(store, day_text) / "result.json",
        _quality_dir(store, day_text) / "index.html",
    )
    result = QualityResult(
        date=day_text,
        status=status,
        rows_in=rows_in,
        rows_passed=rows_passed,
        rows_quarantined=rows_quarantined,
        outcomes=outcomes,
        result_path=result_path,
        html_path=html_path,
        seconds=seconds,
        run_id=run_id,
        quarantine_path=quarantine_path,
    )
    document = _result_document(
        result, store, now, history_days, allowed_lateness_hours, volume_band, error_share_bounds, rows_moved
    )
    _save(store, result, document)
    _log(result)
    return result


def read_quality_status(store: EventStore, day: date | str) -> dict | None:
    """The latest saved result of a day (result.json as a dict), or None when it was never validated."""
    path = _quality_dir(store, _day_text(day)) / "result.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: unreadable data-quality result ({exc}); validate the day again") from exc


def is_scorable(store: EventStore, day: date | str) -> bool:
    """True when the day was validated, did not fail critically, and has not changed since (an ingest that
    appended rows after the validation makes the verdict stale: validate again)."""
    day_text = _day_text(day)
    status = read_quality_status(store, day_text)
    if status is None:
        log.info("%s: not validated yet, not scorable", day_text)
        return False
    if status.get("status") == FAILED:
        log.info("%s: data quality failed, not scorable", day_text)
        return False
    rows_now = store.count_rows(day_text)
    if rows_now != status.get("rows_passed"):
        log.warning(
            "%s: partition has %d rows, validation saw %s: validate again before scoring",
            day_text,
            rows_now,
            status.get("rows_passed"),
        )
        return False
    return True


def _quality_dir(store: EventStore, day_text: str) -> DataPath:
    return store.root / "quality" / f"date={day_text}"


def _result_document(
    result: QualityResult,
    store: EventStore,
    now: datetime,
    history_days: int,
    allowed_lateness_hours: float,
    volume_band: tuple[float, float],
    error_share_bounds: tuple[float, float],
    rows_moved: int,
) -> dict[str, Any]:
    import great_expectations as gx

    quarantine = result.quarantine_path
    return {
        "date": result.date,
        "run_id": result.run_id,
        "status": result.status,
        "critical_failed": result.critical_failed,
        "rows_in": result.rows_in,
        "rows_passed": result.rows_passed,
        "rows_quarantined": result.rows_quarantined,
        "rows_quarantined_this_run": rows_moved,
        "quarantine_file": None if quarantine is None else str(quarantine.relative_to(store.root)),
        "validated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "now": now.isoformat(timespec="seconds"),
        "seconds": round(result.seconds, 3),
        "parameters": {
            "history_days": history_days,
            "allowed_lateness_hours": allowed_lateness_hours,
            "volume_band": list(volume_band),
            "error_share_bounds": list(error_share_bounds),
            "future_tolerance_seconds": FUTURE_TOLERANCE.total_seconds(),
        },
        "engine": f"great_expectations {gx.__version__}",
        "outcomes": [asdict(o) for o in result.outcomes],
        "summary": result.summary_lines(),
        "integrity": _integrity(store, result.date),
    }


def _integrity(store: EventStore, day_text: str) -> dict[str, Any]:
    """The day's CloudTrail evidence integrity (digest validation of that day's deliveries) for the page."""
    from trailguard.integrity.findings import integrity_section, text_lines

    section = integrity_section(store.root, day_text)
    lines = text_lines(section, day_text)
    return {"status": section["status"] if section else "not checked", "header": lines[0], "lines": lines[1:]}


def _save(store: EventStore, result: QualityResult, document: dict[str, Any]) -> None:
    """The run's own JSON, then the latest JSON and page: a reader never sees a half-written file."""
    data = json.dumps(document, indent=2, ensure_ascii=False, default=str).encode("utf-8")
    folder = result.result_path.parent
    write_bytes_atomic(data, folder / f"result-{result.run_id}.json")
    write_bytes_atomic(data, result.result_path)
    write_bytes_atomic(render_html(document).encode("utf-8"), result.html_path)


def _log(result: QualityResult) -> None:
    lines = result.summary_lines()
    log.log(logging.ERROR if result.critical_failed else logging.INFO, "%s", lines[0])
    for outcome, line in zip(result.outcomes, lines[1:], strict=True):
        log.log(logging.INFO if outcome.success else logging.WARNING, "%s", line)


def _read_files(files: list[DataPath], columns: tuple[str, ...] | None) -> pa.Table:
    cols = list(columns) if columns is not None else None
    if not files:
        schema = EVENT_SCHEMA if cols is None else pa.schema([EVENT_SCHEMA.field(c) for c in cols])
        return schema.empty_table()
    return pa.concat_tables([read_parquet(f, columns=cols, schema=EVENT_SCHEMA) for f in files])


def _history_counts(store: EventStore, day_text: str, history_days: int) -> list[int]:
    """Row counts of the latest ``history_days`` partitions before the day, from parquet footers."""
    earlier = [d for d in store.dates() if d < day_text][-history_days:] if history_days > 0 else []
    return [store.count_rows(d) for d in earlier]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
