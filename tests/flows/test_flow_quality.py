"""The flows suite through Great Expectations: critical rows quarantined, warnings kept, a page written."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pyarrow as pa
from trailguard.flows.ingestion import FlowStore
from trailguard.flows.logs import FLOW_SCHEMA
from trailguard.flows.quality import validate_flows
from trailguard.store import fs

DAY = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _row(start: datetime | None, *, status="OK", action="ACCEPT", src="10.0.1.5") -> dict:
    return {
        "version": 2, "account_id": "111122223333", "interface_id": "eni-0a", "srcaddr": src,
        "dstaddr": "198.51.100.7", "srcport": 40000, "dstport": 443, "protocol": 6, "packets": 3, "bytes": 500,
        "start": start, "end": None if start is None else start + timedelta(seconds=60), "action": action,
        "log_status": status, "source_key": "k",
    }  # fmt: skip


def _store(tmp_path, rows) -> FlowStore:
    store = FlowStore(tmp_path)
    fs.write_parquet_atomic(
        pa.Table.from_pylist(rows, schema=FLOW_SCHEMA), store.partition_dir("2026-01-01") / "p.parquet"
    )
    return store


def test_a_clean_day_passes(tmp_path):
    _store(tmp_path, [_row(DAY + timedelta(hours=h)) for h in range(5)])
    doc = validate_flows(tmp_path, "2026-01-01", now=DAY + timedelta(days=2))
    assert doc["status"] == "passed" and doc["rows_passed"] == 5
    assert (tmp_path / "quality" / "flows" / "date=2026-01-01" / "index.html").exists()
    assert all(o["success"] for o in doc["outcomes"])


def test_critical_rows_are_quarantined_and_warnings_reported(tmp_path):
    rows = [_row(DAY + timedelta(hours=1)), _row(DAY - timedelta(hours=3)), _row(DAY + timedelta(hours=2), status="BOGUS"),
            _row(DAY + timedelta(hours=3), action="MAYBE", src="not-an-ip")]  # fmt: skip
    store = _store(tmp_path, rows)
    doc = validate_flows(tmp_path, "2026-01-01", now=DAY + timedelta(days=2))
    assert doc["status"] == "warning" and doc["rows_quarantined"] == 2 and doc["rows_passed"] == 2
    failed = {o["name"] for o in doc["outcomes"] if not o["success"]}
    assert failed == {"flow_start_in_day", "flow_log_status_known", "flow_action_known", "flow_srcaddr_ip"}
    assert store.read_partition("2026-01-01").num_rows == 2
    moved = fs.read_parquet(
        next((tmp_path / "quarantine" / "flows" / "date=2026-01-01").glob("rows-*.parquet"))
    )
    assert sorted(moved.column("quarantine_reason").to_pylist()) == [
        "flow_log_status_known",
        "flow_start_in_day",
    ]
    page = (tmp_path / "quality" / "flows" / "date=2026-01-01" / "index.html").read_text()
    assert "flow_start_in_day" in page and "quarantined" in page
    saved = json.loads((tmp_path / "quality" / "flows" / "date=2026-01-01" / "result.json").read_text())
    assert saved["status"] == "warning"


def test_an_empty_day_fails(tmp_path):
    doc = validate_flows(tmp_path, "2026-01-01", now=DAY + timedelta(days=2))
    assert doc["status"] == "failed" and doc["critical_failed"]
