"""The ingest DAG verifies the demo's digests for real (`dag.test()`): the untouched day is valid, the attack
day's deleted and edited log files are findings, and the quality page says so."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from trailguard.demo import generator
from trailguard.integrity.findings import integrity_section

from tests.conftest import PROJECT

pytestmark = pytest.mark.slow


def test_ingest_dag_verifies_the_demo_digests(airflow_db, tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    logs = tmp_path / "logs"
    demo = generator.generate(logs, days=3, events=3_000)
    meta = json.loads((logs / "demo_summary.json").read_text())
    monkeypatch.setenv("TRAILGUARD_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TRAILGUARD_INTEGRITY_KEYS", str(logs / meta["public_keys"]))
    dag = DagBag(dag_folder=str(PROJECT / "dags")).get_dag("cloudtrail_ingest")
    run = dag.test(
        run_conf={
            "source": str(logs / "AWSLogs"),
            "start": demo.start.isoformat(),
            "end": (demo.end + timedelta(days=1)).isoformat(),
        }
    )
    assert run.state == "success"
    verified = next(ti for ti in run.get_task_instances() if ti.task_id == "verify_integrity")
    assert verified.state == "success"
    before = integrity_section(tmp_path / "data", demo.end - timedelta(days=1))
    last = integrity_section(tmp_path / "data", demo.end)
    assert before["status"] == "valid" and last["status"] == "tampered"
    found = {f["object"]: f["status"] for f in last["findings"]}
    expected = {
        t["key"]: {"deleted": "log_file_missing", "edited": "log_file_modified"}[t["kind"]]
        for t in meta["tampered_files"]
    }
    assert found == expected
    page = (tmp_path / "data" / "quality" / f"date={demo.end}" / "index.html").read_text()
    assert "Evidence integrity: TAMPERED" in page
