"""Hostile corpus, crashed runs (issue 15, row 10): real processes, ``kill -9`` of the ingest's parent.

The workers die with their parent, the next ingest takes the commit lock over (saying so) and stores every
record exactly once; an ingest that has to wait says what for.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trailguard.store.events import EventStore

from tests.ingest.test_ingest import KEY_DIR, record

FILES, PER_FILE = 240, 400


def write_logs(src: Path) -> set[str]:
    ids = set()
    for f in range(FILES):
        records = [record(f"k-{f}-{i}", userAgent="x" * 200) for i in range(PER_FILE)]
        ids.update(r["eventID"] for r in records)
        path = src / KEY_DIR / f"f{f:04d}.json.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(json.dumps({"Records": records}).encode(), compresslevel=1))
    return ids


def start_ingest(src: Path, data: Path, stderr: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trailguard.cli", "--data", str(data), "ingest", "--source", str(src), *extra],
        stdout=subprocess.DEVNULL,
        stderr=open(stderr, "w"),  # noqa: SIM115 - the child owns it
    )


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stored_ids(data: Path) -> list[str]:
    store = EventStore(data)
    return [i for d in store.dates() for i in store.partition_ids(d).to_pylist()]


@pytest.mark.slow
@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="/proc and the parent-death signal are Linux"
)
def test_kill_9_of_the_parent_leaves_no_worker_and_no_stuck_lock(tmp_path):
    src, data = tmp_path / "src", tmp_path / "data"
    ids = write_logs(src)
    first = start_ingest(src, data, tmp_path / "first.err", "--workers", "2")
    lock = data / ".commit.lock"

    def running() -> bool:
        try:
            owner = json.loads(lock.read_text() or "null")
        except (OSError, ValueError):
            return False
        return bool(owner) and owner["pid"] == first.pid and len(children(first.pid)) >= 2

    wait_for(running, 120, "the first ingest to hold the lock with its workers")
    workers = children(first.pid)
    first.send_signal(signal.SIGKILL)
    first.wait()
    wait_for(lambda: not any(alive(w) for w in workers), 20, f"workers {workers} to die with their parent")

    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "trailguard.cli",
            "--data",
            str(data),
            "ingest",
            "--source",
            str(src),
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr
    assert f"took over the commit lock of {data} from pid {first.pid}" in second.stderr
    stored = stored_ids(data)
    assert len(stored) == len(set(stored)) == len(ids) and set(stored) == ids, "every record exactly once"


@pytest.mark.slow
def test_a_waiting_ingest_says_what_it_waits_for(tmp_path):
    src, data = tmp_path / "src", tmp_path / "data"
    (src / KEY_DIR).mkdir(parents=True)
    (src / KEY_DIR / "a.json").write_text(json.dumps({"Records": [record("w-1")]}))
    store = EventStore(data)
    with store.commit_lock("a test holding the lock"):
        waiting = start_ingest(src, data, tmp_path / "wait.err", "--workers", "1")
        wait_for(
            lambda: "waiting for the commit lock" in (tmp_path / "wait.err").read_text(),
            120,
            "the ingest to say it waits",
        )
        message = (tmp_path / "wait.err").read_text()
        assert f"held by pid {os.getpid()}" in message and "a test holding the lock" in message
        assert waiting.poll() is None
    assert waiting.wait(timeout=120) == 0
    assert stored_ids(data) == ["w-1"]
    assert "took over" not in (tmp_path / "wait.err").read_text(), "a lock released cleanly is not taken over"
