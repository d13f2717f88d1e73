"""What is usual against what happened now, per finding: GuardDuty's "unusual behaviour" panel.

Why: "first use of CreateAccessKey" says little until the analyst sees the principal's usual behaviour
beside it: "usually 1,240 calls from AMAZON-02 over 30 days; now 14 from M247, first seen, 0 other
principals". For each dimension (API, network organisation (ASN), country, client, region, hour of day)
the panel gives the principal's most frequent values over its history with counts, then each value of
the finding with its count now, the principal's count before, and how many events and principals of the
whole organisation had it (organisation-wide rarity).

The history is the per-day behaviour profiles the features already keep
(``profiles/date=D/profile.parquet``: counts per dimension, principal and value, built once per day), so
the panel costs a filter of 30 small tables. Identity at two levels: the principal itself, and for a role
session (``assumed-role/Role/session``) also the role across all its sessions, so a session named after
an instance id, new each time, still has a baseline.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

# (profile dimension, label, scores column that holds the value now)
DIMENSIONS: tuple[tuple[str, str, str], ...] = (
    ("event_name", "API", "eventName"),
    ("asn", "network (ASN)", "asn"),
    ("country", "country", "country"),
    ("ua", "client", "ua_family"),
    ("region", "region", "awsRegion"),
    ("hour", "hour (UTC)", "hour"),
)
USUAL_VALUES = 3  # the principal's most frequent values shown per dimension
NOW_VALUES = 5  # the finding's values shown per dimension
ORG = "*"
EVENTS_DIM = "_events"


@dataclass(frozen=True)
class Baseline:
    """The history's profile rows for the principals asked about, plus organisation-wide counts."""

    rows: pd.DataFrame  # dim, principal, value, count (summed over the history's days)
    days: int


def role_of(principal: str) -> str | None:
    """``arn:aws:sts::1:assumed-role/Role/session`` -> the prefix every session of Role shares."""
    if ":assumed-role/" not in principal:
        return None
    head, _, rest = principal.partition(":assumed-role/")
    role = rest.split("/", 1)[0]
    return f"{head}:assumed-role/{role}/" if role else None


def load_baseline(profile: pa.Table, principals: Iterable[str], days: int) -> Baseline:
    """The profile rows of ``principals`` and of their roles' sessions (summed over days); organisation
    rows are kept whole, since rarity needs every principal's values."""
    principals = sorted({p for p in principals if p})
    if profile.num_rows == 0 or not principals:
        return Baseline(pd.DataFrame(columns=["dim", "principal", "value", "count"]), days)
    column = profile.column("principal")
    wanted = pc.is_in(column, value_set=pa.array(principals, type=column.type))
    for role in {r for r in map(role_of, principals) if r}:
        wanted = pc.or_(wanted, pc.starts_with(column, role))
    rows = profile.filter(wanted).to_pandas()
    rows = rows.groupby(["dim", "principal", "value"], as_index=False, sort=False)["count"].sum()
    return Baseline(rows, days)


def org_counts(profile: pa.Table, values: dict[str, set[str]]) -> pd.DataFrame:
    """Per (dim, value) asked about: events across the organisation and distinct principals, in history."""
    frames = []
    dims = profile.column("dim")
    for dim, wanted in values.items():
        if not wanted:
            continue
        mask = pc.and_(
            pc.equal(dims, dim), pc.is_in(profile.column("value"), value_set=pa.array(sorted(wanted)))
        )
        part = profile.filter(mask).to_pandas()
        if part.empty:
            continue
        people = part[part["principal"] != ORG]
        frames.append(
            pd.DataFrame({
                "dim": dim,
                "value": people.groupby("value")["count"].sum().index,
                "org_events": people.groupby("value")["count"].sum().to_numpy(),
                "org_principals": people.groupby("value")["principal"].nunique().to_numpy(),
            })
        )  # fmt: skip
    if not frames:
        return pd.DataFrame(columns=["dim", "value", "org_events", "org_principals"])
    return pd.concat(frames, ignore_index=True)


def _now_values(members: pd.DataFrame, column: str) -> pd.Series:
    if column == "hour":
        return pd.to_datetime(members["eventTime"], utc=True).dt.hour.astype(str)
    if column not in members:
        return pd.Series("", index=members.index, dtype=object)
    return members[column].astype(object).where(members[column].notna(), "").astype(str)


