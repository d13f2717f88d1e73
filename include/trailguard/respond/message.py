"""The one message every destination receives for a finding, and the short text chat gets.

A *finding* handed to :func:`build_message` is a plain dict (see ``FINDING_FIELDS``); today
:func:`findings_from_report` makes one per top event of the day's report (``finding_id`` = the event's
``eventID``), and when correlated findings land only that adapter changes. The message is bounded and
cleaned (every CloudTrail value is attacker-controlled and some reach Slack, where ``<!channel>`` would
ping everyone), and validates against ``FINDING_SCHEMA`` (JSON Schema, also in the README).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from trailguard.report.daily import HIGH_RISK, clean_text, is_missing, report_dir, technique_url
from trailguard.store.fs import DataPath, as_path

log = logging.getLogger(__name__)

SCHEMA_ID = "trailguard.finding/1"
EVENT_SOURCE = "trailguard"  # EventBridge ``Source``
DETAIL_TYPE = "TrailGuard Finding"  # EventBridge ``DetailType``
ALERT_SCHEMA_ID = "trailguard.alert/1"  # operational alerts (see respond.alerts)
ALERT_DETAIL_TYPE = "TrailGuard Alert"
MAX_REASONS = 12
MAX_EVENT_IDS = 100
MEDIUM_RISK = 40.0

FINDING_FIELDS = {
    "finding_id": "stable id of the finding (today: the lead event's eventID); the idempotency key",
    "score": "risk score 0-100 of the finding (its lead event's)",
    "title": "one line: service, call, error, repeat count",
    "principal": "ARN or name of who did it",
    "account": "AWS account id",
    "region": "AWS region",
    "techniques": "MITRE ATT&CK technique ids (T1234 or T1234.001)",
    "tactics": "ATT&CK tactics (once correlated findings exist)",
    "reasons": "why it scored high, one line each",
    "event_ids": "the CloudTrail eventIDs of the finding (lead event first)",
    "event_count": "how many events the finding groups",
    "first_seen": "ISO time of its first event",
    "last_seen": "ISO time of its last event",
    "report_url": "link to the day's report",
}

_TEXT = {"type": ["string", "null"]}
_TEXTS = {"type": "array", "items": {"type": "string"}}
FINDING_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "TrailGuard finding",
    "type": "object",
    "required": [
        "schema",
        "source",
        "date",
        "finding_id",
        "score",
        "severity",
        "title",
        "principal",
        "account",
        "region",
        "techniques",
        "tactics",
        "reasons",
        "event_ids",
        "event_count",
        "first_seen",
        "last_seen",
        "report_url",
    ],  # fmt: skip
    "additionalProperties": False,
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "source": {"const": EVENT_SOURCE},
        "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
        "finding_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "score": {"type": "number", "minimum": 0, "maximum": 100},
        "severity": {"enum": ["high", "medium", "low"]},
        "title": {"type": "string", "maxLength": 240},
        "principal": _TEXT,
        "account": _TEXT,
        "region": _TEXT,
        "techniques": {"type": "array", "items": {"type": "string", "pattern": r"^T\d{4}(\.\d{3})?$"}},
        "tactics": _TEXTS,
        "reasons": {**_TEXTS, "maxItems": MAX_REASONS + 1},
        "event_ids": {**_TEXTS, "minItems": 1, "maxItems": MAX_EVENT_IDS},
        "event_count": {"type": "integer", "minimum": 1},
        "first_seen": _TEXT,
        "last_seen": _TEXT,
        "report_url": _TEXT,
    },
}

_TECHNIQUE = re.compile(r"T\d{4}(?:\.\d{3})?")
_SAFE_URL = re.compile(r"(?:https?|file)://[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]{1,1000}")


def _texts(values: Any, limit: int, each: int) -> list[str]:
    """A bounded list of clean strings from a list or a ``"; "``-joined string (the report's reasons)."""
    if isinstance(values, list | tuple):
        items = list(values)
    elif is_missing(values):
        return []
    else:
        items = str(values).split("; ")
    out = [text for text in (clean_text(v, each) for v in items) if text]
    if len(out) > limit:
        out = out[:limit] + [f"... and {len(out) - limit} more"]
    return out


def _techniques(values: Any) -> list[str]:
    text = (
        " ".join(values) if isinstance(values, list | tuple) else ("" if is_missing(values) else str(values))
    )
    seen = dict.fromkeys(m for m in _TECHNIQUE.findall(text[:2000]) if technique_url(m))
    return list(seen)


def _optional(value: Any, limit: int) -> str | None:
    return clean_text(value, limit) or None


def severity(score: float) -> str:
    return "high" if score >= HIGH_RISK else "medium" if score >= MEDIUM_RISK else "low"


def build_message(finding: Mapping[str, Any], day: date | str) -> dict[str, Any]:
    """The destination-neutral message for one finding; raises ValueError for a finding without id or score."""
    finding_id = clean_text(finding.get("finding_id"), 128)
    if not finding_id:
        raise ValueError("a finding needs a finding_id")
    try:
        raw = float(finding["score"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"finding {finding_id}: score is missing or not a number") from None
    if raw != raw:  # NaN
        raise ValueError(f"finding {finding_id}: score is not a number")
    score = round(min(100.0, max(0.0, raw)), 1)
    event_ids = [e for e in (clean_text(v, 128) for v in finding.get("event_ids") or [finding_id]) if e]
    url = finding.get("report_url")
    return {
        "schema": SCHEMA_ID,
        "source": EVENT_SOURCE,
        "date": str(day),
        "finding_id": finding_id,
        "score": score,
        "severity": severity(score),
        "title": clean_text(finding.get("title"), 200) or finding_id,
        "principal": _optional(finding.get("principal"), 300),
        "account": _optional(finding.get("account"), 64),
        "region": _optional(finding.get("region"), 64),
        "techniques": _techniques(finding.get("techniques")),
        "tactics": _texts(finding.get("tactics"), 20, 60),
        "reasons": _texts(finding.get("reasons"), MAX_REASONS, 300),
        "event_ids": (event_ids or [finding_id])[:MAX_EVENT_IDS],
        "event_count": max(1, int(finding.get("event_count") or len(event_ids) or 1)),
        "first_seen": _optional(finding.get("first_seen"), 40),
        "last_seen": _optional(finding.get("last_seen"), 40),
        "report_url": url if isinstance(url, str) and _SAFE_URL.fullmatch(url) else None,
    }


def message_json(message: Mapping[str, Any]) -> str:
    """The message as compact JSON (what SNS, EventBridge, Lambda and webhooks receive)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def slack_escape(text: str) -> str:
    """Slack's three control characters, so a value cannot become a mention or a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def chat_text(message: Mapping[str, Any], *, limit: int = 1500) -> str:
    """A few lines for chat: score, what, who, where, ATT&CK, top reasons, the report link."""
    where = "/".join(x for x in (message.get("account"), message.get("region")) if x) or "-"
    lines = [
        f"TrailGuard {message['severity']} risk {message['score']:g}: {message['title']}",
        f"who: {message.get('principal') or '-'}   where: {where}   when: {message.get('first_seen') or '-'}",
    ]
    if message.get("techniques"):
        lines.append("ATT&CK: " + ", ".join(message["techniques"]))
    lines += [f"- {reason}" for reason in message.get("reasons", [])[:3]]
    text = "\n".join(lines)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    if message.get("report_url"):
        text += f"\nreport: {message['report_url']}"
    return text


def report_link(data_root: DataPath | str, day: str, base_url: str | None) -> str:
    """Where the day's report can be opened: under ``base_url`` when one serves the data root's reports,
    else the file itself (useful on one machine, and on S3 an ``s3://`` key is left out)."""
    if base_url:
        return f"{base_url.rstrip('/')}/{day}/report.html"
    path = report_dir(data_root, day) / "report.html"
    return path.as_uri() if hasattr(path, "as_uri") and str(path).startswith("/") else ""


def findings_from_report(
    data_root: DataPath | str, day: date | str, *, report_base_url: str | None = None
) -> list[dict[str, Any]]:
    """The day's reported findings from ``reports/D/report.json``, in rank order: each correlated finding
    with its id, its lead event's score, its tactics and all its events (lead event first). A report
    written before findings existed gives one finding per top event (id = its eventID)."""
    day_text = str(day)
    path = report_dir(data_root, day_text) / "report.json"
    if not as_path(path).exists():
        raise FileNotFoundError(
            f"no report for {day_text} at {path}: run `trailguard report --date {day_text}` first"
        )
    document = json.loads(as_path(path).read_text(encoding="utf-8"))
    url = report_link(data_root, day_text, report_base_url)
    return [_finding_of(row, url) for row in document.get("top_events", []) if row.get("eventID")]


def _finding_of(row: Mapping[str, Any], url: str) -> dict[str, Any]:
    from trailguard.report.daily import _title

    event_ids = str(row.get("event_ids") or "").split() or [row["eventID"]]
    if row["eventID"] in event_ids:  # lead event first
        event_ids = [row["eventID"], *(e for e in event_ids if e != row["eventID"])]
    tactics = row.get("tactics") or []
    return {
        "finding_id": row.get("finding_id") or row["eventID"],
        "score": row.get("risk_score"),
        "title": _title(row),
        "principal": row.get("principal"),
        "account": row.get("account"),
        "region": row.get("awsRegion"),
        "techniques": row.get("attack_technique"),
        "tactics": [x for x in tactics.split(",") if x] if isinstance(tactics, str) else list(tactics),
        "reasons": row.get("reasons"),
        "event_ids": event_ids,
        "event_count": max(len(event_ids), int(row.get("count") or 1)),
        "first_seen": row.get("first_seen") or row.get("eventTime"),
        "last_seen": row.get("last_seen") or row.get("eventTime"),
        "report_url": url or None,
    }


def build_messages(findings: Iterable[Mapping[str, Any]], day: date | str) -> tuple[list[dict], list[str]]:
    """Messages for every well-formed finding, and one line per finding left out (never silently)."""
    messages, rejected = [], []
    for index, finding in enumerate(findings):
        try:
            messages.append(build_message(finding, day))
        except ValueError as exc:
            rejected.append(f"finding #{index}: {exc}")
            log.warning("finding #%d left out: %s", index, exc)
    return messages, rejected
