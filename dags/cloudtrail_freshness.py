"""
### CloudTrail freshness

Hourly: alerts once when an AWS account x region that delivered CloudTrail events in the last
`TRAILGUARD_FRESHNESS_LOOKBACK_DAYS` (7) days has delivered nothing for `TRAILGUARD_FRESHNESS_HOURS` (24).
Silence is itself a sign: logging stopped (`StopLogging`, `DeleteTrail`), a broken trail or bucket policy,
or an ingestion that no longer runs.

* Its own DAG, so it runs even when `cloudtrail_ingest` has nothing new or keeps failing.
* The alert (email to the Variable `trailguard_alert_recipients` / `TRAILGUARD_ALERT_RECIPIENTS`, and the
  automation destinations with `"alerts": true`) goes out once per silence: `respond/alerts.json`
  records it; when the source delivers again and falls silent later, that is a new alert.
* "Now" is the run's `run_after`, so a rerun of an old run checks that moment again.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task
from trailguard_airflow import DEFAULT_ARGS


@dag(
    schedule="30 * * * *",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["trailguard", "alerts"],
)
def cloudtrail_freshness():
    @task
    def check_freshness(dag_run=None) -> dict:
        """Find newly silent account x region pairs; alert once and record it."""
        from trailguard.respond.alerts import AlertLedger, freshness_alerts
        from trailguard.store.events import EventStore
        from trailguard.store.settings import load_settings
        from trailguard_airflow.respond import send_alert

        settings = load_settings()
        store = EventStore(settings.data_path)
        ledger = AlertLedger(store.root)
        alerts = freshness_alerts(store, dag_run.run_after, silent_hours=settings.freshness_hours,
                                  lookback_days=settings.freshness_lookback_days, ledger=ledger)  # fmt: skip
        for alert in alerts:
            print(alert.text())
            outcome = send_alert(alert)
            if not outcome.delivered:  # recorded only once someone got it, so a retry tries again
                raise RuntimeError(f"freshness alert not delivered: {'; '.join(outcome.problems)}")
            print(f"alert sent to {', '.join(outcome.channels)}")
            ledger.record(alert.details["keys"])
        if not alerts:
            print("every account/region that delivered recently still delivers (or was already reported)")
        return {"alerts": len(alerts), "silent": sum(len(a.details["silent"]) for a in alerts)}

    check_freshness()


cloudtrail_freshness()