def panel(
    members: pd.DataFrame, principal: str, baseline: Baseline, org: pd.DataFrame | None = None
) -> dict[str, Any]:
    """The usual-vs-now panel of one finding (its events ``members``, its ``principal``)."""
    rows = baseline.rows
    own = rows[rows["principal"] == principal]
    role = role_of(principal)
    level = "principal"
    if role and own[own["dim"] == EVENTS_DIM]["count"].sum() == 0:
        own = rows[rows["principal"].str.startswith(role)]
        own = own.groupby(["dim", "value"], as_index=False)["count"].sum()
        level = "role " + role.rsplit("/", 2)[-2]
    history_events = int(own.loc[own["dim"] == EVENTS_DIM, "count"].sum())
    org_index = (
        org.set_index(["dim", "value"])
        if org is not None and len(org)
        else pd.DataFrame(columns=["org_events"])
    )
    dimensions = []
    for dim, label, column in DIMENSIONS:
        mine = own[own["dim"] == dim].groupby("value")["count"].sum().sort_values(ascending=False)
        now = _now_values(members, column)
        now_counts = now[now != ""].value_counts().head(NOW_VALUES)
        items = []
        for value, count in now_counts.items():
            before = int(mine.get(value, 0))
            key = (dim, value)
            known = key in org_index.index
            items.append({
                "value": value,
                "now": int(count),
                "before": before,
                "first_seen": before == 0,
                "org_events": int(org_index.loc[key, "org_events"]) if known else 0,
                "org_principals": int(org_index.loc[key, "org_principals"]) if known else 0,
            })  # fmt: skip
        if dim == "hour":
            for item in items:
                item["value"] = _hour(item["value"])
        dimensions.append({
            "dimension": dim,
            "label": label,
            "usual": [[_hour(v) if dim == "hour" else str(v), int(c)] for v, c in mine.head(USUAL_VALUES).items()],
            "usual_total": int(mine.sum()),
            "now": items,
        })  # fmt: skip
    return {
        "baseline": {"level": level, "days": baseline.days, "events": history_events},
        "dimensions": dimensions,
        "new_dimensions": [d["label"] for d in dimensions if any(i["first_seen"] for i in d["now"])],
    }


def panel_lines(usual: dict[str, Any], limit: int = 120) -> list[str]:
    """The panel as short lines: ``API: usually DescribeInstances 840, ListBuckets 120 (of 1,300 over
    30 days); now CreateAccessKey x1 (first seen; 0 events by 0 principals in the organisation)``."""
    if not usual:
        return []
    base = usual.get("baseline", {})
    lines = []
    if not base.get("events"):
        lines.append(
            f"no history for this {base.get('level', 'principal')} in the last {base.get('days')} days"
        )
    for dim in usual.get("dimensions", []):
        if not dim["now"]:
            continue
        usual_text = ", ".join(f"{_short(v, limit // 4)} {c:,}" for v, c in dim["usual"]) or "nothing"
        now_text = "; ".join(
            f"{_short(i['value'], limit // 4)} x{i['now']:,}"
            + (
                f" (first seen; {i['org_events']:,} events by {i['org_principals']:,} principals in the organisation)"
                if i["first_seen"]
                else f" ({i['before']:,} before)"
            )
            for i in dim["now"][:3]
        )
        lines.append(
            f"{dim['label']}: usually {usual_text} (of {dim['usual_total']:,} over {base.get('days')} days"
            f"{'' if base.get('level') == 'principal' else ', ' + str(base.get('level'))}); now {now_text}"
        )
    return lines


def _hour(value: Any) -> str:
    return f"{int(value):02d}:00" if str(value).isdigit() else str(value)


def _short(value: Any, limit: int) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def load_day_history(store: Any, day_text: str, history_days: int = 30) -> Any:
    """The history before the day (per-day profiles), None when it cannot be read."""
    from trailguard.model.features import load_history

    try:
        return load_history(store, day_text, history_days)
    except (OSError, ValueError) as exc:
        log.warning("%s: no history for the usual-vs-now panels (%s)", day_text, exc)
        return None


