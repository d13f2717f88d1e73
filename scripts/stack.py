"""TrailGuard's local stack: Airflow 3, an MLflow server and a mail catcher on 127.0.0.1.

    python scripts/stack.py up       # what `make up` runs: start what is not running, wait until healthy
    python scripts/stack.py status   # what runs, with PIDs, memory and URLs
    python scripts/stack.py down     # stop everything it started and check that nothing is left

Every service runs in a session of its own (so its process group, and everything it starts, can be
found and stopped as a whole), writes its PID to ``<run dir>/<name>.pid`` and its output to
``<run dir>/<name>.log``, and carries the marker ``TRAILGUARD_STACK=<run dir>`` in its environment:
``down`` finds even processes that left their group (Airflow runs each task in a new process group) or
lost their parent, and checks that nothing is left.

Airflow writes MLflow runs straight into the SQLite store inside the data root (``MLFLOW_TRACKING_URI``
is removed from its environment, so the library's default applies); the MLflow server serves that same
database and artifact folder, so everything the DAGs log shows in its UI.

Configuration comes from the environment (see ``Config.from_env``); nothing here imports Airflow.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from trailguard.demo.runner import airflow_env

log = logging.getLogger("stack")

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MARKER = "TRAILGUARD_STACK"
DEMO_REPORT_RECIPIENTS = "secops@example.com"
DEMO_ALERT_RECIPIENTS = "oncall@example.com"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a port number") from None


@dataclass(frozen=True)
class Config:
    run_dir: Path
    data_root: Path
    airflow_home: Path
    airflow_port: int
    mlflow_port: int
    smtp_port: int
    mail_ui_port: int
    user: str
    password: str
    timeout: float
    source: str | None
    report_recipients: str = DEMO_REPORT_RECIPIENTS
    alert_recipients: str = DEMO_ALERT_RECIPIENTS
    notify_destinations: str | None = None

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        if "://" in env.get("TRAILGUARD_DATA", ""):
            raise SystemExit(
                f"make up runs on a local data root (its MLflow server keeps SQLite there), not "
                f"TRAILGUARD_DATA={env['TRAILGUARD_DATA'].strip()}: unset it or point it at a folder"
            )
        data_root = Path(env.get("TRAILGUARD_DATA", "").strip() or PROJECT / "demo" / "data").resolve()
        source = env.get("TRAILGUARD_SOURCE", "").strip() or None
        if source is None and data_root == (PROJECT / "demo" / "data").resolve():
            # The demo store's source: the hourly ingest run then works as soon as the DAG is unpaused.
            source = str(PROJECT / "demo" / "logs")
        return cls(
            run_dir=Path(env.get("TRAILGUARD_RUN_DIR", "").strip() or PROJECT / ".run").resolve(),
            data_root=data_root,
            airflow_home=Path(env.get("AIRFLOW_HOME", "").strip() or PROJECT / ".airflow").resolve(),
            airflow_port=_port("TRAILGUARD_AIRFLOW_PORT", 8080),
            mlflow_port=_port("TRAILGUARD_MLFLOW_PORT", 5000),
            smtp_port=_port("TRAILGUARD_SMTP_PORT", 1025),
            mail_ui_port=_port("TRAILGUARD_MAIL_UI_PORT", 8025),
            user=env.get("TRAILGUARD_AIRFLOW_USER", "").strip() or "admin",
            password=env.get("TRAILGUARD_AIRFLOW_PASSWORD", "") or "admin",
            timeout=float(env.get("TRAILGUARD_STACK_TIMEOUT", "") or 180),
            source=source,
            # the walk-through works as written: the report and alerts go to demo addresses the catcher keeps
            report_recipients=env.get("TRAILGUARD_REPORT_RECIPIENTS", "").strip() or DEMO_REPORT_RECIPIENTS,
            alert_recipients=env.get("TRAILGUARD_ALERT_RECIPIENTS", "").strip() or DEMO_ALERT_RECIPIENTS,
            notify_destinations=env.get("TRAILGUARD_NOTIFY_DESTINATIONS", "").strip() or None,
        )

    @property
    def mail_dir(self) -> Path:
        return self.run_dir / "mail"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def mail_ui_url(self) -> str:
        return f"http://127.0.0.1:{self.mail_ui_port}"

    @property
    def mlflow_db(self) -> Path:
        return self.data_root / "mlflow" / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.data_root / "mlflow" / "artifacts"


@dataclass(frozen=True)
class Service:
    name: str
    cmd: list[str]
    env: dict[str, str]
    ports: dict[str, int]  # the environment variable that chooses it -> port
    healthy: Callable[[], bool]
    user: str | None = None  # run as this user (PostgreSQL refuses root)
    stop_signal: signal.Signals = signal.SIGTERM  # what asks it to stop (PostgreSQL: SIGINT, fast shutdown)


# -- health probes ----------------------------------------------------------------------------------------
def _http_ok(url: str, timeout: float = 3.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read() if response.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no conflict
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class AirflowHealth:
    """One GET of ``/api/v2/monitor/health`` per second, shared by the four Airflow components."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._at = 0.0
        self._body: dict = {}

    def status(self, component: str) -> bool:
        if time.monotonic() - self._at > 1.0:
            raw = _http_ok(f"{self.url}/api/v2/monitor/health")
            self._body = json.loads(raw) if raw else {}
            self._at = time.monotonic()
        return (self._body.get(component) or {}).get("status") == "healthy"


