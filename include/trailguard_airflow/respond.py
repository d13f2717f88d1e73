"""Airflow side of ``trailguard.respond``: destinations from Variables and connections, the failure notifier.

* Destinations: the Variable ``trailguard_notify_destinations`` (JSON, the same list as
  ``TRAILGUARD_NOTIFY_DESTINATIONS``), else the environment. A Slack or webhook entry may name a
  connection (``"conn_id"``) whose host is the URL and whose password is the HMAC secret, so secrets stay
  in connections; AWS entries use ``aws_conn_id`` (default ``aws_default``) when it exists.
* Alerts: :class:`FailureNotifier` is every TrailGuard task's ``on_failure_callback`` (it runs once a task
  failed for good, not on a retry): an email through the SMTP provider (connection ``smtp_default``) to
  the Variable ``trailguard_alert_recipients`` / ``TRAILGUARD_ALERT_RECIPIENTS`` (falling back to the
  report's recipients), and the destinations that opted in with ``"alerts": true``.
* Configuration errors raise ``AirflowFailException`` (no retry: the message says what to set).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)

DESTINATIONS_VARIABLE = "trailguard_notify_destinations"
ALERT_RECIPIENTS_VARIABLE = "trailguard_alert_recipients"
REPORT_RECIPIENTS_VARIABLE = "trailguard_report_recipients"


@contextmanager
def fail_fast_on_config_errors() -> Iterator[None]:
    """Turn TrailGuard's configuration errors into a failure Airflow does not retry."""
    from airflow.sdk.exceptions import AirflowFailException
    from trailguard.store.settings import ConfigError

    try:
        yield
    except ConfigError as exc:
        raise AirflowFailException(f"configuration: {exc}") from exc


def _variable(name: str) -> str | None:
    from airflow.sdk import Variable

    try:
        return Variable.get(name, default=None)
    except Exception as exc:  # an unreachable metadata DB must not hide the environment's settings
        log.warning("Variable %s unreadable (%s): using the environment", name, exc)
        return None


def recipients(variable: str, fallback: tuple[str, ...]) -> list[str]:
    """Comma-separated addresses from a Variable, else the settings' list."""
    raw = _variable(variable) or ",".join(fallback)
    return [r.strip() for r in raw.split(",") if r.strip()]


def destinations() -> list:
    """The configured destinations, connections resolved; raises ConfigError with what to set."""
    from airflow.sdk import BaseHook
    from trailguard.respond.destinations import parse_destinations
    from trailguard.store.settings import ConfigError, load_settings

    settings = load_settings()
    raw = _variable(DESTINATIONS_VARIABLE) or settings.notify_destinations
    out = []
    for destination in parse_destinations(raw, default_min_score=settings.notify_min_score):
        if destination.conn_id:
            try:
                conn = BaseHook.get_connection(destination.conn_id)
            except Exception as exc:
                raise ConfigError(
                    f"destination {destination.name}: connection {destination.conn_id!r} not found ({exc}); "
                    "create it with the URL as host and the secret (if any) as password"
                ) from None
            url = (conn.extra_dejson or {}).get("url") or conn.host or ""
            if conn.host and "://" not in url:
                url = f"{conn.schema or 'https'}://{conn.host}" + (f":{conn.port}" if conn.port else "")
            destination = replace(destination, target=destination.target or url,
                                  secret=destination.secret or conn.password or None)  # fmt: skip
        out.append(destination)
    return out


