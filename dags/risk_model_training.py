"""
### Risk model training

Trains TrailGuard's risk models for the two use cases of the method it follows, **console sign-ins** and
**API calls**: the paper's LinearRegression on its fields as the baseline, stronger models beside it and an
unsupervised detector for what nobody labelled. Every candidate is an MLflow run (metrics, charts,
feature importances, the model); the best is registered and gets the alias `champion` only when it beats
the current champion on the same held-out days, otherwise `challenger`.

* **Network**: when VPC Flow Logs are in the store, the `network_flow` use case too (one row per interface
  and day; an isolation forest, and supervised models where analysts' labels or detections give targets),
  registered as `trailguard-network-flow` through the same champion gate.
* **When**: weekly (Monday 03:00 UTC), on demand, and when analysts add labels (`trailguard_labels`
  Asset) - then only once at least `min_new_labels` decisions arrived since the last training.
* **Params**: `until` (last day of training data, default: yesterday), `history_days`, `min_new_labels`.
* Compare the runs in the MLflow UI, experiment `trailguard`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from trailguard_airflow import DEFAULT_ARGS, LABELS, MODELS, date_param, run_day


@dag(
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), assets=LABELS),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 1},
    doc_md=__doc__,
    tags=["trailguard", "ml"],
    params={
        "until": date_param(
            "Train on data until", "Last day of training data, YYYY-MM-DD (UTC). Empty: yesterday."
        ),
        "history_days": Param(30, type="integer", minimum=1, maximum=365, title="Days of history"),
        "min_new_labels": Param(
            1,
            type="integer",
            minimum=0,
            title="New labels needed",
            description="Label-triggered runs train only when at least this many "
            "analyst decisions arrived since the last training.",
        ),
    },
)
def risk_model_training():
    @task.short_circuit
    def enough_new_labels(params: dict, dag_run=None) -> bool:
        """Label-triggered runs go on only with enough new decisions; scheduled and manual runs always."""
        from trailguard.model.labels import labels_since_last_training
        from trailguard.store.settings import load_settings

        if dag_run.run_type != "asset_triggered":
            return True
        new = labels_since_last_training(load_settings().data_path)
        print(f"{new} analyst decisions since the last training (need {params['min_new_labels']})")
        return new >= params["min_new_labels"]

    @task(outlets=[MODELS])
    def train_models(params: dict) -> dict:
        from airflow.sdk import get_current_context
        from trailguard.model.training import train
        from trailguard.report.summaries import save_training_summary
        from trailguard.store.events import EventStore
        from trailguard.store.settings import load_settings

        until = run_day(get_current_context(), "until", offset_days=-1)
        settings = load_settings()
        result = train(EventStore(settings.data_path), until=until, history_days=params["history_days"])
        save_training_summary(settings.data_path, result)
        for line in result.lines():
            print(line)
        return result.as_dict()

    enough_new_labels() >> train_models()


risk_model_training()
