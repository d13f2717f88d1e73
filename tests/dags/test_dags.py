"""The DAG folder as Airflow sees it: imports cleanly, parses fast, and the DAGs run for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT

DAG_FILES = sorted((PROJECT / "dags").glob("*.py"))
HEAVY = ("pandas", "sklearn", "mlflow", "great_expectations", "boto3", "pyarrow", "matplotlib")


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT / "dags"))


def test_dag_folder_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "cloudtrail_ingest" in dagbag.dag_ids


CONTRACT_DAGS = {
    "cloudtrail_ingest",
    "daily_risk_report",
    "risk_model_training",
    "record_analyst_label",
    "flowlogs_ingest",
}


def test_the_contract_dags_exist(dagbag):
    assert CONTRACT_DAGS <= set(dagbag.dag_ids), sorted(CONTRACT_DAGS - set(dagbag.dag_ids))


def test_schedules_and_asset_wiring(dagbag):
    """The schedules of CONTRACTS.md and the Assets that chain the DAGs: ingest -> report (validated
    events), labels -> training, training -> models."""
    ingest, report = dagbag.get_dag("cloudtrail_ingest"), dagbag.get_dag("daily_risk_report")
    training, label = dagbag.get_dag("risk_model_training"), dagbag.get_dag("record_analyst_label")
    assert ingest.timetable.expression == "0 * * * *"  # @hourly
    assert type(label.timetable).__name__ == "NullTimetable"  # manual only (the trigger form)

    def outlets(dag) -> set[str]:
        return {o.uri.rstrip("/") for task in dag.tasks for o in task.outlets if hasattr(o, "uri")}

    assert {"trailguard://events", "trailguard://events-validated"} <= outlets(ingest)
    flows = dagbag.get_dag("flowlogs_ingest")
    assert flows.timetable.expression == "0 * * * *"  # @hourly, beside the CloudTrail ingest
    assert "trailguard://flows" in outlets(flows)
    assert "trailguard://labels" in outlets(label)
    assert "trailguard://models" in outlets(training)
    for dag, cron, asset in ((report, "0 6 * * *", "trailguard://events-validated"),
                             (training, "0 3 * * 1", "trailguard://labels")):  # fmt: skip
        assert dag.timetable.timetable.expression == cron, dag.dag_id  # on a clock ...
        assert dag.timetable.asset_condition.uri.rstrip("/") == asset, (
            dag.dag_id
        )  # ... or when the asset updates


@pytest.mark.parametrize(
    ("run_type", "new_labels", "needed", "goes_on"),
    [
        ("asset_triggered", 0, 1, False),
        ("asset_triggered", 2, 3, False),
        ("asset_triggered", 3, 3, True),
        ("manual", 0, 5, True),  # scheduled and manual runs always train
        ("scheduled", 0, 5, True),
    ],
)
def test_label_triggered_training_waits_for_min_new_labels(
    dagbag, tmp_path, monkeypatch, run_type, new_labels, needed, goes_on
):
    from types import SimpleNamespace

    from trailguard.model.labels import mark_training, record_label

    monkeypatch.setenv("TRAILGUARD_DATA", str(tmp_path))
    mark_training(tmp_path)
    for i in range(new_labels):
        record_label(tmp_path, f"ev-{i}", 80)
    gate = dagbag.get_dag("risk_model_training").get_task("enough_new_labels")
    decided = gate.python_callable(
        params={"min_new_labels": needed}, dag_run=SimpleNamespace(run_type=run_type)
    )
    assert decided is goes_on


def test_every_dag_has_docs_tags_retries_and_its_file_name(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert Path(dag.fileloc).stem == dag_id
        assert dag.doc_md and dag.tags, dag_id
        assert all(t.retries >= 1 for t in dag.tasks), dag_id


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_parses_fast_without_heavy_imports(path):
    """Each file imported in a fresh interpreter (Airflow itself already loaded, as in the DAG processor)
    imports no heavy library at parse time. How long parsing takes is measured by `make bench`."""
    code = (
        "import sys, time, runpy, airflow.sdk\n"
        # the DAG processor has the providers' Asset URI handlers loaded before it parses any file
        "from airflow.providers_manager import ProvidersManager\n"
        "ProvidersManager().initialize_providers_asset_uri_resources()\n"
        "before = set(sys.modules); t = time.perf_counter()\n"
        f"runpy.run_path({str(path)!r})\n"
        "print(time.perf_counter() - t); print(' '.join(set(sys.modules) - before))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seconds, modules = (
        out.stdout.strip().splitlines()[-2:] if "\n" in out.stdout.strip() else (out.stdout.strip(), "")
    )
    heavy = {m.split(".")[0] for m in modules.split()} & set(HEAVY)
    assert not heavy, f"{path.name} imports {heavy} at parse time: import inside the task"


@pytest.mark.slow
def test_ingest_dag_runs_on_logs(dagbag, tmp_path, monkeypatch):
    from tests.ingest.test_ingest import record, write_log

    src = tmp_path / "logs"
    write_log(src, "a.json.gz", [record(f"e{i}", time=f"2024-07-30T{i:02d}:00:00Z") for i in range(12)])
    write_log(src, "b.json.gz", [record(f"e{i}", time=f"2024-07-30T{i:02d}:00:00Z") for i in range(6, 18)])
    other = src / "AWSLogs/444455556666/CloudTrail/eu-west-1/2024/07/30"  # a second partition, overlapping
    other.mkdir(parents=True)
    (other / "c.json.gz").write_bytes(next(src.rglob("b.json.gz")).read_bytes())
    monkeypatch.setenv("TRAILGUARD_DATA", str(tmp_path / "data"))
    dag = dagbag.get_dag("cloudtrail_ingest")
    run = dag.test(run_conf={"source": str(src), "start": "2024-07-29", "end": "2024-07-31"})
    assert run.state == "success", f"run state {run.state}"
    from trailguard.store.events import EventStore

    store = EventStore(tmp_path / "data")
    assert store.dates() == ["2024-07-30"]
    assert store.read_partition("2024-07-30").num_rows == 18
    assert (tmp_path / "data" / "quality" / "date=2024-07-30" / "result.json").exists()
    from trailguard.explore.activity import read_activity

    activity = read_activity(tmp_path / "data", ["2024-07-30"])  # written by validate_events
    assert int(activity.loc[activity["dim"] == "category", "events"].sum()) == 18
    stages = [ti for ti in run.get_task_instances() if ti.task_id == "stage_partitions"]
    assert sorted(ti.map_index for ti in stages) == [0, 1], "one mapped stage task per account x region x day"
    assert all(ti.state == "success" for ti in stages)
    assert not any((tmp_path / "data" / "staging").iterdir()), "every stage was committed and cleaned up"
