"""The quality page (``quality/date=D/index.html``): one result, self-contained, safe to open.

Rendered from ``templates/quality.html`` through the autoescaping environment of
:mod:`trailguard.store.render`: every value is escaped, and the page's Content-Security-Policy lets
nothing be loaded or run (inline styles only).
"""

from __future__ import annotations

from typing import Any

from trailguard.quality.expectations import TABLE_LEVEL
from trailguard.quality.results import verdict_of
from trailguard.store.render import render

# the figures at the top of the page: (label, key in result.json)
FIGURES = (
    ("rows in", "rows_in"),
    ("rows passed", "rows_passed"),
    ("rows quarantined", "rows_quarantined"),
    ("quarantined by this run", "rows_quarantined_this_run"),
    ("quarantine file", "quarantine_file"),
    ("run", "run_id"),
    ("validated at", "validated_at"),
    ("now used", "now"),
    ("seconds", "seconds"),
    ("engine", "engine"),
)


def render_html(document: dict[str, Any]) -> str:
    """The page of one result document (result.json as a dict)."""
    rows = []
    for o in document["outcomes"]:
        verdict = verdict_of(o["name"], o["success"], o["severity"])
        table_level = o["name"] in TABLE_LEVEL
        rows.append(
            {
                "name": o["name"],
                "column": o["column"] or "",
                "severity": o["severity"],
                "verdict": verdict,
                "css": {"ok": "passed", "failed": "failed"}.get(verdict, "warning"),
                "count": "" if table_level else o["unexpected_count"],
                "percent": "" if table_level else f"{float(o['unexpected_percent']):.2f}%",
                "sample": o["sample"],
                "detail": o["detail"],
            }
        )
    figures = [(label, _text(document.get(key))) for label, key in FIGURES]
    integrity = document.get("integrity") or None
    if integrity:  # the day's CloudTrail evidence integrity (digest validation), when it was checked
        integrity = {
            "css": {"valid": "passed", "tampered": "failed"}.get(integrity.get("status"), "warning"),
            "header": integrity.get("header"),
            "lines": [str(line).strip() for line in integrity.get("lines", [])],
        }
    return render(
        "trailguard.quality",
        "quality.html",
        day=document["date"],
        status=document["status"],
        figures=figures,
        outcomes=rows,
        integrity=integrity,
    )


def _text(value: Any) -> str:
    return "" if value is None else str(value)
