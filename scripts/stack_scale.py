"""TrailGuard's scale-out stack on 127.0.0.1: the production shape of ``docker-compose.yaml`` (profile
``celery``), without Docker.

    python scripts/stack_scale.py up       # what `make up-scale` runs: start, wait until healthy
    python scripts/stack_scale.py status   # both stacks' services, and which Celery worker ran what
    python scripts/stack_scale.py down     # what `make down` runs: stop both stacks, check nothing is left

What runs (every service a process of its own, started and stopped with ``stack.py``'s helpers; PIDs,
logs and state under ``<run dir>/scale/``, ``<run dir>`` being ``.run/`` unless TRAILGUARD_RUN_DIR says):

* PostgreSQL 15 (Debian's ``/usr/lib/postgresql/15``): a cluster in ``scale/postgres`` (initdb as the
  ``postgres`` user, trust on 127.0.0.1 only, no Unix socket), databases ``airflow`` and ``mlflow``;
* Redis (Debian's ``redis-server``), the Celery broker, nothing saved to disk;
* a moto server, the S3 API: bucket ``trailguard`` holds the data root ``s3://trailguard/data`` and
  MLflow's artifacts ``s3://trailguard/mlflow``;
* the mail catcher (``smtp_catcher.py``);
* an MLflow server: Postgres backend store, artifacts served through it from S3;
* Airflow 3 with CeleryExecutor: api-server, scheduler, dag-processor, triggerer and two
  ``airflow celery worker`` processes, each with its own Celery hostname and task-instance hostname
  (``TRAILGUARD_WORKER_HOSTNAME``, read by ``trailguard_airflow.hostname``), as two machines would be.

The same services, variables and versions are in ``docker-compose.yaml``: ``COMPOSE`` below declares the
correspondence and tests/test_compose.py checks the compose file against it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import stack as base

log = logging.getLogger("stack")

PROJECT = base.PROJECT
BIN = base.BIN
PG_VERSION = "15"
REDIS_VERSION = "7.0"
BUCKET = "trailguard"
DB_USER = "trailguard"
WORKERS = 2
WORKER_CONCURRENCY = 2  # two cores: two task processes per worker, four in all
INSTALL_HINT = "as root: make scale-deps (apt-get install -y redis-server postgresql)"


@dataclass(frozen=True)
class ComposeService:
    """One service of the scale stack and its counterpart in docker-compose.yaml."""

    here: str  # the service name in this script (several for the workers)
    compose: str  # the service in docker-compose.yaml
    image: str | None  # its image there; None: the project's image (Dockerfile: the locked Airflow)
    command: str | None = None  # what compose runs (for the project's image)


COMPOSE: tuple[ComposeService, ...] = (
    ComposeService("postgres", "postgres", f"postgres:{PG_VERSION}"),
    ComposeService("redis", "redis", f"redis:{REDIS_VERSION}"),
    ComposeService("s3", "moto", "motoserver/moto:{moto}"),  # {moto}: the locked moto version
    # the same role (SMTP on 1025, messages on a web page on 8025) by another program: no version to match
    ComposeService("smtp", "mailpit", "axllent/mailpit:v1.21"),
    ComposeService("mlflow", "mlflow", None, "mlflow server"),
    ComposeService("airflow-api-server", "airflow-apiserver", None, "api-server"),
    ComposeService("airflow-scheduler", "airflow-scheduler", None, "scheduler"),
    ComposeService("airflow-dag-processor", "airflow-dag-processor", None, "dag-processor"),
    ComposeService("airflow-triggerer", "airflow-triggerer", None, "triggerer"),
    *(ComposeService(f"airflow-worker-{i}", "airflow-worker", None, "celery worker") for i in (1, 2)),
)

#: The Airflow processes' variables that make the deployment's shape: set here and in compose's
#: ``x-airflow-common`` environment (values differ only by host names and credentials).
SHARED_VARIABLES: tuple[str, ...] = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__PARALLELISM",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__CORE__HOSTNAME_CALLABLE",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY",
    "AIRFLOW__CORE__AUTH_MANAGER",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
    "MLFLOW_TRACKING_URI",
    "TRAILGUARD_DATA",
)

#: What compose takes from .env for the profile celery (an empty value is not "unset" for boto3, so these
#: are not in compose's environment with a default): set here, documented in .env.example.
ENV_FILE_VARIABLES: tuple[str, ...] = (
    "AWS_ENDPOINT_URL",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
)


def pg_bin() -> Path:
    return Path(os.environ.get("TRAILGUARD_PG_BIN", "").strip() or f"/usr/lib/postgresql/{PG_VERSION}/bin")


def missing_binaries() -> list[str]:
    """What `make up-scale` needs from Debian and does not find."""
    missing = []
    if not (pg_bin() / "postgres").exists():
        missing.append(f"PostgreSQL {PG_VERSION} ({pg_bin()}/postgres)")
    if shutil.which("redis-server") is None:
        missing.append("Redis (redis-server)")
    return missing


def installed_versions() -> dict[str, str]:
    """The versions that run here, as compose's image tags name them (major for PostgreSQL,
    major.minor for Redis, the locked moto)."""
    found: dict[str, str] = {}
    try:
        out = subprocess.run([str(pg_bin() / "postgres"), "--version"], capture_output=True, text=True).stdout
        if m := re.search(r"(\d+)\.\d+", out):
            found["postgres"] = m.group(1)
    except OSError:
        pass
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
        if m := re.search(r"v=(\d+\.\d+)", out):
            found["redis"] = m.group(1)
    except OSError:
        pass
    try:
        from importlib.metadata import version

        found["moto"] = version("moto")
    except Exception:  # not installed: `make install-test`
        pass
    return found


@dataclass(frozen=True)
class ScaleConfig(base.Config):
    postgres_port: int = 5433
    redis_port: int = 6380
    s3_port: int = 9000
    bucket: str = BUCKET

    @classmethod
    def from_env(cls) -> ScaleConfig:  # type: ignore[override]
        env = os.environ
        run_dir = Path(env.get("TRAILGUARD_RUN_DIR", "").strip() or PROJECT / ".run").resolve() / "scale"
        return cls(
            run_dir=run_dir,
            data_root=f"s3://{BUCKET}/data",  # type: ignore[arg-type]  # a URI here, not a Path
            airflow_home=run_dir / "airflow",
            airflow_port=base._port("TRAILGUARD_AIRFLOW_PORT", 8080),
            mlflow_port=base._port("TRAILGUARD_MLFLOW_PORT", 5000),
            smtp_port=base._port("TRAILGUARD_SMTP_PORT", 1025),
            mail_ui_port=base._port("TRAILGUARD_MAIL_UI_PORT", 8025),
            user=env.get("TRAILGUARD_AIRFLOW_USER", "").strip() or "admin",
            password=env.get("TRAILGUARD_AIRFLOW_PASSWORD", "") or "admin",
            timeout=float(env.get("TRAILGUARD_STACK_TIMEOUT", "") or 300),
            source=env.get("TRAILGUARD_SOURCE", "").strip() or None,
            report_recipients=env.get("TRAILGUARD_REPORT_RECIPIENTS", "").strip()
            or base.DEMO_REPORT_RECIPIENTS,
            alert_recipients=env.get("TRAILGUARD_ALERT_RECIPIENTS", "").strip() or base.DEMO_ALERT_RECIPIENTS,
            notify_destinations=env.get("TRAILGUARD_NOTIFY_DESTINATIONS", "").strip() or None,
            postgres_port=base._port("TRAILGUARD_POSTGRES_PORT", 5433),
            redis_port=base._port("TRAILGUARD_REDIS_PORT", 6380),
            s3_port=base._port("TRAILGUARD_S3_PORT", 9000),
        )

    @property
    def pg_data(self) -> Path:
        return self.run_dir / "postgres"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def db_url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{DB_USER}@127.0.0.1:{self.postgres_port}/{database}"

    @property
    def broker_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"


# -- health probes ----------------------------------------------------------------------------------------
def _pg_connect(cfg: ScaleConfig, database: str = "postgres", user: str = "postgres"):
    import psycopg2

    return psycopg2.connect(
        host="127.0.0.1", port=cfg.postgres_port, user=user, dbname=database, connect_timeout=3
    )


def _postgres_ok(cfg: ScaleConfig) -> bool:
    try:
        _pg_connect(cfg).close()
        return True
    except Exception:
        return False


def _redis_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _worker_ready(log_path: Path, hostname: str) -> bool:
    """Celery says ``<hostname> ready.`` once it consumes the queue: looked for since the last start."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return False
    return f"{hostname} ready." in text[text.rfind("\n==== ") :]


