"""`trailguard demo`: the whole pipeline on generated demo data, through the real Airflow DAGs.

Each DAG runs with ``airflow dags test`` in a child process (the library itself never imports Airflow),
against an Airflow home and SQLite database inside the project unless the environment says otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[2]
_FINISHED = re.compile(r"DagRun Finished: .*?state=(\w+)")


@dataclass(frozen=True)
class DagStep:
    dag_id: str
    day: str
    conf: dict
    title: str


def airflow_env(data_root: Path) -> dict[str, str]:
    """The environment for ``airflow`` child processes: project DAGs and plugins, no examples, SQLite."""
    env = os.environ.copy()
    home = Path(env.get("AIRFLOW_HOME") or PROJECT_DIR / ".airflow")
    env.setdefault("AIRFLOW_HOME", str(home))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_DIR / "dags"))
    env.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(PROJECT_DIR / "plugins"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home}/airflow.db")
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    env.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    env["TRAILGUARD_DATA"] = str(data_root)
    return env


def _airflow_bin() -> str:
    candidate = Path(sys.executable).with_name("airflow")
    found = str(candidate) if candidate.exists() else shutil.which("airflow")
    if not found:
        raise RuntimeError("the airflow command is not installed in this environment: run `make demo`")
    return found


def ensure_airflow_db(env: dict[str, str]) -> None:
    """Create (or upgrade) Airflow's metadata DB once; cheap when already done."""
    home = Path(env["AIRFLOW_HOME"])
    marker = home / ".migrated"
    if marker.exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([_airflow_bin(), "db", "migrate"], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    marker.touch()


def run_dag(step: DagStep, env: dict[str, str], log_dir: Path) -> float:
    """Run one DAG with ``airflow dags test``; its whole output goes to a log file, named on failure."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{step.dag_id}.log"
    started = time.perf_counter()
    cmd = [_airflow_bin(), "dags", "test", step.dag_id, step.day, "-c", json.dumps(step.conf)]
    with log_path.open("w") as out:
        result = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    text = log_path.read_text(errors="replace")
    finished = _FINISHED.findall(text)
    if result.returncode != 0 or not finished or finished[-1] != "success":
        tail = "\n".join(text.splitlines()[-25:])
        raise RuntimeError(f"DAG {step.dag_id} failed (full log: {log_path}):\n{tail}")
    return seconds


class _MailCatcher:
    """A local SMTP server (aiosmtpd) on 127.0.0.1 that keeps each message as a .eml file."""

    def __init__(self, folder: Path) -> None:
        from aiosmtpd.controller import Controller

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        catcher = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
                name = f"{time.strftime('%Y%m%dT%H%M%S')}-{len(list(catcher.folder.glob('*.eml'))):03d}.eml"
                (catcher.folder / name).write_bytes(envelope.original_content or envelope.content)
                return "250 Message accepted"

        import socket

        with socket.socket() as probe:  # aiosmtpd checks its own port after start: it cannot be 0
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=free)

    def __enter__(self) -> _MailCatcher:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return self.controller.port

    def connection_json(self) -> str:
        return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": self.port,
                           "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "trailguard@localhost"}})


def _say(text: str = "") -> None:
    print(text, flush=True)


def run_demo(data_root: Path, logs: Path, *, events: int | None = None) -> int:
    """Generate the demo logs (once; CloudTrail and VPC Flow Logs), then ingest+validate both, train and
    report through the real DAGs."""
    from datetime import date, timedelta

    from trailguard.demo import generator

    started = time.perf_counter()
    data_root, logs = data_root.resolve(), logs.resolve()
    summary_file = logs / "demo_summary.json"
    if summary_file.exists() and json.loads(summary_file.read_text()).get("events_requested") == events:
        info = json.loads(summary_file.read_text())
        _say(f"demo logs already in {logs} ({info.get('files')} files, {info.get('records')} records)")
    else:
        _say(f"generating demo CloudTrail logs in {logs} ...")
        generated = generator.generate(logs, events=events)
        _say(f"  {generated.files} files, {generated.records} records, {generated.attacks} attack events, "
             f"{generated.bad_files} broken files on purpose")
        (logs / "flows_ground_truth.csv").unlink(missing_ok=True)  # the flow logs go with these logs
    info = json.loads(summary_file.read_text())
    first, last = date.fromisoformat(info["start"]), date.fromisoformat(info["end"])
    if not (logs / "flows_ground_truth.csv").exists():
        from trailguard.demo.flows import demo_dates, write_flow_logs

        _say(f"generating demo VPC Flow Logs in {logs} ...")
        truth = write_flow_logs(logs, demo_dates(last, (last - first).days + 1))
        _say(f"  {len(truth)} network attacks on the instances (ground truth: {logs / 'flows_ground_truth.csv'})")

    env = airflow_env(data_root)
    env["TRAILGUARD_INTEGRITY_KEYS"] = str(logs / info.get("public_keys", "cloudtrail-public-keys"))
    ensure_airflow_db(env)
    log_dir = data_root.parent / "airflow-logs" if data_root.name == "data" else data_root / "airflow-logs"
    mail_dir = data_root.parent / "mail" if data_root.name == "data" else data_root / "mail"
    with _MailCatcher(mail_dir) as catcher:
        env["AIRFLOW_CONN_SMTP_DEFAULT"] = catcher.connection_json()
        steps = [
            DagStep("cloudtrail_ingest", last.isoformat(),
                    {"source": str(logs / "AWSLogs"), "start": first.isoformat(),
                     "end": (last + timedelta(days=1)).isoformat()},
                    "ingest and validate the demo logs"),
            DagStep("flowlogs_ingest", last.isoformat(),
                    {"source": str(logs / "AWSLogs"), "start": first.isoformat(),
                     "end": (last + timedelta(days=1)).isoformat()},
                    "ingest, validate and score the demo's VPC Flow Logs"),
            DagStep("risk_model_training", last.isoformat(), {"until": (last - timedelta(days=1)).isoformat()},
                    "train the risk models on every day before the last"),
            DagStep("daily_risk_report", last.isoformat(),
                    {"date": last.isoformat(), "top_k": 20, "send_email": True, "recipients": "secops@example.com",
                     "notify": False},  # the demo only previews what automation would receive (below)
                    f"score {last} and email the report"),
        ]
        for number, step in enumerate(steps, 1):
            _say(f"\n[{number}/{len(steps)}] {step.title}: airflow dags test {step.dag_id} ...")
            seconds = run_dag(step, env, log_dir)
            _say(f"  done in {seconds:.0f}s (log: {log_dir / (step.dag_id + '.log')})")
            for line in _step_summary(step.dag_id, data_root, last):
                _say("  " + line)
        received = sorted(mail_dir.glob("*.eml"))
    for line in notify_preview(data_root, last.isoformat()):
        _say(line)
    _say(f"\nemail: {len(received)} message(s) reached the local SMTP server; newest: {received[-1] if received else '-'}")
    _say(f"data root: {data_root}   (MLflow UI: mlflow ui --backend-store-uri sqlite:///{data_root}/mlflow/mlflow.db)")
    _say(f"demo finished in {time.perf_counter() - started:.0f}s")
    return 0


EXAMPLE_DESTINATION = '[{"name": "example-webhook", "type": "webhook", "target": "https://example.invalid/trailguard"}]'


def notify_preview(data_root: Path, day: str) -> list[str]:
    """What the automation destinations would receive for the day (a dry run: nothing sent or recorded):
    the configured ones (TRAILGUARD_NOTIFY_DESTINATIONS), else an example webhook to show the messages."""
    from trailguard.respond.destinations import parse_destinations
    from trailguard.respond.notify import notify_day
    from trailguard.store.settings import ConfigError, load_settings

    settings = load_settings()
    try:
        configured = parse_destinations(settings.notify_destinations, default_min_score=settings.notify_min_score)
    except ConfigError as exc:
        return [f"\nautomation: TRAILGUARD_NOTIFY_DESTINATIONS is wrong: {exc}"]
    destinations = configured or parse_destinations(EXAMPLE_DESTINATION, default_min_score=settings.notify_min_score)
    result = notify_day(data_root, day, destinations, dry_run=True, max_per_run=settings.notify_max_per_run,
                        report_base_url=settings.report_base_url)
    head = ("\nautomation (dry run): what the configured destinations would receive"
            if configured else "\nautomation (dry run, no TRAILGUARD_NOTIFY_DESTINATIONS set: an example webhook)")
    return [head, *result.lines(),
            f"  send for real: trailguard --data {data_root} notify --date {day}  (README: Automation and alerts)"]


def _step_summary(dag_id: str, data_root: Path, last: object) -> list[str]:
    """What a step left in the data root, in a few lines."""
    from trailguard.report import summaries

    if dag_id == "cloudtrail_ingest":
        return summaries.ingest_lines(data_root) + summaries.quality_lines(data_root) + summaries.integrity_lines(data_root)
    if dag_id == "flowlogs_ingest":
        return summaries.flows_lines(data_root)
    if dag_id == "risk_model_training":
        return summaries.training_lines(data_root)
    if dag_id == "daily_risk_report":
        return summaries.report_lines(data_root, last)
    return []
