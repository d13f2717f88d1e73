"""The Great Expectations suite for a day of flow records, with CloudTrail's severities and quarantine.

The same mechanism as :mod:`trailguard.quality.gate` (GX 1.x, an in-memory context, one pandas frame per
suite, the expectation's severity and our name in its ``meta``), the same outcome records, result files and
page. Critical: the day has records; every record has a start inside the day and not in the future, and a
known log status. Records breaking a critical row-level expectation go to
``quarantine/flows/date=D/rows-<run>.parquet`` with the reason and the partition is rewritten without them.
Warnings: actions, addresses, ports, end after start, the NODATA/SKIPDATA share and the volume against
the earlier days.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trailguard.flows.ingestion import FlowStore
from trailguard.flows.logs import ACTIONS, FLOW_SCHEMA, LOG_STATUSES
from trailguard.quality.gate import (
    CRITICAL,
    FAILED,
    FUTURE_TOLERANCE,
    PASSED,
    VOLUME_BAND,
    WARNED,
    WARNING,
    ExpectationOutcome,
    _expect,
    _outcome,
    _run_suite,
    render_html,
)
from trailguard.store import fs
from trailguard.store.events import day_text, new_run_id
from trailguard.store.fs import DataPath, as_path

log = logging.getLogger(__name__)

ROW_LEVEL = ("start_not_null", "start_in_day", "start_not_future", "log_status_known")
NODATA_SHARE_MAX = 0.5
IP_KINDS = ("ipv4", "ipv6")


def quality_dir(data_root: DataPath | str, day: date | str) -> DataPath:
    return as_path(data_root) / "quality" / "flows" / f"date={day_text(day)}"


def validate_flows(
    data_root: DataPath | str, day: date | str, *, now: datetime | None = None, history_days: int = 7
) -> dict[str, Any]:
    """Validate a day of flows, quarantine the rows that break a critical row-level expectation, save
    ``quality/flows/date=D/result.json`` and ``index.html``; returns the result document (``status``:
    passed | warning | failed). Never raises on bad data."""
    started = time.perf_counter()
    store = FlowStore(as_path(data_root))
    text = day_text(day)
    now = now or datetime.now(timezone.utc)
    day_start = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    day_end = day_start + timedelta(days=1)
    run_id = new_run_id()
    files = store.partition_files(text)
    table = store.read_partition(text)
    limit = now + FUTURE_TOLERANCE
    start = table.column("start")
    masks = {
        "start_not_null": _np(pc.is_null(start)),
        "start_in_day": _np(
            pc.fill_null(pc.or_(pc.less(start, day_start), pc.greater_equal(start, day_end)), False)
        ),
        "start_not_future": _np(pc.fill_null(pc.greater(start, limit), False)),
        "log_status_known": ~_np(
            pc.fill_null(pc.is_in(table.column("log_status"), pa.array(LOG_STATUSES)), False)
        ),
    }
    frame = pa.table(
        {"start": start, "log_status": pc.fill_null(table.column("log_status"), "<missing>")}
    ).to_pandas()
    results = _run_suite(
        "flows_incoming",
        frame,
        [
            _expect("ExpectTableRowCountToBeBetween", "flows_present", CRITICAL, min_value=1),
            _expect("ExpectColumnValuesToNotBeNull", "start_not_null", CRITICAL, column="start"),
            _expect("ExpectColumnValuesToBeBetween", "start_in_day", CRITICAL, column="start",
                    min_value=day_start, max_value=day_end, strict_max=True),
            _expect("ExpectColumnValuesToBeBetween", "start_not_future", CRITICAL, column="start", max_value=limit),
            _expect("ExpectColumnValuesToBeInSet", "log_status_known", CRITICAL, column="log_status",
                    value_set=list(LOG_STATUSES)),
        ],
    )  # fmt: skip
    outcomes = [
        _outcome(results["flows_present"], None, table_level=True, detail=f"{table.num_rows} records")
    ]
    outcomes += [
        _outcome(results[n], "start" if n.startswith("start") else "log_status", detail=n) for n in ROW_LEVEL
    ]
    move = np.zeros(table.num_rows, dtype=bool)
    for mask in masks.values():
        move |= mask
    quarantine_file = None
    if move.any():
        quarantine_file = _quarantine(store, text, files, table, masks, move, run_id)
    kept = table.filter(pa.array(~move))
    if kept.num_rows:
        outcomes += _check_kept(kept, store, text, history_days)
    status = _status(outcomes, int(move.sum()))
    document = {
        "date": text,
        "run_id": run_id,
        "status": status,
        "critical_failed": status == FAILED,
        "rows_in": table.num_rows,
        "rows_passed": kept.num_rows,
        "rows_quarantined": int(move.sum()),
        "rows_quarantined_this_run": int(move.sum()),
        "quarantine_file": None if quarantine_file is None else str(quarantine_file.relative_to(store.root)),
        "validated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "now": now.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 3),
        "engine": "great_expectations",
        "outcomes": [o.__dict__ for o in outcomes],
        "summary": [o.summary_line() for o in outcomes],
    }
    folder = quality_dir(store.root, text)
    data = json.dumps(document, indent=2, default=str).encode()
    fs.write_bytes_atomic(data, folder / f"result-{run_id}.json")
    fs.write_bytes_atomic(data, folder / "result.json")
    fs.write_bytes_atomic(render_html(document).encode(), folder / "index.html")
    log.info("flows quality %s: %s, %d in, %d quarantined", text, status, table.num_rows, int(move.sum()))
    return document


def _check_kept(kept: pa.Table, store: FlowStore, text: str, history_days: int) -> list[ExpectationOutcome]:
    traffic = pc.equal(kept.column("log_status"), "OK")
    ok = kept.filter(traffic)
    frame = pa.table(
        {
            "action": pc.fill_null(ok.column("action"), "<missing>"),
            "srcaddr.kind": _ip_kinds(ok.column("srcaddr")),
            "dstaddr.kind": _ip_kinds(ok.column("dstaddr")),
            "dstport": ok.column("dstport"),
            "duration": pc.subtract(ok.column("end").cast(pa.int64()), ok.column("start").cast(pa.int64())),
        }
    ).to_pandas()
    nodata = 1 - float(np.mean(_np(traffic))) if kept.num_rows else 0.0
    history = [len(store.read_partition(d, columns=["log_status"])) for d in _earlier(text, history_days)]
    history = [h for h in history if h]
    expectations = [
        _expect("ExpectColumnValuesToBeInSet", "action_known", WARNING, column="action", value_set=list(ACTIONS)),
        _expect("ExpectColumnValuesToBeInSet", "srcaddr_ip", WARNING, column="srcaddr.kind", value_set=list(IP_KINDS)),
        _expect("ExpectColumnValuesToBeInSet", "dstaddr_ip", WARNING, column="dstaddr.kind", value_set=list(IP_KINDS)),
        _expect("ExpectColumnValuesToBeBetween", "end_after_start", WARNING, column="duration", min_value=0),
    ]  # fmt: skip
    median = statistics.median(history) if history else 0
    if median:
        expectations.append(
            _expect("ExpectTableRowCountToBeBetween", "row_count_vs_history", WARNING,
                    min_value=int(VOLUME_BAND[0] * median), max_value=int(VOLUME_BAND[1] * median))
        )  # fmt: skip
    results = _run_suite("flows_partition", frame, expectations) if len(frame) else {}
    outcomes = []
    for name, column in (("action_known", "action"), ("srcaddr_ip", "srcaddr"), ("dstaddr_ip", "dstaddr"),
                         ("end_after_start", "end")):  # fmt: skip
        if name in results:
            outcomes.append(_outcome(results[name], column, detail=name.replace("_", " ")))
    if "row_count_vs_history" in results:
        outcomes.append(
            _outcome(results["row_count_vs_history"], None, table_level=True,
                     detail=f"{len(frame)} traffic records; median of {len(history)} earlier days {median:g}")
        )  # fmt: skip
    share_ok = nodata <= NODATA_SHARE_MAX
    outcomes.append(
        ExpectationOutcome("nodata_share", "log_status", WARNING, share_ok, 0, 0.0, [] if share_ok else [f"{nodata:.0%}"],
                           f"{nodata:.0%} of records are NODATA/SKIPDATA; allowed up to {NODATA_SHARE_MAX:.0%}")
    )  # fmt: skip
    return outcomes


def _quarantine(
    store: FlowStore,
    text: str,
    files: list[DataPath],
    table: pa.Table,
    masks: dict[str, np.ndarray],
    move: np.ndarray,
    run_id: str,
) -> DataPath:
    """Rows out with their reason, then the partition as one file without them (new file first)."""
    reasons = np.array(
        ["; ".join(n for n in ROW_LEVEL if masks[n][i]) for i in np.flatnonzero(move)], dtype=object
    )
    rows = table.filter(pa.array(move))
    rows = rows.append_column("quarantine_reason", pa.array(reasons, pa.string()))
    rows = rows.append_column("run_id", pa.array([run_id] * rows.num_rows, pa.string()))
    target = store.quarantine_dir / f"date={text}" / f"rows-{run_id}.parquet"
    fs.write_parquet_atomic(rows, target, compression="zstd")
    final = store.partition_dir(text) / f"part-{run_id}-compact.parquet"
    fs.write_parquet_atomic(table.filter(pa.array(~move)).cast(FLOW_SCHEMA), final, compression="zstd")
    for path in files:
        if path != final:
            path.unlink(missing_ok=True)
    return target


def _status(outcomes: list[ExpectationOutcome], moved: int) -> str:
    if any(o.severity == CRITICAL and not o.success and o.name not in ROW_LEVEL for o in outcomes):
        return FAILED
    return WARNED if moved or any(not o.success for o in outcomes) else PASSED


def _ip_kinds(column: pa.ChunkedArray) -> pa.Array:
    import ipaddress

    distinct = pc.unique(column).to_pylist()
    kinds = {}
    for value in distinct:
        try:
            kinds[value] = f"ipv{ipaddress.ip_address(value).version}" if value is not None else "<missing>"
        except ValueError:
            kinds[value] = "invalid"
    index = pc.index_in(column, pa.array(distinct, column.type))
    return pc.take(pa.array([kinds[v] for v in distinct], pa.string()), index)


def _earlier(text: str, days: int) -> list[str]:
    first = date.fromisoformat(text)
    return [(first - timedelta(days=d)).isoformat() for d in range(1, days + 1)]


def _np(array: Any) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)
