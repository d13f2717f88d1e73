"""`make up` for real: the stack script starts Airflow, MLflow and the mail catcher on free ports with a
temporary data root and Airflow home; the DAGs run through Airflow's REST API exactly as the UI triggers
them; `make down` leaves no process behind.

The tests share one stack (a module fixture) and each can be selected alone: what a test needs of the
pipeline (ingested events, a trained champion) comes from fixtures that run those DAGs once, whichever
test asks first. The fixture stops the stack at the end; `test_down_stops_everything` checks that.
"""

from __future__ import annotations

import csv
import json
import os
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.conftest import PROJECT

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

STACK = PROJECT / "scripts" / "stack.py"


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class Stack:
    """The running stack as a test sees it: URLs, folders, a logged-in REST client, its processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data, self.run_dir, self.home, self.logs = (root / n for n in ("data", "run", "airflow", "logs"))
        self.airflow_port, self.mlflow_port, self.smtp_port, self.mail_ui_port = _free_ports(4)
        self.airflow = f"http://127.0.0.1:{self.airflow_port}"
        self.mlflow = f"http://127.0.0.1:{self.mlflow_port}"
        self.mail_ui = f"http://127.0.0.1:{self.mail_ui_port}"
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home}/airflow.db",
            "TRAILGUARD_DATA": str(self.data),
            "TRAILGUARD_RUN_DIR": str(self.run_dir),
            "TRAILGUARD_SOURCE": str(self.logs),  # what scheduled (hourly) ingest runs read
            "TRAILGUARD_AIRFLOW_PORT": str(self.airflow_port),
            "TRAILGUARD_MLFLOW_PORT": str(self.mlflow_port),
            "TRAILGUARD_SMTP_PORT": str(self.smtp_port),
            "TRAILGUARD_MAIL_UI_PORT": str(self.mail_ui_port),
            "TRAILGUARD_STACK_TIMEOUT": "240",
            # 8 mapped stage tasks, not 32: each is a process start, and the test machine may be shared
            "TRAILGUARD_INGEST_MAX_TASKS": "8",
        }
        self.demo = None  # what generator.generate() wrote to ``logs``
        self.client = None
        self.pids: set[int] = set()
        self.sessions: set[int] = set()

    def script(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(STACK), command],
            env=self.env,
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def remember_processes(self) -> None:
        """Every process the stack runs right now, and its sessions (one per service)."""
        import psutil

        for pid_file in self.run_dir.glob("*.pid"):
            pid = int(pid_file.read_text())
            self.sessions.add(pid)
            self.pids.add(pid)
            try:
                self.pids.update(c.pid for c in psutil.Process(pid).children(recursive=True))
            except psutil.NoSuchProcess:
                pass

    def leftovers(self) -> list[str]:
        """Processes remembered, or of the stack's sessions or process groups, still alive."""
        import psutil

        left = []
        for proc in psutil.process_iter(["pid", "name"]):
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if (
                    proc.pid in self.pids
                    or os.getsid(proc.pid) in self.sessions
                    or os.getpgid(proc.pid) in self.sessions
                ):
                    left.append(f"{proc.pid} {proc.info['name']}")
            except (psutil.Error, OSError):
                continue
        return left

    @contextmanager
    def serving(
        self, started: subprocess.CompletedProcess, what: str, stop: Callable[[], object]
    ) -> Iterator[Stack]:
        """The stack while a fixture hands it out: ``started`` (its start) must have succeeded; on the way
        out the API client is closed, the processes remembered (for :meth:`leftovers`) and ``stop`` run."""
        try:
            assert started.returncode == 0, f"{what} failed:\n{started.stdout}\n{started.stderr}"
            self.remember_processes()
            self.login()
            yield self
        finally:
            if self.client is not None:
                self.client.close()
            self.remember_processes()
            stop()

    # -- Airflow REST API --------------------------------------------------------------------------
    def login(self) -> None:
        import httpx

        response = httpx.post(f"{self.airflow}/auth/token", json={"username": "admin", "password": "admin"})
        assert response.status_code == 201, response.text
        token = response.json()["access_token"]
        self.client = httpx.Client(
            base_url=f"{self.airflow}/api/v2", timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

    def wait_for_dags(self, dag_ids: set[str], timeout: float = 120) -> set[str]:
        deadline = time.monotonic() + timeout
        while True:
            listed = {d["dag_id"] for d in self.client.get("/dags", params={"limit": 100}).json()["dags"]}
            if dag_ids <= listed or time.monotonic() > deadline:
                return listed
            time.sleep(2)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        response = self.client.patch(f"/dags/{dag_id}", json={"is_paused": paused})
        assert response.status_code == 200, response.text
        assert response.json()["is_paused"] is paused

    def trigger(self, dag_id: str, conf: dict) -> str:
        """As the UI's trigger form does: no logical date, the Params as ``conf``."""
        response = self.client.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        assert response.status_code == 200, response.text
        return response.json()["dag_run_id"]

    def run_dag(self, dag_id: str, conf: dict, timeout: float = 240) -> str:
        """Trigger, unpause, wait for success, pause again; returns the run id.

        Unpausing also makes the scheduler create the run of the latest past schedule (``catchup=False``
        still runs the most recent one: last Monday's training, this hour's ingest), which would run
        first; it is deleted, so only the triggered run executes and the test stays short.
        """
        run_id = self.trigger(dag_id, conf)
        self.set_paused(dag_id, False)
        deadline = time.monotonic() + timeout
        state = None
        try:
            while time.monotonic() < deadline:
                for run in self.client.get(f"/dags/{dag_id}/dagRuns").json()["dag_runs"]:
                    if run["dag_run_id"] != run_id and run["state"] in ("queued", "running"):
                        self.client.delete(f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}")
                state = self.client.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
                if state in ("success", "failed") or self._task_failed(dag_id, run_id):
                    break  # a task waiting for its retry has failed once already: no need to wait minutes
                time.sleep(2)
        finally:
            self.set_paused(dag_id, True)
        assert state == "success", (
            f"{dag_id} run {run_id} ended {state}:\n{self.failure_details(dag_id, run_id)}"
        )
        return run_id

    def _task_failed(self, dag_id: str, run_id: str) -> bool:
        tis = (
            self.client.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json().get("task_instances", [])
        )
        return any(ti["state"] in ("up_for_retry", "failed", "upstream_failed") for ti in tis)

    def failure_details(self, dag_id: str, run_id: str) -> str:
        """Each task's state and the end of its log (events only), for the assertion message."""
        tis = (
            self.client.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json().get("task_instances", [])
        )
        lines = [f"  {ti['task_id']}[{ti['map_index']}]: {ti['state']}" for ti in tis]
        logs = sorted((self.home / "logs").glob(f"dag_id={dag_id}/run_id={run_id}/task_id=*/**/*.log"))
        for log_file in logs:
            lines.append(f"--- {log_file.relative_to(self.home)}")
            for raw in log_file.read_text(errors="replace").splitlines()[-12:]:
                lines.append("    " + _log_line(raw)[:400])
        if not logs:
            scheduler = (self.run_dir / "airflow-scheduler.log").read_text(errors="replace").splitlines()
            lines += ["--- airflow-scheduler.log", *scheduler[-15:]]
        return "\n".join(lines)


def _log_line(raw: str) -> str:
    """A task log record (JSON) as one line: level, event and, for an exception, where in this project."""
    try:
        record = json.loads(raw)
    except ValueError:
        return raw
    text = f"{record.get('level')}: {record.get('event')}"
    for error in record.get("error_detail") or []:
        frames = error.get("frames") or [{}]
        ours = [
            f for f in frames if any(d in f.get("filename", "") for d in ("/dags/", "/include/", "/plugins/"))
        ]
        frame = (ours or frames)[-1]
        text += f" | {error.get('exc_type')}: {error.get('exc_value')} at {frame.get('filename')}:{frame.get('lineno')}"
    return text


@pytest.fixture(scope="module")
def findings_queues(moto_server):
    """An SNS topic and an EventBridge rule on the moto server, each delivering to an SQS queue: the
    automation destinations the stack's daily_risk_report sends findings to."""
    import boto3

    def client(service: str):
        return boto3.client(service, endpoint_url=moto_server, region_name="us-east-1")

    sqs, sns, events = client("sqs"), client("sns"), client("events")
    queues = {}
    for name in ("sns", "eventbridge"):
        url = sqs.create_queue(QueueName=f"stack-findings-{name}")["QueueUrl"]
        queues[name] = (
            url,
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"],
        )
    topic = sns.create_topic(Name="stack-findings")["TopicArn"]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=queues["sns"][1], Attributes={"RawMessageDelivery": "true"}
    )
    events.put_rule(Name="trailguard-findings", EventPattern=json.dumps({"source": ["trailguard"]}))
    events.put_targets(Rule="trailguard-findings", Targets=[{"Id": "q", "Arn": queues["eventbridge"][1]}])
    destinations = [
        {"name": "secops-sns", "type": "sns", "target": topic, "endpoint_url": moto_server},
        {
            "name": "bus",
            "type": "eventbridge",
            "target": "default",
            "region": "us-east-1",
            "endpoint_url": moto_server,
        },
    ]

    def drain(name: str) -> list[dict]:
        out = []
        while got := sqs.receive_message(QueueUrl=queues[name][0], MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            for m in got:
                out.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=queues[name][0], ReceiptHandle=m["ReceiptHandle"])
        return out

    return json.dumps(destinations), drain


