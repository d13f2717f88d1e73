"""Airflow-side glue shared by TrailGuard's DAGs: Assets, dates from the run, connections.

The DAG files stay thin and the library (``include/trailguard``) stays free of Airflow; this package is the
only place where the two meet. It is installed with the library (``include/``), so DAGs import it as any package.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

from airflow.sdk import Asset

from trailguard_airflow.respond import FailureNotifier

log = logging.getLogger(__name__)

EVENTS = Asset(uri="trailguard://events", name="trailguard_events")
VALIDATED_EVENTS = Asset(uri="trailguard://events-validated", name="trailguard_validated_events")
LABELS = Asset(uri="trailguard://labels", name="trailguard_labels")
MODELS = Asset(uri="trailguard://models", name="trailguard_models")

# Every task: retries with backoff for transient faults (SMTP, throttling, a busy store); configuration
# errors raise AirflowFailException and are not retried; a task that failed for good alerts the team.
DEFAULT_ARGS = {
    "owner": "trailguard",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
    "on_failure_callback": FailureNotifier(),
}


def run_day(context: dict[str, Any], param: str = "date", offset_days: int = 0) -> date:
    """The day a run works on: the ``date`` Param when given, else the run's ``run_after`` (present for
    scheduled, manual, API- and Asset-triggered runs alike) shifted by ``offset_days``."""
    value = (context.get("params") or {}).get(param)
    if value:
        return date.fromisoformat(str(value))
    run_after = context["dag_run"].run_after
    return (run_after + timedelta(days=offset_days)).date()


def optional_day(value: Any) -> date | None:
    return date.fromisoformat(str(value)) if value else None


def aws_connection_kwargs(conn_id: str = "aws_default") -> dict[str, Any]:
    """boto3 client arguments from the Airflow connection, or {} when there is none (the standard chain).

    The connection's login/password are the access key pair; its extra may hold ``region_name`` and
    ``endpoint_url`` (e.g. a local S3-compatible server).
    """
    from airflow.sdk import BaseHook

    kwargs: dict[str, Any] = {}
    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception:  # no such connection: boto3's own credential chain applies
        return kwargs
    extra = conn.extra_dejson or {}
    if conn.login:
        kwargs["aws_access_key_id"] = conn.login
        kwargs["aws_secret_access_key"] = conn.password
    for key in ("region_name", "endpoint_url", "aws_session_token"):
        if extra.get(key):
            kwargs[key] = extra[key]
    return kwargs


def aws_client_factory(conn_id: str = "aws_default"):
    """A boto3 client factory using the Airflow connection when it exists, else the standard chain."""
    import boto3

    kwargs = aws_connection_kwargs(conn_id)

    def make(service: str):
        return boto3.client(service, **kwargs)

    return make


def smtp_settings(conn_id: str = "smtp_default"):
    """TrailGuard's SMTP settings from the Airflow connection, or None when there is none (-> .eml)."""
    from airflow.sdk import BaseHook
    from trailguard.report.mail import SmtpSettings

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception:
        return None
    extra = conn.extra_dejson or {}
    truthy = ("1", "true", "yes", True)
    return SmtpSettings(
        host=conn.host or "localhost",
        port=int(conn.port or 25),
        username=conn.login or None,
        password=conn.password or None,
        starttls=str(extra.get("disable_tls", False)).lower() not in truthy,
        ssl=str(extra.get("disable_ssl", False)).lower() not in truthy,
        timeout=float(extra.get("timeout", 30)),
        sender=extra.get("from_email") or "trailguard@localhost",
    )


def trigger_url(dag_id: str) -> str:
    """The Airflow UI page where a DAG is triggered (base URL from Airflow's own configuration)."""
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="") or "http://127.0.0.1:8080"
    return f"{base.rstrip('/')}/dags/{dag_id}/trigger"
