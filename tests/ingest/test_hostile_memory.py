"""Hostile corpus, memory (issue 15, rows 1-2): bombs are refused within the configured limits.

Each bomb sits beside a valid file; a real ``trailguard ingest`` subprocess reads them, its peak RSS is
measured and must stay under 1 GB, the bomb is quarantined with the reason and the valid records are
stored exactly once.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from trailguard.ingest.ingestion import decode_object, ingest
from trailguard.ingest.limits import IngestLimits, gunzip, record_spans
from trailguard.ingest.sources import LocalFolderSource
from trailguard.store.events import EventStore

from tests.ingest.test_ingest import KEY_DIR, record

PEAK_LIMIT_MB = 1024


def whitespace_bomb() -> bytes:
    """4.5 GiB of whitespace inside ``{"Records":[...]}``, as 72 gzip members of 64 MiB (a reader must take
    every member, so this expands like one stream), about 4.7 MB on disk."""
    spaces = gzip.compress(b" " * (64 * 2**20), compresslevel=9)
    return gzip.compress(b'{"Records":[') + spaces * 72 + gzip.compress(b"]}")


def zeros_bomb() -> bytes:
    """``{"Records":[0,0,...]}`` with 20 million entries: about 40 KB gzipped, 40 MB of JSON."""
    inflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = (
        inflater.compress(b'{"Records":[') + inflater.compress(b"0," * 19_999_999) + inflater.compress(b"0]}")
    )
    return body + inflater.flush()


# Run in the child: the CLI, then its peak RSS. The kernel's figure for a child (wait4, RUSAGE_CHILDREN)
# starts from the RSS of the process it was forked from - pytest, large after a full suite - so the child
# reports its own high-water mark (VmHWM, reset by exec) and its workers' (forked from it), the larger.
_MEASURE = """
import json, re, resource, sys
from trailguard.cli import main
code = main(sys.argv[2:])
hwm = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
open(sys.argv[1], "w").write(json.dumps({"peak_kb": max(hwm, workers)}))
sys.exit(code)
"""


def _ingest_peak_mb(src: Path, data: Path) -> tuple[int, dict]:
    """Run ``trailguard ingest`` in a child process (one worker): its peak RSS in MB and its summary."""
    env = {**os.environ, "TRAILGUARD_INGEST_WORKERS": "1"}
    peak_file = data.parent / "peak.json"
    command = [
        sys.executable,
        "-c",
        _MEASURE,
        str(peak_file),
        "--data",
        str(data),
        "ingest",
        "--source",
        str(src),
        "--json",
    ]
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    peak_kb = json.loads(peak_file.read_text())["peak_kb"]
    return peak_kb // 1024, json.loads(out.stdout)


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("whitespace_bomb", whitespace_bomb, "expands past the 268,435,456-byte limit"),
        ("zeros_bomb", zeros_bomb, "more than the limit of 200,000 records"),
    ],
)
def test_bomb_is_quarantined_within_bounded_memory(name, make, reason, tmp_path):
    src = tmp_path / "src" / KEY_DIR
    src.mkdir(parents=True)
    bomb = make()
    (src / f"{name}.json.gz").write_bytes(bomb)
    (src / "valid.json.gz").write_bytes(
        gzip.compress(json.dumps({"Records": [record("v-1"), record("v-2")]}).encode())
    )
    peak_mb, summary = _ingest_peak_mb(tmp_path / "src", tmp_path / "data")
    print(f"{name}: {len(bomb):,} bytes on disk, peak RSS {peak_mb} MB")
    assert peak_mb < PEAK_LIMIT_MB, f"{name}: peak RSS {peak_mb} MB"
    assert (summary["objects_quarantined"], summary["new"]) == (1, 2)
    store = EventStore(tmp_path / "data")
    entry = store.read_manifest().to_pandas().set_index("key").loc[f"{KEY_DIR}/{name}.json.gz"]
    assert entry["status"] == "quarantined" and reason in entry["error"], entry["error"]
    ids = [i for d in store.dates() for i in store.partition_ids(d).to_pylist()]
    assert sorted(ids) == ["v-1", "v-2"]
    kept = [p for p in (store.quarantine_dir / "objects").iterdir() if not p.name.endswith(".json")]
    assert [p.read_bytes() == bomb for p in kept] == [True], "the bomb's own bytes are kept"


def test_single_stream_bomb_stops_at_the_limit():
    """One deflate stream (no members to count): inflation stops one byte past the limit."""
    data = gzip.compress(b" " * (16 * 2**20), compresslevel=1)
    with pytest.raises(ValueError, match="expands past the 1,048,576-byte limit"):
        gunzip(data, 2**20)
    assert gunzip(data, 16 * 2**20) == b" " * (16 * 2**20)


def test_records_per_file_and_record_size_limits():
    """A small limit on records refuses the file; a record over its size limit is rejected alone."""
    records = [record(f"r-{i}") for i in range(5)]
    document = json.dumps({"Records": records}).encode()
    with pytest.raises(ValueError, match="over the limit of 4 records"):
        decode_object("k", document, IngestLimits(max_records=4))
    big = [*records, record("huge", userAgent="A" * 4000)]
    decoded = decode_object("k", json.dumps({"Records": big}).encode(), IngestLimits(max_record_bytes=2000))
    assert sorted(decoded.table.column("eventID").to_pylist()) == [f"r-{i}" for i in range(5)]
    assert [r["reason"] for r in decoded.rejected] == [decoded.rejected[0]["reason"]]
    assert "over the 2,000-byte limit on one record" in decoded.rejected[0]["reason"]


def test_record_spans_follow_strings_and_escapes():
    """The scanner splits exactly where a JSON parser would, whatever the strings hold."""
    tricky = [record("a", userAgent='x"],[{\\'), record("b", userAgent="\\\\"), 0, [1, [2]], {"k": "}"}]
    document = json.dumps({"Records": tricky}).encode()
    spans = record_spans(document, IngestLimits())
    assert [json.loads(document[a:b]) for a, b in spans] == tricky


def test_plain_file_over_the_limit_is_not_read(tmp_path):
    src = tmp_path / "src" / KEY_DIR
    src.mkdir(parents=True)
    (src / "big.json").write_bytes(json.dumps({"Records": [record("b-1")]}).encode() + b" " * 5000)
    (src / "ok.json").write_bytes(json.dumps({"Records": [record("o-1")]}).encode())
    store = EventStore(tmp_path / "data")
    summary = ingest(LocalFolderSource(tmp_path / "src"), store, limits=IngestLimits(max_file_bytes=4000))
    assert (summary.objects_quarantined, summary.new) == (1, 1)
    errors = store.read_manifest().to_pandas().set_index("key")["error"]
    assert "over the 4,000-byte limit on a file's size" in errors[f"{KEY_DIR}/big.json"]
