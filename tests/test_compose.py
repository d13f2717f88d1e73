"""docker-compose.yaml checked against the project (no Docker engine runs here)."""

from __future__ import annotations

import re

import yaml

from tests.conftest import PROJECT


def _compose() -> dict:
    return yaml.safe_load((PROJECT / "docker-compose.yaml").read_text())


def _locked(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==([^\s]+)", (PROJECT / "requirements.lock").read_text(), re.M)
    assert match, f"{name} not in requirements.lock"
    return match.group(1)


def test_image_matches_locked_airflow():
    base = re.search(
        r"^FROM apache/airflow:([0-9.]+)-python3\.11", (PROJECT / "Dockerfile").read_text(), re.M
    )
    assert base and base.group(1) == _locked("apache-airflow")
    assert "requirements.lock" in (PROJECT / "Dockerfile").read_text()


def test_services_and_mounts():
    compose = _compose()
    services = compose["services"]
    for name in (
        "postgres",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "mlflow",
        "mailpit",
    ):
        assert name in services, name
        assert "healthcheck" in services[name] or name == "airflow-init", name
    for volume in services["airflow-scheduler"]["volumes"]:
        host = volume.split(":")[0]
        if host.startswith("./"):
            assert (PROJECT / host).exists(), f"mounted {host} does not exist"
    assert services["airflow-apiserver"]["command"] == "api-server"


def test_no_secrets_inline():
    text = (PROJECT / "docker-compose.yaml").read_text()
    for match in re.finditer(r"(?i)(password|secret|token)[A-Z_]*:\s*(\S+)", text):
        value = match.group(2)
        assert value.startswith("${"), f"inline secret: {match.group(0)}"
    assert "env_file" in text and (PROJECT / ".env.example").exists()


def test_every_env_var_documented():
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (PROJECT / ".env.example").read_text(), re.M))
    settings = (PROJECT / "include" / "trailguard" / "store" / "settings.py").read_text()
    for name in re.findall(r'"((?:TRAILGUARD|MLFLOW)_[A-Z0-9_]+)"', settings):
        assert name in documented, f"{name} is read in settings.py but not documented in .env.example"
    compose = (PROJECT / "docker-compose.yaml").read_text()
    for name in set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", compose)):
        assert name in documented, f"{name} is used in docker-compose.yaml but not in .env.example"