@pytest.fixture(scope="module")
def stack(tmp_path_factory, findings_queues):
    from trailguard.demo import generator

    root = tmp_path_factory.mktemp("stack")
    stack = Stack(root)
    stack.env["TRAILGUARD_NOTIFY_DESTINATIONS"] = findings_queues[0]
    for name in ("TRAILGUARD_REPORT_RECIPIENTS", "TRAILGUARD_ALERT_RECIPIENTS"):
        stack.env.pop(name, None)  # make up's demo recipients, as a new user has them
    stack.demo = generator.generate(stack.logs, days=3, events=3000)
    started = time.monotonic()
    result = stack.script("up")
    print(f"{result.stdout}\n(`stack.py up` took {time.monotonic() - started:.0f} s)")
    try:
        with stack.serving(result, "make up", lambda: stack.script("down")):
            yield stack
    finally:
        assert not stack.leftovers(), stack.leftovers()


def test_up_is_healthy_and_idempotent(stack):
    assert {p.stem for p in stack.run_dir.glob("*.pid")} == {
        "smtp",
        "mlflow",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    }
    pids = {p.stem: p.read_text() for p in stack.run_dir.glob("*.pid")}
    again = stack.script("up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already running" in again.stdout and "starting" not in again.stdout
    assert {p.stem: p.read_text() for p in stack.run_dir.glob("*.pid")} == pids
    status = stack.script("status").stdout
    assert status.count("healthy") == 6, status
    assert "admin / admin" in status


@pytest.fixture(scope="module")
def ingested(stack):
    """The demo logs ingested through the REST API, once."""
    assert "cloudtrail_ingest" in stack.wait_for_dags({"cloudtrail_ingest"})
    first, last = stack.demo.start, stack.demo.end
    conf = {
        "source": str(stack.logs),
        "start": first.isoformat(),
        "end": (last + timedelta(days=1)).isoformat(),
    }
    stack.run_dag("cloudtrail_ingest", conf)
    return stack


@pytest.fixture(scope="module")
def trained(ingested):
    """A champion trained by risk_model_training on every day but the last, once; paused again after, so
    a later label run does not retrain."""
    stack = ingested
    assert "risk_model_training" in stack.wait_for_dags({"risk_model_training"})
    stack.run_dag(
        "risk_model_training", {"until": (stack.demo.end - timedelta(days=1)).isoformat()}, timeout=480
    )
    return stack


def test_ingest_dag_runs_through_the_rest_api(ingested):
    stack, last = ingested, ingested.demo.end
    import pyarrow.dataset as ds

    partitions = sorted(p.name for p in (stack.data / "events").glob("date=*") if any(p.glob("*.parquet")))
    assert f"date={last.isoformat()}" in partitions
    rows = ds.dataset(stack.data / "events", format="parquet", partitioning="hive").count_rows()
    assert rows == stack.demo.records, (rows, stack.demo.records)  # every record the demo says ingest accepts
    assert list((stack.data / "quality").glob(f"date={last.isoformat()}/*")), "the last day was not validated"


def test_mlflow_server_serves_the_data_roots_store(stack):
    """A run logged straight into the SQLite store (as the DAGs do) is what the server shows."""
    import httpx
    import mlflow

    response = httpx.get(f"{stack.mlflow}/api/2.0/mlflow/experiments/search", params={"max_results": 50})
    assert response.status_code == 200, response.text

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{stack.data}/mlflow/mlflow.db")
    experiment_id = client.create_experiment(
        "stack-e2e", artifact_location=(stack.data / "mlflow" / "artifacts" / "stack-e2e").as_uri()
    )
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "source", "test_stack")
    note = stack.root / "note.txt"
    note.write_text("logged straight into the store")
    client.log_artifact(run.info.run_id, str(note))
    client.set_terminated(run.info.run_id)

    names = {
        e["name"]
        for e in httpx.get(
            f"{stack.mlflow}/api/2.0/mlflow/experiments/search", params={"max_results": 50}
        ).json()["experiments"]
    }
    assert "stack-e2e" in names
    served = httpx.get(f"{stack.mlflow}/api/2.0/mlflow/runs/get", params={"run_id": run.info.run_id}).json()
    assert served["run"]["data"]["params"] == [{"key": "source", "value": "test_stack"}]
    files = httpx.get(
        f"{stack.mlflow}/api/2.0/mlflow/artifacts/list", params={"run_id": run.info.run_id}
    ).json()
    assert [f["path"] for f in files["files"]] == ["note.txt"]
    content = httpx.get(
        f"{stack.mlflow}/get-artifact", params={"run_uuid": run.info.run_id, "path": "note.txt"}
    )
    assert content.text == "logged straight into the store"


