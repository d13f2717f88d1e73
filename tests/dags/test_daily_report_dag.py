"""The daily report and the feedback loop through the real DAGs (`dag.test()`), a real MLflow store and a
real SMTP server on 127.0.0.1: on demo data nobody labelled (a cold start on the labelling functions),
each injected attack of the last day is one finding of the emailed top 20, and an analyst's label given through the
feedback DAG changes that event's training target."""

from __future__ import annotations

import csv
import email
import email.policy
import json
from datetime import timedelta

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory, airflow_db):
    from airflow.dag_processing.dagbag import (
        DagBag,  # Airflow's settings first, as the DAG processor has them
    )
    from trailguard.demo import generator
    from trailguard.ingest.ingestion import ingest
    from trailguard.ingest.sources import LocalFolderSource
    from trailguard.model.training import train
    from trailguard.quality.gate import validate_partition
    from trailguard.store.events import EventStore

    from tests.conftest import PROJECT

    DagBag(dag_folder=str(PROJECT / "dags"))
    root = tmp_path_factory.mktemp("daily")
    summary = generator.generate(root / "logs", days=12, events=14_000, bad_files=False)
    store = EventStore(root / "data")
    ingest(LocalFolderSource(root / "logs" / "AWSLogs"), store)
    last = summary.end
    validate_partition(store, last)
    train(store, until=last - timedelta(days=1))  # the MLflow store inside the data root, as in production
    truth = pd.read_csv(summary.ground_truth)
    return store, last, truth[truth["date"] == last.isoformat()]


@pytest.fixture
def smtp_server(monkeypatch):
    from aiosmtpd.controller import Controller

    from tests.conftest import _free_port

    received: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            received.append(envelope.content)
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=_free_port())
    controller.start()
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_DEFAULT",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": controller.port,
                "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "trailguard@localhost"},
            }
        ),
    )
    yield received
    controller.stop()


@pytest.fixture
def findings_queue(aws_client, moto_server, monkeypatch):
    """An SNS topic on the moto server with an SQS queue subscribed, set as the automation destination."""
    sqs, sns = aws_client("sqs"), aws_client("sns")
    queue = sqs.create_queue(QueueName="daily-findings")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = sns.create_topic(Name="trailguard-daily")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    monkeypatch.setenv(
        "TRAILGUARD_NOTIFY_DESTINATIONS",
        json.dumps(
            [{"name": "secops", "type": "sns", "target": topic, "min_score": 70, "endpoint_url": moto_server}]
        ),
    )

    def drain() -> list[dict]:
        out = []
        while got := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
            for m in got:
                out.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
        return out

    return drain