# -- the services -----------------------------------------------------------------------------------------
def airflow_environment(cfg: Config) -> dict[str, str]:
    """The Airflow processes' environment: `make demo`'s (project DAGs and plugins, SQLite under
    AIRFLOW_HOME, no examples) plus LocalExecutor with 4 slots, a known login, email to the catcher and
    MLflow straight into the data root's SQLite store."""
    env = airflow_env(cfg.data_root)
    smtp = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": cfg.smtp_port,
        "extra": {
            "disable_ssl": True,
            "disable_tls": True,
            "from_email": "trailguard@localhost",
            "timeout": 10,
        },
    }
    env.update(
        {
            "AIRFLOW_HOME": str(cfg.airflow_home),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{cfg.user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(cfg.run_dir / "airflow-passwords.json"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(cfg.airflow_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{cfg.airflow_url}/execution/",
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(smtp),
            "AIRFLOW__SMTP__SMTP_HOST": "127.0.0.1",
            "AIRFLOW__SMTP__SMTP_PORT": str(cfg.smtp_port),
            "AIRFLOW__SMTP__SMTP_STARTTLS": "False",
            "AIRFLOW__SMTP__SMTP_SSL": "False",
            "AIRFLOW__SMTP__SMTP_MAIL_FROM": "trailguard@localhost",
        }
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    env["TRAILGUARD_MLFLOW_UI_URL"] = cfg.mlflow_url  # the TrailGuard pages link to the runs there
    env["TRAILGUARD_REPORT_RECIPIENTS"] = cfg.report_recipients
    env["TRAILGUARD_ALERT_RECIPIENTS"] = cfg.alert_recipients
    if cfg.source:
        env["TRAILGUARD_SOURCE"] = cfg.source
    return env


def mail_catcher(cfg: Config, env: dict[str, str]) -> Service:
    """The mail catcher (``smtp_catcher.py``): SMTP on ``smtp_port``, its page on ``mail_ui_port``."""
    return Service(
        "smtp",
        [
            sys.executable,
            str(PROJECT / "scripts" / "smtp_catcher.py"),
            "--host",
            "127.0.0.1",
            "--smtp-port",
            str(cfg.smtp_port),
            "--ui-port",
            str(cfg.mail_ui_port),
            "--mail-dir",
            str(cfg.mail_dir),
        ],
        env,
        {"TRAILGUARD_SMTP_PORT": cfg.smtp_port, "TRAILGUARD_MAIL_UI_PORT": cfg.mail_ui_port},
        lambda: _port_open(cfg.smtp_port) and _http_ok(f"{cfg.mail_ui_url}/health") is not None,
    )


def services(cfg: Config) -> list[Service]:
    """In start order; ``down`` stops them in reverse."""
    quiet = {"MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "true", "GX_ANALYTICS_ENABLED": "false"}
    mark = {MARKER: str(cfg.run_dir), "PYTHONUNBUFFERED": "1"}
    base = {**os.environ, **quiet, **mark}
    airflow = {**airflow_environment(cfg), **quiet, **mark}
    health = AirflowHealth(cfg.airflow_url)
    af = str(BIN / "airflow")
    return [
        mail_catcher(cfg, base),
        Service(
            "mlflow",
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(cfg.mlflow_port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{cfg.mlflow_db}",
                "--default-artifact-root",
                cfg.mlflow_artifacts.as_uri(),
                "--artifacts-destination",
                cfg.mlflow_artifacts.as_uri(),
            ],
            # no GenAI job runner: it would start seven more worker processes (about 1 GB) we never use
            {**base, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            {"TRAILGUARD_MLFLOW_PORT": cfg.mlflow_port},
            lambda: _http_ok(f"{cfg.mlflow_url}/health") is not None,
        ),
        Service(
            "airflow-api-server",
            [af, "api-server", "--host", "127.0.0.1", "--port", str(cfg.airflow_port), "--workers", "1"],
            airflow,
            {"TRAILGUARD_AIRFLOW_PORT": cfg.airflow_port},
            lambda: health.status("metadatabase"),
        ),
        Service(
            "airflow-scheduler",
            [af, "scheduler", "--skip-serve-logs"],
            airflow,
            {},
            lambda: health.status("scheduler"),
        ),
        Service(
            "airflow-dag-processor",
            [af, "dag-processor"],
            airflow,
            {},
            lambda: health.status("dag_processor"),
        ),
        Service(
            "airflow-triggerer",
            [af, "triggerer", "--skip-serve-logs"],
            airflow,
            {},
            lambda: health.status("triggerer"),
        ),
    ]


# -- processes --------------------------------------------------------------------------------------------
def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def pid_file(cfg: Config, name: str) -> Path:
    return cfg.run_dir / f"{name}.pid"


def running(cfg: Config, service: Service) -> psutil.Process | None:
    """The service's process when its PID file names a live process that is really ours: a session leader
    (we start each service with a new session) older than the file, so not a reused PID."""
    path = pid_file(cfg, service.name)
    try:
        proc = psutil.Process(int(path.read_text().strip()))
        ours = os.getsid(proc.pid) == proc.pid and proc.create_time() <= path.stat().st_mtime + 5
    except (OSError, ValueError, psutil.Error):
        return None
    return proc if ours and _alive(proc) else None


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def stack_processes(run_dir: Path, sessions: set[int]) -> list[psutil.Process]:
    """Every live process of these sessions or carrying this stack's environment marker.

    The session catches what left its process group (Airflow puts each task in a new one) or its parent;
    the marker catches what started a session of its own (a task's subprocess with start_new_session).
    Airflow rewrites its processes' titles over their environment, hence both.
    """
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if os.getsid(proc.pid) in sessions or proc.environ().get(MARKER) == str(run_dir):
                if _alive(proc):
                    found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(cfg: Config, service: Service) -> psutil.Process:
    log_path = cfg.run_dir / f"{service.name}.log"
    with log_path.open("ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(service.cmd)}\n".encode())
        out.flush()
        popen = subprocess.Popen(
            service.cmd,
            env=service.env,
            cwd=PROJECT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own session and process group: stoppable as one
            user=service.user,
            group=service.user,  # its own group too, none of ours
            extra_groups=[] if service.user else None,
        )
    tmp = pid_file(cfg, service.name).with_suffix(".pid.tmp")
    tmp.write_text(f"{popen.pid}\n")
    tmp.replace(pid_file(cfg, service.name))
    return psutil.Process(popen.pid)


def stop(
    cfg: Config,
    names: list[str] | None = None,
    grace: float = 30.0,
    catalogue: list[Service] | None = None,
) -> list[psutil.Process]:
    """Stop services the way an init system does: SIGTERM to each service's main process, which stops its
    own children; once it is gone, SIGTERM to whatever is left of its process group and session; after
    ``grace`` seconds, SIGKILL to everything left.

    Signalling a whole group at once is what not to do first: the scheduler's LocalExecutor workers,
    killed under it, leave it waiting for them forever. Returns the processes still alive afterwards
    (empty when all is well). Without ``names``: every service, plus any process still carrying this
    stack's marker (left over from an earlier run). ``catalogue``: the services of another stack built on
    these helpers (``stack_scale.py``), in start order.
    """
    wanted = [s for s in reversed(catalogue or services(cfg)) if names is None or s.name in names]
    leaders = {s.name: p for s in wanted if (p := running(cfg, s)) is not None}
    sessions = {p.pid for p in leaders.values()}  # each started with a new session: its id is its PID

    def members() -> dict[int, psutil.Process]:
        found = {c.pid: c for p in leaders.values() for c in _tree(p) if _alive(c)}
        for proc in stack_processes(cfg.run_dir, sessions):
            if names is None or os.getsid(proc.pid) in sessions:
                found.setdefault(proc.pid, proc)
        return found

    def send(procs: list[psutil.Process], sig: signal.Signals, groups: Iterable[int] = ()) -> None:
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except OSError:
                pass
        for proc in procs:
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass

    def orphans_of(sid: int | None, targets: dict[int, psutil.Process]) -> list[psutil.Process]:
        """Members of a session (None: of no session of ours, e.g. marker-only leftovers)."""
        out = []
        for proc in targets.values():
            try:
                proc_sid = os.getsid(proc.pid)
            except OSError:
                continue
            if proc_sid == sid or (sid is None and proc_sid not in sessions):
                out.append(proc)
        return out

    targets = members()
    if not targets:
        return []
    log.info("stopping %s (%d processes)", ", ".join(leaders) or "leftovers", len(targets))
    signals = {s.name: s.stop_signal for s in wanted}
    for name, leader in leaders.items():
        send([leader], signals[name])
    send(orphans_of(None, targets), signal.SIGTERM)
    cleaned: set[int] = set()
    deadline = time.monotonic() + grace
    while (targets := members()) and time.monotonic() < deadline:
        for leader in leaders.values():
            if leader.pid not in cleaned and not _alive(leader):  # gone: what it left behind is ours to stop
                send(orphans_of(leader.pid, targets), signal.SIGTERM, {leader.pid})
                cleaned.add(leader.pid)
        time.sleep(0.3)
    if targets:
        log.info(
            "still running after %.0f s, SIGKILL: %s",
            grace,
            ", ".join(_describe(p) for p in targets.values()),
        )
        send(list(targets.values()), signal.SIGKILL, sessions)
        psutil.wait_procs(list(targets.values()), timeout=5)
    for service in wanted:
        pid_file(cfg, service.name).unlink(missing_ok=True)
    return list(members().values())


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} ({' '.join(proc.cmdline())[:80]})"
    except psutil.Error:
        return str(proc.pid)


def _rss_mb(proc: psutil.Process) -> float:
    total = 0
    for p in _tree(proc):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


# -- preparation --------------------------------------------------------------------------------------------
def login(cfg: Config) -> str:
    """The login the running Airflow accepts: the one written when it started (the environment may have
    changed since; a new login takes effect at the next start)."""
    try:
        user, password = next(iter(json.loads((cfg.run_dir / "airflow-passwords.json").read_text()).items()))
    except (OSError, ValueError, StopIteration):
        user, password = cfg.user, cfg.password
    return f"{user} / {password}"


def prepare_airflow(cfg: Config, env: dict[str, str]) -> None:
    """Known login (the passwords file the simple auth manager reads) and a migrated metadata DB."""
    passwords = cfg.run_dir / "airflow-passwords.json"
    fd = os.open(passwords, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({cfg.user: cfg.password}, out)
    marker = cfg.airflow_home / ".migrated"
    if marker.exists():
        return
    cfg.airflow_home.mkdir(parents=True, exist_ok=True)
    log.info("creating Airflow's metadata DB in %s (once)", cfg.airflow_home)
    migrate_db(cfg.run_dir, env)
    marker.touch()


def migrate_db(run_dir: Path, env: dict[str, str]) -> None:
    """``airflow db migrate`` on the metadata DB ``env`` names, its output in ``run_dir``'s
    airflow-db-migrate.log (named by the error when it fails)."""
    logfile = run_dir / "airflow-db-migrate.log"
    with logfile.open("wb") as out:
        result = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"],
            env=env,
            cwd=PROJECT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        raise StackError("airflow db migrate failed", logfile)


def prepare_data(cfg: Config) -> str | None:
    """Fill an empty demo store (demo logs + ingest) so the UIs show something at once.

    Returns an instruction for the user when that is not possible; other data roots are never touched.
    """
    demo_root = (PROJECT / "demo" / "data").resolve()
    if cfg.data_root != demo_root or any((cfg.data_root / "events").glob("date=*/*.parquet")):
        return None
    logs = PROJECT / "demo" / "logs"
    trailguard = str(BIN / "trailguard")
    have_logs = logs.is_dir() and any(logs.rglob("*.json*"))
    if not have_logs and importlib.util.find_spec("trailguard.demo.generator") is None:
        return (
            "the demo store is empty: run `make demo` to fill it (generated CloudTrail logs through the DAGs)"
        )
    steps = [] if have_logs else [[trailguard, "demo-data", "--out", str(logs)]]
    steps.append([trailguard, "--data", str(cfg.data_root), "ingest", "--source", str(logs)])
    env = {**os.environ, "TRAILGUARD_DATA": str(cfg.data_root)}
    with (cfg.run_dir / "demo-data.log").open("ab") as out:
        for cmd in steps:
            log.info("demo store is empty: %s", " ".join(Path(c).name if c == trailguard else c for c in cmd))
            if (
                subprocess.run(cmd, env=env, cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT).returncode
                != 0
            ):
                raise StackError("loading the demo data failed", cfg.run_dir / "demo-data.log")
    return "demo data loaded (events only): `make demo` runs the whole pipeline, models and reports included"


class StackError(RuntimeError):
    def __init__(self, message: str, log_path: Path | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path


# -- commands -----------------------------------------------------------------------------------------------
def up(cfg: Config) -> int:
    began = time.monotonic()
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    cfg.mail_dir.mkdir(parents=True, exist_ok=True)
    (cfg.data_root / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
    all_services = services(cfg)
    already = {s.name for s in all_services if running(cfg, s) is not None}
    todo = [s for s in all_services if s.name not in already]
    if already:
        log.info("already running: %s", ", ".join(sorted(already)))
    for service in todo:
        pid_file(cfg, service.name).unlink(missing_ok=True)  # stale: its process is gone
        for var, port in service.ports.items():
            if not _port_free(port):
                log.error(
                    "port %d (for %s) is used by another program: stop it, or choose another port "
                    "with %s=...",
                    port,
                    service.name,
                    var,
                )
                return 1
    if service_names := [s.name for s in todo]:
        log.info("starting %s", ", ".join(service_names))
    started: list[str] = []
    try:
        note = prepare_data(cfg) if todo else None
        if any(s.name.startswith("airflow") for s in todo):
            prepare_airflow(cfg, next(s.env for s in todo if s.name.startswith("airflow")))
        for service in todo:
            start(cfg, service)
            started.append(service.name)
        _wait_healthy(cfg, all_services, began)
    except (StackError, OSError, KeyboardInterrupt) as exc:
        if not isinstance(exc, KeyboardInterrupt):
            log.error("%s", exc)
        if isinstance(exc, StackError) and exc.log_path:
            log.error("last lines of %s:\n%s", exc.log_path, _tail(exc.log_path))
        if started:
            log.error("stopping what this run started: %s", ", ".join(started))
            stop(cfg, started)
        return 1
    log.info("all healthy after %.0f s", time.monotonic() - began)
    _print_summary(cfg, note)
    return 0


def _wait_healthy(cfg: Config, wanted: list[Service], began: float) -> None:
    pending = list(wanted)
    last_report = 0.0
    while pending:
        for service in list(pending):
            proc = running(cfg, service)
            if proc is None:
                raise StackError(
                    f"{service.name} exited during start-up", cfg.run_dir / f"{service.name}.log"
                )
            if service.healthy():
                log.info("  %-22s healthy (%.0f s)", service.name, time.monotonic() - began)
                pending.remove(service)
        elapsed = time.monotonic() - began
        if pending and elapsed > cfg.timeout:
            first = pending[0]
            raise StackError(
                f"not healthy within {cfg.timeout:.0f} s: {', '.join(s.name for s in pending)}",
                cfg.run_dir / f"{first.name}.log",
            )
        if pending and elapsed - last_report >= 15:
            log.info("  waiting for %s (%.0f s)", ", ".join(s.name for s in pending), elapsed)
            last_report = elapsed
        if pending:
            time.sleep(1)


def _print_summary(cfg: Config, note: str | None) -> None:
    lines = [
        "",
        "TrailGuard stack is up:",
        f"  Airflow   {cfg.airflow_url}   login: {login(cfg)}   (REST API {cfg.airflow_url}/api/v2)",
        f"  MLflow    {cfg.mlflow_url}   store: sqlite:///{cfg.mlflow_db}",
        f"  Mail      {cfg.mail_ui_url}   (SMTP 127.0.0.1:{cfg.smtp_port}, messages in {cfg.mail_dir})",
        f"            reports to {cfg.report_recipients}, alerts to {cfg.alert_recipients}",
        "  Automation "
        + (
            "TRAILGUARD_NOTIFY_DESTINATIONS is set: daily_risk_report's notify_findings sends to it"
            if cfg.notify_destinations
            else "none configured (README: Automation and alerts); notify_findings skips"
        ),
        f"  Data      {cfg.data_root}" + (f"   (ingest source: {cfg.source})" if cfg.source else ""),
        f"  Logs      {cfg.run_dir}/<service>.log; DAGs start paused",
        "  Stop with `make down`; `make status` shows what runs.",
    ]
    if note:
        lines.insert(-1, f"  Note      {note}")
    print("\n".join(lines), flush=True)


def down(cfg: Config) -> int:
    left = stop(cfg)
    if left:
        log.error("still running: %s", ", ".join(_describe(p) for p in left))
        return 1
    log.info("stopped: nothing this stack started is running")
    return 0


def service_row(service: Service, proc: psutil.Process) -> str:
    """A running service's line of ``status``: health, pid, memory, uptime and ports."""
    state = "healthy" if service.healthy() else "starting"
    uptime = time.time() - proc.create_time()
    port = ", ".join(f"port {p}" for p in service.ports.values())
    return (
        f"  {service.name:22} {state:8} pid {proc.pid:<7} {_rss_mb(proc):6.0f} MB  "
        f"up {uptime / 60:5.1f} min  {port}"
    )


def status(cfg: Config) -> int:
    rows = []
    ours: set[int] = set()
    for service in services(cfg):
        proc = running(cfg, service)
        if proc is None:
            rows.append(f"  {service.name:22} stopped")
            continue
        ours.update(p.pid for p in _tree(proc))
        rows.append(service_row(service, proc))
    orphans = [p for p in stack_processes(cfg.run_dir, set()) if p.pid not in ours]
    print("\n".join(rows))
    if orphans:
        print(f"  {len(orphans)} other process(es) carry this stack's marker: `make down` stops them")
    if ours:
        print(f"  Airflow {cfg.airflow_url} ({login(cfg)}), MLflow {cfg.mlflow_url}, mail {cfg.mail_ui_url}")
    return 0


@contextmanager
def one_at_a_time(run_dir: Path, what: str) -> Iterator[None]:
    """One ``up`` or ``down`` at a time per run dir: a second one waits for the first (says so)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "stack.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another %s is running on %s: waiting for it", what, run_dir)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if not (BIN / "airflow").exists() or shutil.which("mlflow", path=str(BIN)) is None:
        log.error("airflow/mlflow not found next to %s: run `make install` first", sys.executable)
        return 1
    cfg = Config.from_env()
    if args.command == "status":
        return status(cfg)
    with one_at_a_time(cfg.run_dir, "`make up`/`make down`"):
        return up(cfg) if args.command == "up" else down(cfg)


if __name__ == "__main__":
    sys.exit(main())
