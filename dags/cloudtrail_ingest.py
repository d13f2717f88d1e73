"""
### CloudTrail ingestion

Reads AWS CloudTrail logs into TrailGuard's partitioned event store (`events/date=YYYY-MM-DD/`), then
validates every day it touched with the data-quality suite.

* **Source**: the `source` Param, else the Airflow Variable `trailguard_source`, else the environment
  variable `TRAILGUARD_SOURCE`: a folder, `s3://bucket/prefix` (connection `aws_default` or the standard
  AWS credential chain) or `cloudwatch://log-group`.
* **Window**: scheduled runs read objects delivered yesterday and today (CloudTrail delivers late);
  objects already ingested are skipped without being read, so hourly runs stay cheap.
  `start`/`end` Params read any range (a backfill).
* **Nothing duplicated, nothing lost**: events are unique by `eventID`; unreadable files and records go to
  `quarantine/` with their reason.
* Emits the `trailguard_events` Asset with the touched dates, and `trailguard_validated_events` for each
  day that passed validation (which triggers `daily_risk_report`).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task
from trailguard_airflow import DEFAULT_ARGS, EVENTS, VALIDATED_EVENTS, aws_client_factory, optional_day


@dag(
    schedule="@hourly",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["trailguard", "ingest"],
    params={
        "source": Param(
            None,
            type=["null", "string"],
            title="Source",
            description="Folder, s3://bucket/prefix or cloudwatch://log-group. Empty: the Variable "
            "trailguard_source or the TRAILGUARD_SOURCE environment variable.",
        ),
        "start": Param(None, type=["null", "string"], format="date", title="First delivery date",
                       description="YYYY-MM-DD (UTC). Empty: yesterday."),
        "end": Param(None, type=["null", "string"], format="date", title="Last delivery date",
                     description="YYYY-MM-DD (UTC). Empty: the run's day."),
    },
)
def cloudtrail_ingest():
    @task(outlets=[EVENTS])
    def ingest_events(params: dict, dag_run=None, outlet_events=None) -> dict:
        """Ingest the window's objects; returns the summary (counts and touched dates)."""
        from airflow.sdk import Variable
        from trailguard.ingest import ingest
        from trailguard.settings import load_settings
        from trailguard.sources import open_source
        from trailguard.store import EventStore

        uri = params.get("source") or Variable.get("trailguard_source", default=None) or os.environ.get("TRAILGUARD_SOURCE")
        if not uri:
            raise ValueError(
                "no CloudTrail source: set the run's 'source' Param, the Variable trailguard_source "
                "or TRAILGUARD_SOURCE (a folder, s3://bucket/prefix or cloudwatch://log-group)"
            )
        end = optional_day(params.get("end")) or dag_run.run_after.date()
        start = optional_day(params.get("start")) or end - timedelta(days=1)
        settings = load_settings()
        client = None
        if uri.startswith("s3://"):
            client = aws_client_factory()("s3")
        elif uri.startswith("cloudwatch://"):
            client = aws_client_factory()("logs")
        summary = ingest(
            open_source(uri, client),
            EventStore(settings.data_path),
            start=start,
            end=end,
            batch_records=settings.ingest_batch_records,
            workers=settings.ingest_workers,
        )
        for line in summary.lines():
            print(line)
        outlet_events[EVENTS].extra = {"dates": summary.dates, "new": summary.new}
        return summary.as_dict()

    @task
    def touched_dates(summary: dict) -> list[str]:
        return summary["dates"]

    @task(outlets=[VALIDATED_EVENTS], map_index_template="{{ day }}")
    def validate_events(day: str, outlet_events=None) -> dict:
        """Validate one day's partition; fails (and emits nothing) on a critical failure."""
        from trailguard.quality import validate_partition
        from trailguard.settings import load_settings
        from trailguard.store import EventStore

        get_current_context()["day"] = day
        settings = load_settings()
        result = validate_partition(
            EventStore(settings.data_path), day, allowed_lateness_hours=settings.allowed_lateness_hours
        )
        if result.critical_failed:  # bad data does not get better by retrying: fail now, visibly
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"{day}: critical data-quality failure, scoring stops for this day; see {result.html_path}"
            )
        outlet_events[VALIDATED_EVENTS].extra = {"date": day, "status": result.status}
        return {"date": day, "status": result.status, "rows_passed": result.rows_passed,
                "rows_quarantined": result.rows_quarantined}

    validate_events.expand(day=touched_dates(ingest_events()))


cloudtrail_ingest()
