"""Hostile corpus, evidence (issue 15, rows 3-4): nothing merged or dropped silently.

A record that comes again under a stored eventID with other content is a sign of tampering in CloudTrail:
it is kept in ``quarantine/conflicts/`` beside a pointer to the stored version, counted, and shown in the
day's report; a byte-identical redelivery stays a plain duplicate.
"""

from __future__ import annotations

import gzip
import json

from trailguard.ingest.ingestion import ingest
from trailguard.ingest.sources import LocalFolderSource
from trailguard.report.daily import store_notices
from trailguard.store.events import EventStore

from tests.ingest.test_ingest import KEY_DIR, record


def write(folder, name, records):
    path = folder / KEY_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps({"Records": records}).encode()))


def stored_ids(store):
    return sorted(i for d in store.dates() for i in store.partition_ids(d).to_pylist())


def test_changed_record_under_known_id_is_kept_apart_and_reported(tmp_path):
    src, store = tmp_path / "src", EventStore(tmp_path / "data")
    write(src, "a.json.gz", [record("e-1"), record("e-2")])
    first = ingest(LocalFolderSource(src), store)
    assert (first.new, first.conflicts) == (2, 0)
    write(src, "b.json.gz", [record("e-1"), record("e-2", eventName="DeleteTrail"), record("e-3")])
    second = ingest(LocalFolderSource(src), store)
    assert (second.new, second.duplicates, second.conflicts) == (1, 2, 1)
    assert stored_ids(store) == ["e-1", "e-2", "e-3"]  # the first version stays the stored one
    conflicts = store.read_conflicts("2024-07-30").to_pylist()
    assert len(conflicts) == 1
    kept = conflicts[0]
    assert kept["eventID"] == "e-2" and json.loads(kept["raw"])["eventName"] == "DeleteTrail"
    assert kept["source_key"].endswith("b.json.gz") and kept["stored_source_key"].endswith("a.json.gz")
    pointer = store.root / kept["stored_file"]
    assert pointer.exists() and pointer.parent == store.partition_dir("2024-07-30")
    assert "CONFLICTING" in "\n".join(second.lines())
    notes = store_notices(store.root, "2024-07-30")
    assert notes and "possible tampering" in notes[0] and "e-2" in notes[0]


def test_identical_redelivery_and_same_file_twice_are_plain_duplicates(tmp_path):
    src, store = tmp_path / "src", EventStore(tmp_path / "data")
    write(src, "a.json.gz", [record("e-1"), record("e-2")])
    write(src, "a-again.json.gz", [record("e-2"), record("e-1")])
    summary = ingest(LocalFolderSource(src), store)
    assert (summary.new, summary.duplicates, summary.conflicts) == (2, 2, 0)
    assert store.read_conflicts().num_rows == 0 and store_notices(store.root, "2024-07-30") == []


def test_conflict_within_one_file_and_across_days(tmp_path):
    """Two versions in one file; and the same eventID at another eventTime later in the same run."""
    src, store = tmp_path / "src", EventStore(tmp_path / "data")
    write(
        src,
        "a.json.gz",
        [record("e-1"), record("e-1", userAgent="changed"), record("e-9", time="2024-07-30T10:00:00Z")],
    )
    write(src, "b.json.gz", [record("e-9", time="2024-07-31T10:00:00Z")])
    summary = ingest(LocalFolderSource(src), store)
    assert (summary.new, summary.conflicts) == (2, 2)
    conflicts = {c["eventID"]: c for c in store.read_conflicts().to_pylist()}
    assert sorted(conflicts) == ["e-1", "e-9"]
    assert conflicts["e-9"]["day"] == "2024-07-31" and conflicts["e-9"]["stored_eventTime"].day == 30
