"""The flowlogs_ingest DAG for real (``dag.test()``): the demo's flow logs ingested beside its CloudTrail,
each day validated and scored, the network findings joined to the instances CloudTrail launched."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import PROJECT
from tests.flows.network_demo import DAYS, END, write_demo


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT / "dags"))


@pytest.mark.slow
def test_flowlogs_ingest_runs_on_the_demo(dagbag, tmp_path, monkeypatch):
    demo = write_demo(tmp_path, ingest_flows_too=False)  # CloudTrail in the store, the flows left to the DAG
    monkeypatch.setenv("TRAILGUARD_DATA", str(demo.root))
    dag = dagbag.get_dag("flowlogs_ingest")
    conf = {"source": str(demo.logs / "AWSLogs"), "start": (END - timedelta(days=DAYS)).isoformat(),
            "end": (END + timedelta(days=1)).isoformat()}  # fmt: skip
    run = dag.test(run_conf=conf)
    assert run.state == "success", f"run state {run.state}"
    from trailguard.findings.network import read_flow_scores
    from trailguard.flows.ingestion import FlowStore

    days = FlowStore(demo.root).dates()
    assert len(days) == DAYS and days[-1] == demo.day
    for day in days:
        assert (demo.root / "quality" / "flows" / f"date={day}" / "result.json").exists(), day
    scored = [ti for ti in run.get_task_instances() if ti.task_id == "score_flow_day"]
    assert len(scored) == DAYS and all(ti.state == "success" for ti in scored)
    found = read_flow_scores(demo.root, demo.day)
    for truth in (t for t in demo.flows_truth if t["date"] == demo.day):
        row = found[
            (found["detection"] == truth["detection"]) & (found["interface_id"] == truth["interface_id"])
        ]
        assert len(row) == 1 and row.iloc[0]["instance_id"] == truth["instance_id"]
        assert row.iloc[0]["role"] == truth["role"]
    # a rerun reads nothing again and writes the same findings
    again = dag.test(run_conf=conf)
    assert again.state == "success"
    assert read_flow_scores(demo.root, demo.day)["eventID"].tolist() == found["eventID"].tolist()


@pytest.mark.slow
def test_flowlogs_ingest_without_a_source_fails_in_one_line(dagbag, tmp_path, monkeypatch):
    monkeypatch.setenv("TRAILGUARD_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("TRAILGUARD_FLOWS_SOURCE", raising=False)
    from datetime import datetime, timezone

    # a run of its own (another run_after): dag.test would otherwise pick up the run above with its conf
    run = dagbag.get_dag("flowlogs_ingest").test(run_conf={"source": None},
                                                 run_after=datetime(2030, 1, 1, tzinfo=timezone.utc))  # fmt: skip
    assert run.state == "failed"
    (ti,) = [ti for ti in run.get_task_instances() if ti.task_id == "ingest_flow_logs"]
    assert ti.state == "failed"
