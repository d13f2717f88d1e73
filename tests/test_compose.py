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


def test_profile_celery_is_what_make_up_scale_runs():
    """The compose file keeps make up-scale's services, variables and versions (scripts/stack_scale.py
    declares the correspondence; the versions that run here are checked when installed)."""
    import sys

    sys.path.insert(0, str(PROJECT / "scripts"))
    import stack_scale

    services = _compose()["services"]
    cfg = stack_scale.ScaleConfig.from_env()
    here = {s.name: s for s in stack_scale.services(cfg)}
    assert set(here) == {c.here for c in stack_scale.COMPOSE}, "a service of make up-scale has no counterpart"
    moto = re.search(r"^moto==(\S+)", (PROJECT / "requirements-test.lock").read_text(), re.M).group(1)
    for counterpart in stack_scale.COMPOSE:
        spec = services.get(counterpart.compose)
        assert spec is not None, (
            f"{counterpart.compose} (make up-scale's {counterpart.here}) is not in compose"
        )
        if counterpart.image:
            assert spec["image"] == counterpart.image.format(moto=moto), counterpart
        else:  # the project's image: the locked Airflow and everything else (test_image_matches_locked_airflow)
            assert spec["image"].startswith("trailguard-airflow:"), counterpart
            command = spec["command"] if isinstance(spec["command"], str) else " ".join(spec["command"])
            assert " ".join(command.split()).startswith(counterpart.command), (counterpart, command)
    for name in ("redis", "moto", "airflow-worker"):
        assert services[name]["profiles"] == ["celery"], name
    assert services["airflow-worker"]["deploy"]["replicas"] == stack_scale.WORKERS
    assert "postgres" in " ".join(here["mlflow"].cmd) and "postgresql" in services["mlflow"]["command"]
    assert "--serve-artifacts" in here["mlflow"].cmd and "--serve-artifacts" in services["mlflow"]["command"]

    compose_env = _compose()["x-airflow-common"]["environment"]
    scale_env = stack_scale.scale_environment(cfg)
    for name in stack_scale.SHARED_VARIABLES:
        assert name in compose_env, f"{name} is set by make up-scale but not in compose"
        assert name in scale_env, f"{name} is in compose but make up-scale does not set it"
    for name in ("AIRFLOW__CORE__AUTH_MANAGER", "AIRFLOW__CORE__HOSTNAME_CALLABLE"):
        assert compose_env[name] == scale_env[name], name
    assert compose_env["AIRFLOW__CELERY__WORKER_CONCURRENCY"].endswith(
        f":-{stack_scale.WORKER_CONCURRENCY}}}"
    )
    assert "CeleryExecutor" == scale_env["AIRFLOW__CORE__EXECUTOR"]
    documented = (PROJECT / ".env.example").read_text()
    for name in stack_scale.ENV_FILE_VARIABLES:
        assert name in scale_env or name in here["mlflow"].env, name
        assert re.search(rf"^#?\s*{name}=", documented, re.M), f"{name} is not in .env.example"

    installed = stack_scale.installed_versions()
    declared = {"postgres": stack_scale.PG_VERSION, "redis": stack_scale.REDIS_VERSION, "moto": moto}
    for name, version in installed.items():
        assert version == declared[name], f"{name} {version} runs here, compose declares {declared[name]}"
