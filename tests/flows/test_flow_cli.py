"""The flows commands as a user meets them: exit codes and one-line errors, and the bench's flows stage."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from datetime import date, datetime, timezone

from trailguard import cli
from trailguard.flows.logs import DEFAULT_FORMAT, flow_log_key, format_flow_file

from tests.conftest import PROJECT

ROW = (
    2,
    "111122223333",
    "eni-0a",
    "203.0.113.9",
    "10.0.1.5",
    50000,
    22,
    6,
    9,
    900,
    1767225600,
    1767225660,
    "ACCEPT",
    "OK",
)


def _logs(folder):
    key = flow_log_key(
        "111122223333",
        "us-east-1",
        date(2026, 1, 1),
        "fl-0a",
        datetime(2026, 1, 1, tzinfo=timezone.utc),
        "ab",
    )
    path = folder / key
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(format_flow_file(DEFAULT_FORMAT.split(), [ROW])))
    return folder


def test_ingest_kind_flows_then_rerun(tmp_path, capsys):
    logs, data = _logs(tmp_path / "logs"), str(tmp_path / "data")
    assert cli.main(["--data", data, "ingest", "--source", str(logs), "--kind", "flows", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["objects_ingested"], first["stored"], first["dates"]) == (1, 1, ["2026-01-01"])
    assert cli.main(["--data", data, "ingest", "--source", str(logs), "--kind", "flows", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["objects_already_ingested"] == 1


def test_usage_errors_are_one_line(tmp_path, capsys):
    data = str(tmp_path / "data")
    assert cli.main(["--data", data, "ingest", "--source", "cloudwatch://", "--kind", "flows"]) == 2
    assert capsys.readouterr().err.startswith("cannot read the source: no log group")
    assert cli.main(["--data", data, "ingest", "--source", str(tmp_path / "missing"), "--kind", "flows"]) == 2
    assert capsys.readouterr().err.startswith("cannot read the source")


def test_flows_command_on_an_empty_day_fails_with_a_reason(tmp_path, capsys):
    assert cli.main(["--data", str(tmp_path), "flows", "--date", "2026-01-01"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data quality failed" in err[0]


def test_bench_flows_stage_on_small_data(tmp_path):
    results = tmp_path / "results.json"
    command = [sys.executable, str(PROJECT / "bench" / "run.py"), "--only", "flows", "--flow-records", "20000",
               "--workers", "1,2", "--work", str(tmp_path / "work"), "--results", str(results)]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    stages = json.loads(results.read_text())["stages"]
    assert stages["flows_pyarrow_csv_floor"]["records"] == 20000
    for workers in (1, 2):
        run = stages[f"flows_ingest_{workers}_workers"]
        assert (
            run["records"] == run["stored"] == 20000 and run["quarantined"] == 0 and run["records_per_s"] > 0
        )
