"""Airflow-side glue shared by TrailGuard's DAGs: Assets, dates from the run, connections.

The DAG files stay thin and the library (``include/trailguard``) stays free of Airflow; this package is the
only place where the two meet. It is installed with the library (``include/``), so DAGs import it as any package.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

from airflow.sdk import Asset, Param

from trailguard_airflow.respond import FailureNotifier

log = logging.getLogger(__name__)

EVENTS = Asset(uri="trailguard://events", name="trailguard_events")
VALIDATED_EVENTS = Asset(uri="trailguard://events-validated", name="trailguard_validated_events")
LABELS = Asset(uri="trailguard://labels", name="trailguard_labels")
MODELS = Asset(uri="trailguard://models", name="trailguard_models")
FLOWS = Asset(
    uri="trailguard://flows", name="trailguard_flows"
)  # a day of VPC flow records stored and scored

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


def date_param(title: str, description: str) -> Param:
    """An optional day Param: empty, or YYYY-MM-DD (the form's date picker)."""
    return Param(None, type=["null", "string"], format="date", title=title, description=description)


def ingest_params(source_description: str) -> dict[str, Param]:
    """The Params of an ingest DAG: its source and the window of delivery dates it reads."""
    return {
        "source": Param(None, type=["null", "string"], title="Source", description=source_description),
        "start": date_param("First delivery date", "YYYY-MM-DD (UTC). Empty: yesterday."),
        "end": date_param("Last delivery date", "YYYY-MM-DD (UTC). Empty: the run's day."),
    }


def ingest_source(params: dict, dag_run: Any, *, variable: str, default: str | None, missing: str) -> str:
    """An ingest run's source: the Param, else the Variable ``variable``, else ``default`` (the environment).
    Without one, a scheduled run (the DAG was unpaused before a source was set) skips with ``missing``; a
    triggered run fails with it, unretried."""
    from airflow.sdk import Variable
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    uri = params.get("source") or Variable.get(variable, default=None) or default
    if not uri:
        if getattr(dag_run, "run_type", None) == "scheduled":  # a str enum: equal to its value, not its str()
            raise AirflowSkipException(missing)
        raise AirflowFailException(missing)
    return uri


def ingest_window(params: dict, dag_run: Any) -> tuple[date, date]:
    """(start, end) delivery dates of an ingest run: the Params, else the day before the run's and the run's."""
    end = optional_day(params.get("end")) or dag_run.run_after.date()
    start = optional_day(params.get("start")) or end - timedelta(days=1)
    return start, end


def source_client(uri: str) -> Any:
    """The boto3 client a source URI reads through (S3 or CloudWatch Logs); None for a local folder."""
    if uri.startswith("s3://"):
        return aws_client_factory()("s3")
    if uri.startswith("cloudwatch://"):
        return aws_client_factory()("logs")
    return None


class AwsConnectionError(RuntimeError):
    """The AWS connection that is configured cannot be used: the message says which and what to fix."""


def aws_client_factory(conn_id: str = "aws_default"):
    """A boto3 client factory through the Amazon provider's ``AwsBaseHook``, so everything the
    connection can say works (access keys, ``role_arn`` assume-role, ``profile_name``, ``region_name``,
    ``endpoint_url`` in its extra).

    No connection ``conn_id`` at all: the standard AWS credential chain (environment, ``~/.aws``, instance
    role), as the contract says. A connection that exists but cannot be used (bad extra, a role that
    cannot be assumed, a missing profile) is an error naming the connection, never a silent fallback
    to whatever credentials the worker happens to have.
    """
    from airflow.exceptions import AirflowNotFoundException
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
        hook_conn_id: str | None = conn_id
    except AirflowNotFoundException:
        log.info("no Airflow connection %r: using the standard AWS credential chain", conn_id)
        hook_conn_id = None

    def make(service: str, region_name: str | None = None):
        try:
            return AwsBaseHook(
                aws_conn_id=hook_conn_id, client_type=service, region_name=region_name
            ).get_client_type()
        except Exception as exc:  # a configured connection that cannot produce a client
            where = f"Airflow connection {conn_id!r}" if hook_conn_id else "the standard AWS credential chain"
            raise AwsConnectionError(
                f"cannot make an AWS {service} client from {where}: {exc.__class__.__name__}: {exc}. "
                f"Fix the connection (Admin > Connections > {conn_id}) or delete it to use the standard chain."
            ) from exc

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
