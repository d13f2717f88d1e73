"""Hostile corpus, a damaged store (issue 15, row 11): a real parquet file truncated in the partition.

The file is found, moved aside to ``quarantine/store/`` with the reason, the day is marked damaged;
validate, score and report name the file and what to do; ingestion of other files of the day goes on;
``trailguard repair`` reads the day again from the recorded sources; and a report is never built from
scores older than the day's events.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from trailguard.ingest.ingestion import ingest
from trailguard.ingest.sources import LocalFolderSource
from trailguard.model.scoring import score_day
from trailguard.report.daily import build_report
from trailguard.store.events import DamagedPartitionError, EventStore

from tests.ingest.test_hostile_sources import write
from tests.ingest.test_ingest import KEY_DIR, record
from tests.report.test_report import day_rows, write_scores

DAY = "2024-07-30"


def cli(*args: str, data) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trailguard.cli", "--data", str(data), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def stored(store: EventStore) -> list[str]:
    return sorted(i for d in store.dates() for i in store.partition_ids(d, allow_damaged=True).to_pylist())


@pytest.fixture
def damaged(tmp_path):
    """Two runs wrote two part files of the day; the second one is cut in half."""
    src, store = tmp_path / "logs", EventStore(tmp_path / "data")
    write(src / KEY_DIR / "a.json.gz", [record("a-1"), record("a-2")])
    ingest(LocalFolderSource(src), store)
    write(src / KEY_DIR / "b.json.gz", [record("b-1"), record("b-2"), record("b-3")])
    ingest(LocalFolderSource(src), store)
    second = max(store.partition_files(DAY), key=lambda p: p.stat().st_mtime_ns)
    data = second.read_bytes()
    second.write_bytes(data[: len(data) // 2])
    return src, store, second.name


def test_row11_damaged_day_is_named_contained_and_repaired(damaged, tmp_path):
    src, store, name = damaged
    done = cli("validate", "--date", DAY, data=store.root)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert f"events/date={DAY}/{name}" in line and f"trailguard repair --date {DAY}" in line, line
    assert (store.damage_dir(DAY) / name).exists() and not (store.partition_dir(DAY) / name).exists()
    assert (
        "truncated" in json.loads((store.damage_dir(DAY) / "damaged.json").read_text())["files"][0]["reason"]
    )
    with pytest.raises(DamagedPartitionError, match=f"repair --date {DAY}"):
        score_day(store, DAY)
    write_scores(store.root, day_rows(), day=DAY)
    report = cli("report", "--date", DAY, data=store.root)
    assert report.returncode == 1 and name in report.stderr and "Traceback" not in report.stderr

    # ingestion of other files of the damaged day goes on
    write(src / KEY_DIR / "c.json.gz", [record("c-1")])
    summary = ingest(LocalFolderSource(src), EventStore(store.root))
    assert summary.new == 1
    assert stored(EventStore(store.root)) == ["a-1", "a-2", "c-1"]

    repaired = cli("repair", "--date", DAY, data=store.root)
    assert repaired.returncode == 0, repaired.stderr
    assert "repaired" in repaired.stdout and name in repaired.stdout
    fresh = EventStore(store.root)
    assert stored(fresh) == ["a-1", "a-2", "b-1", "b-2", "b-3", "c-1"], "every record exactly once"
    assert fresh.damaged(DAY) is None and (fresh.damage_dir(DAY) / name).exists()
    assert cli("validate", "--date", DAY, data=store.root).returncode == 0


def test_report_never_uses_scores_older_than_the_events(tmp_path):
    src, store = tmp_path / "logs", EventStore(tmp_path / "data")
    write(src / KEY_DIR / "a.json.gz", [record("a-1")])
    ingest(LocalFolderSource(src), store)
    scores = write_scores(store.root, day_rows(), day=DAY)
    build_report(store.root, DAY)  # scores newer than the events: fine
    time.sleep(0.05)
    write(src / KEY_DIR / "late.json.gz", [record("late-1")])
    ingest(LocalFolderSource(src), store)
    with pytest.raises(RuntimeError, match=f"run `trailguard score --date {DAY}` first"):
        build_report(store.root, DAY)
    os.utime(scores)  # rescored
    assert build_report(store.root, DAY).day == DAY
