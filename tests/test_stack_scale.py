"""`make up-scale` for real: PostgreSQL, Redis, a moto S3 server, MLflow on Postgres with artifacts in S3,
Airflow with CeleryExecutor and two Celery workers, on free ports, state in a temporary run folder.

The demo logs go into their own bucket as CloudTrail delivers them (at the bucket and keys their digest
files were signed for: a digest's signature covers where it lies); ingest, training and the daily report run
through Airflow's REST API; the test checks that the mapped tasks ran on both workers, that events,
scores, reports and MLflow's artifacts are objects in the bucket, that the registered models are in the
Postgres-backed MLflow, that the report was mailed, and that the top events equal those of `make demo`
(``trailguard demo``) on the same logs into a local folder. Then `make down`: nothing left.

Marked ``scale`` and deselected from the plain `make test` (pyproject's addopts): run it with
`make test-scale`. Skips when PostgreSQL 15 or Redis is missing and cannot be installed (not root).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import PROJECT
from tests.test_stack import Stack, _free_ports

pytestmark = [pytest.mark.scale, pytest.mark.slow, pytest.mark.timeout(3600)]

sys.path.insert(0, str(PROJECT / "scripts"))
import stack_scale  # noqa: E402  (scripts/ is not a package)

BUCKET = stack_scale.BUCKET
EVENTS, DAYS = 3000, 3


class ScaleStack(Stack):
    """The running scale stack as the test sees it (the REST helpers of test_stack's Stack)."""

    def __init__(self, root: Path, logs: Path) -> None:
        self.root = root
        self.logs = logs
        self.run_dir = root / "run" / "scale"
        self.home = self.run_dir / "airflow"
        ports = _free_ports(7)
        names = ("AIRFLOW", "MLFLOW", "SMTP", "MAIL_UI", "POSTGRES", "REDIS", "S3")
        self.ports = dict(zip(names, ports, strict=True))
        self.airflow_port, self.mlflow_port = self.ports["AIRFLOW"], self.ports["MLFLOW"]
        self.airflow = f"http://127.0.0.1:{self.airflow_port}"
        self.mlflow = f"http://127.0.0.1:{self.mlflow_port}"
        self.s3 = f"http://127.0.0.1:{self.ports['S3']}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW_", "TRAILGUARD_"))}
        self.env = {
            **env,
            **{f"TRAILGUARD_{name}_PORT": str(port) for name, port in self.ports.items()},
            "TRAILGUARD_RUN_DIR": str(root / "run"),
            "TRAILGUARD_STACK_TIMEOUT": "600",
            "TRAILGUARD_INGEST_MAX_TASKS": "8",
            "TRAILGUARD_INTEGRITY_KEYS": str(logs / "cloudtrail-public-keys"),
            # only the triggered runs: unpausing would also start last Monday's training on every day,
            # the last one included, and the champion would not be the one `trailguard demo` trains
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        }
        self.client = None
        self.pids: set[int] = set()
        self.sessions: set[int] = set()

    def make(self, target: str, timeout: float = 1200) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", "--no-print-directory", target],
            env=self.env,
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def s3_client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3,
            region_name="us-east-1",
            aws_access_key_id="trailguard",
            aws_secret_access_key="trailguard",
        )

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3_client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        response = self.client.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 200})
        return response.json()["task_instances"]


def _can_run() -> str | None:
    missing = stack_scale.missing_binaries()
    if missing and os.geteuid() != 0:
        return f"make up-scale needs {' and '.join(missing)}: {stack_scale.INSTALL_HINT}"
    if missing and shutil.which("apt-get") is None:
        return f"make up-scale needs {' and '.join(missing)} and there is no apt-get to install them"
    return None


