"""Ingestion from a local folder: real public records, bad files, idempotent reruns, counts that add up."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from trailguard.ingest.ingestion import IngestSummary, decode_object, ingest
from trailguard.ingest.sources import LocalFolderSource, skip_reason
from trailguard.store.events import EventStore, quarantine_name

from tests.conftest import fixture_records

KEY_DIR = "AWSLogs/111122223333/CloudTrail/us-east-1/2024/07/30"


def record(event_id: str, time: str = "2024-07-30T10:00:00Z", **extra) -> dict:
    return {
        "eventVersion": "1.09",
        "eventID": event_id,
        "eventTime": time,
        "eventSource": "ec2.amazonaws.com",
        "eventName": "DescribeInstances",
        "eventType": "AwsApiCall",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.7",
        "userIdentity": {
            "type": "IAMUser",
            "arn": "arn:aws:iam::111122223333:user/alice",
            "userName": "alice",
        },
        **extra,
    }


def write_log(folder: Path, name: str, records: list, *, compress: bool = True) -> Path:
    path = folder / KEY_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps({"Records": records}).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def assert_counts_add_up(summary: IngestSummary) -> None:
    assert summary.objects == summary.objects_ingested + summary.objects_skipped + summary.objects_quarantined
    assert summary.records == summary.new + summary.duplicates + summary.quarantined


def stored_ids(store: EventStore) -> list[str]:
    return [
        i
        for day in store.dates()
        for i in store.read_partition(day, ["eventID"]).column("eventID").to_pylist()
    ]


def test_public_fixtures_every_event_stored_once(tmp_path):
    records = (
        fixture_records("aws_docs_samples.ndjson")
        + fixture_records("stratus_red_team_detonations.ndjson")
        + fixture_records("panther_rule_tests.ndjson")
    )
    src = tmp_path / "src"
    write_log(src, "fixtures.json.gz", records)
    store = EventStore(tmp_path / "data")
    summary = ingest(LocalFolderSource(src), store)
    assert_counts_add_up(summary)
    assert summary.records == len(records) == 816

    ids = stored_ids(store)
    assert len(ids) == len(set(ids)), "an eventID is stored twice"
    with_time = {
        r["eventID"]
        for r in records
        if isinstance(r.get("eventID"), str) and r.get("eventTime") not in (None, "redacted")
    }
    assert set(ids) == with_time
    # records CloudTrail would never deliver are kept with the reason, not dropped
    rejected = store.read_quarantined_records().to_pandas()
    assert len(rejected) == summary.quarantined
    assert (rejected["reason"] == "eventID is missing").sum() == sum(1 for r in records if "eventID" not in r)
    assert rejected["reason"].str.contains("'redacted'").sum() == 1
    assert rejected["raw"].map(json.loads).map(type).eq(dict).all()


def test_fixture_odd_values_are_kept(tmp_path):
    stratus = fixture_records("stratus_red_team_detonations.ndjson")
    panther = fixture_records("panther_rule_tests.ndjson")
    src = tmp_path / "src"
    write_log(src, "a.json.gz", stratus + panther)
    store = EventStore(tmp_path / "data")
    ingest(LocalFolderSource(src), store)
    frame = __import__("pyarrow").concat_tables([store.read_partition(d) for d in store.dates()]).to_pandas()
    assert frame["awsRegion"].str.contains("apiso-northsouth-3r").any()  # scrambled, flagged later, not lost
    spaced = next(
        r
        for r in panther
        if str(r.get("eventTime", "")).count(" ") and "." in str(r["eventTime"]) and r.get("eventID")
    )
    stored = frame.loc[frame["eventID"] == spaced["eventID"], "eventTime"].iloc[0]
    assert stored.isoformat().startswith(spaced["eventTime"][:19].replace(" ", "T"))


def test_rerun_and_overlap_are_idempotent(tmp_path):
    src = tmp_path / "src"
    write_log(src, "one.json.gz", [record(f"e{i}") for i in range(10)])
    write_log(src, "two.json", [record(f"e{i}") for i in range(5, 15)], compress=False)
    store = EventStore(tmp_path / "data")

    first = ingest(LocalFolderSource(src), store)
    assert (first.new, first.duplicates, first.objects_ingested) == (15, 5, 2)

    again = ingest(LocalFolderSource(src), EventStore(tmp_path / "data"))
    assert (again.records, again.new, again.objects_already_ingested) == (0, 0, 2)

    # an overlapping delivery (organisation + account trail): a new object with old and new events
    write_log(src, "three.json.gz", [record(f"e{i}") for i in range(12, 20)])
    third = ingest(LocalFolderSource(src), EventStore(tmp_path / "data"))
    assert (third.objects_ingested, third.objects_already_ingested, third.new, third.duplicates) == (
        1,
        2,
        5,
        3,
    )
    assert sorted(stored_ids(store)) == sorted(f"e{i}" for i in range(20))

    manifest = store.read_manifest().to_pandas()
    latest = manifest.drop_duplicates("key", keep="last").set_index("key")
    assert latest.loc[f"{KEY_DIR}/three.json.gz", "records_new"] == 5
    assert latest.loc[f"{KEY_DIR}/three.json.gz", "records_duplicate"] == 3
    for s in (first, again, third):
        assert_counts_add_up(s)


BAD_FILES = {
    "truncated.json.gz": (gzip.compress(json.dumps({"Records": [record("t1")]}).encode())[:25], "gzip"),
    "empty.json": (b"", "empty file"),
    "text.json": (b"hello, this is not json", "not valid JSON"),
    "norecords.json": (b'{"foo": []}', "no Records"),
    "array.json": (b"[1, 2]", "is a list"),
    "records-not-list.json": (b'{"Records": {"a": 1}}', "Records is a object"),
    "gzip-of-text.json.gz": (gzip.compress(b"plain text"), "not valid JSON"),
}


def test_bad_files_are_quarantined_and_nothing_else_is_lost(tmp_path):
    src = tmp_path / "src"
    write_log(src, "good.json.gz", [record("g1"), record("g2")])
    for name, (data, _) in BAD_FILES.items():
        (src / KEY_DIR / name).write_bytes(data)
    digest = (
        src
        / "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2024/07/30/x_CloudTrail-Digest_us-east-1_x.json.gz"
    )
    digest.parent.mkdir(parents=True)
    digest.write_bytes(gzip.compress(b'{"digestStartTime": "x"}'))
    (src / "README.txt").write_text("not a log")

    store = EventStore(tmp_path / "data")
    summary = ingest(LocalFolderSource(src), store)
    assert_counts_add_up(summary)
    assert summary.objects_quarantined == len(BAD_FILES)
    assert summary.objects_skipped == 2  # the digest and the README
    assert sorted(stored_ids(store)) == ["g1", "g2"]

    manifest = store.read_manifest().to_pandas().set_index("key")
    for name, (data, reason) in BAD_FILES.items():
        entry = manifest.loc[f"{KEY_DIR}/{name}"]
        assert entry["status"] == "quarantined" and reason in entry["error"], (name, entry["error"])
        kept = [store.quarantine_dir / "objects" / quarantine_name(f"{KEY_DIR}/{name}")]
        assert kept and kept[0].read_bytes() == data, name
        assert json.loads(Path(str(kept[0]) + ".reason.json").read_text())["reason"] == entry["error"]
    assert "digest" in manifest.loc[digest.relative_to(src).as_posix(), "error"]


def test_bad_records_are_quarantined_and_the_rest_of_the_file_kept(tmp_path):
    src = tmp_path / "src"
    write_log(
        src,
        "mixed.json.gz",
        [
            record("ok1"),
            "not an object",
            {"eventTime": "2024-07-30T00:00:00Z"},
            record("ok2", time="redacted"),
            record("ok3"),
        ],
    )
    store = EventStore(tmp_path / "data")
    summary = ingest(LocalFolderSource(src), store)
    assert (summary.new, summary.quarantined) == (2, 3)
    reasons = store.read_quarantined_records().to_pandas().set_index("record_index")["reason"].to_dict()
    assert reasons == {
        1: "record is not a JSON object but str",
        2: "eventID is missing",
        3: "eventTime is not a time: 'redacted'",
    }


def test_repairs_are_noted_and_original_bytes_kept(tmp_path):
    src = tmp_path / "src"
    path = src / KEY_DIR / "bom.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"Records": [record("b1")]}).encode())
    bad_utf8 = json.dumps({"Records": [record("u1", userAgent="X")]}).encode().replace(b'"X"', b'"\xff\xfe"')
    (src / KEY_DIR / "utf8.json").write_bytes(bad_utf8)
    store = EventStore(tmp_path / "data")
    summary = ingest(LocalFolderSource(src), store)
    assert summary.new == 2 and summary.objects_ingested == 2
    notes = store.read_manifest().to_pandas().set_index("key")["error"]
    assert "byte order mark" in notes[f"{KEY_DIR}/bom.json"]
    assert "invalid UTF-8" in notes[f"{KEY_DIR}/utf8.json"]
    assert (
        store.quarantine_dir / "objects" / quarantine_name(f"{KEY_DIR}/utf8.json")
    ).read_bytes() == bad_utf8


def test_date_range_filters_by_delivery_date(tmp_path):
    src = tmp_path / "src"
    write_log(src, "a.json.gz", [record("d1")])
    other = src / "AWSLogs/111122223333/CloudTrail/us-east-1/2024/08/02/b.json.gz"
    other.parent.mkdir(parents=True)
    shutil.copy(src / KEY_DIR / "a.json.gz", other)
    from datetime import date

    summary = ingest(
        LocalFolderSource(src), EventStore(tmp_path / "data"), start=date(2024, 8, 1), end=date(2024, 8, 3)
    )
    assert summary.objects == 1


def test_skip_reason():
    assert skip_reason("AWSLogs/1/CloudTrail-Digest/us-east-1/2024/01/01/x.json.gz")
    assert skip_reason("AWSLogs/1/CloudTrail-Insight/us-east-1/2024/01/01/x.json.gz")
    assert skip_reason("notes.txt")
    assert skip_reason("AWSLogs/1/CloudTrail/us-east-1/2024/01/01/x.json.gz") is None


def test_decode_rejects_oversized_nesting_without_crashing():
    deep = b'{"Records": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
    with pytest.raises(ValueError):
        decode_object("deep.json", deep)


def test_command_line_ingest_uses_every_cpu_unless_told(tmp_path, monkeypatch, capsys):
    from trailguard import cli

    monkeypatch.delenv("TRAILGUARD_INGEST_WORKERS", raising=False)
    monkeypatch.setattr(cli.os, "cpu_count", lambda: 2)
    assert cli._ingest_workers(None, 1) == 2  # a terminal: the machine's cores
    assert cli._ingest_workers(3, 1) == 3
    assert cli._ingest_workers(0, 1) == 2
    monkeypatch.setenv("TRAILGUARD_INGEST_WORKERS", "1")
    assert cli._ingest_workers(None, 1) == 1  # the setting, when set, wins over the default

    monkeypatch.delenv("TRAILGUARD_INGEST_WORKERS")
    for i in range(4):
        write_log(tmp_path / "logs", f"f{i}.json.gz", [record(f"e{i}-{j}") for j in range(50)])
    assert (
        cli.main(["--data", str(tmp_path / "data"), "ingest", "--source", str(tmp_path / "logs"), "--json"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert (summary["objects_ingested"], summary["new"], summary["duplicates"]) == (4, 200, 0)
