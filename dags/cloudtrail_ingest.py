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
* **Split for workers**: `plan_partitions` lists the new objects per account x region x delivery day;
  `stage_partitions` is mapped over them (at most `TRAILGUARD_INGEST_MAX_TASKS`, default 32, partitions
  grouped by size), so a Celery or Kubernetes executor spreads the reading over its workers; each writes
  staged parquet parts under the shared data root. `commit_events` then moves them into the store in one
  place, dropping eventIDs already stored, and records the manifest. Commits take turns on any worker
  and with `trailguard ingest`: a lock file in a local root, a lease object in the bucket
  (`_locks/commit.json`, a conditional write) for an `s3://` root.
* **Evidence integrity**: `verify_integrity` validates the window's CloudTrail digest files (RSA signatures,
  the chain, each listed log file's SHA-256 against what ingestion read) and records delivery gaps in
  `integrity/date=D/` for each delivery day; keys from `TRAILGUARD_INTEGRITY_KEYS` (a folder) or
  `cloudtrail:ListPublicKeys`. Tampered evidence is a finding in the report, not a failed task.
* Emits the `trailguard_events` Asset with the touched dates, and `trailguard_validated_events` for each
  day that passed validation (which triggers `daily_risk_report`).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import dag, get_current_context, task
from trailguard_airflow import (
    DEFAULT_ARGS,
    EVENTS,
    VALIDATED_EVENTS,
    aws_client_factory,
    ingest_params,
    ingest_source,
    ingest_window,
    source_client,
)


