"""Test set-up: Airflow's environment is fixed before anything imports Airflow.

Airflow gets its own home and SQLite DB in a session temp folder, this project's dags/ and plugins/,
no examples. Real parts only: the metadata DB is migrated for real, S3 and CloudWatch Logs are a moto
server on 127.0.0.1 that boto3 talks HTTP to.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
FIXTURES = PROJECT.parent / "shared" / "fixtures" / "cloudtrail"

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="trailguard-airflow-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "DO_NOT_TRACK": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
)
os.environ.pop("TRAILGUARD_DATA", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)


# CI sets this: the checks that real attack records score high live in tests that need the public fixtures,
# so there a missing ../shared/fixtures is a failure, not a quiet skip. A plain clone elsewhere skips them.
REQUIRE_FIXTURES = os.environ.get("TRAILGUARD_REQUIRE_FIXTURES", "").lower() in ("1", "true", "yes")


def pytest_configure(config) -> None:
    if REQUIRE_FIXTURES and not FIXTURES.is_dir():
        pytest.exit(
            f"TRAILGUARD_REQUIRE_FIXTURES is set but the public CloudTrail fixtures are not at {FIXTURES}: "
            "clone next to ../shared, or unset it to skip the tests that need them",
            returncode=1,
        )


def fixture_records(name: str) -> list[dict]:
    """Records of one public fixture file, exactly as published (provenance keys starting with _ dropped)."""
    import json

    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"public CloudTrail fixtures not found at {FIXTURES} (a clone without ../shared)")
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            out.append({k: v for k, v in record.items() if not k.startswith("_")})
    return out


@pytest.fixture(autouse=True)
def no_mlflow_state_left_behind():
    """A test (and the library code it calls) leaves no MLflow URI in the environment, where every later
    test and child process would inherit it (MLflow's set_tracking_uri exports MLFLOW_TRACKING_URI)."""
    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield
    after = {k: os.environ.get(k) for k in before}
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    assert after == before, f"the test left MLflow state in the environment: {after}"


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Airflow's metadata DB, migrated once per session."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return _AIRFLOW_HOME


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server():
    """A real moto server on 127.0.0.1 (S3, CloudWatch Logs, ...); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_client(moto_server):
    import boto3

    def make(service: str):
        return boto3.client(service, endpoint_url=moto_server, region_name="us-east-1")

    return make
