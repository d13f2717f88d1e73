"""The Airflow side of respond: destinations from the Variable, secrets from a connection, and
configuration errors as failures Airflow does not retry."""

from __future__ import annotations

import json

import pytest


def test_destinations_from_variable_and_connection(monkeypatch):
    from trailguard_airflow.respond import destinations

    monkeypatch.setenv("AIRFLOW_CONN_TRAILGUARD_HOOK", json.dumps(
        {"conn_type": "http", "host": "https://hooks.example.com/services/T/B/X", "password": "s3cret"}))  # fmt: skip
    monkeypatch.setenv("AIRFLOW_VAR_TRAILGUARD_NOTIFY_DESTINATIONS", json.dumps(
        [{"name": "soar", "type": "webhook", "conn_id": "trailguard_hook", "min_score": 90},
         {"name": "secops", "type": "sns", "target": "arn:aws:sns:eu-west-1:123456789012:t"}]))  # fmt: skip
    monkeypatch.setenv("TRAILGUARD_NOTIFY_DESTINATIONS", '[{"type": "pager"}]')  # the Variable wins
    soar, secops = destinations()
    assert soar.target == "https://hooks.example.com/services/T/B/X" and soar.secret == "s3cret"
    assert soar.min_score == 90 and secops.min_score == 70


def test_configuration_errors_are_not_retried(monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException
    from trailguard_airflow.respond import destinations, fail_fast_on_config_errors

    monkeypatch.setenv(
        "AIRFLOW_VAR_TRAILGUARD_NOTIFY_DESTINATIONS", '[{"type": "webhook", "conn_id": "missing"}]'
    )
    with pytest.raises(AirflowFailException, match="connection 'missing' not found"):
        with fail_fast_on_config_errors():
            destinations()


def test_aws_destinations_use_the_aws_default_connection(monkeypatch, moto_server, aws_client, tmp_path):
    from trailguard.respond.destinations import Delivery
    from trailguard.respond.message import build_message
    from trailguard.respond.notify import Ledger, notify
    from trailguard_airflow.respond import client_factory, destinations

    sqs, sns = aws_client("sqs"), aws_client("sns")
    queue = sqs.create_queue(QueueName="glue-findings")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = sns.create_topic(Name="glue-findings")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "login": "testing",
        "password": "testing", "extra": {"region_name": "us-east-1", "endpoint_url": moto_server}}))  # fmt: skip
    monkeypatch.setenv("AIRFLOW_VAR_TRAILGUARD_NOTIFY_DESTINATIONS", json.dumps(
        [{"name": "secops", "type": "sns", "target": topic}]))  # no endpoint here: the connection's  # fmt: skip
    message = build_message({"finding_id": "e-1", "score": 91}, "2026-11-20")
    result = notify([message], destinations(), Ledger(tmp_path, "2026-11-20"),
                    delivery=Delivery(client_factory=client_factory()))  # fmt: skip
    assert result.sent == 1, result.lines()
    (received,) = sqs.receive_message(QueueUrl=queue)["Messages"]
    assert json.loads(received["Body"])["finding_id"] == "e-1"


def test_a_missing_named_aws_connection_is_a_configuration_error(monkeypatch, tmp_path):
    from trailguard.respond.destinations import Delivery, Destination
    from trailguard.respond.message import build_message
    from trailguard.store.settings import ConfigError
    from trailguard_airflow.respond import client_factory

    dest = Destination(name="x", type="sns", target="arn:aws:sns:us-east-1:123456789012:t", min_score=0,
                       aws_conn_id="aws_security")  # fmt: skip
    with pytest.raises(ConfigError, match="aws_security"):
        Delivery(client_factory=client_factory()).send(
            dest, build_message({"finding_id": "e", "score": 1}, "d"), "k"
        )