@pytest.fixture(scope="module")
def demo_logs():
    """Small demo logs (3 days), in a folder the postgres user can traverse (the run folder is beside)."""
    from trailguard.demo import generator

    root = Path(tempfile.mkdtemp(prefix="trailguard-scale-"))
    root.chmod(0o755)  # PostgreSQL runs as `postgres`: it must reach run/scale/postgres
    logs = root / "logs"
    summary = generator.generate(logs, days=DAYS, events=EVENTS)
    try:
        yield root, logs, summary
    finally:
        if os.environ.get("TRAILGUARD_KEEP_SCALE_RUN"):  # logs and state to look at after a failure
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def scale(demo_logs):
    if why := _can_run():
        pytest.skip(why)
    root, logs, summary = demo_logs
    stack = ScaleStack(root, logs)
    stack.demo = summary
    started = time.monotonic()
    result = stack.make("up-scale")
    stack.up_seconds = time.monotonic() - started
    print(f"{result.stdout}\n(`make up-scale` took {stack.up_seconds:.0f} s)")

    def stop() -> None:  # unless a test already ran `make down` and checked what it left
        if not getattr(stack, "down_checked", False):
            stack.make("down", timeout=300)

    with stack.serving(result, "make up-scale", stop):
        yield stack


@pytest.fixture(scope="module")
def pipeline(scale):
    """The demo logs delivered into the trail's bucket, then ingest, training and the daily report through
    the REST API."""
    from trailguard.demo.generator import LOG_BUCKET

    stack = scale
    client = stack.s3_client()
    client.create_bucket(Bucket=LOG_BUCKET)
    for path in sorted((stack.logs / "AWSLogs").rglob("*")):
        if not path.is_file() or path.name.endswith(".metadata.json"):
            continue
        sidecar = path.with_name(path.name + ".metadata.json")  # a digest's signature: S3 user metadata
        extra = {"Metadata": json.loads(sidecar.read_text())} if sidecar.exists() else None
        client.upload_file(str(path), LOG_BUCKET, path.relative_to(stack.logs).as_posix(), ExtraArgs=extra)
    dags = {"cloudtrail_ingest", "risk_model_training", "daily_risk_report"}
    assert dags <= stack.wait_for_dags(dags, timeout=300)
    first, last = stack.demo.start, stack.demo.end
    timings, runs = {}, {}
    steps = [
        (
            "cloudtrail_ingest",
            {
                "source": f"s3://{LOG_BUCKET}",
                "start": first.isoformat(),
                "end": (last + timedelta(days=1)).isoformat(),
            },
        ),
        ("risk_model_training", {"until": (last - timedelta(days=1)).isoformat()}),
        (
            "daily_risk_report",
            {
                "date": last.isoformat(),
                "top_k": 20,
                "send_email": True,
                "recipients": "secops@example.com",
                "notify": False,
            },
        ),
    ]
    for dag_id, conf in steps:
        began = time.monotonic()
        runs[dag_id] = stack.run_dag(dag_id, conf, timeout=1200)
        timings[dag_id] = time.monotonic() - began
    print("DAG runs (s): " + ", ".join(f"{d} {s:.0f}" for d, s in timings.items()))
    stack.runs = runs
    return stack


