"""The day's network findings as stories per instance, each joined to what CloudTrail saw of it.

Why: CloudTrail shows who changed what, flow logs what the machines then did. A security group opened to
the world (``AuthorizeSecurityGroupIngress`` 0.0.0.0/0:22) followed an hour later by an SSH brute force on
an instance in that group, or an instance role's credentials used from outside AWS followed by gigabytes
leaving that instance, are one incident: the report tells them as one story.

**Which CloudTrail events belong to an instance**: those made as its role session
(``assumed-role/<role>/<instance-id>``, wherever they came from: stolen instance credentials are used from
outside) and those whose request names the instance, its interface or one of its security groups
(``RunInstances``, ``ModifyInstanceAttribute``, ``AuthorizeSecurityGroupIngress`` ...), on the day and the
day before, with a risk score of at least ``CONTEXT_MIN_SCORE`` (routine calls of the instance are not a
story). Each names the CloudTrail finding it belongs to and that finding's rank in the report.

**Story score**: the highest network finding's score, plus ``JOINED`` = 10 when CloudTrail has evidence of
its own (an event at or above 70) for the same instance: two sources agreeing outrank either alone.
"""

from __future__ import annotations

import json
import logging
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from trailguard.flows.detect import DETECTIONS, scores_dir
from trailguard.store.events import EventStore, day_text
from trailguard.store.fs import DataPath, as_path, read_parquet_pandas, visible_files

log = logging.getLogger(__name__)

NETWORK_MIN_SCORE = 40.0  # network findings below this are counted, not told
CONTEXT_MIN_SCORE = 40.0
HIGH = 70.0
JOINED = 10.0
MAX_STORIES = 20
MAX_CONTEXT_EVENTS = 12
_EVENT_COLUMNS = ["eventID", "eventTime", "eventName", "eventSource", "awsRegion", "userIdentity.arn",
                  "sourceIPAddress", "errorCode", "requestParameters"]  # fmt: skip
_TITLES = {d.id: d.title for d in DETECTIONS.values()} | {
    "flow_model_anomaly": "Interface-day unlike its model"
}


def read_flow_scores(data_root: DataPath | str, day: str) -> pd.DataFrame | None:
    """The day's network findings (``flows_scores/date=D/``), None when the day has none written."""
    files = visible_files(scores_dir(data_root, day))
    if not files:
        return None
    frame = pd.concat([read_parquet_pandas(f) for f in files], ignore_index=True)
    frame["risk_score"] = pd.to_numeric(frame["risk_score"], errors="coerce")
    frame["eventTime"] = pd.to_datetime(frame["eventTime"], utc=True)
    return frame


def scorer_note(flows: pd.DataFrame) -> str:
    """Which scorer wrote the day's network findings."""
    champions = {
        f"{str(n).rsplit('+', 1)[-1]} v{v}"
        for n, v in zip(flows["model_name"], flows["model_version"], strict=True)
        if isinstance(n, str) and "trailguard-network-flow" in n
    }
    if champions:
        return "network detections with the network_flow champion (" + ", ".join(sorted(champions)) + ")"
    return "network detections alone (no network_flow champion yet)"


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _ingress(params: dict) -> str:
    """``tcp 22 from 0.0.0.0/0, ::/0 on sg-...`` from an AuthorizeSecurityGroupIngress request."""
    parts = []
    for perm in (
        (params.get("ipPermissions") or {}).get("items", [])
        if isinstance(params.get("ipPermissions"), dict)
        else []
    ):
        ranges = [r.get("cidrIp") for r in (perm.get("ipRanges") or {}).get("items", [])]
        ranges += [r.get("cidrIpv6") for r in (perm.get("ipv6Ranges") or {}).get("items", [])]
        port = (
            perm.get("fromPort")
            if perm.get("fromPort") == perm.get("toPort")
            else f"{perm.get('fromPort')}-{perm.get('toPort')}"
        )
        parts.append(f"{perm.get('ipProtocol')} {port} from {', '.join(r for r in ranges if r)}")
    return "; ".join(parts) + f" on {params.get('groupId')}" if parts else ""


def describe_event(event: dict) -> str:
    """One CloudTrail event in a line of the story."""
    try:
        params = json.loads(event.get("requestParameters") or "{}")
    except ValueError:
        params = {}
    name = _text(event.get("eventName"))
    detail = (
        _ingress(params) if name.startswith("AuthorizeSecurityGroup") and isinstance(params, dict) else ""
    )
    who = _text(event.get("userIdentity.arn")).rsplit(":", 1)[-1] or "?"
    error = f" ({event['errorCode']})" if _text(event.get("errorCode")) else ""
    return f"{name}{error}{': ' + detail if detail else ''} by {who} from {_text(event.get('sourceIPAddress')) or '?'}"


