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

    monkeypatch.setenv("AIRFLOW_VAR_TRAILGUARD_NOTIFY_DESTINATIONS", '[{"type": "webhook", "conn_id": "missing"}]')
    with pytest.raises(AirflowFailException, match="connection 'missing' not found"):
        with fail_fast_on_config_errors():
            destinations()
