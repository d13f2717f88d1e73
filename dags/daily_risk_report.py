"""
### Daily risk report

Every morning: scores the previous day's validated CloudTrail events with the `champion` models from
MLflow (a use case without one yet, and events that are neither sign-ins nor API calls, with the cold-start
scorer: rules plus an anomaly detector on organisation-wide rarity; the email says which ran and why), builds the report of the riskiest events with the reasons they scored high, and emails it to the
security team.

* **When**: daily at 06:00 UTC (the day before, once CloudTrail's late deliveries are in), and whenever a
  day's partition passes validation (`trailguard_validated_events` Asset): a rescored day whose top events
  changed after the email went out gets a follow-up that says what is new, never a silent change.
* **Params** (the trigger form): `date` (default: yesterday), `top_k`, `min_score`, `recipients`
  (default: Variable `trailguard_report_recipients` or `TRAILGUARD_REPORT_RECIPIENTS`), `send_email`.
* **Email** through the Airflow connection `smtp_default`; with none configured the message is written
  as `report.eml` beside the report in `reports/YYYY-MM-DD/`. The report is never lost.
* A day whose data-quality check failed critically is not scored: the run skips with the reason. So does
  a day with no events at all (e.g. the first scheduled run after unpausing, before any ingest).
* **Network** (`score_flows`): the day's VPC Flow Logs, when ingested (`flowlogs_ingest`), are scored by
  the network detections and the `network_flow` champion; the report tells them as stories per instance,
  joined to the CloudTrail findings of the same instance (its role's calls, its security groups).
* **Automation** (`notify_findings`): the day's findings go to the destinations in the Variable
  `trailguard_notify_destinations` (SNS, EventBridge, Lambda, Slack, a signed webhook), each finding to
  each destination once; `respond/date=D/sent.json` records what went where.
* **Alerts**: a task that fails for good emails `trailguard_alert_recipients` (see the README).
* **Split for workers**: `score_partitions` is mapped over the day's account x region partitions (at most
  `TRAILGUARD_SCORE_MAX_TASKS`, default 4, grouped beyond), each scored with the whole day as context and
  written to its own `scores/date=D/part-<account>-<region>.parquet`; `build_report` reads them all.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task
from trailguard_airflow import DEFAULT_ARGS, VALIDATED_EVENTS, date_param, run_day, smtp_settings


@dag(
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 6 * * *", timezone="UTC"), assets=VALIDATED_EVENTS
    ),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["trailguard", "report"],
    params={
        "date": date_param("Day to report", "YYYY-MM-DD (UTC). Empty: the day before the run."),
        "top_k": Param(
            20,
            type="integer",
            minimum=1,
            maximum=500,
            title="Top events",
            description="How many of the riskiest events the report lists.",
        ),
        "min_score": Param(0, type="number", minimum=0, maximum=100, title="Minimum risk score"),
        "recipients": Param(
            None,
            type=["null", "string"],
            title="Recipients",
            description="Comma-separated addresses. Empty: the Variable "
            "trailguard_report_recipients or TRAILGUARD_REPORT_RECIPIENTS.",
        ),
        "send_email": Param(
            True,
            type="boolean",
            title="Send the email",
            description="Off: build the report (and its .eml) without sending.",
        ),
        "notify": Param(
            True,
            type="boolean",
            title="Notify automation destinations",
            description="Send the day's findings to the destinations in the Variable "
            "trailguard_notify_destinations (SNS, EventBridge, Lambda, Slack, webhook), each once.",
        ),
    },
)
def daily_risk_report():
    @task
    def check_partition() -> str:
        """The day to report; skips the run (one line, no alert) when the day has no events or its
        partition failed validation."""
        from airflow.sdk.exceptions import AirflowSkipException
        from trailguard.quality.gate import is_scorable, read_quality_status
        from trailguard.store.events import EventStore
        from trailguard.store.settings import load_settings

        day = run_day(get_current_context(), "date", offset_days=-1).isoformat()
        store = EventStore(load_settings().data_path)
        if not store.partition_files(day):  # e.g. the scheduled run right after unpausing, before any ingest
            raise AirflowSkipException(f"{day}: no events in the store, nothing to report")
        if not is_scorable(store, day):
            status = read_quality_status(store, day)
            why = "was never validated" if status is None else f"failed validation ({status.get('status')})"
            raise AirflowSkipException(f"{day} {why}: not scored. See quality/date={day}/index.html")
        return day

    @task
    def plan_scoring(day: str) -> list[list[dict]]:
        """The day's partitions (account x region), in groups for the mapped scoring tasks (at most
        TRAILGUARD_SCORE_MAX_TASKS); scores of partitions that no longer exist are removed."""
        from trailguard.ingest.ingestion import group_partitions
        from trailguard.model.scoring import day_partitions, prune_parts
        from trailguard.store.events import EventStore
        from trailguard.store.settings import load_settings

        settings = load_settings()
        store = EventStore(settings.data_path)
        partitions = day_partitions(store, day)
        for name in prune_parts(store.root, day, partitions):
            print(f"removed stale scores {name}")
        for partition in partitions:
            partition["day"] = day
        groups = group_partitions(partitions, max_groups=settings.score_max_tasks, weight="events")
        print(f"{day}: {len(partitions)} partitions in {len(groups)} scoring tasks")
        return groups or [
            [{"day": day, "account": None, "region": None, "events": 0}]
        ]  # an empty day: one run

    @task(map_index_template="{{ partitions_label }}")
    def score_partitions(partitions: list[dict]) -> dict:
        """Score one group of partitions with the champion models (loaded once for the group)."""
        from trailguard.model.scoring import load_champions, score_day
        from trailguard.store.events import EventStore
        from trailguard.store.settings import load_settings

        labels = [f"{p['account']}/{p['region']}" for p in partitions]
        get_current_context()["partitions_label"] = (
            labels[0] if len(labels) == 1 else f"{len(labels)} partitions: {labels[0]} .."
        )
        store = EventStore(load_settings().data_path)
        champions = load_champions(store)
        cold_starts: dict = {}  # cold-start scorers fitted for the day, shared by the group's partitions
        total = {"day": partitions[0]["day"], "events": 0, "high_risk": 0, "partitions": len(partitions)}
        for partition in partitions:
            result = score_day(
                store,
                partition["day"],
                account=partition["account"],
                region=partition["region"],
                champions=champions,
                cold_starts=cold_starts,
            )
            for line in result.lines():
                print(line)
            total["events"] += result.events
            total["high_risk"] += result.high_risk
        return total

    @task
    def score_flows(day: str) -> dict:
        """The day's VPC Flow Logs, when there are any: network detections plus the network_flow champion of
        the moment, each finding joined to its instance and role from CloudTrail (the report's network
        stories read them)."""
        from trailguard.flows.ingestion import FlowStore
        from trailguard.model.network import score_network_day
        from trailguard.store.settings import load_settings

        root = load_settings().data_path
        if not FlowStore(root).partition_files(day):
            print(f"{day}: no flow logs in the store, no network findings")
            return {"date": day, "findings": 0}
        findings, note = score_network_day(root, day)
        print(f"{day}: {len(findings)} network findings ({note})")
        return {"date": day, "findings": len(findings)}

    @task
    def build_report(day: str, scored: list[dict], params: dict) -> dict:
        from trailguard.report.daily import build_report as build
        from trailguard.store.settings import load_settings

        print(f"{day}: {sum(s['events'] for s in scored)} events scored in {len(scored)} tasks")
        report = build(
            load_settings().data_path,
            day,
            top_k=params["top_k"],
            min_score=params["min_score"],
            feedback_hint=feedback_hint(),
        )
        for line in report.lines():
            print(line)
        return {"date": day, "html": str(report.html_path), "events": len(report.top_events)}

    @task
    def send_report(built: dict, params: dict) -> dict:
        from airflow.sdk import Variable
        from trailguard.report.daily import load_report
        from trailguard.report.mail import send_report as send
        from trailguard.store.settings import load_settings

        settings = load_settings()
        recipients = (
            params.get("recipients")
            or Variable.get("trailguard_report_recipients", default=None)
            or ",".join(settings.report_recipients)
        )
        recipients = [r.strip() for r in recipients.split(",") if r.strip()]
        report = load_report(settings.data_path, built["date"])
        smtp = smtp_settings() if params["send_email"] else None
        if not recipients:  # a configuration error: retrying cannot help
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                "no recipients: set the run's 'recipients' Param, the Variable "
                "trailguard_report_recipients or TRAILGUARD_REPORT_RECIPIENTS"
            )
        result = send(report, smtp=smtp, recipients=recipients, sender=smtp.sender if smtp else None)
        print(result.message)
        return result.as_dict()

    @task
    def notify_findings(built: dict, params: dict) -> dict:
        """Send the day's findings to the automation destinations, each once (a rerun sends what is
        missing). A wrong destination fails at once; throttling or an unreachable endpoint is retried."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
        from trailguard.respond.destinations import Delivery
        from trailguard.respond.notify import notify_day
        from trailguard.store.settings import load_settings
        from trailguard_airflow.respond import client_factory, destinations, fail_fast_on_config_errors

        if not params.get("notify", True):
            raise AirflowSkipException("notify is off for this run")
        settings = load_settings()
        with fail_fast_on_config_errors():
            targets = destinations()
            if not targets:
                raise AirflowSkipException(
                    "no automation destinations: set the Variable "
                    "trailguard_notify_destinations or TRAILGUARD_NOTIFY_DESTINATIONS "
                    "(README: Automation and alerts)"
                )
            result = notify_day(
                settings.data_path,
                built["date"],
                targets,
                max_per_run=settings.notify_max_per_run,
                delivery=Delivery(client_factory=client_factory()),
                report_base_url=settings.report_base_url,
            )
        for line in result.lines():
            print(line)
        if any(not f.transient for f in result.failed):
            raise AirflowFailException("; ".join(f"{f.destination.name}: {f.error}" for f in result.failed))
        if result.failed:
            raise RuntimeError("; ".join(f"{f.destination.name}: {f.error}" for f in result.failed))
        return result.as_dict()

    def feedback_hint() -> str:
        from trailguard_airflow import trigger_url

        return (
            f"Tell TrailGuard where it was wrong: trigger {trigger_url('record_analyst_label')} "
            "with the event's ID and your risk score, or run "
            '`trailguard label EVENT_ID SCORE --verdict benign --note "why"`.'
        )

    day = check_partition()
    scored = score_partitions.expand(partitions=plan_scoring(day))
    built = build_report(day, scored)
    score_flows(day) >> built
    send_report(built)
    notify_findings(built)


daily_risk_report()
