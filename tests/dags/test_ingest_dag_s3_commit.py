"""The cloudtrail_ingest DAG on an ``s3://`` data root while another machine commits into the same root
(issue 19, item 2): the DAG's ``commit_events`` waits for the other's lease in the bucket, then commits;
every eventID is stored once. The other machine is a spawned process sharing nothing local with the
test (its own temporary folder), and the S3 is a moto server over HTTP."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from pathlib import Path

import pytest

from tests.conftest import PROJECT
from tests.ingest.test_ingest import record, write_log

BUCKET = "trailguard-dag-lease"
DAY = "2024-07-30"


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT / "dags"))


def _other_machine(root: str, ids: list[str], ready, dag_waits, out: str) -> None:
    """Hold the commit lease until the DAG's commit waits for it, then commit ``ids`` and release."""
    import tempfile

    from trailguard.ingest import normalise
    from trailguard.store.events import EventStore
    from trailguard.store.fs import as_path

    tempfile.tempdir = out + ".tmp"
    os.makedirs(tempfile.tempdir)
    table = normalise.rows_to_table(
        [normalise.normalise(record(i, time=f"{DAY}T{int(i[1:]) % 24:02d}:00:00Z"), "other") for i in ids]
    )
    store = EventStore(as_path(root), lease_seconds=5)
    with store.commit_lock("another machine's commit"):
        ready.set()
        waited = dag_waits.wait(180)
        new, duplicates = store.append_events(table, run_id="other-machine")
    Path(out).write_text(json.dumps({"new": new.num_rows, "duplicates": duplicates, "saw_dag_wait": waited}))


class _Signal(logging.Handler):
    def __init__(self, event) -> None:
        super().__init__(logging.WARNING)
        self.event, self.messages = event, []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if "waiting for the commit lease" in record.getMessage():
            self.event.set()


@pytest.mark.slow
def test_the_ingest_dag_waits_for_another_machines_lease_and_stores_every_event_once(
    dagbag, moto_server, tmp_path, monkeypatch
):
    import boto3
    import s3fs
    from trailguard.store.events import EventStore
    from trailguard.store.fs import as_path

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    s3fs.S3FileSystem.clear_instance_cache()
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    root = f"s3://{BUCKET}/data"
    monkeypatch.setenv("TRAILGUARD_DATA", root)

    src = tmp_path / "logs"
    ours = [f"e{i}" for i in range(0, 40)]
    theirs = [f"e{i}" for i in range(25, 60)]  # 15 in common with ours
    write_log(src, "a.json.gz", [record(i, time=f"{DAY}T{int(i[1:]) % 24:02d}:00:00Z") for i in ours[:20]])
    write_log(src, "b.json.gz", [record(i, time=f"{DAY}T{int(i[1:]) % 24:02d}:00:00Z") for i in ours[20:]])

    context = multiprocessing.get_context("spawn")
    ready, dag_waits = context.Event(), context.Event()
    out = str(tmp_path / "other.json")
    other = context.Process(target=_other_machine, args=(root, theirs, ready, dag_waits, out))
    other.start()
    signal = _Signal(dag_waits)
    lease_log = logging.getLogger("trailguard.store.lease")
    lease_log.addHandler(signal)
    try:
        assert ready.wait(120), "the other machine did not take the lease"
        run = dagbag.get_dag("cloudtrail_ingest").test(
            run_conf={"source": str(src), "start": "2024-07-29", "end": "2024-07-31"}
        )
    finally:
        lease_log.removeHandler(signal)
        dag_waits.set()
        other.join(120)
        s3fs.S3FileSystem.clear_instance_cache()
    assert run.state == "success", f"run state {run.state}"
    assert other.exitcode == 0
    theirs_summary = json.loads(Path(out).read_text())
    assert theirs_summary["saw_dag_wait"], f"the DAG's commit never waited: {signal.messages}"
    assert any("another machine's commit" in m for m in signal.messages if "waiting for" in m)

    store = EventStore(as_path(root))
    ids = store.partition_ids(DAY).to_pylist()
    assert sorted(ids) == sorted(set(ours) | set(theirs)), "every eventID exactly once"
    assert theirs_summary["new"] == len(theirs)  # it committed first: all of its events were new
    commit = next(ti for ti in run.get_task_instances() if ti.task_id == "commit_events")
    assert commit.state == "success"
    assert not [k for k in client.list_objects_v2(Bucket=BUCKET, Prefix="data/_locks/").get("Contents", [])]
