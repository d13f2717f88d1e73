"""Hostile corpus, an unlucky operator (issue 15, rows 12-13 and item 7): every expected failure is one
line on stderr, exit code 1 (2 for usage), and no traceback unless ``--debug``."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from trailguard.cli import describe_failure
from trailguard.ingest.ingestion import ingest
from trailguard.ingest.sources import LocalFolderSource
from trailguard.store.events import EventStore

from tests.ingest.test_hostile_sources import write
from tests.ingest.test_ingest import KEY_DIR, record
from tests.report.test_report import DAY as REPORT_DAY
from tests.report.test_report import day_rows, write_scores

DAY = "2024-07-30"


def run(
    *args: str, data: Path, env: dict | None = None, unprivileged: bool = False
) -> subprocess.CompletedProcess:
    # root writes anywhere: without its capabilities (setpriv) file modes apply to it too
    prefix = ["setpriv", "--bounding-set=-all"] if unprivileged and os.geteuid() == 0 else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "trailguard.cli", "--data", str(data), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": "", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", **(env or {})},
    )


def one_line_failure(done: subprocess.CompletedProcess, command: str, code: int = 1) -> str:
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"trailguard {command}: "), done.stderr
    return last


@pytest.fixture
def read_only_root(tmp_path):
    """A data root holding a day of events and scores that the (unprivileged) user cannot write to."""
    src = tmp_path / "src"
    write(src / KEY_DIR / "a.json.gz", [record("e-1"), record("e-2")])
    data = tmp_path / "data"
    ingest(LocalFolderSource(src), EventStore(data))
    write_scores(data, day_rows())
    for folder, _dirs, files in os.walk(tmp_path):
        os.chmod(folder, 0o555)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o444)
    yield src, data
    for folder, _, _ in os.walk(tmp_path):
        os.chmod(folder, 0o755)


@pytest.mark.slow
def test_row12_read_only_data_root(read_only_root):
    src, data = read_only_root
    commands = {
        "ingest": ["ingest", "--source", str(src)],
        "validate": ["validate", "--date", DAY],
        "report": ["report", "--date", REPORT_DAY],
        "label": ["label", "e-1", "80", "--note", "x"],
    }
    for command, args in commands.items():
        line = one_line_failure(run(*args, data=data, unprivileged=True), command)
        assert "permission denied" in line and str(data) in line, line
    debug = run("--debug", "label", "e-1", "80", data=data, unprivileged=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "PermissionError" in debug.stderr


def test_row13_smtp_down_is_one_line(tmp_path):
    write_scores(tmp_path, day_rows())
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = run(
        "report",
        "--date",
        REPORT_DAY,
        "--send",
        "--to",
        "a@example.com",
        data=tmp_path,
        env={"TRAILGUARD_SMTP_URL": f"smtp://127.0.0.1:{port}"},
    )
    line = one_line_failure(done, "report")
    assert "refused" in line.lower() or "mail" in line.lower(), line
    assert (tmp_path / "reports" / REPORT_DAY / "report.html").exists(), "the report itself is built"


@pytest.mark.slow
def test_missing_day_and_unreachable_mlflow_are_one_line(tmp_path):
    line = one_line_failure(run("report", "--date", "2030-01-01", data=tmp_path), "report")
    assert "trailguard score --date 2030-01-01" in line
    src = tmp_path / "src"
    write(src / KEY_DIR / "a.json.gz", [record("e-1"), record("e-2")])
    ingest(LocalFolderSource(src), EventStore(tmp_path / "data"))
    # score: with MLflow unreachable the cold-start scorer scores the day (main's contract since cold start)
    line = one_line_failure(
        run("train", data=tmp_path / "data", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}), "train"
    )
    assert line.startswith("trailguard train: MLflow: ") and "127.0.0.1:9" in line, line
    usage = run("report", "--date", "2024-02-30", data=tmp_path)
    assert usage.returncode == 2 and "is not a date" in usage.stderr and "Traceback" not in usage.stderr


def test_disk_full_wording():
    full = OSError(errno.ENOSPC, "No space left on device", "/data/events/x.parquet")
    assert describe_failure(full).startswith("disk full: /data/events/x.parquet")
    assert "permission denied: /d" in describe_failure(
        PermissionError(errno.EACCES, "Permission denied", "/d")
    )
