"""The Great Expectations suites for a day of flow records, with CloudTrail's severities and quarantine.

The same mechanism as the CloudTrail gate: the expectations are defined once in
:mod:`trailguard.quality.expectations` (``FLOWS_INCOMING``, ``FLOWS_PARTITION``), built once into GX 1.x
suites run by a Checkpoint (:mod:`trailguard.quality.suites`) with the day's bounds as ``$PARAMETER``
values; this module builds the frames they check. The rows to quarantine come from the same definitions
(:meth:`~trailguard.quality.expectations.Expectation.unexpected_rows`), so what the page reports and what
moves cannot drift apart. Critical: the day has records; every record has a start inside the day and not in
the future, and a known log status; records breaking these go to ``quarantine/flows/date=D/rows-<run>.parquet``
with the reason and the partition is rewritten without them. Warnings: actions, addresses, end after start,
the NODATA/SKIPDATA share and the volume against the earlier days. Results: ``quality/flows/date=D/``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import statistics
import time
from dataclasses import asdict
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trailguard.flows.ingestion import FlowStore
from trailguard.flows.logs import FLOW_SCHEMA
from trailguard.quality.expectations import (
    BY_NAME,
    FLOWS_INCOMING,
    FLOWS_ROW_LEVEL,
    FUTURE_TOLERANCE,
    MISSING,
    VOLUME_BAND,
)
from trailguard.quality.page import render_html
from trailguard.quality.results import FAILED, ExpectationOutcome, status_of
from trailguard.quality.suites import outcome, run_suite
from trailguard.store import fs
from trailguard.store.events import day_text, new_run_id
from trailguard.store.fs import DataPath, as_path

log = logging.getLogger(__name__)

NODATA_SHARE_MAX = 0.5


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
    run_id = new_run_id()
    files = store.partition_files(text)
    table = store.read_partition(text)
    parameters = {
        "day_start": day_start,
        "day_end": day_start + timedelta(days=1),
        "latest_allowed": now + FUTURE_TOLERANCE,
    }
    incoming = pa.table(
        {"start": table.column("start"), "log_status": pc.fill_null(table.column("log_status"), MISSING)}
    )
    results = run_suite("flows_incoming", incoming.to_pandas(), parameters)
    outcomes = [outcome(results["flows_present"], detail=f"{table.num_rows} records came in")]
    described = {"day": text, "tolerance_minutes": int(FUTURE_TOLERANCE.total_seconds() // 60),
                 "latest_allowed": parameters["latest_allowed"].isoformat(timespec="seconds")}  # fmt: skip
    outcomes += [outcome(results[n], detail=BY_NAME[n].expects.format(**described)) for n in FLOWS_ROW_LEVEL]
    masks = {e.name: e.unexpected_rows(incoming, parameters) for e in FLOWS_INCOMING if e.quarantine}
    move = np.zeros(table.num_rows, dtype=bool)
    for mask in masks.values():
        move |= mask
    quarantine_file = _quarantine(store, text, files, table, masks, move, run_id) if move.any() else None
    kept = table.filter(pa.array(~move))
    if kept.num_rows:
        outcomes += _check_kept(kept, store, text, history_days)
    moved = int(move.sum())
    status = status_of(outcomes, moved)
    document = {
        "date": text,
        "run_id": run_id,
        "status": status,
        "critical_failed": status == FAILED,
        "rows_in": table.num_rows,
        "rows_passed": kept.num_rows,
        "rows_quarantined": moved,
        "rows_quarantined_this_run": moved,
        "quarantine_file": None if quarantine_file is None else str(quarantine_file.relative_to(store.root)),
        "validated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "now": now.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 3),
        "engine": "great_expectations",
        "outcomes": [asdict(o) for o in outcomes],
        "summary": [o.summary_line() for o in outcomes],
    }
    folder = quality_dir(store.root, text)
    data = json.dumps(document, indent=2, default=str).encode()
    fs.write_bytes_atomic(data, folder / f"result-{run_id}.json")
    fs.write_bytes_atomic(data, folder / "result.json")
    fs.write_bytes_atomic(render_html(document).encode(), folder / "index.html")
    log.info("flows quality %s: %s, %d in, %d quarantined", text, status, table.num_rows, moved)
    return document


def _check_kept(kept: pa.Table, store: FlowStore, text: str, history_days: int) -> list[ExpectationOutcome]:
    """The warnings, on the records that stay (addresses and actions on traffic records only)."""
    traffic = pc.fill_null(pc.equal(kept.column("log_status"), "OK"), False)
    nothing = pa.scalar(None, pa.string())
    frame = pa.table(
        {
            "action": pc.if_else(traffic, pc.fill_null(kept.column("action"), MISSING), nothing),
            "srcaddr.kind": pc.if_else(traffic, _ip_kinds(kept.column("srcaddr")), nothing),
            "dstaddr.kind": pc.if_else(traffic, _ip_kinds(kept.column("dstaddr")), nothing),
            "duration": pc.subtract(
                kept.column("end").cast(pa.int64()), kept.column("start").cast(pa.int64())
            ),
            "nodata": pc.cast(pc.invert(traffic), pa.float64()),
        }
    )
    history = [n for n in (_count(store, d) for d in _earlier(text, history_days)) if n]
    median = statistics.median(history) if history else 0
    low, high = (int(VOLUME_BAND[0] * median), int(VOLUME_BAND[1] * median)) if median else (0, 2**62)
    parameters = {"max_nodata_share": NODATA_SHARE_MAX, "min_rows": low, "max_rows": high}
    results = run_suite("flows_partition", frame.to_pandas(), parameters)
    outcomes = [outcome(results["flow_rows_remaining"], detail=f"{kept.num_rows} records stay")]
    for name in ("flow_action_known", "flow_srcaddr_ip", "flow_dstaddr_ip", "flow_end_after_start"):
        outcomes.append(outcome(results[name], detail=BY_NAME[name].expects))
    share = float(np.mean(frame.column("nodata").to_numpy()))
    outcomes.append(outcome(results["flow_nodata_share"], sample=[f"{share:.0%}"],
                            detail=BY_NAME["flow_nodata_share"].expects.format(share=f"{share:.0%}", max_share=f"{NODATA_SHARE_MAX:.0%}")))  # fmt: skip
    if median:
        detail = BY_NAME["flow_row_count_vs_history"].expects.format(
            rows=kept.num_rows, history_days=len(history), median=f"{median:g}", min_rows=low, max_rows=high
        )
        outcomes.append(
            outcome(results["flow_row_count_vs_history"], sample=[str(kept.num_rows)], detail=detail)
        )
    else:
        outcomes.append(ExpectationOutcome("flow_row_count_vs_history", None, "warning", True, 0, 0.0, [],
                                           "not checked: no earlier days of flows in the store"))  # fmt: skip
    return outcomes


def _quarantine(
    store: FlowStore, text: str, files: list[DataPath], table: pa.Table, masks: dict[str, np.ndarray],
    move: np.ndarray, run_id: str,
) -> DataPath:  # fmt: skip
    """Rows out with their reason, then the partition as one file without them (the new file first)."""
    rows_moved = np.flatnonzero(move)
    reasons = [", ".join(n for n in FLOWS_ROW_LEVEL if masks[n][i]) for i in rows_moved]
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


def _ip_kinds(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """``ipv4`` | ``ipv6`` | ``invalid`` per address, each distinct value parsed once (null stays null)."""
    distinct = pc.unique(column).drop_null()
    kinds = []
    for value in distinct.to_pylist():
        try:
            kinds.append(f"ipv{ipaddress.ip_address(value).version}")
        except ValueError:
            kinds.append("invalid")
    return pc.take(pa.array(kinds, pa.string()), pc.index_in(column, value_set=distinct))


def _count(store: FlowStore, day: str) -> int:
    return sum(fs.parquet_file(f).metadata.num_rows for f in store.partition_files(day))


def _earlier(text: str, days: int) -> list[str]:
    first = date.fromisoformat(text)
    return [(first - timedelta(days=d)).isoformat() for d in range(1, days + 1)]