def test_mail_catcher_keeps_and_shows_messages(stack):
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "e2e@localhost", "secops@example.com", "stack <check> 42"
    msg.set_content("hello from test_stack")
    with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=10) as smtp:
        smtp.send_message(msg)

    saved = [p for p in (stack.run_dir / "mail").glob("*.eml") if "stack <check> 42" in p.read_text()]
    assert len(saved) == 1
    assert "hello from test_stack" in saved[0].read_text()

    import httpx

    page = httpx.get(stack.mail_ui).text
    assert "stack &lt;check&gt; 42" in page and "<check>" not in page
    assert saved[0].name in page


def test_training_registers_a_champion_the_server_shows(trained):
    """risk_model_training logs into the data root's store; the MLflow server shows runs and champion."""
    stack = trained
    import httpx

    experiment = httpx.get(
        f"{stack.mlflow}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "trailguard"}
    ).json()["experiment"]
    runs = httpx.post(
        f"{stack.mlflow}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [experiment["experiment_id"]], "max_results": 100},
    ).json()
    assert runs.get("runs"), "the training runs are not visible through the MLflow server"
    models = (
        httpx.get(f"{stack.mlflow}/api/2.0/mlflow/registered-models/search")
        .json()
        .get("registered_models", [])
    )
    assert any(alias["alias"] == "champion" for m in models for alias in m.get("aliases", [])), models


