"""``reports/D/findings.json``: a day's ranked findings with their events, written beside the report.

Why a file of its own: the report shows the top K, but an analyst labels a finding by its id, automation
forwards findings and an update mail compares them; all of them read this file rather than correlate
again. It holds the day's findings in rank order (at most ``MAX_FINDINGS``, the rest counted), each with
all its event ids (at most ``MAX_EVENT_IDS``, the count exact) and its chain: its strongest events in time
order. Every text comes from CloudTrail and is stored as data, bounded, never interpreted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pandas as pd

from trailguard.findings.correlate import MAX_EVENT_IDS, DayFindings
from trailguard.store.events import write_bytes_atomic
from trailguard.store.fs import DataPath, as_path

FINDINGS_FILE = "findings.json"
MAX_FINDINGS = 1000
CHAIN_EVENTS = 30  # events listed in a finding's chain (its strongest, shown in time order)
TEXT_LIMIT = 300
MAX_ACTIONS = 200  # distinct eventNames listed per finding
FINDING_ID = re.compile(r"F-[0-9a-f]{16}")
_CHAIN_COLUMNS = ("eventID", "eventTime", "eventName", "eventSource", "errorCode", "risk_score", "awsRegion",
                  "attack_technique")  # fmt: skip


def _text(value: Any, limit: int = TEXT_LIMIT) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…[truncated]"


def _iso(value: Any) -> str | None:
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _chain(members: pd.DataFrame) -> list[dict[str, Any]]:
    strongest = members.sort_values(["risk_score", "eventTime"], ascending=[False, True], kind="stable")
    picked = strongest.head(CHAIN_EVENTS).sort_values(["eventTime", "eventID"], kind="stable")
    out = []
    for row in picked.to_dict("records"):
        item: dict[str, Any] = {c: _text(row.get(c)) for c in _CHAIN_COLUMNS if c in row}
        item["eventTime"] = _iso(row.get("eventTime"))
        item["risk_score"] = round(float(row["risk_score"]), 1)
        out.append(item)
    return out


def findings_document(
    day_text: str, day: DayFindings, *, min_score: float = 0.0, limit: int = MAX_FINDINGS,
    extra: dict[str, dict[str, Any]] | None = None, suppressed: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """The day's findings as JSON-ready data, highest score first; ``extra`` adds per-finding panels
    (finding id -> fields, e.g. the "usual vs now" panel)."""
    ranked = day.ranked(min_score=min_score, suppressed=suppressed)
    records = []
    for rank, (row, finding) in enumerate(ranked.head(limit).iterrows(), start=1):
        members = day.members(row)
        lead = day.events.iloc[int(finding["lead"])]
        ids = [str(e) for e in members["eventID"].head(MAX_EVENT_IDS)]
        record = {
            "finding_id": finding["finding_id"],
            "rank": rank,
            "score": float(finding["score"]),
            "lead_event_id": _text(finding["lead_event_id"], 200),
            "lead_risk": round(float(finding["lead_risk"]), 1),
            "credential": _text(finding["credential"]),
            "source": _text(finding["source"]),
            "account": _text(lead.get("account")),
            "principal_short": _text(lead.get("principal_short")),
            "lead_event": _text(lead.get("eventName")),
            "count": int(finding["count"]),
            "evidence": int(finding["evidence"]),
            "first_seen": _iso(finding["first_seen"]),
            "last_seen": _iso(finding["last_seen"]),
            "tactics": list(finding["tactics"]),
            "actions": sorted({str(n) for n in members["eventName"].dropna().unique()})[:MAX_ACTIONS]
            if "eventName" in members
            else [],
            "event_ids": ids,
            "event_ids_truncated": len(ids) < int(finding["count"]),
            "chain": _chain(members),
        }
        record.update((extra or {}).get(finding["finding_id"], {}))
        records.append(record)
    return {
        "date": day_text,
        "findings_total": int(len(day.table)),
        "findings_listed": len(records),
        "min_score": float(min_score),
        "suppressed": 0 if suppressed is None else int(suppressed.sum()),
        "findings": records,
    }


def findings_path(data_root: DataPath | str, day_text: str) -> DataPath:
    return as_path(data_root) / "reports" / day_text / FINDINGS_FILE


def write_findings(data_root: DataPath | str, document: dict[str, Any]) -> DataPath:
    """Write ``reports/D/findings.json`` atomically (a rerun replaces it)."""
    path = findings_path(data_root, document["date"])
    write_bytes_atomic(
        json.dumps(document, indent=1, ensure_ascii=False, allow_nan=False).encode("utf-8"), path
    )
    return path


def read_findings(data_root: DataPath | str, day_text: str) -> dict[str, Any] | None:
    path = findings_path(data_root, day_text)
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _days_newest_first(data_root: DataPath | str) -> Iterator[str]:
    folder = as_path(data_root) / "reports"
    if not folder.exists():
        return iter(())
    names = [p.name for p in folder.iterdir() if re.fullmatch(r"\d{4}-\d{2}-\d{2}", p.name)]
    return iter(sorted(names, reverse=True))


def find_finding(
    data_root: DataPath | str, finding_id: str, day_text: str | None = None
) -> dict[str, Any] | None:
    """A finding by its id, from one day's findings.json or the newest day that has it."""
    if not FINDING_ID.fullmatch(finding_id):
        return None
    for day in [day_text] if day_text else _days_newest_first(data_root):
        document = read_findings(data_root, day) or {}
        for finding in document.get("findings", []):
            if finding.get("finding_id") == finding_id:
                return {**finding, "date": document.get("date", day)}
    return None
