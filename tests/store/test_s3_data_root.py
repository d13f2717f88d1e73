"""A data root at s3://bucket/prefix, against a real moto server (boto3 and s3fs over HTTP).

The fast tests cover the filesystem layer (what is local stays pathlib, S3 writes are whole objects, no
temporary keys, clear errors) and validation's row quarantine. The slow ones run ingestion split as the
DAG runs it (plan, stage into S3, commit) and the library pipeline - ingest, validate, train, score,
report, mail to .eml, label - on the same small demo logs into a local folder and into S3, and check
that the bucket holds the contract layout and that both roots give the same events, quality verdicts,
scores and report.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from trailguard.store.fs import (
    as_path,
    parquet_file,
    read_parquet,
    visible_files,
    write_bytes_atomic,
    write_parquet_atomic,
)
from trailguard.store.settings import ConfigError, load_settings

from tests.store.s3 import keys_below, moto_bucket

BUCKET = "trailguard-data"


@pytest.fixture(scope="module")
def s3(moto_server):
    with moto_bucket(moto_server, BUCKET) as client:
        yield client


def keys_under(client, prefix: str) -> list[str]:
    return keys_below(client, BUCKET, prefix)


# -- fast: the filesystem layer ------------------------------------------------------------------------------
def test_a_local_root_stays_a_plain_pathlib_path(tmp_path):
    assert type(load_settings(data_root=str(tmp_path)).data_path) is type(Path(tmp_path))
    assert type(load_settings(data_root="./data").data_path) is type(Path("data"))
    root = load_settings(data_root="s3://bucket/some/prefix").data_path
    assert not isinstance(root, Path) and str(root / "events") == "s3://bucket/some/prefix/events"
    with pytest.raises(ConfigError, match=r"TRAILGUARD_DATA: .*s3://bucket/prefix, not gs://"):
        _ = load_settings(data_root="gs://bucket/prefix").data_path


def test_s3_writes_are_whole_objects_without_temporary_keys(s3):
    root = as_path(f"s3://{BUCKET}/unit")
    table = pa.table({"eventID": ["a", "b", "c"], "n": [1, 2, 3]})
    write_parquet_atomic(table, root / "events" / "date=2026-11-20" / "part-1.parquet", compression="zstd")
    write_bytes_atomic(b'{"status": "passed"}', root / "quality" / "date=2026-11-20" / "result.json")

    assert keys_under(s3, "unit") == [
        "events/date=2026-11-20/part-1.parquet",
        "quality/date=2026-11-20/result.json",
    ]
    part = root / "events" / "date=2026-11-20" / "part-1.parquet"
    assert read_parquet(part, columns=["eventID"]).column("eventID").to_pylist() == ["a", "b", "c"]
    assert parquet_file(part).metadata.num_rows == 3
    assert json.loads((root / "quality" / "date=2026-11-20" / "result.json").read_text()) == {
        "status": "passed"
    }
    # no folders on S3: a prefix is a "folder" while a key is under it
    assert visible_files(root / "events" / "date=2026-11-20") == [part]
    assert visible_files(root / "events" / "date=2026-11-21") == []
    assert sorted(p.name for p in (root / "events").iterdir()) == ["date=2026-11-20"]


def test_a_failed_s3_write_leaves_no_object(s3):
    root = as_path(f"s3://{BUCKET}/failed")
    with pytest.raises((ValueError, pa.ArrowException)):
        write_parquet_atomic(pa.table({"a": [1]}), root / "x.parquet", compression="no-such-codec")
    assert keys_under(s3, "failed") == []


def test_an_s3_root_needs_an_mlflow_tracking_uri(s3, capsys, monkeypatch):
    from trailguard.cli import main
    from trailguard.model.training import tracking_uri_for

    monkeypatch.delenv(
        "MLFLOW_TRACKING_URI", raising=False
    )  # mlflow.set_tracking_uri in earlier tests sets it

    with pytest.raises(ConfigError, match="set MLFLOW_TRACKING_URI"):
        tracking_uri_for(as_path(f"s3://{BUCKET}/mlflow-less"))
    assert tracking_uri_for(as_path(f"s3://{BUCKET}/x"), "sqlite:////tmp/m.db") == "sqlite:////tmp/m.db"

    assert main(["--data", f"s3://{BUCKET}/mlflow-less", "train"]) == 2
    assert "set MLFLOW_TRACKING_URI" in capsys.readouterr().err
    assert main(["--data", f"s3://{BUCKET}/mlflow-less", "demo"]) == 2
    assert "local data root" in capsys.readouterr().err
    assert keys_under(s3, "mlflow-less") == []


def test_validation_moves_rows_and_rewrites_the_partition_on_s3(s3):
    from trailguard.ingest import normalise
    from trailguard.quality.gate import QUARANTINE_SCHEMA, validate_partition
    from trailguard.store.events import EventStore

    from tests.quality.test_quality import DAY, NOW, clean_records, record, rows_of

    store = EventStore(as_path(f"s3://{BUCKET}/quality"))
    new, duplicates = store.append_events(normalise.rows_to_table(rows_of(clean_records())), run_id="first")
    assert (new.num_rows, duplicates) == (4, 0)
    late = rows_of([record(99, time="2026-11-19T23:59:59Z")])  # filed under DAY by hand: another day's event
    store.rewrite_partition(DAY, pa.concat_tables([store.read_partition(DAY), normalise.rows_to_table(late)]))
    before = keys_under(s3, "quality")

    result = validate_partition(store, DAY, now=NOW)

    assert (result.rows_passed, result.rows_quarantined, result.status) == (4, 1, "warning")
    keys = keys_under(s3, "quality")
    parts = [k for k in keys if k.startswith(f"events/date={DAY}/")]
    assert len(parts) == 1 and parts[0] not in before  # one new compact part, the old one deleted
    moved = [k for k in keys if k.startswith(f"quarantine/date={DAY}/rows-")]
    assert len(moved) == 1 and json.loads(result.result_path.read_text())["quarantine_file"] == moved[0]
    row = read_parquet(result.quarantine_path, schema=QUARANTINE_SCHEMA).to_pylist()
    assert [(r["eventID"], r["quarantine_reason"]) for r in row] == [
        (record(99)["eventID"], "eventTime_in_day")
    ]
    # deduplication reads the day back from S3: the same events again are all duplicates
    again = EventStore(store.root).append_events(
        normalise.rows_to_table(rows_of(clean_records())), run_id="again"
    )
    assert (again[0].num_rows, again[1]) == (0, 4)


@pytest.mark.slow
def test_staged_ingestion_on_s3_equals_a_local_ingest(s3, tmp_path):
    """The DAG's split with an S3 root: stage tasks (any worker) leave their parts under staging/ in the
    bucket, stage.json last; the commit copies them into the partitions within S3. A one-process ingest
    with two worker processes stages in a local folder and uploads. Both store what a local ingest does."""
    from trailguard.demo import generator
    from trailguard.ingest.ingestion import commit, ingest, plan_partitions, stage
    from trailguard.ingest.sources import LocalFolderSource
    from trailguard.store.events import EventStore

    from tests.ingest.test_ingest_partitions import manifest_counts, store_rows

    generator.generate(tmp_path / "logs", days=1, events=300, bad_files=True)
    source = LocalFolderSource(tmp_path / "logs")
    reference = EventStore(tmp_path / "data")
    whole = ingest(source, reference)

    store = EventStore(as_path(f"s3://{BUCKET}/staged"))
    partitions = plan_partitions(source, store)
    stage_ids = [f"run-{i}" for i in range(len(partitions))]
    for i, (partition, stage_id) in enumerate(zip(partitions, stage_ids, strict=True)):
        stage(source, store, partition, stage_id, workers=2 if i == 0 else 1)
    staged = keys_under(s3, "staged/staging")
    assert {k.split("/")[0] for k in staged} == set(stage_ids) and f"{stage_ids[0]}/stage.json" in staged
    assert store.dates() == []  # nothing in the store before the commit
    assert store.clean_staging() == []  # fresh stages are kept (their age is their newest object's)

    summary = commit(store, stage_ids, source=source.uri)
    assert (summary.new, summary.duplicates, summary.quarantined) == (
        whole.new,
        whole.duplicates,
        whole.quarantined,
    )
    assert store_rows(store) == store_rows(reference)
    assert manifest_counts(store) == manifest_counts(reference)
    assert keys_under(s3, "staged/staging") == []

    parallel = EventStore(as_path(f"s3://{BUCKET}/parallel"))
    assert ingest(source, parallel, workers=2, batch_records=500).new == whole.new
    assert store_rows(parallel) == store_rows(reference)
    assert not [k for k in keys_under(s3, "parallel") if k.startswith("staging/")]

    stage(source, store, partitions[0], "abandoned")  # a stage whose commit never came
    assert store.clean_staging(older_than_hours=-1) == ["abandoned"]
    assert keys_under(s3, "staged/staging") == []


# -- slow: the pipeline on both roots -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipeline(s3, tmp_path_factory):
    """Ingest, validate and score the same demo logs into a local root and into S3; train once, on S3 (a
    second training would double the time; both roots are scored by its champions); report, write the
    mail as .eml, record a label."""
    from trailguard.demo import generator
    from trailguard.ingest.ingestion import ingest
    from trailguard.ingest.sources import LocalFolderSource
    from trailguard.model.labels import record_label
    from trailguard.model.scoring import score_day
    from trailguard.model.training import train
    from trailguard.quality.gate import validate_partition
    from trailguard.report.daily import build_report
    from trailguard.report.mail import send_report
    from trailguard.store.events import EventStore

    work = tmp_path_factory.mktemp("s3-root")
    demo = generator.generate(work / "logs", days=10, events=3000, bad_files=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    now = datetime.combine(demo.end, datetime.min.time(), timezone.utc) + timedelta(days=1, hours=3)
    stores = {"local": EventStore(work / "data"), "s3": EventStore(as_path(f"s3://{BUCKET}/trailguard/prod"))}
    runs: dict[str, dict] = {}
    for name, store in stores.items():
        run = runs[name] = {"store": store}
        run["ingest"] = ingest(LocalFolderSource(work / "logs"), store)
        run["quality"] = {day: validate_partition(store, day, now=now) for day in store.dates()}
    runs["s3"]["train"] = train(stores["s3"], tracking_uri=uri)
    day = demo.end.isoformat()
    for name, store in stores.items():
        run = runs[name]
        run["score"] = score_day(store, day, tracking_uri=uri)
        run["report"] = build_report(store.root, day)
        run["mail"] = send_report(run["report"], smtp=None, recipients=["soc@example.com"])
        run["label"] = record_label(
            store.root, run["report"].top_events["eventID"].iloc[0], 5, verdict="benign"
        )
    return runs, day


@pytest.mark.slow
def test_the_bucket_holds_the_contract_layout(pipeline, s3):
    runs, day = pipeline
    keys = keys_under(s3, "trailguard/prod")
    days = runs["s3"]["store"].dates()
    assert len(days) == 10 and days[-1] == day

    def has(pattern: str) -> bool:
        return any(re.fullmatch(pattern, key) for key in keys)

    for d in days:
        assert has(rf"events/date={d}/part-[^/]+\.parquet"), d
        assert {f"quality/date={d}/result.json", f"quality/date={d}/index.html"} <= set(keys)
        assert has(rf"quality/date={d}/result-[^/]+\.json"), d
    assert has(r"manifest/objects/part-[^/]+\.parquet")
    assert has(r"quarantine/objects/[^/]+\.reason\.json") and has(r"quarantine/records/part-[^/]+\.parquet")
    assert any(
        k.startswith(f"scores/date={day}/part-") and k.endswith(".parquet") for k in keys
    )  # one per partition
    for name in ("report.html", "top_events.csv", "report.json", "chart.png", "report.eml"):
        assert f"reports/{day}/{name}" in keys
    assert has(r"labels/labels-[^/]+\.parquet") and "training/last_training.json" in keys
    assert not [k for k in keys if ".tmp-" in k or k.endswith("/")]  # no temporary keys, no folder markers
    # every folder of the local run is a prefix in the bucket (the local run did not train; its commit
    # lock file is local-only)
    local_root = runs["local"]["store"].root
    local_dirs = {str(p.parent.relative_to(local_root)) for p in local_root.rglob("*")
                  if p.is_file() and p.name != ".commit.lock"}  # fmt: skip
    assert local_dirs <= {k.rsplit("/", 1)[0] for k in keys}


@pytest.mark.slow
def test_an_s3_root_gives_what_a_local_root_gives(pipeline):
    from trailguard.model.labels import labels_since_last_training, read_labels
    from trailguard.report.daily import read_scores

    runs, day = pipeline
    local, remote = runs["local"], runs["s3"]
    counts = ("objects", "records", "new", "duplicates", "quarantined", "objects_quarantined")
    assert {k: remote["ingest"].as_dict()[k] for k in counts} == {
        k: local["ingest"].as_dict()[k] for k in counts
    }
    assert remote["ingest"].as_dict()["objects_quarantined"] > 0  # the demo's broken files, kept in S3

    assert remote["store"].dates() == local["store"].dates()
    for d in local["store"].dates():
        ours = remote["store"].read_partition(d).sort_by("eventID")
        assert ours.equals(local["store"].read_partition(d).sort_by("eventID")), d
    verdicts = {
        name: {d: (q.status, q.rows_in, q.rows_passed, q.rows_quarantined, [(o.name, o.success) for o in q.outcomes])
               for d, q in run["quality"].items()}
        for name, run in runs.items()
    }  # fmt: skip
    assert verdicts["s3"] == verdicts["local"]

    trained = remote["train"]
    assert all(uc.decision and uc.decision.promoted for uc in trained.use_cases.values()), trained.lines()
    scores = {name: read_scores(run["store"].root, day).sort_values("eventID", ignore_index=True)
              for name, run in runs.items()}  # fmt: skip
    assert len(scores["s3"]) == sum(remote["score"].scored.values()) > 0
    pd.testing.assert_frame_equal(scores["s3"], scores["local"])

    reports = {name: run["report"] for name, run in runs.items()}
    assert reports["s3"].csv_path.read_bytes() == reports["local"].csv_path.read_bytes()
    documents = {name: json.loads(report.json_path.read_text()) for name, report in reports.items()}
    for document in documents.values():
        document.pop("generated_at")
    assert documents["s3"] == documents["local"]
    assert len(reports["s3"].top_events) == 20
    assert remote["mail"].status == "written"
    assert b"Subject: " in remote["mail"].eml_path.read_bytes()

    labels = read_labels(remote["store"].root)
    assert labels.set_index("eventID").loc[reports["s3"].top_events["eventID"].iloc[0], "risk_score"] == 5
    assert labels_since_last_training(remote["store"].root) == 1