@dag(
    schedule="@hourly",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["trailguard", "ingest"],
    params=ingest_params(
        "Folder, s3://bucket/prefix or cloudwatch://log-group. Empty: the Variable trailguard_source or the "
        "TRAILGUARD_SOURCE environment variable."
    ),
)
def cloudtrail_ingest():
    @task
    def plan_partitions(params: dict, dag_run=None) -> list[list[dict]]:
        """List the window's objects not yet ingested, per account x region x delivery day, in groups of
        partitions for the mapped stage tasks (at most TRAILGUARD_INGEST_MAX_TASKS of them)."""
        from trailguard.ingest import ingestion
        from trailguard.store.settings import load_settings

        source, store, start, end = _open(params, dag_run)
        store.clean_staging()
        partitions = ingestion.plan_partitions(source, store, start=start, end=end)
        groups = ingestion.group_partitions(partitions, max_groups=load_settings().ingest_max_tasks)
        print(f"{len(partitions)} partitions with new objects, in {len(groups)} stage tasks")
        for partition in partitions:
            print(
                f"  {ingestion.partition_label(partition)}: {partition['objects']} objects, {partition['bytes']:,} bytes"
            )
        return groups

    @task(map_index_template="{{ partitions_label }}")
    def stage_partitions(partitions: list[dict], params: dict, dag_run=None, ti=None) -> list[str]:
        """Read one group of partitions into staging (runs on any worker that shares the data root)."""
        from trailguard.ingest import ingestion
        from trailguard.ingest.limits import IngestLimits
        from trailguard.store.settings import load_settings

        get_current_context()["partitions_label"] = ingestion.group_label(partitions)
        source, store, start, end = _open(params, dag_run)
        settings = load_settings()
        stage_ids = []
        for i, partition in enumerate(partitions):
            stage_id = f"{dag_run.run_id}-{ti.map_index}-{i}"
            counts = ingestion.stage(
                source,
                store,
                partition,
                stage_id,
                start=start,
                end=end,
                workers=settings.ingest_workers,
                limits=IngestLimits.from_settings(settings),
            )
            print(
                f"{ingestion.partition_label(partition)}: {counts['records']} records from "
                f"{counts['objects_ingested']} objects, {counts['quarantined']} records and "
                f"{counts['objects_quarantined']} objects quarantined"
            )
            stage_ids.append(stage_id)
        return stage_ids

    @task(outlets=[EVENTS])
    def commit_events(stage_ids: list[list[str]], params: dict, dag_run=None, outlet_events=None) -> dict:
        """Move every staged partition into the store, less duplicates; returns the run's summary."""
        from trailguard.ingest.ingestion import commit

        summary = commit(_store(), [sid for group in stage_ids for sid in group], source=_source_uri(params))
        for line in summary.lines():
            print(line)
        outlet_events[EVENTS].extra = {"dates": summary.dates, "new": summary.new}
        return summary.as_dict()

    @task
    def verify_integrity(summary: dict, params: dict, dag_run=None) -> dict:
        """Validate each delivery day's digest files and delivery gaps; returns the status per day."""
        from trailguard.integrity.day import verify_with_settings
        from trailguard.store.settings import load_settings

        source, _, start, end = _open(params, dag_run)
        if source.uri.startswith("cloudwatch://"):
            print("CloudWatch Logs has no digest files: nothing to verify")
            return {}
        settings, statuses, day = load_settings(), {}, start
        aws = None if settings.integrity_keys else aws_client_factory()  # ListPublicKeys through aws_default

        def cloudtrail(region: str):
            return aws("cloudtrail", region)

        while day <= end:
            result = verify_with_settings(
                settings, source, day, client_for=None if aws is None else cloudtrail
            )
            for line in result.lines()[:20]:
                print(line)
            statuses[day.isoformat()] = result.status
            day += timedelta(days=1)
        return statuses

    @task(trigger_rule="all_done")
    def touched_dates(summary: dict | None) -> list[str]:
        """The days the commit touched; runs even when integrity verification failed, so those days are
        still validated. Without a commit (it failed) there is nothing to validate: the run fails here
        at once, without retries (the commit's own failure has said why)."""
        if not summary:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException("commit_events did not succeed: no committed day to validate")
        return summary["dates"]

    @task(outlets=[VALIDATED_EVENTS], map_index_template="{{ day }}")
    def validate_events(day: str, outlet_events=None) -> dict:
        """Validate one day's partition; fails (and emits nothing) on a critical failure. A validated day
        gets its activity table (activity/date=D/), which the TrailGuard pages read instead of events."""
        from trailguard.explore.activity import write_day_activity
        from trailguard.quality.gate import validate_partition
        from trailguard.store.events import EventStore
        from trailguard.store.settings import load_settings

        get_current_context()["day"] = day
        settings = load_settings()
        store = EventStore(settings.data_path)
        result = validate_partition(store, day, allowed_lateness_hours=settings.allowed_lateness_hours)
        if result.critical_failed:  # bad data does not get better by retrying: fail now, visibly
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"{day}: critical data-quality failure, scoring stops for this day; see {result.html_path}"
            )
        activity = write_day_activity(store, day)
        outlet_events[VALIDATED_EVENTS].extra = {"date": day, "status": result.status}
        return {
            "date": day,
            "status": result.status,
            "rows_passed": result.rows_passed,
            "rows_quarantined": result.rows_quarantined,
            "activity": str(activity),
        }

    staged = stage_partitions.expand(partitions=plan_partitions())
    summary = commit_events(staged)
    dates = touched_dates(summary)
    (
        verify_integrity(summary) >> dates
    )  # the quality pages show the integrity found (a failure still validates)
    validate_events.expand(day=dates)


def _source_uri(params: dict, dag_run=None) -> str:
    """The run's source: the Param, else the Variable, else the environment (see ``ingest_source``)."""
    return ingest_source(
        params,
        dag_run,
        variable="trailguard_source",
        default=os.environ.get("TRAILGUARD_SOURCE"),
        missing="no CloudTrail source: set the run's 'source' Param, the Variable trailguard_source "
        "or TRAILGUARD_SOURCE (a folder, s3://bucket/prefix or cloudwatch://log-group)",
    )


def _store():
    from trailguard.store.events import EventStore
    from trailguard.store.settings import load_settings

    return EventStore(load_settings().data_path)


def _open(params: dict, dag_run):
    """(source, store, start, end) of a run."""
    from trailguard.ingest.sources import open_source

    uri = _source_uri(params, dag_run)
    start, end = ingest_window(params, dag_run)
    return open_source(uri, source_client(uri)), _store(), start, end


cloudtrail_ingest()
