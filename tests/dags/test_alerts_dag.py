"""Operational alerts through the real DAGs (`dag.test()`) and a real SMTP server on 127.0.0.1: a task that
fails for good emails the team, a silent region is reported once, a day with no data skips quietly."""

from __future__ import annotations

import email
import email.policy
import json
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import PROJECT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT / "dags"))


@pytest.fixture
def inbox(monkeypatch, tmp_path):
    from aiosmtpd.controller import Controller

    from tests.conftest import _free_port

    received: list[email.message.EmailMessage] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
            received.append(message)
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=_free_port())
    controller.start()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": controller.port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "trailguard@localhost"}}))  # fmt: skip
    monkeypatch.setenv("TRAILGUARD_ALERT_RECIPIENTS", "oncall@example.com")
    monkeypatch.setenv("TRAILGUARD_DATA", str(tmp_path / "data"))
    yield received
    controller.stop()


def _text(message) -> str:
    return "\n".join(part.get_content() for part in message.walk() if part.get_content_maintype() == "text")


def test_a_failed_task_emails_an_alert(dagbag, inbox):
    run = dagbag.get_dag("record_analyst_label").test(
        run_conf={"event_id": "no-such-event", "risk_score": 10}
    )
    assert run.state == "failed"
    (ti,) = run.get_task_instances()
    assert ti.try_number == 1, "a failure that retrying cannot fix is not retried"
    (alert,) = inbox
    assert alert["Subject"] == "TrailGuard: record_analyst_label.record_label failed"
    assert alert["X-Envelope-To"] == "oncall@example.com"
    body = _text(alert)
    assert (
        "no event with eventID &#x27;no-such-event&#x27;" in body
        or "no event with eventID 'no-such-event'" in body
    )
    assert f"run:   {run.run_id}" in body


def test_a_silent_region_is_reported_once(dagbag, inbox, tmp_path):
    from trailguard.ingest.normalise import normalise, rows_to_table
    from trailguard.store.events import EventStore

    now = datetime(2026, 11, 20, 12, 30, tzinfo=timezone.utc)
    records = [
        {"eventID": f"{region}-{h}", "eventTime": (now - timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ"),
         "eventSource": "s3.amazonaws.com", "eventName": "GetObject", "awsRegion": region,
         "recipientAccountId": "111122223333"}
        for region, first in (("us-east-1", 0), ("eu-west-1", 30)) for h in range(first, first + 40)
    ]  # fmt: skip
    EventStore(tmp_path / "data").append_events(rows_to_table([normalise(r, "t") for r in records]), "run")
    dag = dagbag.get_dag("cloudtrail_freshness")

    assert dag.test(run_after=now).state == "success"
    (alert,) = inbox
    assert "CloudTrail silent for 24h in 1 account/region" in alert["Subject"]
    assert "account 111122223333  region eu-west-1: last event 2026-11-19 06:30 UTC" in _text(alert)
    assert dag.test(run_after=now + timedelta(hours=1)).state == "success"
    assert len(inbox) == 1, "the same silence is reported once"


def test_a_scheduled_run_without_data_skips_quietly(dagbag, inbox):
    run = dagbag.get_dag("daily_risk_report").test(run_after=datetime(2026, 12, 2, 6, tzinfo=timezone.utc))
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success" and states["check_partition"] == "skipped", states
    assert all(state == "skipped" for state in states.values()), states
    assert inbox == [], "a day without data alerts nobody"


def test_ingest_without_a_source_fails_at_once_and_says_what_to_set(dagbag, inbox, monkeypatch):
    monkeypatch.delenv("TRAILGUARD_SOURCE", raising=False)
    run = dagbag.get_dag("cloudtrail_ingest").test(run_conf={"source": None})
    plan = next(ti for ti in run.get_task_instances() if ti.task_id == "plan_partitions")
    assert run.state == "failed" and plan.state == "failed" and plan.try_number == 1
    # (other tasks of the run may alert too: touched_dates runs whatever happened upstream)
    (alert,) = [m for m in inbox if m["Subject"] == "TrailGuard: cloudtrail_ingest.plan_partitions failed"]
    assert "no CloudTrail source: set the run" in _text(alert)
