"""
### Record an analyst's risk score

The feedback loop of TrailGuard: an analyst who reviewed an event (from the daily email) gives it a risk
score from 0 (harmless) to 100 (an attack) and a verdict. The decision is appended to the label store
(`labels/` in the data root); analysts' scores win over the automatic labelling rules at the next training,
and enough new decisions retrain the models (`trailguard_labels` Asset -> `risk_model_training`).

Trigger it with the form (**Trigger DAG** in the UI), or from a shell:
`trailguard label EVENT_ID SCORE --verdict benign --note "expected change window"`. A finding id (`F-...`,
column `finding_id` of the report) labels every event of the finding; benign with a note also suppresses
the same principal, calls and network for `suppress_days`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, task
from trailguard_airflow import DEFAULT_ARGS, LABELS


@dag(
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={**DEFAULT_ARGS, "retries": 1},
    doc_md=__doc__,
    tags=["trailguard", "feedback"],
    params={
        "event_id": Param(
            "",
            type="string",
            minLength=1,
            maxLength=256,
            title="Event or finding ID",
            description="The CloudTrail eventID, or a finding id F-... (the label applies to every "
            "event of the finding), as shown in the report (top_events.csv).",
        ),
        "risk_score": Param(
            50,
            type="integer",
            minimum=0,
            maximum=100,
            title="Risk score",
            description="0 = harmless, 100 = an attack.",
        ),
        "verdict": Param(
            "needs-review", type="string", enum=["malicious", "benign", "needs-review"], title="Verdict"
        ),
        "note": Param(
            "",
            type="string",
            maxLength=2000,
            title="Note",
            description="Why: what you checked, the ticket, the change window...",
        ),
        "analyst": Param(
            "",
            type="string",
            maxLength=200,
            title="Analyst",
            description="Your name or e-mail (empty: the user who triggered the run).",
        ),
        "suppress_days": Param(
            30,
            type="integer",
            minimum=0,
            maximum=366,
            title="Suppress (days)",
            description="A finding marked benign with a note hides the same principal, calls "
            "and network from the report this many days (0: not at all).",
        ),
    },
)
def record_analyst_label():
    @task(outlets=[LABELS])
    def record_label(params: dict, dag_run=None) -> dict:
        """Check that the event (or finding) exists, then append the decision to the label store."""
        from trailguard.findings.suppress import is_finding_id, label_finding
        from trailguard.model.labels import find_event
        from trailguard.model.labels import record_label as append_label
        from trailguard.store.events import EventStore
        from trailguard.store.settings import load_settings

        settings = load_settings()
        event_id = params["event_id"].strip()
        analyst = params.get("analyst") or getattr(dag_run, "triggering_user_name", None) or "unknown"
        if is_finding_id(event_id):
            try:
                done = label_finding(
                    settings.data_path,
                    event_id,
                    params["risk_score"],
                    verdict=params["verdict"],
                    analyst=analyst,
                    note=params.get("note") or "",
                    suppress_days=params.get("suppress_days", 30),
                )
            except LookupError as exc:
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException(str(exc)) from exc
            print(f"recorded finding {event_id}: {done['events']} events, suppression {done['suppression']}")
            return {
                "finding_id": event_id,
                "events": done["events"],
                "risk_score": params["risk_score"],
                "verdict": params["verdict"],
                "analyst": analyst,
                "path": done["labels"],
                "suppression": done["suppression"],
            }
        found = find_event(EventStore(settings.data_path), event_id)
        if found is None:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"no event with eventID {event_id!r} in the store: check the ID in the report"
            )
        path = append_label(
            settings.data_path,
            event_id,
            params["risk_score"],
            verdict=params["verdict"],
            analyst=analyst,
            note=params.get("note") or "",
        )
        print(
            f"recorded: {event_id} risk {params['risk_score']} ({params['verdict']}) by {analyst} in {path}"
        )
        return {
            "event_id": event_id,
            "risk_score": params["risk_score"],
            "verdict": params["verdict"],
            "analyst": analyst,
            "path": str(path),
        }

    record_label()


record_analyst_label()
