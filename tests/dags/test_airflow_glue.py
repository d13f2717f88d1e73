"""The Airflow glue: AWS clients through the Amazon provider's AwsBaseHook and the ``aws_default`` connection."""

from __future__ import annotations

import json

import pytest


def _connection(monkeypatch, extra: dict, **fields) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "extra": extra, **fields}))


def test_a_configured_connection_reaches_its_endpoint(monkeypatch, moto_server, aws_client) -> None:
    from trailguard_airflow import aws_client_factory

    aws_client("s3").create_bucket(Bucket="glue-bucket")
    _connection(
        monkeypatch,
        {"region_name": "us-east-1", "endpoint_url": moto_server},
        login="testing",
        password="testing",
    )
    names = [b["Name"] for b in aws_client_factory()("s3").list_buckets()["Buckets"]]
    assert "glue-bucket" in names


def test_no_connection_uses_the_standard_chain(monkeypatch, moto_server, aws_client) -> None:
    from trailguard_airflow import aws_client_factory

    aws_client("s3").create_bucket(Bucket="chain-bucket")
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)  # the environment is part of the standard chain
    names = [b["Name"] for b in aws_client_factory()("s3").list_buckets()["Buckets"]]
    assert "chain-bucket" in names


def test_a_broken_connection_is_an_error_not_a_fallback(monkeypatch, moto_server) -> None:
    from trailguard_airflow import AwsConnectionError, aws_client_factory

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)  # ambient credentials that would work
    _connection(monkeypatch, {"profile_name": "no-such-profile", "region_name": "us-east-1"})
    with pytest.raises(AwsConnectionError, match="aws_default"):
        aws_client_factory()("s3").list_buckets()
