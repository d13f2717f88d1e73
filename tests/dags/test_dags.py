"""The DAG folder as Airflow sees it: imports cleanly, parses fast, and the DAGs run for real."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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


def test_every_dag_has_docs_tags_retries_and_its_file_name(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert Path(dag.fileloc).stem == dag_id
        assert dag.doc_md and dag.tags, dag_id
        assert all(t.retries >= 1 for t in dag.tasks), dag_id


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_parses_fast_without_heavy_imports(path):
    """Each file imported in a fresh interpreter (Airflow itself already loaded, as in the DAG processor)."""
    code = (
        "import sys, time, runpy, airflow.sdk\n"
        "before = set(sys.modules); t = time.perf_counter()\n"
        f"runpy.run_path({str(path)!r})\n"
        "print(time.perf_counter() - t); print(' '.join(set(sys.modules) - before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    seconds, modules = out.stdout.strip().splitlines()[-2:] if "\n" in out.stdout.strip() else (out.stdout.strip(), "")
    heavy = {m.split(".")[0] for m in modules.split()} & set(HEAVY)
    assert not heavy, f"{path.name} imports {heavy} at parse time: import inside the task"
    assert float(seconds) < 0.5, f"{path.name} took {float(seconds):.2f}s to parse"


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
    started = time.perf_counter()
    run = dag.test(run_conf={"source": str(src), "start": "2024-07-29", "end": "2024-07-31"})
    assert run.state == "success", f"run state {run.state}"
    assert time.perf_counter() - started < 120
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
