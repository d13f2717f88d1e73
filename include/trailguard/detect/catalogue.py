"""The detection catalogue: every detection with its metadata and cases, for people and for the tests.

``trailguard rules`` prints it; ``trailguard rules --format markdown --out docs/detections.md`` writes the
page a test keeps current. ATT&CK's tactics and the tactics of the techniques in use are here, so a test
can check that each rule is filed under a tactic of its technique.
"""

from __future__ import annotations

import re

from trailguard.detect.engine import FRAME_RULES, all_detections
from trailguard.detect.network import NETWORK_DETECTIONS
from trailguard.detect.registry import Detection
from trailguard.detect.window import WINDOW_RULES

# module name -> (ATT&CK id, name), in ATT&CK's order
TACTICS: dict[str, tuple[str, str]] = {
    "initial_access": ("TA0001", "Initial Access"),
    "execution": ("TA0002", "Execution"),
    "persistence": ("TA0003", "Persistence"),
    "privilege_escalation": ("TA0004", "Privilege Escalation"),
    "defense_evasion": ("TA0005", "Defense Evasion"),
    "credential_access": ("TA0006", "Credential Access"),
    "discovery": ("TA0007", "Discovery"),
    "lateral_movement": ("TA0008", "Lateral Movement"),
    "collection": ("TA0009", "Collection"),
    "command_and_control": ("TA0011", "Command and Control"),
    "exfiltration": ("TA0010", "Exfiltration"),
    "impact": ("TA0040", "Impact"),
}
# ATT&CK technique -> its tactics (attack.mitre.org, Enterprise); add a technique here when a rule first uses it
TECHNIQUE_TACTICS: dict[str, frozenset[str]] = {
    technique: frozenset(tactics.split())
    for technique, tactics in {
        "T1021": "lateral_movement",
        "T1040": "credential_access discovery",
        "T1046": "discovery",
        "T1048": "exfiltration",
        "T1059": "execution",
        "T1071": "command_and_control",
        "T1078": "defense_evasion persistence privilege_escalation initial_access",
        "T1087": "discovery",
        "T1090": "command_and_control",
        "T1098": "persistence privilege_escalation",
        "T1110": "credential_access",
        "T1136": "persistence",
        "T1484": "defense_evasion privilege_escalation",
        "T1485": "impact",
        "T1490": "impact",
        "T1496": "impact",
        "T1526": "discovery",
        "T1530": "collection",
        "T1535": "defense_evasion",
        "T1537": "exfiltration",
        "T1546": "privilege_escalation persistence",
        "T1550": "defense_evasion lateral_movement",
        "T1552": "credential_access",
        "T1555": "credential_access",
        "T1556": "credential_access defense_evasion persistence",
        "T1562": "defense_evasion",
        "T1580": "discovery",
        "T1648": "execution",
        "T1651": "execution",
        "T1666": "defense_evasion",
        "T1578": "defense_evasion",
    }.items()
}
REGENERATE = "trailguard rules --format markdown --out docs/detections.md"
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def catalogue() -> tuple[Detection, ...]:
    """Every detection, per-event rules, window rules, frame rules then the network detections over VPC flow
    records, grouped by tactic in ATT&CK's order."""
    order = list(TACTICS)
    return tuple(
        sorted(
            (*all_detections(), *NETWORK_DETECTIONS),
            key=lambda d: order.index(d.tactic) if d.tactic in order else len(order),
        )
    )


def window_rule_ids() -> frozenset[str]:
    """The ids of the detections computed over a whole frame (their cases are bursts)."""
    return frozenset(d.rule_id for w in WINDOW_RULES for d in w.detections)


def network_rule_ids() -> frozenset[str]:
    """The ids of the network detections (their cases are VPC flow records, run by ``flows.detect``)."""
    return frozenset(d.rule_id for d in NETWORK_DETECTIONS)


def frame_rule_ids() -> frozenset[str]:
    """The ids of the vectorised frame rules (their cases are records, checked over the case's frame)."""
    return frozenset(r.detection.rule_id for r in FRAME_RULES)


def reason_pattern(template: str) -> re.Pattern[str]:
    """The reasons a template allows: its text as written, any text (maybe none) for each placeholder."""
    parts = _PLACEHOLDER.split(template)
    return re.compile(".*?".join(re.escape(part) for part in parts))


def _case_counts(detection: Detection) -> str:
    firing = sum(case.fires for case in detection.cases)
    return f"{firing}+{len(detection.cases) - firing}"


def render_text() -> str:
    """The catalogue as an aligned table: id, tactic, technique, score, cases (firing+near misses), title."""
    rows = [("id", "tactic", "technique", "score", "cases", "title")]
    rows += [(d.rule_id, d.tactic, d.technique, str(d.score), _case_counts(d), d.title) for d in catalogue()]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)), row[5]]) for row in rows
    ]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown() -> str:
    """``docs/detections.md``: a summary table, then each detection with its reason, triage line and cases."""
    detections = catalogue()
    windows = window_rule_ids()
    network = network_rule_ids()
    out = [
        "# Detections",
        "",
        f"<!-- Generated from the rules' own records by `{REGENERATE}`: do not edit by hand. -->",
        "",
        f"Generated by `{REGENERATE}` from the rules in `include/trailguard/detect/rules/<tactic>.py`, "
        "`include/trailguard/detect/window.py` and `include/trailguard/detect/network.py` (the network "
        "detections over VPC flow records, run by `include/trailguard/flows/detect.py`); a test fails when this "
        f"page is stale. {len(detections)} detections ({len(windows)} over 10-minute windows, {len(network)} "
        "over a day of VPC flow records). In a reason, `{actor}` is the caller, `{ip}` the source address, "
        "`{count}` a count; other placeholders name the event or flow value shown.",
        "",
        "| id | tactic | technique | score | cases | title |",
        "|---|---|---|---|---|---|",
    ]
    out += [
        f"| [`{d.rule_id}`](#{d.rule_id}) | {TACTICS.get(d.tactic, ('', d.tactic))[1]} | {d.technique} | "
        f"{d.score} | {_case_counts(d)} | {_cell(d.title)} |"
        for d in detections
    ]
    for tactic, (tactic_id, tactic_name) in TACTICS.items():
        members = [d for d in detections if d.tactic == tactic]
        if not members:
            continue
        out += ["", f"## {tactic_name} ({tactic_id})"]
        for d in members:
            if d.rule_id in windows:
                kind = "window rule, `detect/window.py`"
            elif d.rule_id in network:
                kind = "network detection over VPC flow records, `flows/detect.py`"
            else:
                kind = f"`detect/rules/{tactic}.py`"
            out += [
                "",
                f"### {d.rule_id}",
                "",
                f"**{_cell(d.title)}** - {d.technique}, score {d.score} ({kind})",
                "",
                f"- reason: `{d.reason}`",
                f"- triage: {d.runbook}",
                *(f"- {'fires' if case.fires else 'near miss'}: {case.name}" for case in d.cases),
            ]
    return "\n".join(out) + "\n"
