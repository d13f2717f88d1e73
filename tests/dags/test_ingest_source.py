"""cloudtrail_ingest without a source: a scheduled run skips (the DAG was unpaused before a source was set),
a triggered one fails at once. Airflow hands tasks the run type as a str enum (``DagRunType.SCHEDULED``),
whose ``str()`` is its name, not its value."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
from airflow.sdk.api.datamodels._generated import DagRunType
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from tests.conftest import PROJECT


@pytest.fixture
def source_uri(monkeypatch):
    import airflow.sdk

    monkeypatch.delenv("TRAILGUARD_SOURCE", raising=False)
    monkeypatch.setattr(airflow.sdk.Variable, "get", staticmethod(lambda key, default=None: default))
    spec = importlib.util.spec_from_file_location(
        "cloudtrail_ingest_dag", PROJECT / "dags" / "cloudtrail_ingest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._source_uri


@pytest.mark.parametrize("run_type", [DagRunType.SCHEDULED, "scheduled"])
def test_a_scheduled_run_without_a_source_skips(source_uri, run_type):
    with pytest.raises(AirflowSkipException, match="no CloudTrail source"):
        source_uri({}, SimpleNamespace(run_type=run_type))


@pytest.mark.parametrize("run_type", [DagRunType.MANUAL, DagRunType.ASSET_TRIGGERED])
def test_a_triggered_run_without_a_source_fails(source_uri, run_type):
    with pytest.raises(AirflowFailException, match="no CloudTrail source"):
        source_uri({}, SimpleNamespace(run_type=run_type))


def test_the_param_wins(source_uri, monkeypatch):
    monkeypatch.setenv("TRAILGUARD_SOURCE", "/elsewhere")
    assert (
        source_uri({"source": "s3://trail"}, SimpleNamespace(run_type=DagRunType.SCHEDULED)) == "s3://trail"
    )
