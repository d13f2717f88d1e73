"""A new deployment's first day through the real DAG (`dag.test()`): a store with real public CloudTrail
(one day of the Stratus Red Team detonations, several accounts and regions) and no model at all, not even
an MLflow store. `daily_risk_report` scores the day with the cold-start scorer in its mapped tasks, says
so in the email, and succeeds without a retry; a real SMTP server on 127.0.0.1 receives the email."""

from __future__ import annotations

import email
import email.policy
import json

import pytest

from tests.conftest import PROJECT, fixture_records
from tests.dags.test_daily_report_dag import smtp_server  # noqa: F401 (the SMTP server fixture)

pytestmark = pytest.mark.slow
DAY = "2024-08-02"


def test_a_store_without_models_gets_its_email(tmp_path, airflow_db, smtp_server, monkeypatch):  # noqa: F811
    from airflow.dag_processing.dagbag import DagBag
    from trailguard.ingest.ingestion import ingest
    from trailguard.ingest.sources import LocalFolderSource
    from trailguard.quality.gate import validate_partition
    from trailguard.store.events import EventStore

    DagBag(dag_folder=str(PROJECT / "dags"))  # Airflow's settings first, as the DAG processor has them
    records = [
        r for r in fixture_records("stratus_red_team_detonations.ndjson") if r["eventTime"].startswith(DAY)
    ]
    (tmp_path / "evidence").mkdir()
    (tmp_path / "evidence" / "day.ndjson").write_text("\n".join(json.dumps(r) for r in records))
    store = EventStore(tmp_path / "data")
    ingest(LocalFolderSource(tmp_path / "evidence"), store)
    validate_partition(store, DAY)
    assert not (store.root / "mlflow").exists()

    monkeypatch.setenv("TRAILGUARD_DATA", str(store.root))
    dag = DagBag(dag_folder=str(PROJECT / "dags")).get_dag("daily_risk_report")
    run = dag.test(
        run_conf={
            "date": DAY,
            "top_k": 10,
            "recipients": "secops@example.com",
            "send_email": True,
            "min_score": 0,
        }
    )
    assert run.state == "success"
    tries = {ti.task_id: ti.try_number for ti in run.get_task_instances()}
    assert all(n <= 1 for n in tries.values()), f"no task was retried: {tries}"

    report = json.loads((store.root / "reports" / DAY / "report.json").read_text())
    assert report["summary"]["events_scored"] == len(records)
    assert {m["model_name"] for m in report["models"]} == {"cold-start"}

    assert len(smtp_server) == 1
    message = email.message_from_bytes(smtp_server[0], policy=email.policy.default)
    assert DAY in message["Subject"]
    text = next(p for p in message.walk() if p.get_content_type() == "text/plain").get_content()
    assert "cold-start (no model yet: 1 day of history; rules and rarity only" in text
    html = next(p for p in message.walk() if p.get_content_type() == "text/html").get_content()
    assert "no model yet" in html
