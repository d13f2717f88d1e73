"""Hostile corpus, sources (issue 15, rows 5-9, 14, 15): folders are read as the user meant.

Each case holds a valid file beside the hostile one and asserts the outcome and that every valid record
is stored exactly once.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

from trailguard.ingest.ingestion import ingest
from trailguard.ingest.sources import LocalFolderSource
from trailguard.quality.gate import validate_partition
from trailguard.store.events import EventStore, quarantine_name

from tests.ingest.test_ingest import KEY_DIR, record

DAY = "2024-07-30"


def write(path: Path, records: list, compress: bool = True) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps({"Records": records}).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path.read_bytes()


def stored(store: EventStore) -> list[str]:
    return sorted(i for d in store.dates() for i in store.partition_ids(d).to_pylist())


def cli(*args: str, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trailguard.cli", "--data", str(data), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_row5_dates_outside_1970_2100(tmp_path):
    """Records dated 9999-12-31 or 0001-01-01 are quarantined with the reason; validation of the day runs;
    such a date on the command line is refused as usage (exit 2, one line)."""
    src = tmp_path / "src"
    write(
        src / KEY_DIR / "a.json.gz",
        [
            record("g-1"),
            record("far", time="9999-12-31T23:59:59Z"),
            record("old", time="0001-01-01T00:00:00Z"),
            record("epoch", time=-1),
        ],
    )
    store = EventStore(tmp_path / "data")
    summary = ingest(LocalFolderSource(src), store)
    assert (summary.new, summary.quarantined) == (1, 3)
    assert stored(store) == ["g-1"] and store.dates() == [DAY]
    reasons = store.read_quarantined_records().column("reason").to_pylist()
    assert sum("outside 1970-2100" in r for r in reasons) == 3, reasons
    assert validate_partition(store, DAY).rows_in == 1
    for day in ("9999-12-31", "0001-01-01", "1969-12-31", "2101-01-01"):
        done = cli("validate", "--date", day, data=tmp_path / "data")
        assert done.returncode == 2 and "outside 1970-2100" in done.stderr and "Traceback" not in done.stderr


def test_row6_symlink_out_of_the_source_is_not_followed(tmp_path):
    src, outside = tmp_path / "src", tmp_path / "secret"
    write(src / KEY_DIR / "ok.json.gz", [record("ok-1")])
    write(outside / "other.json", [record("outside-1")], compress=False)
    (outside / "passwd.json").write_text("root:x:0:0")
    (src / KEY_DIR / "link.json").symlink_to(outside / "passwd.json")
    (src / KEY_DIR / "other.json").symlink_to(outside / "other.json")
    (src / "dirlink").symlink_to(outside, target_is_directory=True)
    store = EventStore(tmp_path / "data")
    for follow in (False, True):
        summary = ingest(LocalFolderSource(src, follow_links=follow), store)
        assert summary.objects_quarantined == 0
        assert stored(store) == ["ok-1"], "only the file inside the source folder is read"
    assert not (store.quarantine_dir / "objects").exists(), "no outside byte copied into quarantine"
    manifest = store.read_manifest().to_pandas().set_index("key")
    assert "symbolic link" in manifest.loc[f"{KEY_DIR}/link.json", "error"].iloc[-1]


def test_row6_links_inside_the_source_are_followed_on_request(tmp_path):
    src = tmp_path / "src"
    write(src / "real" / KEY_DIR / "a.json.gz", [record("in-1")])
    (src / "alias").symlink_to(src / "real", target_is_directory=True)
    store = EventStore(tmp_path / "data")
    summary = ingest(LocalFolderSource(src, follow_links=True), store)
    assert stored(store) == ["in-1"] and summary.objects == 1  # the folder and its alias: listed once


def test_row7_symlink_loops_end(tmp_path):
    src = tmp_path / "src"
    write(src / KEY_DIR / "ok.json.gz", [record("ok-1")])
    (src / "loop").symlink_to(src, target_is_directory=True)
    (src / "self.json").symlink_to(src / "self.json")
    (src / "a").symlink_to(src / "b")
    (src / "b").symlink_to(src / "a")
    for follow in (False, True):
        store = EventStore(tmp_path / f"data-{follow}")
        summary = ingest(LocalFolderSource(src, follow_links=follow), store)
        assert stored(store) == ["ok-1"]
        assert (
            summary.objects
            == summary.objects_ingested + summary.objects_skipped + summary.objects_quarantined
        )


def test_row8_file_name_not_utf8(tmp_path):
    """A name with bytes that are not UTF-8 is stored escaped; the run and the next runs go on."""
    src = tmp_path / "src"
    write(src / KEY_DIR / "ok.json.gz", [record("ok-1")])
    folder = os.fsencode(src / KEY_DIR)
    with open(os.path.join(folder, b"bad-\xff\xfe.json"), "wb") as handle:
        handle.write(json.dumps({"Records": [record("odd-1")]}).encode())
    with open(os.path.join(folder, b"broken-\xff.json"), "wb") as handle:
        handle.write(b"not json")
    store = EventStore(tmp_path / "data")
    first = ingest(LocalFolderSource(src), store)
    assert (first.new, first.objects_quarantined) == (2, 1)
    assert stored(store) == ["odd-1", "ok-1"]
    keys = set(store.read_manifest().column("key").to_pylist())
    assert f"{KEY_DIR}/bad-\\xff\\xfe.json" in keys and f"{KEY_DIR}/broken-\\xff.json" in keys
    again = ingest(LocalFolderSource(src), store)
    assert (again.objects_already_ingested, again.new) == (3, 0)


def test_row9_quarantine_names_never_collide(tmp_path):
    src = tmp_path / "src"
    (src / "x").mkdir(parents=True)
    files = {"x/bad.json": b"one", "x_bad.json": b"two", "x bad.json": b"three"}
    for key, data in files.items():
        (src / key).write_bytes(data)
    write(src / KEY_DIR / "ok.json.gz", [record("ok-1")])
    store = EventStore(tmp_path / "data")
    summary = ingest(LocalFolderSource(src), store)
    assert (summary.objects_quarantined, summary.new) == (3, 1)
    names = {quarantine_name(key) for key in files}
    assert len(names) == 3
    for key, data in files.items():
        kept = store.quarantine_dir / "objects" / quarantine_name(key)
        assert kept.read_bytes() == data
        assert json.loads(kept.with_name(kept.name + ".reason.json").read_text())["key"] == key


def test_row14_control_characters_never_reach_the_terminal(tmp_path):
    src = tmp_path / "src"
    write(src / KEY_DIR / "ok.json.gz", [record("ok-1")])
    (src / KEY_DIR / "\x1b[2J\x1b]0;owned\x07evil\u202e.json").write_bytes(b"not json")
    done = cli("ingest", "--source", str(src), data=tmp_path / "data")
    assert done.returncode == 0, done.stderr
    for stream in (done.stdout, done.stderr):
        assert "\x1b" not in stream and "\x07" not in stream and "\u202e" not in stream
    assert "\\x1b[2J" in done.stderr  # shown, escaped
    assert stored(EventStore(tmp_path / "data")) == ["ok-1"]


def test_row15_data_root_inside_the_source_is_never_read(tmp_path):
    src = tmp_path / "logs"
    write(src / KEY_DIR / "ok.json.gz", [record("ok-1")])
    (src / KEY_DIR / "bad.json").write_bytes(b"not json")
    store = EventStore(src / "data")
    counts = [ingest(LocalFolderSource(src), store).objects for _ in range(3)]
    assert counts == [2, 2, 2], "the run's own quarantine is never listed"
    assert stored(store) == ["ok-1"]
    done = cli("ingest", "--source", str(src / "data"), data=src / "data")
    assert done.returncode == 2 and "inside the data root" in done.stderr
