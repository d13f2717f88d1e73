"""Ingestion split for workers: staged parts, the partition plan, stage per partition and one commit.

Whatever the split (one process, two worker processes, or plan -> mapped stages -> commit as the DAG
runs it), the store ends the same: same eventIDs, same rows, same manifest counts, nothing duplicated.
"""

from __future__ import annotations

from datetime import date

import pyarrow.compute as pc
import pytest
from trailguard.demo import generator
from trailguard.ingest.ingestion import commit, ingest, partition_label, plan_partitions, stage
from trailguard.ingest.sources import LocalFolderSource, S3Source, partition_of
from trailguard.store.events import EventStore

from tests.ingest.test_ingest import record, write_log


@pytest.fixture(scope="module")
def demo_logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logs")
    generator.generate(folder, days=3, events=6000, end=date(2026, 11, 20))
    return folder


def store_rows(store: EventStore) -> dict[str, tuple]:
    """eventID -> (day, eventName, raw) of every stored event; fails on a duplicate."""
    rows: dict[str, tuple] = {}
    for day in store.dates():
        table = store.read_partition(day, ["eventID", "eventName", "raw"])
        for event_id, name, raw in zip(
            *(table.column(c).to_pylist() for c in table.column_names), strict=True
        ):
            assert event_id not in rows, f"{event_id} stored twice"
            rows[event_id] = (day, name, raw)
    return rows


def manifest_counts(store: EventStore) -> dict[str, tuple]:
    table = store.read_manifest()
    return {
        key: (status, read, new, dup, quarantined)
        for key, status, read, new, dup, quarantined in zip(
            *(
                table.column(c).to_pylist()
                for c in (
                    "key",
                    "status",
                    "records_read",
                    "records_new",
                    "records_duplicate",
                    "records_quarantined",
                )
            ),
            strict=True,
        )
    }


def test_partition_of_aws_keys():
    key = "s3://b/trail/AWSLogs/o-abcdefghij/111122223333/CloudTrail/eu-west-1/2026/11/20/x.json.gz"
    assert partition_of(key) == {
        "account": "111122223333",
        "region": "eu-west-1",
        "day": "2026-11-20",
        "prefix": "s3://b/trail/AWSLogs/o-abcdefghij/111122223333/CloudTrail/eu-west-1/2026/11/20/",
    }
    assert (
        partition_of("AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/20/x.json")["account"]
        == "111122223333"
    )
    assert partition_of("cloudwatch://group/stream/2026-11-20T10") is None
    assert partition_of("flat/file.json") is None


def test_two_workers_store_the_same_as_one(demo_logs, tmp_path):
    one, two = EventStore(tmp_path / "one"), EventStore(tmp_path / "two")
    first = ingest(LocalFolderSource(demo_logs), one, workers=1, batch_records=2000)
    second = ingest(LocalFolderSource(demo_logs), two, workers=2, batch_records=2000)
    assert (first.records, first.new, first.duplicates, first.quarantined) == (
        second.records,
        second.new,
        second.duplicates,
        second.quarantined,
    )
    assert first.new > 5000 and first.dates == second.dates
    assert store_rows(one) == store_rows(two)
    assert manifest_counts(one) == manifest_counts(two)
    for name in ("one", "two"):
        assert not any((tmp_path / name / "staging").glob("*")), "staging is left empty"


def test_plan_stage_commit_equals_one_ingest(demo_logs, tmp_path):
    reference = EventStore(tmp_path / "reference")
    whole = ingest(LocalFolderSource(demo_logs), reference)

    store = EventStore(tmp_path / "split")
    source = LocalFolderSource(demo_logs)
    partitions = plan_partitions(source, store)
    labels = [partition_label(p) for p in partitions]
    folders = {
        p.parent.relative_to(demo_logs).as_posix() + "/"
        for p in demo_logs.rglob("*.json.gz")
        if "/CloudTrail/" in p.as_posix()
    }
    assert (
        len(partitions) == len(folders) + 1 and len(folders) >= 27
    )  # accounts x regions x 3 days, loose files
    assert labels[0] == "other (not in the AWS layout)" and labels[-1].endswith(
        "2026-11-21"
    )  # late deliveries
    assert {p["prefix"] for p in partitions[1:]} == folders
    assert sum(p["objects"] for p in partitions) == whole.objects - whole.objects_skipped

    stage_ids = [f"run1-{i}" for i in range(len(partitions))]
    staged = [
        stage(source, store, p, sid, workers=2 if i == 0 else 1)
        for i, (p, sid) in enumerate(zip(partitions, stage_ids, strict=True))
    ]
    assert store.dates() == [], "nothing is in the store before the commit"
    assert sum(s["records"] for s in staged) == whole.records

    summary = commit(store, stage_ids, source=source.uri)
    assert (summary.objects, summary.objects_skipped) == (
        whole.objects,
        whole.objects_skipped,
    )  # digests: "other"
    assert (summary.records, summary.new, summary.duplicates, summary.quarantined) == (
        whole.records,
        whole.new,
        whole.duplicates,
        whole.quarantined,
    )
    assert summary.objects_quarantined == whole.objects_quarantined and summary.dates == whole.dates
    assert store_rows(store) == store_rows(reference)
    assert manifest_counts(store) == manifest_counts(reference)

    # a retried commit, and a new plan, find nothing left to do
    assert commit(store, stage_ids).new == 0
    assert plan_partitions(source, store) == []


