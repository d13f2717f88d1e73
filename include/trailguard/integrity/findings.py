"""The day's integrity verdict as the report, the email and the quality page show it.

Kept apart from the event findings on purpose: an integrity finding is about the evidence (a log file
removed or changed, a digest chain broken), not about an event, so it has no eventID, no model score and
its own section. A missing or modified log file and a broken chain are high-risk (ATT&CK T1070 Indicator
Removal, T1565.001 Stored Data Manipulation); a delivery gap is listed apart and is not proof of tampering.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from trailguard.integrity.day import read_result
from trailguard.integrity.verify import ATTACK_TECHNIQUES, GAP_NOTE, STATUSES, TAMPERED
from trailguard.store.fs import DataPath

HIGH_RISK_STATUSES = frozenset({"log_file_missing", "log_file_modified", "chain_broken"})
RISK = {"log_file_missing": 95, "log_file_modified": 95, "chain_broken": 90}  # the others: 80
MAX_FINDINGS = 50
TITLES = {
    "log_file_missing": "CloudTrail log file deleted after delivery",
    "log_file_modified": "CloudTrail log file changed after delivery",
    "chain_broken": "CloudTrail digest chain broken",
    "signature_invalid": "CloudTrail digest not signed by CloudTrail",
    "digest_missing": "CloudTrail digest file deleted",
    "digest_invalid": "Unreadable file in place of a CloudTrail digest",
}


def integrity_section(data_root: DataPath | str, day: date | str) -> dict[str, Any] | None:
    """What a report shows about the day's evidence: ``status``, a one-line ``header``, ``findings`` (one
    per log file or digest, worst first), ``gaps`` (account/region/hours) and the ``gap_note``; None when
    the day was never verified."""
    result = read_result(data_root, day)
    if result is None:
        return None
    summary = result.get("summary", {})
    findings: list[dict[str, Any]] = []
    gaps: dict[str, list[str]] = {}
    for row in result.get("rows", []):
        status = row.get("status")
        if status == "delivery_gap":
            gaps.setdefault(f"{row.get('account')} {row.get('region')}", []).append(
                str(row.get("hour", ""))[11:]
            )
        if status not in TAMPERED:
            continue
        files = [(f, "log_file_missing") for f in row.get("missing_files", [])]
        files += [(f, "log_file_modified") for f in row.get("modified_files", [])]
        problems = [p for p in row.get("problems", []) if "log file " not in p[:10]]
        items = files or [(row.get("digest_key", ""), status)]
        if files and status not in ("log_file_missing", "log_file_modified"):
            items.append((row.get("digest_key", ""), status))
        for what, kind in items:
            findings.append(
                {
                    "status": kind,
                    "title": TITLES.get(kind, kind),
                    "risk_score": RISK.get(kind, 80),
                    "high_risk": kind in HIGH_RISK_STATUSES,
                    "attack_technique": ATTACK_TECHNIQUES.get(kind),
                    "account": row.get("account"),
                    "region": row.get("region"),
                    "hour": row.get("hour"),
                    "object": what,
                    "reason": _reason(kind, row, problems),
                }
            )
    findings.sort(key=lambda f: (STATUSES.index(f["status"]), f["hour"] or "", f["object"] or ""))
    return {
        "status": result.get("status", "unverified"),
        "header": header(result.get("status", "unverified"), summary),
        "findings": findings[:MAX_FINDINGS],
        "findings_total": len(findings),
        "high_risk_findings": sum(f["high_risk"] for f in findings),
        "gaps": {where: hours for where, hours in sorted(gaps.items())},
        "gap_note": GAP_NOTE,
        "summary": summary,
    }


def header(status: str, summary: dict[str, Any]) -> str:
    """One line for a report's header, e.g. ``Evidence integrity: tampered (1 log file missing, ...)``."""
    if status == "tampered":
        parts = [
            f"{summary.get('log_files_missing', 0)} log files missing",
            f"{summary.get('log_files_modified', 0)} modified",
            f"{summary.get('by_status', {}).get('chain_broken', 0)} chain breaks",
            f"{summary.get('digests', 0) - summary.get('digests_valid', 0)} digests not valid",
        ]
        return f"Evidence integrity: TAMPERED ({', '.join(parts)})"
    if status == "valid":
        return (
            f"Evidence integrity: valid ({summary.get('digests_valid', 0)} digests, "
            f"{summary.get('log_files_valid', 0)} log files verified"
            + (
                f"; {summary.get('not_verified')} account/regions without digests"
                if summary.get("not_verified")
                else ""
            )
            + ")"
        )
    return "Evidence integrity: not verified (no digest files or no public key for them)"


def text_lines(section: dict[str, Any] | None, day: str) -> list[str]:
    """The plain-text section (the mail's text part and the terminal)."""
    if section is None:
        return [f"Evidence integrity: not checked (run `trailguard verify --date {day}`)"]
    lines = [section["header"]]
    for f in section["findings"]:
        lines.append(
            f"  [{f['risk_score']}] {f['title']} ({f['attack_technique'] or '-'}): account {f['account']} "
            f"{f['region']} {f['hour']}: {f['object']}"
        )
    if section["findings_total"] > len(section["findings"]):
        lines.append(
            f"  ... and {section['findings_total'] - len(section['findings'])} more in integrity/date={day}/"
        )
    for where, hours in section["gaps"].items():
        lines.append(f"  delivery gap {where}: nothing delivered at {', '.join(hours)}")
    if section["gaps"]:
        lines.append(f"  ({section['gap_note']})")
    return lines


def _reason(kind: str, row: dict[str, Any], problems: list[str]) -> str:
    if kind == "log_file_missing":
        return (
            "listed by a CloudTrail-signed digest but absent: the events it held are gone from the evidence"
        )
    if kind == "log_file_modified":
        return "its SHA-256 is not the one the CloudTrail-signed digest states: changed after delivery"
    return problems[0] if problems else kind
