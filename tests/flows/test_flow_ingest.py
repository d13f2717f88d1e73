"""Flow log ingestion: folder and S3 sources, manifest, quarantine, reruns and a crashed batch."""

from __future__ import annotations

import gzip
import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from trailguard.flows.ingestion import FlowStore, ingest_flows, recover
from trailguard.flows.logs import DEFAULT_FORMAT, flow_log_key, format_flow_file
from trailguard.ingest.sources import LocalFolderSource, S3Source

V2 = DEFAULT_FORMAT.split()
ACCOUNT = "123456789010"
T0 = 1767225600  # 2026-01-01T00:00:00Z


def _row(i: int, start: int = T0, status: str = "OK") -> tuple:
    if status != "OK":
        return (
            2,
            ACCOUNT,
            "eni-0a",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            start,
            start + 60,
            None,
            status,
        )
    return (
        2,
        ACCOUNT,
        "eni-0a",
        "10.0.1.5",
        "198.51.100.7",
        40000 + i,
        443,
        6,
        3,
        500 + i,
        start,
        start + 60,
        "ACCEPT",
        "OK",
    )


def _write(folder: Path, day: date, name: str, rows: list[tuple], *, gz: bool = True) -> str:
    key = flow_log_key(
        ACCOUNT,
        "us-east-1",
        day,
        "fl-0abc",
        datetime(day.year, day.month, day.day, 0, 5, tzinfo=timezone.utc),
        name,
    )
    path = folder / key
    path.parent.mkdir(parents=True, exist_ok=True)
    data = format_flow_file(V2, rows)
    path.write_bytes(gzip.compress(data) if gz else data)
    return key