@pytest.fixture(scope="module")
def local_demo(demo_logs):
    """`make demo`'s pipeline (``trailguard demo``: the same DAGs with ``airflow dags test``, LocalExecutor,
    SQLite) on the same logs into a local data root."""
    root, logs, _ = demo_logs
    local = root / "local"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRAILGUARD_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(local / "airflow"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{local / 'airflow' / 'airflow.db'}",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    trailguard = str(Path(sys.executable).with_name("trailguard"))
    cmd = [trailguard, "--data", str(local / "data"), "demo", "--logs", str(logs), "--events", str(EVENTS)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "already in" in result.stdout, "trailguard demo regenerated the logs instead of using these"
    return local / "data"


def _top_events(text: str) -> list[tuple[str, str]]:
    return [(row["eventID"], row["risk_score"]) for row in csv.DictReader(text.splitlines())]


def test_mapped_tasks_ran_on_both_workers(pipeline):
    stack = pipeline
    workers = {stack_scale.worker_hostname(n) for n in (1, 2)}
    mapped: dict[str, set[str]] = {}
    table = []
    for dag_id, run_id in stack.runs.items():
        for ti in stack.task_instances(dag_id, run_id):
            table.append(
                f"{ti['hostname'] or '-':22} {ti['queue'] or '-':8} {dag_id}.{ti['task_id']}[{ti['map_index']}]"
            )
            assert ti["state"] in ("success", "skipped"), ti
            if ti["state"] == "success":
                assert ti["hostname"] in workers, ti
            if ti["map_index"] >= 0:
                mapped.setdefault(ti["hostname"], set()).add(f"{dag_id}.{ti['task_id']}[{ti['map_index']}]")
    print("task instance -> worker:\n" + "\n".join(sorted(table)))
    assert set(mapped) == workers, f"mapped tasks ran only on {sorted(mapped)}"
    status = stack.make("status", timeout=120).stdout
    print(status)
    assert "task instances per worker" in status and all(w in status for w in workers), status


def test_events_scores_and_reports_are_objects_in_the_bucket(pipeline):
    stack, last = pipeline, pipeline.demo.end.isoformat()
    events = stack.keys("data/events/")
    assert {k.split("/")[2] for k in events if k.endswith(".parquet")} >= {
        f"date={d.isoformat()}" for d in (stack.demo.start, stack.demo.end)
    }
    assert [k for k in stack.keys(f"data/scores/date={last}/") if k.endswith(".parquet")]
    reports = stack.keys(f"data/reports/{last}/")
    assert {f"data/reports/{last}/{n}" for n in ("report.html", "report.json", "top_events.csv")} <= set(
        reports
    )
    assert stack.keys(f"data/quality/date={last}/"), "the last day was not validated"
    assert stack.keys("mlflow/"), "MLflow's artifacts are not in the bucket"
    assert not [k for k in stack.keys("data/") if "/.tmp-" in k or "/staging/" in k], (
        "leftover temporary keys"
    )
    listing = stack.keys("")
    print(f"{len(listing)} objects in s3://{BUCKET}; by prefix:")
    prefixes: dict[str, list[str]] = {}
    for key in listing:
        prefixes.setdefault("/".join(key.split("/")[:2]), []).append(key)
    print("\n".join(f"  {p}/ {len(keys):4} objects, e.g. {keys[-1]}" for p, keys in sorted(prefixes.items())))


def test_registered_models_are_in_the_postgres_backed_mlflow(pipeline):
    import httpx

    stack = pipeline
    models = httpx.get(f"{stack.mlflow}/api/2.0/mlflow/registered-models/search").json()["registered_models"]
    champions = {m["name"] for m in models if any(a["alias"] == "champion" for a in m.get("aliases", []))}
    assert {"trailguard-console-login", "trailguard-api-call"} & champions, models
    import psycopg2

    conn = psycopg2.connect(
        host="127.0.0.1", port=stack.ports["POSTGRES"], user=stack_scale.DB_USER, dbname="mlflow"
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM registered_models")
            in_postgres = {row[0] for row in cur.fetchall()}
            cur.execute("SELECT DISTINCT source FROM model_versions")
            sources = [row[0] for row in cur.fetchall()]
    finally:
        conn.close()
    assert champions <= in_postgres
    assert sources and all(s.startswith(("mlflow-artifacts:", "models:/", "s3://")) for s in sources), sources


def test_the_report_was_mailed(pipeline):
    stack = pipeline
    mails = sorted((stack.run_dir / "mail").glob("*.eml"))
    texts = [m.read_text(errors="replace") for m in mails]
    assert any("secops@example.com" in t and stack.demo.end.isoformat() in t for t in texts), [
        t[:300] for t in texts
    ]


def test_results_equal_a_local_demo_run(pipeline, local_demo):
    stack, last = pipeline, pipeline.demo.end.isoformat()
    body = stack.s3_client().get_object(Bucket=BUCKET, Key=f"data/reports/{last}/top_events.csv")["Body"]
    remote = _top_events(body.read().decode())
    local = _top_events((local_demo / "reports" / last / "top_events.csv").read_text())
    assert remote, "the scale stack's report lists no events"
    assert remote == local


def test_down_leaves_nothing_running(pipeline):
    stack = pipeline
    stack.remember_processes()
    assert stack.pids
    result = stack.make("down", timeout=300)
    stack.down_checked = True
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing either stack started is running" in result.stdout
    assert not list(stack.run_dir.glob("*.pid"))
    assert not stack.leftovers(), stack.leftovers()
    import socket

    for port in stack.ports.values():
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
