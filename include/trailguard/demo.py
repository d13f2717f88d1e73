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
