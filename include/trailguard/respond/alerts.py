"""Operational alerts: when the pipeline breaks or CloudTrail goes quiet, someone hears of it, once.

* **Freshness**: an account x region that delivered events in the last ``lookback_days`` but nothing for
  ``silent_hours`` is silent; silence is itself a sign (``StopLogging``, a deleted or broken trail, a
  bucket policy change). :func:`freshness_alerts` reads three columns of the recent partitions, grouped
  per day, so memory stays bounded by the number of account x region pairs.
* **Failed tasks** and **critical validation failures** become an :class:`Alert` in the Airflow glue
  (the failure notifier); this module only words and records them.

:class:`AlertLedger` (``respond/alerts.json``) keys each alert so it goes out once: a silence is keyed by
its source and its last event, so the same silence alerts once and a new one (after deliveries resumed)
alerts again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from trailguard.report.daily import clean_text
from trailguard.respond.message import ALERT_SCHEMA_ID
from trailguard.store.events import EventStore
from trailguard.store.fs import DataPath, as_path, write_bytes_atomic

log = logging.getLogger(__name__)

LEDGER_KEEP = 2000  # alert keys remembered (oldest dropped)


@dataclass(frozen=True)
class Alert:
    """Something an operator must look at. ``key`` makes it once-only; ``lines`` are plain text."""

    kind: str  # task_failed | validation_failed | freshness | config
    key: str
    subject: str
    lines: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        return "\n".join([self.subject, "", *self.lines]) + "\n"

    def message(self) -> dict[str, Any]:
        """The alert as the JSON automation destinations receive (schema ``trailguard.alert/1``)."""
        return {
            "schema": ALERT_SCHEMA_ID,
            "source": "trailguard",
            "kind": self.kind,
            "key": self.key,
            "subject": self.subject,
            "lines": list(self.lines),
            "details": dict(self.details),
        }


class AlertLedger:
    """Alert keys already sent (``respond/alerts.json`` under the data root)."""

    def __init__(self, data_root: DataPath | str) -> None:
        self.path = as_path(data_root) / "respond" / "alerts.json"
        self.sent: dict[str, str] = {}
        if self.path.exists():
            try:
                self.sent = json.loads(self.path.read_text(encoding="utf-8")).get("sent", {})
            except (ValueError, UnicodeDecodeError):
                log.warning("%s unreadable: starting a new alert ledger", self.path)

    def has(self, key: str) -> bool:
        return key in self.sent

    def record(self, keys: Iterable[str]) -> None:
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        for key in keys:
            self.sent[key] = now
        if len(self.sent) > LEDGER_KEEP:
            self.sent = dict(sorted(self.sent.items(), key=lambda kv: kv[1])[-LEDGER_KEEP:])
        write_bytes_atomic(
            json.dumps({"sent": self.sent}, indent=1, sort_keys=True).encode("utf-8"), self.path
        )


def last_deliveries(store: EventStore, now: datetime, lookback_days: int) -> dict[tuple[str, str], datetime]:
    """The newest eventTime per (recipientAccountId, awsRegion) over the partitions of the last days."""
    import pyarrow.compute as pc

    first = (now - timedelta(days=lookback_days)).date().isoformat()
    last = now.date().isoformat()
    newest: dict[tuple[str, str], datetime] = {}
    for day in store.dates():
        if not first <= day <= last:
            continue
        table = store.read_partition(day, columns=["recipientAccountId", "awsRegion", "eventTime"])
        table = table.filter(pc.less_equal(table["eventTime"], now))  # a future-dated event is not a delivery
        grouped = table.group_by(["recipientAccountId", "awsRegion"]).aggregate([("eventTime", "max")])
        for row in grouped.to_pylist():
            key = (row["recipientAccountId"] or "-", row["awsRegion"] or "-")
            when = row["eventTime_max"]
            if key not in newest or when > newest[key]:
                newest[key] = when
    return newest


def freshness_alerts(
    store: EventStore,
    now: datetime,
    *,
    silent_hours: float,
    lookback_days: int = 7,
    ledger: AlertLedger | None = None,
) -> list[Alert]:
    """One alert listing the sources that fell silent since the last check (none when nothing is new).

    The caller records the alert's keys in the ledger once it was delivered (``details["keys"]``).
    """
    ledger = ledger or AlertLedger(store.root)
    cutoff = now - timedelta(hours=silent_hours)
    silent = []
    for (account, region), when in sorted(last_deliveries(store, now, lookback_days).items()):
        if when >= cutoff:
            continue
        key = f"freshness:{account}/{region}:{when.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        if not ledger.has(key):
            silent.append((key, clean_text(account, 40), clean_text(region, 40), when))
    if not silent:
        return []
    lines = [
        f"No CloudTrail events for {silent_hours:g} hours from {len(silent)} account/region pair(s) that "
        f"delivered in the last {lookback_days} days (checked at {now.strftime('%Y-%m-%d %H:%M')} UTC):",
        "",
        *(
            f"  account {a}  region {r}: last event {w.strftime('%Y-%m-%d %H:%M')} UTC"
            for _, a, r, w in silent
        ),
        "",
        "Silence can mean logging was stopped (StopLogging, DeleteTrail, UpdateTrail), the trail's bucket or",
        "its policy changed, or ingestion is broken. Check the trail in that account and region and the",
        "cloudtrail_ingest runs. This alert is sent once per silence.",
    ]
    subject = f"TrailGuard: CloudTrail silent for {silent_hours:g}h in {len(silent)} account/region pair(s)"
    details = {"keys": [s[0] for s in silent],
               "silent": [{"account": a, "region": r, "last_event": w.isoformat()} for _, a, r, w in silent]}  # fmt: skip
    return [Alert(kind="freshness", key="|".join(details["keys"])[:500], subject=subject, lines=tuple(lines),
                  details=details)]  # fmt: skip


def task_failure_alert(
    *,
    dag_id: str,
    task_id: str,
    run_id: str,
    try_number: int | None,
    error: str,
    log_url: str | None,
    day: str | None,
) -> Alert:
    """The alert for a task that failed for good (retries exhausted, or a non-retried failure)."""
    validation = task_id.startswith("validate_events")
    kind = "validation_failed" if validation else "task_failed"
    what = "critical data-quality failure" if validation else f"{dag_id}.{task_id} failed"
    subject = f"TrailGuard: {what}" + (f" ({day})" if day else "")
    lines = [
        f"DAG:   {dag_id}",
        f"task:  {task_id}",
        f"run:   {run_id}" + (f" (try {try_number})" if try_number else ""),
        f"error: {clean_text(error, 2000) or '-'}",
    ]
    if log_url:
        lines.append(f"log:   {log_url}")
    if validation:
        lines.append(
            "Scoring stops for that day until it validates; the quality page says which expectation broke."
        )
    return Alert(kind=kind, key=f"{kind}:{dag_id}:{run_id}:{task_id}", subject=clean_text(subject, 200),
                 lines=tuple(lines), details={"dag_id": dag_id, "task_id": task_id, "run_id": run_id, "day": day})  # fmt: skip


def send_alert(alert: Alert, destinations: Iterable[Any], delivery: Any = None) -> list[str]:
    """Deliver an alert to the destinations that opted in (``"alerts": true``); returns one line per
    problem and never raises: an alert about a failure must not fail in turn."""
    from trailguard.respond.destinations import Delivery, DeliveryError

    delivery = delivery or Delivery()
    problems = []
    for destination in destinations:
        if not destination.alerts:
            continue
        try:
            delivery.send(destination, alert.message(), alert.key[:64])
        except (DeliveryError, ValueError) as exc:
            problems.append(f"{destination.name}: {exc}")
            log.warning("alert %s not delivered to %s: %s", alert.key, destination.name, exc)
    return problems