def test_report_is_emailed_and_a_label_recorded(trained, findings_queues):
    """The README's walk-through: daily_risk_report triggered with only `date` (make up set the demo
    recipients) emails the catcher and sends the findings to SNS and EventBridge (moto); then
    record_analyst_label takes an event from that report."""
    stack = trained
    chain = {"daily_risk_report", "record_analyst_label"}
    assert chain <= stack.wait_for_dags(chain)
    last = stack.demo.end

    mails_before = set((stack.run_dir / "mail").glob("*.eml"))
    stack.run_dag("daily_risk_report", {"date": last.isoformat()})
    report_dir = stack.data / "reports" / last.isoformat()
    assert (report_dir / "report.html").exists()
    new_mail = set((stack.run_dir / "mail").glob("*.eml")) - mails_before
    assert len(new_mail) == 1, new_mail
    assert "secops@example.com" in new_mail.pop().read_text(errors="replace")

    report = json.loads((report_dir / "report.json").read_text())
    high = sorted(row["finding_id"] for row in report["top_events"] if row["risk_score"] >= 70)
    drain = findings_queues[1]
    via_sns = drain("sns")
    via_bus = [event["detail"] for event in drain("eventbridge")]
    assert high, "the demo day has findings at or above 70"
    assert sorted(m["finding_id"] for m in via_sns) == high == sorted(m["finding_id"] for m in via_bus)
    assert all(
        m["schema"] == "trailguard.finding/1" and m["date"] == last.isoformat() for m in via_sns + via_bus
    )

    with (report_dir / "top_events.csv").open() as handle:
        event_id = next(csv.DictReader(handle))["eventID"]
    stack.run_dag(
        "record_analyst_label",
        {
            "event_id": event_id,
            "risk_score": 90,
            "verdict": "malicious",
            "note": "test_stack",
            "analyst": "e2e",
        },
    )
    assert event_id in _labelled_event_ids(stack.data / "labels")


def _labelled_event_ids(folder: Path) -> set[str]:
    """The eventIDs in the label store, whatever its file format (parquet, CSV or JSON lines)."""
    import pyarrow.dataset as ds

    ids: set[str] = set()
    for path in (p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix == ".parquet":
            ids.update(ds.dataset(str(path)).to_table(columns=["eventID"]).column("eventID").to_pylist())
        elif path.suffix == ".csv":
            with path.open() as handle:
                ids.update(row["eventID"] for row in csv.DictReader(handle))
        elif path.suffix in (".jsonl", ".json"):
            ids.update(json.loads(line)["eventID"] for line in path.read_text().splitlines() if line.strip())
    return ids


def test_down_stops_everything(stack):
    stack.remember_processes()
    assert stack.pids, "no processes were remembered"
    result = stack.script("down")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing this stack started is running" in result.stdout
    assert not list(stack.run_dir.glob("*.pid"))
    assert not stack.leftovers()
    for port in (stack.airflow_port, stack.mlflow_port, stack.smtp_port, stack.mail_ui_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