def _logs(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    _write(logs, date(2026, 1, 1), "a1", [_row(i) for i in range(10)] + [_row(0, status="NODATA")])
    _write(logs, date(2026, 1, 1), "a2", [_row(i, T0 + 86400) for i in range(5)])  # records of the next day
    bad = logs / _write(logs, date(2026, 1, 1), "a3", [_row(1)])
    bad.write_bytes(bad.read_bytes()[:20])  # a truncated gzip file
    good = logs / _write(logs, date(2026, 1, 1), "a4", [_row(1)], gz=False)
    good.write_bytes(good.read_bytes() + b"2 1 eni-0a 10.0.0.1\n")
    ct = logs / "AWSLogs" / ACCOUNT / "CloudTrail" / "us-east-1" / "2026" / "01" / "01" / "x.json.gz"
    ct.parent.mkdir(parents=True)
    ct.write_bytes(gzip.compress(b'{"Records": []}'))
    return logs


def test_folder_ingest_counts_partitions_and_quarantine(tmp_path):
    root = tmp_path / "data"
    summary = ingest_flows(LocalFolderSource(_logs(tmp_path)), root)
    assert (
        summary.objects,
        summary.objects_ingested,
        summary.objects_quarantined,
        summary.objects_skipped,
    ) == (5, 3, 1, 1)
    assert (summary.records, summary.stored, summary.nodata, summary.quarantined) == (18, 17, 1, 1)
    assert summary.dates == ["2026-01-01", "2026-01-02"]
    store = FlowStore(root)
    day = store.read_partition("2026-01-01")
    assert day.num_rows == 12 and sorted(set(day.column("log_status").to_pylist())) == ["NODATA", "OK"]
    assert store.read_partition("2026-01-02").num_rows == 5
    rejected = store.read_quarantined_records().to_pylist()
    assert len(rejected) == 1 and rejected[0]["record_index"] == 3 and "truncated" in rejected[0]["reason"]
    reasons = list((root / "quarantine" / "flows" / "objects").glob("*.reason.json"))
    assert len(reasons) == 1 and "gzip" in json.loads(reasons[0].read_text())["reason"]
    manifest = store.read_manifest().to_pylist()
    assert sorted(m["status"] for m in manifest) == ["ingested", "ingested", "ingested", "quarantined"]
    assert not (root / "events").exists() and not list((root / "staging").glob("flows-*"))


def test_rerun_is_idempotent_and_a_new_file_is_added(tmp_path):
    logs, root = _logs(tmp_path), tmp_path / "data"
    ingest_flows(LocalFolderSource(logs), root, workers=2)
    again = ingest_flows(LocalFolderSource(logs), root, workers=2)
    assert (again.objects_already_ingested, again.stored, again.dates) == (4, 0, [])
    _write(logs, date(2026, 1, 1), "a5", [_row(i) for i in range(3)])
    third = ingest_flows(LocalFolderSource(logs), root)
    assert third.stored == 3 and FlowStore(root).read_partition("2026-01-01").num_rows == 15


def test_small_batches_commit_separately_with_the_same_result(tmp_path):
    logs = _logs(tmp_path)
    one = ingest_flows(LocalFolderSource(logs), tmp_path / "one", batch_records=1)
    many = FlowStore(tmp_path / "one")
    assert one.stored == 17 and len(many.partition_files("2026-01-01")) == 2
    assert many.read_manifest().num_rows == 4


def test_a_journalled_batch_left_by_a_crash_is_finished_once(tmp_path, monkeypatch):
    logs, root = _logs(tmp_path), tmp_path / "data"
    import trailguard.flows.ingestion as ingestion

    def crash(*args, **kwargs):
        raise RuntimeError("killed between the journal and the moves")

    monkeypatch.setattr(ingestion, "_apply", crash)
    with pytest.raises(RuntimeError):
        ingest_flows(LocalFolderSource(logs), root)
    monkeypatch.undo()
    store = FlowStore(root)
    assert store.read_partition("2026-01-01").num_rows == 0 and store.read_manifest().num_rows == 0
    again = ingest_flows(LocalFolderSource(logs), root)  # finishes the journal, then skips what it holds
    assert again.objects_already_ingested == 4 and again.stored == 0
    assert store.read_partition("2026-01-01").num_rows == 12 and store.read_manifest().num_rows == 4
    assert recover(store) == 0  # nothing left


def test_s3_source_in_aws_layout(aws_client, tmp_path):
    s3 = aws_client("s3")
    s3.create_bucket(Bucket="flows")
    logs = _logs(tmp_path)
    for path in logs.rglob("*"):
        if path.is_file():
            s3.put_object(
                Bucket="flows", Key="org/" + path.relative_to(logs).as_posix(), Body=path.read_bytes()
            )
    source = S3Source("s3://flows/org", client=s3, service="vpcflowlogs")
    summary = ingest_flows(source, tmp_path / "data", start=date(2026, 1, 1), end=date(2026, 1, 1), workers=2)
    assert (summary.objects_ingested, summary.objects_quarantined, summary.stored) == (3, 1, 17)
    assert ingest_flows(source, tmp_path / "data").objects_already_ingested == 4


def test_an_s3_data_root_holds_the_same_layout(moto_server, tmp_path):
    """Flows into s3://bucket/prefix: partitions, manifest and quarantine as keys, no staging left; a rerun
    skips everything."""
    import boto3
    import s3fs

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", moto_server)
        s3fs.S3FileSystem.clear_instance_cache()
        client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
        client.create_bucket(Bucket="flows-data")
        try:
            summary = ingest_flows(LocalFolderSource(_logs(tmp_path)), "s3://flows-data/root")
            again = ingest_flows(LocalFolderSource(tmp_path / "logs"), "s3://flows-data/root")
            store = FlowStore("s3://flows-data/root")
            rows = store.read_partition("2026-01-01").num_rows
            pages = client.get_paginator("list_objects_v2").paginate(Bucket="flows-data", Prefix="root/")
            keys = [o["Key"][5:] for page in pages for o in page.get("Contents", [])]
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
    assert (summary.stored, summary.objects_quarantined, again.objects_already_ingested, rows) == (
        17,
        1,
        4,
        12,
    )
    tops = {k.split("/")[0] + "/" + k.split("/")[1] for k in keys}
    assert tops == {"flows/date=2026-01-01", "flows/date=2026-01-02", "manifest/flows", "quarantine/flows"}


def test_flow_ingests_on_several_machines_are_kept_apart_by_a_lease_in_the_bucket(moto_server, tmp_path):
    """On an s3:// root the flows' lock is the lease _locks/flows.json in the bucket (a local lock file
    would keep apart only the runs of one machine): a run waits for another machine's live lease, bounded
    by TRAILGUARD_COMMIT_WAIT_SECONDS, then fails naming it, having written nothing."""
    import boto3
    import s3fs
    from trailguard.store.lease import LeaseTimeout

    owner = {
        "owner": "x",
        "host": "other-host",
        "pid": 7,
        "purpose": "flow ingest s3://x",
        "lease_seconds": 600,
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", moto_server)
        patch.setenv("TRAILGUARD_COMMIT_WAIT_SECONDS", "0.5")
        s3fs.S3FileSystem.clear_instance_cache()
        client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
        client.create_bucket(Bucket="flows-leased")
        client.put_object(
            Bucket="flows-leased", Key="root/_locks/flows.json", Body=json.dumps(owner).encode()
        )
        try:
            with pytest.raises(LeaseTimeout, match=r"the flows lease .* held by pid 7 on other-host"):
                ingest_flows(LocalFolderSource(_logs(tmp_path)), "s3://flows-leased/root")
            keys = [o["Key"] for o in client.list_objects_v2(Bucket="flows-leased").get("Contents", [])]
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
    assert keys == ["root/_locks/flows.json"]