# -- the services -----------------------------------------------------------------------------------------
def celery_hostname(number: int) -> str:
    return f"worker{number}@{socket.gethostname()}"


def worker_hostname(number: int) -> str:
    """The hostname a worker's task instances record (what `make status` and the UI show)."""
    return f"trailguard-worker-{number}"


def scale_environment(cfg: ScaleConfig) -> dict[str, str]:
    """The Airflow processes' environment: `make up`'s (project DAGs, login, mail to the catcher) on
    Postgres, Celery over Redis, the data root and MLflow's artifacts on the moto server."""
    env = base.airflow_environment(cfg)
    aws = aws_environment(cfg)
    env.update(aws)
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(WORKERS * WORKER_CONCURRENCY),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "trailguard_airflow.hostname.worker_hostname",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": cfg.db_url("airflow"),
            "AIRFLOW__CELERY__BROKER_URL": cfg.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": cfg.db_url("airflow", "db+postgresql+psycopg2"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            "MLFLOW_TRACKING_URI": cfg.mlflow_url,
            "TRAILGUARD_DATA": str(cfg.data_root),
        }
    )
    env.pop("TRAILGUARD_WORKER_HOSTNAME", None)
    return env


def aws_environment(cfg: ScaleConfig) -> dict[str, str]:
    """The standard AWS chain pointed at the moto server (any key is accepted there)."""
    return {
        "AWS_ENDPOINT_URL": cfg.s3_url,
        "MLFLOW_S3_ENDPOINT_URL": cfg.s3_url,
        "AWS_ACCESS_KEY_ID": "trailguard",
        "AWS_SECRET_ACCESS_KEY": "trailguard",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def services(cfg: ScaleConfig) -> list[base.Service]:
    """In start order (infrastructure first); ``down`` stops them in reverse."""
    quiet = {"MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "true", "GX_ANALYTICS_ENABLED": "false"}
    mark = {base.MARKER: str(cfg.run_dir), "PYTHONUNBUFFERED": "1"}
    plain = {**os.environ, **quiet, **mark}
    airflow = {**scale_environment(cfg), **quiet, **mark}
    health = base.AirflowHealth(cfg.airflow_url)
    af = str(BIN / "airflow")
    root = os.geteuid() == 0
    smtp = base.mail_catcher(cfg, plain)
    workers = [
        base.Service(
            f"airflow-worker-{n}",
            [
                af,
                "celery",
                "worker",
                "--celery-hostname",
                celery_hostname(n),
                "--concurrency",
                str(WORKER_CONCURRENCY),
                "--pid",
                str(cfg.run_dir / f"airflow-worker-{n}.celery-pid"),
                "--skip-serve-logs",  # one machine: the api-server reads the task logs from AIRFLOW_HOME
            ],
            {**airflow, "TRAILGUARD_WORKER_HOSTNAME": worker_hostname(n)},
            {},
            lambda n=n: _worker_ready(cfg.run_dir / f"airflow-worker-{n}.log", celery_hostname(n)),
        )
        for n in range(1, WORKERS + 1)
    ]
    return [
        base.Service(
            "postgres",
            [
                str(pg_bin() / "postgres"),
                "-D",
                str(cfg.pg_data),
                "-p",
                str(cfg.postgres_port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",  # TCP on 127.0.0.1 only
                "-c",
                "max_connections=200",
            ],
            plain,
            {"TRAILGUARD_POSTGRES_PORT": cfg.postgres_port},
            lambda: _postgres_ok(cfg),
            user="postgres" if root else None,
            stop_signal=signal.SIGINT,  # fast shutdown: SIGTERM would wait for every client to leave
        ),
        base.Service(
            "redis",
            [
                shutil.which("redis-server") or "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(cfg.redis_port),
                "--dir",
                str(cfg.run_dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            plain,
            {"TRAILGUARD_REDIS_PORT": cfg.redis_port},
            lambda: _redis_ok(cfg.redis_port),
        ),
        base.Service(
            "s3",
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(cfg.s3_port)],
            plain,
            {"TRAILGUARD_S3_PORT": cfg.s3_port},
            lambda: base._http_ok(f"{cfg.s3_url}/moto-api/data.json") is not None,
        ),
        smtp,
        base.Service(
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
                cfg.db_url("mlflow"),
                "--serve-artifacts",
                "--artifacts-destination",
                f"s3://{cfg.bucket}/mlflow",
            ],
            {**plain, **aws_environment(cfg), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            {"TRAILGUARD_MLFLOW_PORT": cfg.mlflow_port},
            lambda: base._http_ok(f"{cfg.mlflow_url}/health") is not None,
        ),
        base.Service(
            "airflow-api-server",
            [af, "api-server", "--host", "127.0.0.1", "--port", str(cfg.airflow_port), "--workers", "1"],
            airflow,
            {"TRAILGUARD_AIRFLOW_PORT": cfg.airflow_port},
            lambda: health.status("metadatabase"),
        ),
        base.Service(
            "airflow-scheduler",
            [af, "scheduler", "--skip-serve-logs"],
            airflow,
            {},
            lambda: health.status("scheduler"),
        ),
        base.Service(
            "airflow-dag-processor",
            [af, "dag-processor"],
            airflow,
            {},
            lambda: health.status("dag_processor"),
        ),
        base.Service(
            "airflow-triggerer",
            [af, "triggerer", "--skip-serve-logs"],
            airflow,
            {},
            lambda: health.status("triggerer"),
        ),
        *workers,
    ]


INFRASTRUCTURE = ("postgres", "redis", "s3", "smtp")


# -- preparation --------------------------------------------------------------------------------------------
def init_cluster(cfg: ScaleConfig) -> None:
    """A new PostgreSQL cluster in ``scale/postgres`` (once), owned by ``postgres`` when run as root."""
    if (cfg.pg_data / "PG_VERSION").exists():
        return
    cfg.pg_data.mkdir(parents=True, exist_ok=True)
    cmd = [str(pg_bin() / "initdb"), "-D", str(cfg.pg_data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
    if os.geteuid() == 0:
        shutil.chown(cfg.pg_data, "postgres", "postgres")
        reach = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(cfg.pg_data)])
        if reach.returncode != 0:
            raise base.StackError(
                f"the postgres user cannot write {cfg.pg_data}: a folder above it is not searchable by "
                "others (chmod o+x it, or set TRAILGUARD_RUN_DIR elsewhere)"
            )
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    log.info("creating the PostgreSQL cluster in %s (once)", cfg.pg_data)
    with (cfg.run_dir / "postgres-initdb.log").open("wb") as out:
        result = subprocess.run(cmd, cwd="/", stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        shutil.rmtree(cfg.pg_data, ignore_errors=True)
        raise base.StackError("initdb failed", cfg.run_dir / "postgres-initdb.log")


def prepare_databases(cfg: ScaleConfig, fresh_bucket: bool) -> None:
    """The ``trailguard`` role and its databases ``airflow`` and ``mlflow``. A new bucket (the moto server
    keeps it in memory: new after each start) means MLflow's artifacts are gone: its database starts
    afresh with them, so no registered model points at a missing artifact."""
    conn = _pg_connect(cfg)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DB_USER,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE ROLE {DB_USER} LOGIN")
            if fresh_bucket:
                cur.execute("DROP DATABASE IF EXISTS mlflow WITH (FORCE)")
            for name in ("airflow", "mlflow"):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f"CREATE DATABASE {name} OWNER {DB_USER}")
    finally:
        conn.close()


def prepare_bucket(cfg: ScaleConfig) -> bool:
    """The bucket on the moto server; True when it had to be created."""
    import boto3

    client = boto3.client("s3", endpoint_url=cfg.s3_url, region_name="us-east-1", **_keys(cfg))
    if cfg.bucket in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        return False
    client.create_bucket(Bucket=cfg.bucket)
    log.info("created the bucket s3://%s on the moto server", cfg.bucket)
    return True


def _keys(cfg: ScaleConfig) -> dict[str, str]:
    aws = aws_environment(cfg)
    return {
        "aws_access_key_id": aws["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": aws["AWS_SECRET_ACCESS_KEY"],
    }


def migrate_airflow(cfg: ScaleConfig, env: dict[str, str]) -> None:
    """``airflow db migrate`` on Postgres when this Airflow version has not migrated it yet."""
    from importlib.metadata import version

    marker = cfg.airflow_home / ".migrated"
    wanted = version("apache-airflow")
    if marker.exists() and marker.read_text().strip() == wanted and _has_airflow_tables(cfg):
        return
    cfg.airflow_home.mkdir(parents=True, exist_ok=True)
    log.info("migrating Airflow's metadata DB on Postgres")
    base.migrate_db(cfg.run_dir, env)
    marker.write_text(wanted + "\n")


def _has_airflow_tables(cfg: ScaleConfig) -> bool:
    try:
        conn = _pg_connect(cfg, "airflow", DB_USER)
    except Exception:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL")
            return bool(cur.fetchone()[0])
    finally:
        conn.close()


# -- commands -----------------------------------------------------------------------------------------------
def stack_memory(cfg: ScaleConfig) -> tuple[float, float, int]:
    """Memory (MB) of every process the stack runs: the sum of RSS (counts shared pages in each
    process: Postgres' shared buffers, forked workers' copies) and of PSS (shares them out), and how many
    processes there are."""
    procs = {p.pid: p for p in base.stack_processes(cfg.run_dir, _sessions(cfg))}
    for service in services(cfg):
        if (proc := base.running(cfg, service)) is not None:
            procs.update({c.pid: c for c in base._tree(proc)})
    rss = pss = 0
    for proc in procs.values():
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss / 2**20, pss / 2**20, len(procs)


def _sessions(cfg: ScaleConfig) -> set[int]:
    return {p.pid for s in services(cfg) if (p := base.running(cfg, s)) is not None}


def up(cfg: ScaleConfig) -> int:
    began = time.monotonic()
    if missing := missing_binaries():
        log.error("make up-scale needs %s: %s", " and ".join(missing), INSTALL_HINT)
        return 1
    installed = installed_versions()
    for name, want in (("postgres", PG_VERSION), ("redis", REDIS_VERSION)):
        have = installed.get(name)
        if have and have != want:
            log.warning("%s %s runs here, docker-compose.yaml declares %s", name, have, want)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    cfg.mail_dir.mkdir(parents=True, exist_ok=True)
    catalogue = services(cfg)
    already = {s.name for s in catalogue if base.running(cfg, s) is not None}
    todo = [s for s in catalogue if s.name not in already]
    if already:
        log.info("already running: %s", ", ".join(s.name for s in catalogue if s.name in already))
    for service in todo:
        base.pid_file(cfg, service.name).unlink(missing_ok=True)
        for var, port in service.ports.items():
            if not base._port_free(port):
                log.error(
                    "port %d (for %s) is used by another program (`make up`? `make down` stops it), or "
                    "choose another port with %s=...",
                    port,
                    service.name,
                    var,
                )
                return 1
    if todo:
        log.info("starting %s", ", ".join(s.name for s in todo))
    started: list[str] = []
    try:
        infra = [s for s in catalogue if s.name in INFRASTRUCTURE]
        apps = [s for s in catalogue if s.name not in INFRASTRUCTURE]
        if any(s.name == "postgres" for s in todo):
            init_cluster(cfg)
        for service in (s for s in todo if s in infra):
            base.start(cfg, service)
            started.append(service.name)
        base._wait_healthy(cfg, infra, began)
        fresh = prepare_bucket(cfg)
        prepare_databases(cfg, fresh and "mlflow" not in already)
        if any(s.name.startswith("airflow") for s in todo):
            airflow_env = next(s.env for s in todo if s.name.startswith("airflow"))
            migrate_airflow(cfg, airflow_env)
            base.prepare_airflow(cfg, airflow_env)  # the login; the DB is migrated (its marker is there)
        for service in (s for s in todo if s in apps):
            base.start(cfg, service)
            started.append(service.name)
        base._wait_healthy(cfg, apps, began)
    except (base.StackError, OSError, KeyboardInterrupt) as exc:
        if not isinstance(exc, KeyboardInterrupt):
            log.error("%s", exc)
        if isinstance(exc, base.StackError) and exc.log_path:
            log.error("last lines of %s:\n%s", exc.log_path, base._tail(exc.log_path))
        if started:
            log.error("stopping what this run started: %s", ", ".join(started))
            base.stop(cfg, started, catalogue=catalogue)
        return 1
    seconds = time.monotonic() - began
    rss, pss, count = stack_memory(cfg)
    log.info(
        "all healthy after %.0f s; stack memory %.0f MB RSS (%.0f MB PSS) in %d processes",
        seconds,
        rss,
        pss,
        count,
    )
    summary = {
        "seconds_to_healthy": round(seconds, 1),
        "rss_mb": round(rss),
        "pss_mb": round(pss),
        "processes": count,
    }
    (cfg.run_dir / "up.json").write_text(json.dumps(summary) + "\n")
    print(
        "\n".join(
            [
                "",
                "TrailGuard scale-out stack is up (CeleryExecutor, Postgres, Redis, S3 on moto):",
                f"  Airflow   {cfg.airflow_url}   login: {base.login(cfg)}   (REST API {cfg.airflow_url}/api/v2)",
                f"  Workers   {', '.join(celery_hostname(n) for n in range(1, WORKERS + 1))} "
                f"(concurrency {WORKER_CONCURRENCY} each)",
                f"  MLflow    {cfg.mlflow_url}   store: {cfg.db_url('mlflow')}, artifacts s3://{cfg.bucket}/mlflow",
                f"  Data      {cfg.data_root}   (S3 API {cfg.s3_url}, AWS_ENDPOINT_URL)",
                f"  Postgres  127.0.0.1:{cfg.postgres_port} (airflow, mlflow; user {DB_USER}, trust)   "
                f"Redis 127.0.0.1:{cfg.redis_port}",
                f"  Mail      {cfg.mail_ui_url}   (SMTP 127.0.0.1:{cfg.smtp_port}, messages in {cfg.mail_dir})",
                f"  Logs      {cfg.run_dir}/<service>.log; DAGs start paused",
                "  Stop with `make down`; `make status` shows what runs and which worker ran what.",
            ]
        ),
        flush=True,
    )
    return 0


def _plain_config() -> base.Config:
    """`make up`'s configuration (its run folder and ports: what `down` and `status` need), whatever
    TRAILGUARD_DATA says (`make up` itself refuses an s3:// data root)."""
    saved = os.environ.pop("TRAILGUARD_DATA", None)
    try:
        return base.Config.from_env()
    finally:
        if saved is not None:
            os.environ["TRAILGUARD_DATA"] = saved


def _listener(port: int) -> psutil.Process | None:
    """The process listening on a port of 127.0.0.1, when it can be seen."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    except psutil.Error:
        pass
    return None


def down(cfg: ScaleConfig) -> int:
    """Stop both stacks, then check: no process of either (PID files, sessions, markers), their ports free.
    A port held by a program neither stack started (another checkout's `make up`) is named, not stopped."""
    plain = _plain_config()
    left = base.stop(cfg, catalogue=services(cfg)) + base.stop(plain)
    left += base.stack_processes(cfg.run_dir, set()) + base.stack_processes(plain.run_dir, set())
    left = list({p.pid: p for p in left}.values())
    ports = sorted({port for s in [*services(cfg), *base.services(plain)] for port in s.ports.values()})
    busy = {port: _listener(port) for port in ports if not base._port_free(port)}
    others = {port: p for port, p in busy.items() if p is not None and p.pid not in {q.pid for q in left}}
    held = sorted(set(busy) - set(others))
    if left or held:
        log.error(
            "still running: %s; ports still in use: %s",
            ", ".join(base._describe(p) for p in left) or "-",
            ", ".join(map(str, held)) or "-",
        )
        return 1
    free = [port for port in ports if port not in others]
    note = "".join(
        f"; port {port} is held by a program neither stack started: pid {base._describe(p)}"
        for port, p in others.items()
    )
    log.info(
        "stopped: nothing either stack started is running, ports %s free%s",
        ", ".join(map(str, free)),
        note,
    )
    return 0


def worker_table(cfg: ScaleConfig, limit: int = 40) -> list[str]:
    """Which worker ran which task instances (Airflow's task_instance table), newest first, and how
    many each worker ran."""
    try:
        conn = _pg_connect(cfg, "airflow", DB_USER)
    except Exception as exc:
        return [f"  (no task table: {str(exc).strip().splitlines()[0]})"]
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT dag_id, task_id, map_index, state, hostname, queue, start_date, end_date "
                "FROM task_instance WHERE hostname IS NOT NULL AND hostname <> '' "
                "ORDER BY start_date DESC NULLS LAST LIMIT %s",
                (limit,),
            )
            rows = cur.fetchall()
            cur.execute(
                "SELECT hostname, count(*) FROM task_instance WHERE hostname IS NOT NULL AND hostname <> '' "
                "GROUP BY hostname ORDER BY hostname"
            )
            counts = cur.fetchall()
    finally:
        conn.close()
    if not rows:
        return ["  no task instance has run yet"]
    out = [f"  {'worker':20} {'queue':8} {'state':8} {'secs':>5}  task instance"]
    for dag_id, task_id, map_index, state, hostname, queue, start, end in rows:
        secs = f"{(end - start).total_seconds():5.0f}" if start and end else "    -"
        index = f"[{map_index}]" if map_index >= 0 else ""
        out.append(f"  {hostname:20} {queue or '-':8} {state or '-':8} {secs}  {dag_id}.{task_id}{index}")
    out.append("  task instances per worker: " + ", ".join(f"{h} {n}" for h, n in counts))
    return out


def status(cfg: ScaleConfig) -> int:
    plain = _plain_config()
    if any(plain.run_dir.glob("*.pid")):
        print("make up:")
        base.status(plain)
    rows = []
    running_any = False
    for service in services(cfg):
        proc = base.running(cfg, service)
        if proc is None:
            rows.append(f"  {service.name:22} stopped")
            continue
        running_any = True
        rows.append(base.service_row(service, proc))
    print("make up-scale:")
    print("\n".join(rows))
    if running_any:
        rss, pss, count = stack_memory(cfg)
        print(
            f"  stack memory {rss:.0f} MB RSS ({pss:.0f} MB PSS) in {count} processes; "
            f"Airflow {cfg.airflow_url} ({base.login(cfg)})"
        )
        if base.running(cfg, services(cfg)[0]) is not None:
            print("Celery workers and the task instances they ran:")
            print("\n".join(worker_table(cfg)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    cfg = ScaleConfig.from_env()
    if args.command == "status":
        return status(cfg)
    if args.command == "up" and not (BIN / "moto_server").exists():
        log.error("moto_server not found next to %s: run `make install-test` first", sys.executable)
        return 1
    with base.one_at_a_time(cfg.run_dir, "`make up-scale`/`make down`"):
        return up(cfg) if args.command == "up" else down(cfg)


if __name__ == "__main__":
    sys.exit(main())