def client_factory():
    """boto3 clients per destination through the Amazon provider's ``AwsBaseHook`` (as the ingest DAG's
    clients): the destination's ``aws_conn_id``, else ``aws_default`` when it exists, else the standard
    chain; the destination's region (or its ARN's) and ``endpoint_url`` win over the connection's."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.sdk import BaseHook
    from trailguard.respond.destinations import client_config, default_client_factory, region_of
    from trailguard.store.settings import ConfigError

    def make(service: str, destination) -> Any:
        conn_id = destination.aws_conn_id or "aws_default"
        try:
            BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            if destination.aws_conn_id:
                raise ConfigError(
                    f"destination {destination.name}: AWS connection {conn_id!r} not found"
                ) from None
            return default_client_factory(service, destination)
        region = destination.region or region_of(destination.target)
        try:
            hook = AwsBaseHook(aws_conn_id=conn_id, client_type=service)
            if destination.endpoint_url:
                session = hook.get_session(region_name=region)
                return session.client(service, region_name=region, endpoint_url=destination.endpoint_url,
                                      config=client_config())  # fmt: skip
            return hook.get_client_type(region_name=region, config=client_config())
        except Exception as exc:  # a configured connection that cannot produce a client
            raise ConfigError(
                f"destination {destination.name}: cannot make an AWS {service} client from the Airflow "
                f"connection {conn_id!r}: {type(exc).__name__}: {exc}"
            ) from exc

    return make


@dataclass
class AlertOutcome:
    """Where an alert went: ``delivered`` when at least one channel took it."""

    channels: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        return bool(self.channels)


def send_alert(alert) -> AlertOutcome:
    """Email the alert (SMTP provider, connection ``smtp_default``) and send it to the destinations that
    opted in. Never raises: it runs inside failure callbacks; problems are logged and returned."""
    from trailguard.respond.alerts import send_alert as to_destinations
    from trailguard.respond.destinations import Delivery
    from trailguard.store.settings import load_settings

    outcome = AlertOutcome()
    try:
        settings = load_settings()
        to = recipients(ALERT_RECIPIENTS_VARIABLE, settings.alert_recipients) or recipients(
            REPORT_RECIPIENTS_VARIABLE, settings.report_recipients
        )
        if not to:
            outcome.problems.append("no alert recipients: set the Variable trailguard_alert_recipients "
                                    "or TRAILGUARD_ALERT_RECIPIENTS")  # fmt: skip
        elif (problem := _email(alert, to)) is None:
            outcome.channels.append("email to " + ", ".join(to))
        else:
            outcome.problems.append(problem)
        try:
            targets = [d for d in destinations() if d.alerts]
        except Exception as exc:  # a broken destination list must not swallow the email
            targets = []
            outcome.problems.append(f"destinations: {exc}")
        failed = to_destinations(alert, targets, Delivery(client_factory=client_factory()))
        outcome.problems += failed
        outcome.channels += [d.name for d in targets if not any(p.startswith(f"{d.name}:") for p in failed)]
    except Exception as exc:
        outcome.problems.append(f"alert not sent: {type(exc).__name__}: {exc}")
    for problem in outcome.problems:
        log.warning("alert %s: %s", alert.key, problem)
    log.info("alert %r sent to %s", alert.subject, ", ".join(outcome.channels) or "nobody")
    return outcome


def _email(alert, to: list[str]) -> str | None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    body = f"<pre style='font-family: monospace'>{html.escape(alert.text())}</pre>"
    try:
        with SmtpHook(smtp_conn_id="smtp_default") as hook:
            hook.send_email_smtp(to=to, subject=alert.subject, html_content=body,
                                 from_email=hook.from_email or "trailguard@localhost")  # fmt: skip
    except Exception as exc:
        return f"email to {', '.join(to)} failed: {type(exc).__name__}: {exc}"
    return None


class FailureNotifier(BaseNotifier):
    """``on_failure_callback`` of every TrailGuard task: who, what, which run, the error, the log link."""

    def notify(self, context: Any) -> None:
        from trailguard.respond.alerts import task_failure_alert

        ti = context.get("ti") or context.get("task_instance")
        params = context.get("params") or {}
        error = context.get("exception")
        alert = task_failure_alert(
            dag_id=getattr(ti, "dag_id", "?"),
            task_id=getattr(ti, "task_id", "?"),
            run_id=getattr(ti, "run_id", "?"),
            try_number=getattr(ti, "try_number", None),
            error=f"{type(error).__name__}: {error}" if error else "unknown (see the log)",
            log_url=getattr(ti, "log_url", None),
            day=str(params.get("date") or "") or None,
        )
        send_alert(alert)