def panels_for(day: Any, finding_rows: Iterable[int], history: Any) -> dict[str, dict[str, Any]]:
    """Panels of the given findings (rows of ``day.table``), keyed by finding id; {} without history."""
    finding_rows = list(finding_rows)
    if not finding_rows or history is None:
        return {}
    members = {row: day.members(row) for row in finding_rows}
    principals = {row: _principal(members[row], day.table.loc[row, "credential"]) for row in finding_rows}
    baseline = load_baseline(history.profile, principals.values(), len(history.days))
    wanted: dict[str, set[str]] = {dim: set() for dim, _, _ in DIMENSIONS}
    for group in members.values():
        for dim, _, column in DIMENSIONS:
            wanted[dim].update(v for v in _now_values(group, column).unique() if v)
    org = org_counts(history.profile, wanted) if history.profile.num_rows else None
    return {
        str(day.table.loc[row, "finding_id"]): panel(members[row], principals[row], baseline, org)
        for row in finding_rows
    }


def _principal(members: pd.DataFrame, credential: str) -> str:
    """The profiles' name of the finding's principal: its events' most common ``principal`` (the ARN)."""
    if "principal" in members and members["principal"].notna().any():
        values = members["principal"].dropna().astype(str)
        arns = values[values.str.startswith("arn:")]
        return str((arns if len(arns) else values).mode().iloc[0])
    return credential


# -- behaviour that raises findings -------------------------------------------------------------------------
NOVEL_SENSITIVE = 15.0  # added to a finding's score (see trailguard.findings.correlate)
_SENSITIVE_SOURCES = ("iam.amazonaws.com", "sts.amazonaws.com", "kms.amazonaws.com", "cloudtrail.amazonaws.com",
                      "logs.amazonaws.com", "config.amazonaws.com", "guardduty.amazonaws.com",
                      "securityhub.amazonaws.com", "access-analyzer.amazonaws.com", "organizations.amazonaws.com")  # fmt: skip
_WRITE_VERBS = ("Create", "Put", "Attach", "Update", "Delete", "Add", "Remove", "Detach", "Set", "Upload", "Change",
                "Deactivate", "Disable", "Stop", "Schedule", "Import", "Enable", "Tag", "Untag", "Reset")  # fmt: skip
_SECRET_CALLS = frozenset({"GetSecretValue", "BatchGetSecretValue", "PutSecretValue", "DeleteSecret", "GetParameter",
                           "GetParameters", "GetParametersByPath", "GetPasswordData", "CreateKeyPair", "ImportKeyPair"})  # fmt: skip


def sensitive_calls(events: pd.DataFrame) -> pd.Series:
    """Whether each call is sensitive: an IAM, key, logging or security-service write, or a secret read."""
    names = events["eventName"].astype(object).where(events["eventName"].notna(), "").astype(str)
    sources = events["eventSource"] if "eventSource" in events else pd.Series("", index=events.index)
    write = names.str.startswith(_WRITE_VERBS) & sources.isin(_SENSITIVE_SOURCES)
    failed = (
        events["errorCode"].notna() & (events["errorCode"].astype(object) != "")
        if "errorCode" in events
        else False
    )
    return (write | names.isin(_SECRET_CALLS)) & ~failed


def behaviour_findings(day: Any, profile: pa.Table, days: int) -> dict[int, str]:
    """Findings (rows of ``day.table``) in which a principal with a history made a sensitive call it never
    made before, from a network (ASN) it never used: GuardDuty's anomalous-behaviour idea as a detection.
    A role session without history of its own is judged against its role. Returns row -> reason."""
    events = day.events
    if profile.num_rows == 0 or not len(events) or "eventName" not in events:
        return {}
    hits = events[sensitive_calls(events).to_numpy()]
    if hits.empty:
        return {}
    principals = hits["principal"].astype(str) if "principal" in hits else hits["credential"].astype(str)
    baseline = load_baseline(profile, principals.unique(), days)
    rows = baseline.rows
    found: dict[int, str] = {}
    for principal, group in hits.groupby(principals, sort=False):
        own = rows[rows["principal"] == principal]
        role = role_of(principal)
        if role and own[own["dim"] == EVENTS_DIM]["count"].sum() == 0:
            own = rows[rows["principal"].str.startswith(role)]
        if own[own["dim"] == EVENTS_DIM]["count"].sum() == 0:
            continue  # no history: "new" means nothing yet
        apis = set(own.loc[own["dim"] == "event_name", "value"])
        networks = set(own.loc[own["dim"] == "asn", "value"])
        for event in group.itertuples():
            name, asn = str(event.eventName), str(getattr(event, "asn", "") or "")
            if name in apis or not asn or asn in networks:
                continue
            finding = int(event.finding)
            found.setdefault(finding, f"first {name} by {_short(principal.rpartition('/')[2] or principal, 60)} "
                                      f"from a network it never used ({_short(asn, 40)}) in {days} days")  # fmt: skip
    return found