def _context_events(
    data_root: DataPath, day: str, keys: dict[str, set[str]], scores: pd.DataFrame
) -> dict[str, list[dict]]:
    """Per instance: the scored CloudTrail events of ``day`` and the day before that concern it."""
    store = EventStore(data_root)
    found: dict[str, list[dict]] = {i: [] for i in keys}
    finding = scores.set_index("eventID")["finding_id"] if "finding_id" in scores else pd.Series(dtype=object)
    before = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
    for text in (before, day):
        if not store.partition_files(text):
            continue
        # the day's scores as the report ranked them; the day before: its own stored scores
        risk = (
            scores.set_index("eventID")["risk_score"]
            if text == day and len(scores)
            else _scores_of(data_root, text)
        )
        table = store.read_partition(text, columns=_EVENT_COLUMNS)
        arns = table["userIdentity.arn"]
        params = pc.fill_null(table["requestParameters"], "")
        for instance, needles in keys.items():
            mask = pc.ends_with(pc.fill_null(arns, ""), f"/{instance}")
            for needle in needles:
                mask = pc.or_(mask, pc.match_substring(params, needle))
            hits = table.filter(mask)
            if not hits.num_rows:
                continue
            for event in hits.to_pylist():
                eid = event["eventID"]
                score = float(risk.get(eid, np.nan)) if eid in risk.index else float("nan")
                if np.isnan(score) or score < CONTEXT_MIN_SCORE:
                    continue
                found[instance].append(event | {"risk_score": score, "day": text,
                                                "finding_id": finding.get(eid) if eid in finding.index else None,
                                                "how": _how(event, instance, needles)})  # fmt: skip
    return found


def _scores_of(data_root: DataPath, day: str) -> pd.Series:
    """A stored day's risk score per eventID (empty when the day was never scored)."""
    files = visible_files(as_path(data_root) / "scores" / f"date={day}")
    if not files:
        return pd.Series(dtype=float)
    frame = pd.concat([read_parquet_pandas(f, columns=["eventID", "risk_score"]) for f in files])
    return frame.set_index("eventID")["risk_score"]


def network_section(
    data_root: DataPath | str,
    day: Any,
    scores: pd.DataFrame | None = None,
    ranks: dict[str, int] | None = None,
) -> dict[str, Any] | None:
    """The report's network section: stories per instance, best first, each with its flow findings and
    its CloudTrail context (``scores``: the day's scored events with ``finding_id``; ``ranks``: the
    CloudTrail findings' ranks in the report). None when the day has no network scores."""
    root, text = as_path(data_root), day_text(day)
    flows = read_flow_scores(root, text)
    if flows is None:
        return None
    ranks = ranks or {}
    told = flows[flows["risk_score"] >= NETWORK_MIN_SCORE].copy()
    section: dict[str, Any] = {
        "date": text, "findings": int(len(flows)), "told": int(len(told)),
        "high_risk": int((flows["risk_score"] >= HIGH).sum()), "scorer": scorer_note(flows), "stories": [],
    }  # fmt: skip
    if told.empty:
        return section
    told["who"] = [
        _text(i) or _text(e) for i, e in zip(told["instance_id"], told["interface_id"], strict=True)
    ]
    keys: dict[str, set[str]] = {}
    for who, group in told.groupby("who", sort=False):
        needles = {who, *map(_text, group["interface_id"])}
        for groups in group.get("security_groups", pd.Series(dtype=object)):
            needles |= set(_text(groups).split())
        keys[who] = {n for n in needles if n}
    context = _context_events(root, text, keys, scores if scores is not None else pd.DataFrame())
    stories = []
    for who, group in told.groupby("who", sort=False):
        group = group.sort_values("risk_score", ascending=False, kind="stable")
        lead = group.iloc[0]
        ct = sorted(context.get(who, []), key=lambda e: str(e["eventTime"]))
        joined = any(e["risk_score"] >= HIGH for e in ct)
        timeline = _cloudtrail_entries(ct, ranks)[:MAX_CONTEXT_EVENTS]
        for row in group.itertuples(index=False):
            timeline.append({
                "time": pd.Timestamp(row.eventTime).strftime("%Y-%m-%d %H:%M:%S"), "source": "VPC Flow Logs",
                "score": round(float(row.risk_score), 1),
                "what": f"{_TITLES.get(row.detection, row.detection)}: {_text(row.reasons)}",
                "event_id": row.eventID, "finding_id": None, "rank": None,
                "technique": _text(row.attack_technique) or None, "how": _text(row.detection),
            })  # fmt: skip
        timeline.sort(key=lambda e: e["time"])
        role = _text(lead.get("role")) or None
        story = {
            "instance_id": _text(lead.get("instance_id")) or None, "interface_id": _text(lead["interface_id"]),
            "role": role, "account_id": _text(lead.get("account_id")) or None,
            "security_groups": _text(lead.get("security_groups")) or None,
            "context": _context_line(lead), "score": round(float(lead["risk_score"]) + (JOINED if joined else 0.0), 1),
            "network_score": round(float(lead["risk_score"]), 1), "joined": joined,
            "detections": sorted({_text(d) for d in group["detection"]}),
            "techniques": sorted({_text(t) for t in group["attack_technique"] if _text(t)}),
            "cloudtrail_findings": sorted({f"#{e['rank']}" if e["rank"] else str(e["finding_id"]) for e in timeline
                                           if e["source"] == "CloudTrail" and e["finding_id"]}),
            "title": _story_title(group, ct, role),
            "timeline": timeline,
        }  # fmt: skip
        stories.append(story)
    stories.sort(key=lambda s: (-s["score"], s["timeline"][0]["time"]))
    for rank, story in enumerate(stories[:MAX_STORIES], 1):
        story["rank"] = rank
    section["stories"] = stories[:MAX_STORIES]
    section["joined"] = sum(1 for s in stories if s["joined"])
    return section