def test_daily_report_emails_the_injected_attacks(trained, smtp_server, findings_queue, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import PROJECT

    store, last, attacks = trained
    monkeypatch.setenv("TRAILGUARD_DATA", str(store.root))
    dag = DagBag(dag_folder=str(PROJECT / "dags")).get_dag("daily_risk_report")
    run = dag.test(
        run_conf={
            "date": last.isoformat(),
            "top_k": 20,
            "recipients": "secops@example.com",
            "send_email": True,
            "min_score": 0,
        }
    )
    assert run.state == "success"
    mapped = [ti for ti in run.get_task_instances() if ti.task_id == "score_partitions"]
    assert len(mapped) > 1 and all(ti.state == "success" for ti in mapped), (
        "scoring is split over mapped tasks"
    )
    from trailguard.model.scoring import day_partitions

    parts = sorted(
        p.name for p in (store.root / "scores" / f"date={last.isoformat()}").glob("part-*.parquet")
    )
    assert len(parts) == len(day_partitions(store, last)) > 1, parts  # one scores file per account x region

    with (store.root / "reports" / last.isoformat() / "top_events.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    top = [row["eventID"].lstrip("'") for row in rows]
    reported = set(attacks.loc[attacks["eventID"].isin(top), "scenario"])
    assert reported == set(attacks["scenario"]), (
        f"missing from the top 20: {set(attacks['scenario']) - reported}"
    )
    # each scenario is one finding: all its events in one reported finding's event_ids, none in another
    finding_of = {event: row["finding_id"] for row in rows for event in row["event_ids"].split()}
    for scenario, events in attacks.groupby("scenario")["eventID"]:
        findings = {finding_of.get(e) for e in events}
        assert len(findings) == 1 and None not in findings, (scenario, findings)
    document = json.loads((store.root / "reports" / last.isoformat() / "findings.json").read_text())
    assert [f["finding_id"] for f in document["findings"][:20]] == [row["finding_id"] for row in rows]
    assert all(f["usual"]["dimensions"] for f in document["findings"][:20])  # the usual-vs-now panels

    assert len(smtp_server) == 1
    message = email.message_from_bytes(smtp_server[0], policy=email.policy.default)
    assert last.isoformat() in message["Subject"]
    attachments = [part.get_filename() for part in message.walk() if part.get_filename()]
    assert any(name.endswith(".csv") and "top-events" in name for name in attachments), attachments
    text = next(p for p in message.walk() if p.get_content_type() == "text/plain").get_content()
    assert "record_analyst_label" in text or "trailguard label" in text

    # the findings at or above 70 reached SNS (read back from the subscribed queue), each once
    report = json.loads((store.root / "reports" / last.isoformat() / "report.json").read_text())
    high = {row["finding_id"] for row in report["top_events"] if row["risk_score"] >= 70}
    high_events = {row["eventID"] for row in report["top_events"] if row["risk_score"] >= 70}
    received = findings_queue()
    assert high and sorted(m["finding_id"] for m in received) == sorted(high)
    assert all(m["schema"] == "trailguard.finding/1" and m["score"] >= 70 for m in received)
    assert set(attacks.loc[attacks["eventID"].isin(high_events), "scenario"]), (
        "the attacks are among the findings sent"
    )

    # a rerun without recipients: send_report fails at once (no retry) and alerts; nothing is sent twice
    monkeypatch.delenv("TRAILGUARD_REPORT_RECIPIENTS", raising=False)
    monkeypatch.setenv("TRAILGUARD_ALERT_RECIPIENTS", "oncall@example.com")
    again = dag.test(
        run_after=run.run_after + timedelta(minutes=1),
        run_conf={"date": last.isoformat(), "send_email": True, "recipients": ""},
    )
    states = {ti.task_id: (ti.state, ti.try_number) for ti in again.get_task_instances() if ti.map_index < 1}
    assert again.state == "failed" and states["send_report"] == ("failed", 1), states
    assert states["notify_findings"][0] == "success" and findings_queue() == []
    alert = email.message_from_bytes(smtp_server[-1], policy=email.policy.default)
    assert (
        len(smtp_server) == 2
        and alert["Subject"] == f"TrailGuard: daily_risk_report.send_report failed ({last})"
    )
    assert "no recipients" in alert.get_body(("html", "plain")).get_content()


def test_feedback_dag_changes_the_training_target(trained, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag
    from trailguard.model.training import training_data

    from tests.conftest import PROJECT

    store, last, attacks = trained
    monkeypatch.setenv("TRAILGUARD_DATA", str(store.root))
    day = (last - timedelta(days=1)).isoformat()
    before = pd.concat(training_data(store, [day]).values())
    event_id = before.loc[before["target"] < 20, "eventID"].iloc[0]

    dag = DagBag(dag_folder=str(PROJECT / "dags")).get_dag("record_analyst_label")
    run = dag.test(
        run_conf={
            "event_id": event_id,
            "risk_score": 95,
            "verdict": "malicious",
            "note": "confirmed with the owner",
            "analyst": "alice@example.com",
        }
    )
    assert run.state == "success"
    after = pd.concat(training_data(store, [day]).values()).set_index("eventID")
    assert after.loc[event_id, "target"] == 95

    bad = dag.test(run_conf={"event_id": "no-such-event", "risk_score": 10, "verdict": "benign"})
    assert bad.state == "failed"
