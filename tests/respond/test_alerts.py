"""Operational alerts: a region that stops delivering CloudTrail is reported once per silence."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from trailguard.ingest.normalise import normalise, rows_to_table
from trailguard.respond.alerts import AlertLedger, freshness_alerts, send_alert, task_failure_alert
from trailguard.respond.destinations import Destination
from trailguard.store.events import EventStore

from tests.respond.test_respond import Recorder

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def _events(account: str, region: str, start: datetime, hours: int) -> list[dict]:
    records = [
        {"eventID": f"{account}-{region}-{start:%d%H}-{h}", "eventTime": (start + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ"),
         "eventSource": "ec2.amazonaws.com", "eventName": "DescribeInstances", "awsRegion": region,
         "recipientAccountId": account, "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{account}:user/a"}}
        for h in range(hours)
    ]  # fmt: skip
    return [normalise(r, "test") for r in records]


def test_a_region_that_stops_delivering_alerts_once(tmp_path):
    store = EventStore(tmp_path)
    rows = _events("111122223333", "us-east-1", NOW - timedelta(days=3), 72)  # delivers up to now
    rows += _events("111122223333", "eu-west-1", NOW - timedelta(days=3), 30)  # silent for the last 42 hours
    rows += _events(
        "444455556666", "us-east-1", NOW - timedelta(days=20), 5
    )  # long gone: not "used to deliver"
    store.append_events(rows_to_table(rows), "run")

    (alert,) = freshness_alerts(store, NOW, silent_hours=24, lookback_days=7)
    assert alert.kind == "freshness"
    assert [s["region"] for s in alert.details["silent"]] == ["eu-west-1"]
    assert "account 111122223333  region eu-west-1: last event 2026-11-18 17:00 UTC" in alert.text()
    AlertLedger(tmp_path).record(alert.details["keys"])
    assert freshness_alerts(store, NOW + timedelta(hours=5), silent_hours=24, lookback_days=7) == []

    # deliveries resume, then stop again: a new silence is a new alert
    store.append_events(rows_to_table(_events("111122223333", "eu-west-1", NOW, 2)), "run2")
    store.append_events(rows_to_table(_events("111122223333", "us-east-1", NOW, 40)), "run3")
    later = NOW + timedelta(hours=36)
    (again,) = freshness_alerts(store, later, silent_hours=24, lookback_days=7)
    assert [s["region"] for s in again.details["silent"]] == ["eu-west-1"]
    assert again.details["silent"][0]["last_event"].startswith("2026-11-20T13:00")


def test_alerts_reach_only_the_destinations_that_opted_in(tmp_path):
    server = Recorder()
    try:
        alert = task_failure_alert(dag_id="daily_risk_report", task_id="send_report", run_id="manual__1",
                                   try_number=3, error="SMTP refused\r\nBcc: x@evil", log_url=None, day="2026-11-20")  # fmt: skip
        hooks = [Destination(name="ops", type="webhook", target=server.url, min_score=0, alerts=True),
                 Destination(name="findings-only", type="webhook", target=server.url + "/f", min_score=0)]  # fmt: skip
        assert send_alert(alert, hooks) == []
        (request,) = server.requests
        body = json.loads(request["body"])
        assert body["schema"] == "trailguard.alert/1" and body["kind"] == "task_failed"
        assert "\r" not in "".join(body["lines"]) and body["subject"].startswith(
            "TrailGuard: daily_risk_report.send_report failed"
        )
    finally:
        server.close()


def test_a_critical_validation_failure_is_worded_as_such():
    alert = task_failure_alert(dag_id="cloudtrail_ingest", task_id="validate_events", run_id="scheduled__x",
                               try_number=1, error="AirflowFailException: 2026-11-20: critical data-quality failure",
                               log_url="http://127.0.0.1:8080/log", day=None)  # fmt: skip
    assert alert.kind == "validation_failed"
    assert alert.subject == "TrailGuard: critical data-quality failure"
    assert "Scoring stops for that day" in alert.text() and "log:   http://127.0.0.1:8080/log" in alert.text()