def _how(event: dict, instance: str, needles: set[str]) -> str:
    """How a CloudTrail event concerns the instance, in words."""
    if _text(event.get("userIdentity.arn")).endswith(f"/{instance}"):
        return "as the instance's role"
    params = _text(event.get("requestParameters"))
    for needle in sorted(needles, key=lambda n: (not n.startswith("sg-"), n)):
        if needle in params:
            kind = (
                "security group"
                if needle.startswith("sg-")
                else "interface"
                if needle.startswith("eni-")
                else "instance"
            )
            return f"names its {kind} {needle}" if kind != "instance" else "names the instance"
    return "names the instance"


def _cloudtrail_entries(events: list[dict], ranks: dict[str, int]) -> list[dict]:
    """One timeline entry per CloudTrail finding (its first event's time, its strongest event described,
    how many more), an event outside any finding on its own."""
    groups: dict[str, list[dict]] = {}
    for e in events:
        groups.setdefault(str(e.get("finding_id") or e["eventID"]), []).append(e)
    out = []
    for members in groups.values():
        lead = max(members, key=lambda e: e["risk_score"])
        names = pd.Series([e["eventName"] for e in members]).value_counts()
        more = (
            ""
            if len(members) == 1
            else " (" + ", ".join(f"{n} x{c}" if c > 1 else n for n, c in names.items()) + ")"
        )
        out.append({
            "time": pd.Timestamp(members[0]["eventTime"]).strftime("%Y-%m-%d %H:%M:%S"), "source": "CloudTrail",
            "score": round(float(lead["risk_score"]), 1), "what": describe_event(lead) + more, "event_id": lead["eventID"],
            "finding_id": lead.get("finding_id"), "rank": ranks.get(str(lead.get("finding_id"))), "technique": None,
            "how": lead["how"],
            "events": len(members),
        })  # fmt: skip
    return sorted(out, key=lambda e: e["time"])


def _context_line(lead: pd.Series) -> str:
    instance, eni = _text(lead.get("instance_id")), _text(lead.get("interface_id"))
    if not instance:
        return f"{eni}: no instance known (no instance-id in the records, no RunInstances/CreateNetworkInterface in CloudTrail)"
    role = _text(lead.get("role")) or "role unknown"
    source = _text(lead.get("context_call"))
    told = (
        f", known from CloudTrail {source} ({_text(lead.get('context_event'))})"
        if source
        else " (from the flow records)"
    )
    groups = _text(lead.get("security_groups"))
    return f"{instance} ({role}), interface {eni}{', groups ' + groups if groups else ''}{told}"


def _story_title(group: pd.DataFrame, ct: list[dict], role: str | None) -> str:
    parts = [e["eventName"] for e in ct if e["risk_score"] >= HIGH][:2]
    parts += [_TITLES.get(d, d) for d in dict.fromkeys(group["detection"])][:3]
    return " \u2192 ".join(dict.fromkeys(parts)) + (f" ({role})" if role else "")


def story_lines(section: dict[str, Any] | None, limit: int = 10) -> list[str]:
    """The section as text: a header, then each story with its timeline (the email's and terminal's)."""
    if not section:
        return ["Network (VPC Flow Logs): no flow logs scored for this day"]
    out = [f"Network (VPC Flow Logs): {section['findings']} findings, {section['high_risk']} at or above "
           f"{HIGH:g}, {len(section['stories'])} instance stories ({section.get('joined', 0)} joined to CloudTrail); "
           f"scored by {section['scorer']}"]  # fmt: skip
    for story in section["stories"][:limit]:
        out.append(f"N{story['rank']} {story['score']:.1f}  {story['title']}")
        out.append(f"    {story['context']}")
        for e in story["timeline"]:
            where = ""
            if e["source"] == "CloudTrail":
                finding = e["rank"] and f"#{e['rank']}" or e["finding_id"]
                where = f" [{e['how']}" + (f"; CloudTrail finding {finding}]" if finding else "]")
            out.append(f"    {e['time']}  {e['source']:<13} {e['score']:>5.1f}  {e['what'][:240]}{where}")
    return out
