"""Analysts work on findings: a label given to a finding applies to all its events, and a finding marked
benign with a note suppresses the same pattern for a while.

Why: an analyst reviews a finding (the backup job's role reading every secret at 02:00), not its 300 events;
and having said "benign, it is the backup", should not see the same thing tomorrow. The pattern is the
finding's *principal*, its *actions* (eventNames) and its *network* (the source's ASN, else its /24 or
/48): the same principal doing the same calls from the same network. Another call, another network or
another principal is not suppressed. A suppression has an end (``days``, 30 by default) and a note; they
are appended to ``suppressions/`` in the data root (one JSON file each, never rewritten), so the record of
who silenced what, and why, stays.

A suppressed finding is left out of the report's ranking and counted in its footer ("suppressed: N").
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd

from trailguard.findings.files import FINDING_ID, find_finding
from trailguard.store.events import write_bytes_atomic
from trailguard.store.fs import DataPath, as_path

log = logging.getLogger(__name__)

DEFAULT_DAYS = 30
MAX_DAYS = 366
_FILE = re.compile(r"suppression-\d{8}T\d{6}\d*-[0-9a-f]{6}\.json")


def is_finding_id(text: str) -> bool:
    return bool(FINDING_ID.fullmatch(text.strip()))


def network_of(ip: Any) -> str:
    """The /24 (IPv4) or /48 (IPv6) of an address; the text itself for a service name or junk."""
    try:
        address = ipaddress.ip_address(str(ip).strip())
    except ValueError:
        return str(ip or "")
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


@dataclass(frozen=True)
class Suppression:
    principal: str
    actions: tuple[str, ...]
    asn: str
    network: str
    until: datetime
    finding_id: str
    note: str
    analyst: str

    def as_json(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "actions": list(self.actions),
            "until": self.until.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


def suppressions_dir(data_root: DataPath | str) -> DataPath:
    return as_path(data_root) / "suppressions"


def label_finding(
    data_root: DataPath | str,
    finding_id: str,
    risk_score: int,
    *,
    verdict: str | None = None,
    analyst: str | None = None,
    note: str = "",
    suppress_days: int | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Record the decision for every event of the finding; benign with a note also suppresses its pattern
    (for ``suppress_days``, default 30; 0 = do not suppress). Raises LookupError for an unknown finding and
    ValueError for a bad score, verdict or period (nothing is written then)."""
    from trailguard.model.labels import record_labels

    finding = find_finding(data_root, finding_id.strip())
    if finding is None:
        raise LookupError(
            f"no finding {finding_id!r} in any reports/*/findings.json: check the id in the report "
            "(top_events.csv, column finding_id)"
        )
    days = DEFAULT_DAYS if suppress_days is None else int(suppress_days)
    if not 0 <= days <= MAX_DAYS:
        raise ValueError(f"suppression period must be 0-{MAX_DAYS} days, got {days}")
    ids = finding.get("event_ids") or []
    if not ids:
        raise LookupError(f"finding {finding_id} lists no events")
    path = record_labels(
        data_root,
        [{"eventID": e, "risk_score": risk_score, "verdict": verdict, "analyst": analyst,
          "note": f"[finding {finding_id}] {note}".strip()} for e in ids],
    )  # fmt: skip
    result: dict[str, Any] = {
        "finding_id": finding_id,
        "events": len(ids),
        "labels": str(path),
        "suppression": None,
    }
    if verdict == "benign" and note.strip() and days > 0:
        rule = _suppression(finding, days, note, analyst or "unknown", now)
        result["suppression"] = str(write_suppression(data_root, rule))
        result["until"] = rule.as_json()["until"]
    return result


def _suppression(
    finding: dict[str, Any], days: int, note: str, analyst: str, now: datetime | None
) -> Suppression:
    chain = finding.get("chain") or []
    actions = finding.get("actions") or sorted({str(e.get("eventName")) for e in chain if e.get("eventName")})
    usual = finding.get("usual") or {}
    asn = ""
    for dim in usual.get("dimensions", []):
        if dim.get("dimension") == "asn" and dim.get("now"):
            asn = str(dim["now"][0]["value"])
    now = now or datetime.now(timezone.utc)
    return Suppression(
        principal=str(finding.get("credential") or ""),
        actions=tuple(actions),
        asn=asn,
        network=network_of(finding.get("source")),
        until=now + timedelta(days=days),
        finding_id=str(finding.get("finding_id")),
        note=note.strip()[:2000],
        analyst=analyst[:200],
    )


def write_suppression(data_root: DataPath | str, rule: Suppression) -> DataPath:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    path = suppressions_dir(data_root) / f"suppression-{stamp}-{uuid.uuid4().hex[:6]}.json"
    write_bytes_atomic(json.dumps(rule.as_json(), ensure_ascii=False).encode("utf-8"), path)
    log.info(
        "suppressed %s (%d actions) from %s until %s",
        rule.principal,
        len(rule.actions),
        rule.network,
        rule.until,
    )
    return path


def active_suppressions(data_root: DataPath | str, at: datetime) -> list[Suppression]:
    """The suppressions in force at ``at`` (an unreadable file is logged and skipped, never fatal)."""
    folder = suppressions_dir(data_root)
    if not folder.exists():
        return []
    out = []
    for path in sorted(folder.iterdir()):
        if not _FILE.fullmatch(path.name):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            until = datetime.strptime(data["until"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            rule = Suppression(str(data["principal"]), tuple(map(str, data["actions"])), str(data.get("asn") or ""),
                               str(data.get("network") or ""), until, str(data.get("finding_id") or ""),
                               str(data.get("note") or ""), str(data.get("analyst") or ""))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: not a suppression (%s); ignored", path.name, exc)
            continue
        if rule.until > at:
            out.append(rule)
    return out


def suppressed_events(events: pd.DataFrame, credential: pd.Series, rules: list[Suppression]) -> np.ndarray:
    """Per event: whether a suppression covers it (same principal, one of its actions, same network)."""
    hit = np.zeros(len(events), dtype=bool)
    if not rules or not len(events):
        return hit
    names = (
        events["eventName"].astype(object).to_numpy() if "eventName" in events else np.full(len(events), None)
    )
    asns = events["asn"].astype(object).to_numpy() if "asn" in events else np.full(len(events), None)
    ips = events["sourceIPAddress"] if "sourceIPAddress" in events else pd.Series("", index=events.index)
    codes, uniques = pd.factorize(ips)
    networks = np.array([*(network_of(u) for u in uniques), ""], dtype=object)[codes]
    who = credential.to_numpy()
    for rule in rules:
        same = (who == rule.principal) & np.isin(names, list(rule.actions))
        where = networks == rule.network
        if rule.asn:
            where |= asns == rule.asn
        hit |= same & where
    return hit
