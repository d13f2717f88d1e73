"""Send the day's findings to every destination: each finding once per destination, a bounded number per run.

The ledger ``respond/date=D/sent.json`` in the data root records what reached which destination (finding
id, time, the destination's id for it), rewritten atomically after every delivery: a rerun, a retry after
a crash halfway, or a second task on the same day sends only what is missing. Findings below a
destination's ``min_score`` are not sent; beyond ``max_per_run`` they wait for the next run (counted as
deferred, highest scores first). A dry run reads the ledger and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from trailguard.respond.destinations import Delivery, DeliveryError, Destination
from trailguard.respond.message import chat_text
from trailguard.store.fs import DataPath, as_path, write_bytes_atomic

log = logging.getLogger(__name__)

LEDGER_NAME = "sent.json"


def ledger_path(data_root: DataPath | str, day: str) -> DataPath:
    return as_path(data_root) / "respond" / f"date={day}" / LEDGER_NAME


def delivery_key(destination: Destination, message: Mapping[str, Any]) -> str:
    """A stable id of one finding for one destination (webhook receivers and SNS FIFO dedupe on it)."""
    text = f"{destination.name}\x1f{message['date']}\x1f{message['finding_id']}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class Ledger:
    """What each destination has already received for one day."""

    def __init__(self, data_root: DataPath | str, day: str) -> None:
        self.path = ledger_path(data_root, day)
        self.day = day
        self.sent: dict[str, dict[str, dict[str, str]]] = {}
        if self.path.exists():
            try:
                document = json.loads(self.path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"{self.path}: unreadable sent-ledger ({exc}); move it aside to resend"
                ) from None
            self.sent = document.get("destinations", {})

    def has(self, destination: str, finding_id: str) -> bool:
        return finding_id in self.sent.get(destination, {})

    def record(self, destination: str, finding_id: str, delivery_id: str) -> None:
        when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.sent.setdefault(destination, {})[finding_id] = {
            "sent_at": when,
            "delivery_id": str(delivery_id)[:200],
        }
        document = {"date": self.day, "destinations": self.sent}
        write_bytes_atomic(json.dumps(document, indent=1, sort_keys=True).encode("utf-8"), self.path)


@dataclass
class DestinationResult:
    destination: Destination
    sent: list[str] = field(default_factory=list)
    would_send: list[dict[str, Any]] = field(default_factory=list)
    already_sent: int = 0
    below_min_score: int = 0
    deferred: int = 0
    error: str | None = None
    transient: bool = False


@dataclass
class NotifyResult:
    """Per destination: what was sent, skipped and why; ``lines()`` for the log and the terminal."""

    day: str
    dry_run: bool
    findings: int
    rejected: list[str]
    destinations: list[DestinationResult]

    @property
    def sent(self) -> int:
        return sum(len(d.sent) for d in self.destinations)

    @property
    def failed(self) -> list[DestinationResult]:
        return [d for d in self.destinations if d.error]

    def as_dict(self) -> dict[str, Any]:
        """A small summary (XCom, ``--json``): counts per destination, no message bodies."""
        return {
            "date": self.day,
            "dry_run": self.dry_run,
            "findings": self.findings,
            "rejected": len(self.rejected),
            "destinations": {
                d.destination.name: {
                    "type": d.destination.type,
                    "sent": len(d.sent),
                    "would_send": len(d.would_send),
                    "already_sent": d.already_sent,
                    "below_min_score": d.below_min_score,
                    "deferred": d.deferred,
                    "error": d.error,
                }
                for d in self.destinations
            },
        }

    def lines(self) -> list[str]:
        verb = "would send" if self.dry_run else "sent"
        out = [f"notify {self.day}: {self.findings} findings, {len(self.destinations)} destinations"
               + (" (dry run: nothing sent, nothing recorded)" if self.dry_run else "")]  # fmt: skip
        if not self.destinations:
            out.append("  no destinations configured: set TRAILGUARD_NOTIFY_DESTINATIONS "
                       "(Airflow: the Variable trailguard_notify_destinations)")  # fmt: skip
        out += [f"  left out: {line}" for line in self.rejected]
        for d in self.destinations:
            count = len(d.would_send) if self.dry_run else len(d.sent)
            line = (f"  {d.destination.describe()}: {verb} {count}, already sent {d.already_sent}, "
                    f"below min score {d.below_min_score}, deferred by the rate limit {d.deferred}")  # fmt: skip
            if d.error:
                line += f"; FAILED ({'will retry' if d.transient else 'fix the configuration'}): {d.error}"
            out.append(line)
            for item in d.would_send:
                out += ["    " + text for text in chat_text(item).splitlines()[:2]]
        return out


def notify(
    messages: Iterable[Mapping[str, Any]],
    destinations: Iterable[Destination],
    ledger: Ledger,
    *,
    delivery: Delivery | None = None,
    max_per_run: int = 50,
    dry_run: bool = False,
    rejected: Iterable[str] = (),
) -> NotifyResult:
    """Deliver each message to each destination at or above its ``min_score``, once (see the ledger).

    A failing destination stops at its first error (the next would most likely fail too) and the others
    carry on; the caller raises from ``result.failed`` so a retry sends what is still missing.
    """
    delivery = delivery or Delivery()
    ordered = sorted(messages, key=lambda m: (-m["score"], m["finding_id"]))
    result = NotifyResult(day=ledger.day, dry_run=dry_run, findings=len(ordered), rejected=list(rejected),
                          destinations=[])  # fmt: skip
    for destination in destinations:
        outcome = DestinationResult(destination)
        result.destinations.append(outcome)
        budget = max_per_run
        for message in ordered:
            if message["score"] < destination.min_score:
                outcome.below_min_score += 1
                continue
            if ledger.has(destination.name, message["finding_id"]):
                outcome.already_sent += 1
                continue
            if budget <= 0 or outcome.error:
                outcome.deferred += 1
                continue
            budget -= 1
            if dry_run:
                outcome.would_send.append(dict(message))
                continue
            try:
                delivered = delivery.send(destination, message, delivery_key(destination, message))
            except DeliveryError as exc:
                outcome.error, outcome.transient = str(exc), exc.transient
                outcome.deferred += 1
                log.warning("%s", exc)
                continue
            ledger.record(destination.name, message["finding_id"], delivered)
            outcome.sent.append(message["finding_id"])
        if outcome.deferred and not outcome.error:
            log.warning("%s: %d findings deferred by the rate limit of %d per run", destination.name,
                        outcome.deferred, max_per_run)  # fmt: skip
    return result


def notify_day(
    data_root: DataPath | str,
    day: str,
    destinations: list[Destination],
    *,
    delivery: Delivery | None = None,
    max_per_run: int = 50,
    dry_run: bool = False,
    report_base_url: str | None = None,
) -> NotifyResult:
    """The day's findings (from its report, see :func:`findings_from_report`) to every destination."""
    from trailguard.respond.message import build_messages, findings_from_report

    findings = findings_from_report(data_root, day, report_base_url=report_base_url)
    messages, rejected = build_messages(findings, day)
    result = notify(messages, destinations, Ledger(data_root, day), delivery=delivery, max_per_run=max_per_run,
                    dry_run=dry_run, rejected=rejected)  # fmt: skip
    for line in result.lines():
        log.info("%s", line)
    return result