def test_duplicates_across_partitions_are_dropped_at_commit(tmp_path):
    src = tmp_path / "src"
    write_log(src, "a.json.gz", [record(f"e{i}") for i in range(10)])
    other = (
        src / "AWSLogs/444455556666/CloudTrail/us-east-1/2024/07/30"
    )  # an account trail delivering the same events
    other.mkdir(parents=True)
    (other / "b.json.gz").write_bytes(
        (src / "AWSLogs/111122223333/CloudTrail/us-east-1/2024/07/30/a.json.gz").read_bytes()
    )
    store = EventStore(tmp_path / "data")
    source = LocalFolderSource(src)
    partitions = plan_partitions(source, store)
    assert [p["account"] for p in partitions] == ["111122223333", "444455556666"]
    for i, partition in enumerate(partitions):
        stage(source, store, partition, f"s{i}")
    summary = commit(store, ["s0", "s1"])
    assert (summary.new, summary.duplicates) == (10, 10)
    assert len(store_rows(store)) == 10
    latest = manifest_counts(store)
    assert [v[2:4] for k, v in sorted(latest.items())] == [(10, 0), (0, 10)]


def test_s3_partition_listing_reads_only_its_prefix(aws_client, demo_logs, tmp_path):
    s3 = aws_client("s3")
    s3.create_bucket(Bucket="trail")
    for path in [p for p in sorted(demo_logs.rglob("*.json.gz")) if "/CloudTrail/" in p.as_posix()][:40]:
        s3.put_object(
            Bucket="trail", Key=f"logs/{path.relative_to(demo_logs).as_posix()}", Body=path.read_bytes()
        )
    source = S3Source("s3://trail/logs", client=s3, page_size=5)
    store = EventStore(tmp_path / "data")
    partitions = plan_partitions(source, store, start=date(2026, 11, 18), end=date(2026, 11, 20))
    assert partitions and all(p["prefix"].startswith("s3://trail/logs/AWSLogs/") for p in partitions)
    first = partitions[0]
    keys = [o.key for o in source.objects(prefix=first["prefix"])]
    assert len(keys) == first["objects"] and all(k.startswith(first["prefix"]) for k in keys)
    counts = stage(source, store, first, "s3-0")
    summary = commit(store, ["s3-0"], source=source.uri)
    assert counts["objects_ingested"] == first["objects"] and summary.new > 0
    stored = store.read_partition(summary.dates[0], ["source_key"]).column("source_key")
    assert pc.all(pc.starts_with(stored, first["prefix"])).as_py()


def test_group_partitions_caps_the_tasks_and_balances_bytes():
    from trailguard.ingest.ingestion import group_label, group_partitions

    few = [
        {"account": "1", "region": "r", "day": f"2026-11-{d:02d}", "prefix": f"p{d}/", "bytes": d}
        for d in range(1, 4)
    ]
    assert group_partitions(few, max_groups=8) == [[p] for p in few]
    many = [
        {
            "account": "1",
            "region": "r",
            "day": "2026-11-20",
            "prefix": f"p{i}/",
            "bytes": 100 if i % 10 == 0 else 10,
        }
        for i in range(50)
    ]
    groups = group_partitions(many, max_groups=4)
    assert len(groups) == 4
    assert sorted(p["prefix"] for g in groups for p in g) == sorted(
        p["prefix"] for p in many
    )  # each exactly once
    loads = [sum(p["bytes"] for p in g) for g in groups]
    assert max(loads) - min(loads) <= 100  # greedy by size: within one big partition of each other
    assert all(g == sorted(g, key=many.index) for g in groups), "plan order kept within a group"
    assert group_label(groups[0]).startswith(f"{len(groups[0])} partitions: 1/r/2026-11-20")
    events = [{"account": a, "region": "r", "events": n} for a, n in (("a", 5), ("b", 1), ("c", 1))]
    assert sorted(map(len, group_partitions(events, max_groups=2, weight="events"))) == [1, 2]
