"""CloudTrail as others export it, built from the public fixtures: NDJSON (.ndjson, .jsonl, gzipped or
not), a JSON array of records, and `aws cloudtrail lookup-events` output are each told from the content
and give exactly the events and rejections CloudTrail's own `{"Records": [...]}` file gives."""

from __future__ import annotations

import gzip
import json

import pytest
from trailguard.ingest.ingestion import ingest
from trailguard.ingest.sources import LocalFolderSource
from trailguard.store.events import EventStore

from tests.conftest import fixture_records


def _ndjson(records: list) -> bytes:
    return "\n".join(json.dumps(r) for r in records).encode() + b"\n"


SHAPES = {
    "records.json": lambda rs: json.dumps({"Records": rs}).encode(),
    "export.ndjson": _ndjson,
    "export.jsonl.gz": lambda rs: gzip.compress(_ndjson(rs)),
    "array.json": lambda rs: json.dumps(rs).encode(),
    "lookup-events.json": lambda rs: json.dumps(
        {"Events": [{"EventId": r.get("eventID"), "CloudTrailEvent": json.dumps(r)} for r in rs]}
    ).encode(),
}


def _ingest_one(tmp_path, name: str, data: bytes):
    src = tmp_path / f"src-{name}"
    src.mkdir()
    (src / name).write_bytes(data)
    store = EventStore(tmp_path / f"data-{name}")
    summary = ingest(LocalFolderSource(src), store)
    ids = {
        i for d in store.dates() for i in store.read_partition(d, ["eventID"]).column("eventID").to_pylist()
    }
    return store, summary, ids


@pytest.mark.parametrize("fixture", ["aws_docs_samples.ndjson", "panther_rule_tests.ndjson"])
def test_every_shape_gives_what_the_records_file_gives(tmp_path, fixture):
    records = fixture_records(fixture)
    outcomes = {}
    for name, make in SHAPES.items():
        store, summary, ids = _ingest_one(tmp_path, name, make(records))
        assert summary.objects_ingested == 1 and summary.objects_quarantined == 0, name
        assert summary.records == len(records) == summary.new + summary.duplicates + summary.quarantined, name
        outcomes[name] = (ids, summary.quarantined, store.read_quarantined_records().num_rows)
    baseline = outcomes["records.json"]
    assert baseline[0], "the fixture gave events"
    for name, outcome in outcomes.items():
        assert outcome == baseline, f"{name} differs from the Records file"


def test_broken_lines_are_rejected_with_their_line_and_the_rest_kept(tmp_path):
    records = fixture_records("aws_docs_samples.ndjson")[:5]
    data = _ndjson(records[:2]) + b"{not json\n\n" + _ndjson(records[2:])
    store, summary, ids = _ingest_one(tmp_path, "broken.ndjson", data)
    assert ids == {r["eventID"] for r in records if r.get("eventID")}
    rejected = store.read_quarantined_records().to_pandas()
    assert len(rejected) == 1 and "line 3" in rejected["reason"].iloc[0]
    assert summary.records == 6 and summary.quarantined == 1


def test_the_same_events_in_two_shapes_are_stored_once(tmp_path):
    records = fixture_records("aws_docs_samples.ndjson")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.ndjson").write_bytes(_ndjson(records))
    (src / "b.json").write_bytes(SHAPES["lookup-events.json"](records))
    store = EventStore(tmp_path / "data")
    summary = ingest(LocalFolderSource(src), store)
    stored = sum(store.read_partition(d, ["eventID"]).num_rows for d in store.dates())
    assert stored == summary.new and summary.duplicates >= summary.new


def test_plain_text_with_a_json_suffix_is_still_quarantined(tmp_path):
    store, summary, ids = _ingest_one(tmp_path, "notes.jsonl", b"just some words\nand more\n")
    assert summary.objects_quarantined == 1 and not ids


def test_one_file_is_a_source_and_is_read_once(tmp_path):
    from trailguard.ingest.sources import open_source

    records = fixture_records("aws_docs_samples.ndjson")
    path = tmp_path / "export.jsonl"
    path.write_bytes(_ndjson(records))
    store = EventStore(tmp_path / "data")
    first = ingest(open_source(str(path)), store)
    again = ingest(open_source(str(path)), store)
    assert first.objects_ingested == 1 and first.new > 0
    assert again.objects_already_ingested == 1 and again.new == 0
