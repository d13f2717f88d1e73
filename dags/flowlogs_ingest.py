"""
### VPC Flow Logs ingestion

Reads VPC Flow Logs as AWS delivers them (gzipped text, any field list of versions 2-5) into the flow store
(`flows/date=YYYY-MM-DD/`), validates every day it touched with the flows' data-quality suite, and scores
each validated day: the network detections plus the `network_flow` champion when there is one, each finding
joined to the instance and role CloudTrail knows for its interface (`flows_scores/date=YYYY-MM-DD/`).

* **Source**: the `source` Param, else the Airflow Variable `trailguard_flows_source`, else the environment
  variable `TRAILGUARD_FLOWS_SOURCE`: a folder or `s3://bucket/prefix` (connection `aws_default` or the
  standard AWS credential chain).
* **Window**: scheduled runs read objects delivered yesterday and today; objects already ingested are
  skipped. `start`/`end` Params read any range (a backfill).
* **Nothing duplicated, nothing lost**: each object once (its manifest); unreadable files and lines go to
  `quarantine/flows/` with their reason; NODATA/SKIPDATA records are kept as such.
* A day whose flows fail validation critically is not scored (the task fails, visibly).
* Emits the `trailguard_flows` Asset with each scored day. The daily report (`daily_risk_report`) rescores
  its day's flows with the champion of the moment and tells the network findings as stories per instance.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, get_current_context, task
from trailguard_airflow import DEFAULT_ARGS, FLOWS, ingest_params, ingest_source, ingest_window, source_client


@dag(
    schedule="@hourly",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["trailguard", "ingest", "flows"],
    params=ingest_params(
        "Folder, s3://bucket/prefix or cloudwatch://log-group of flow logs. Empty: the Variable "
        "trailguard_flows_source or the TRAILGUARD_FLOWS_SOURCE environment variable."
    ),
)
def flowlogs_ingest():
    @task
    def ingest_flow_logs(params: dict, dag_run=None) -> dict:
        """Read the window's new flow log objects into the flow store; returns the run's summary."""
        from trailguard.flows.ingestion import ingest_flows
        from trailguard.flows.logs import FlowLimits
        from trailguard.store.settings import load_settings

        settings = load_settings()
        source, start, end = _open(params, dag_run, settings)
        summary = ingest_flows(
            source,
            settings.data_path,
            start=start,
            end=end,
            batch_records=max(settings.ingest_batch_records, 1),
            workers=settings.ingest_workers,
            limits=FlowLimits.from_settings(settings),
        )
        for line in summary.lines():
            print(line)
        return summary.as_dict()

    @task
    def touched_days(summary: dict) -> list[str]:
        return summary["dates"]

    @task(map_index_template="{{ day }}")
    def validate_flow_day(day: str) -> str:
        """Validate one day of flows; fails on a critical failure (that day is then not scored)."""
        from trailguard.flows.quality import validate_flows
        from trailguard.store.settings import load_settings

        get_current_context()["day"] = day
        document = validate_flows(load_settings().data_path, day)
        print(
            f"flows {day}: {document['status']}, {document['rows_in']} records, {document['rows_passed']} passed"
        )
        if document["critical_failed"]:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"{day}: critical data-quality failure of the flows; not scored")
        return day

    @task(outlets=[FLOWS], map_index_template="{{ day }}")
    def score_flow_day(day: str, outlet_events=None) -> dict:
        """The day's network findings: detections plus the network_flow champion, joined to CloudTrail."""
        from trailguard.model.network import score_network_day
        from trailguard.store.settings import load_settings

        get_current_context()["day"] = day
        findings, note = score_network_day(load_settings().data_path, day)
        print(f"flows {day}: {len(findings)} network findings ({note})")
        for row in findings.head(10).itertuples(index=False):
            print(f"  {row.risk_score:5.1f} {row.detection} {row.interface_id} {row.instance_id} {row.role}")
        outlet_events[FLOWS].extra = {"date": day, "findings": len(findings)}
        return {
            "date": day,
            "findings": len(findings),
            "high_risk": int((findings["risk_score"] >= 70).sum()),
        }

    days = touched_days(ingest_flow_logs())
    score_flow_day.expand(day=validate_flow_day.expand(day=days))


def _open(params: dict, dag_run, settings):
    """(source, start, end) of a run; without a source a scheduled run skips, a triggered one fails.

    A folder, ``s3://bucket/prefix`` or a CloudWatch Logs group of flow logs (``cloudwatch://group``, read
    in the format of ``TRAILGUARD_FLOW_LOG_FORMAT``)."""
    from trailguard.flows.sources import open_flow_source

    uri = ingest_source(
        params,
        dag_run,
        variable="trailguard_flows_source",
        default=settings.flows_source,
        missing="no VPC Flow Logs source: set the run's 'source' Param, the Variable trailguard_flows_source "
        "or TRAILGUARD_FLOWS_SOURCE (a folder, s3://bucket/prefix or cloudwatch://log-group)",
    )
    start, end = ingest_window(params, dag_run)
    return open_flow_source(uri, source_client(uri), log_format=settings.flow_log_format), start, end


flowlogs_ingest()
