"""Ingestion records each log file's SHA-256 (as AWS's digests define it) and verification uses it."""

from __future__ import annotations

import gzip
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
from test_integrity import DAY, NOW, Trail, _ring
from trailguard.ingest.ingestion import ingest
from trailguard.ingest.sources import LocalFolderSource
from trailguard.integrity.day import verify_day
from trailguard.integrity.digest import parse_digest
from trailguard.store.events import MANIFEST_SCHEMA, EventStore


def test_ingestion_records_the_hash_digests_state_and_verification_uses_it(tmp_path, key):
    trail = Trail(tmp_path, key, hours=3)
    store = EventStore(tmp_path / "data")
    source = LocalFolderSource(tmp_path / "logs")
    summary = ingest(source, store)
    assert summary.objects_ingested == 6 and summary.objects_skipped == 6  # 3 digests + 3 sidecars skipped
    hashes = store.manifest_hashes()
    listed = {
        f.key: f.sha256 for d in trail.digests for f in parse_digest(d, trail.path(d).read_bytes()).log_files
    }
    assert {k: v[2] for k, v in hashes.items()} == listed
    result = verify_day(tmp_path / "data", source, DAY, _ring(key), ingested=hashes, now=NOW)
    assert result.status == "valid" and result.summary["log_files_valid"] == 6


def test_a_file_changed_after_ingestion_is_checked_as_it_is_now(tmp_path, key):
    """Same key, new content: the recorded hash no longer describes the object, so it is read again."""
    trail = Trail(tmp_path, key, hours=2)
    store = EventStore(tmp_path / "data")
    source = LocalFolderSource(tmp_path / "logs")
    ingest(source, store)
    target = trail.logs[1][0]
    trail.path(target).write_bytes(gzip.compress(b'{"Records": []}', mtime=0))
    result = verify_day(tmp_path / "data", source, DAY, _ring(key), ingested=store.manifest_hashes(), now=NOW)
    assert result.summary["log_files_modified"] == 1 and result.status == "tampered"


def test_manifests_written_before_the_hash_column_still_read(tmp_path):
    store = EventStore(tmp_path / "data")
    old = pa.schema([f for f in MANIFEST_SCHEMA if f.name != "sha256"])
    row = {
        "key": "k",
        "size": 1,
        "etag": "e",
        "status": "ingested",
        "records_read": 1,
        "records_new": 1,
        "records_duplicate": 0,
        "records_quarantined": 0,
        "error": None,
        "run_id": "r",
        "seen_at": datetime(2026, 11, 1, tzinfo=timezone.utc),
    }
    store.manifest_dir.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row], schema=old), store.manifest_dir / "part-old.parquet")
    assert store.read_manifest().column("sha256").to_pylist() == [None]
    assert store.manifest_hashes() == {} and store.manifest_index() == {"k": (1, "e", "ingested")}
