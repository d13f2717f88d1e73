"""Correlate a day's scored events into findings: one credential's chain from one source, scored from all
its evidence.

Why: an attacker's sign-in, enumeration, key creation and StopLogging are one incident; ranked as events
they take five rows of the top 20 and push other attacks below the fold, and 26 events tied at 100 leave
the order to chance. A finding is what an analyst investigates and labels.

**Correlation.** Events are keyed by *credential* and *source*: the credential is the principal as
CloudTrail names it (the IAM user, the role *session* ``assumed-role/Role/session``, root), with a failed
sign-in (which carries only ``principalId`` and ``userName``) brought to the same user's ARN; the source is
``sourceIPAddress`` (an AWS service's name for calls it makes). Events of one key form one finding while
the gap between consecutive events stays within ``window`` (60 minutes by default): a burst, a chain of
minutes or a working session is one finding; the same key an afternoon later is another. Two attackers at
once are two findings (two credentials, or one credential from two sources).

**Lead and tactics.** The lead event is the highest-scored (earliest on ties). Tactics come from the ATT&CK
technique of every rule that fired on an event (``lf_rules``) and the event's ``attack_technique``; an
event no rule names but that scores at least ``FLOOR`` gets the tactic its call implies (a sign-in:
initial access; List/Describe/Get: discovery) for display. They are listed in kill-chain order
(:data:`KILL_CHAIN`).

**Score** (a number from 0 up, not capped at 100, so order is never hidden by saturation)::

    S = r1 + FOLLOW * sum_{i>=2} ((max(r_i - FLOOR, 0) / (100 - FLOOR)) ** 2 * 2 ** -(i - 2))
          + TACTIC * max(T - 1, 0) + TIE * a1

``r1 >= r2 >= ...`` are the finding's event risk scores (0-100), ``T`` the number of distinct tactics
backed by a rule's technique, ``a1`` the lead event's anomaly score (0-1, 0 when absent); ``FLOOR`` = 20,
``FOLLOW`` = 10, ``TACTIC`` = 4, ``TIE`` = 0.5. So:

* a finding scores at least its lead event, and a chain outranks any one of its events: every further
  event above the floor and every further tactic adds to the lead's score;
* routine events (normal traffic scores about 5) add nothing, and a thousand of them cannot outweigh one
  strong event: the follow-up term halves with each further event and is at most 2 x FOLLOW = 20;
* a chain across tactics (sign-in, enumeration, persistence, evasion) gains 4 per further tactic;
* the lead's anomaly score, continuous, separates findings with equal evidence (two lone events at 100).

When the history is at hand (the daily report), a finding gains ``NOVEL_SENSITIVE`` = 15 more when its
principal (or, for a new role session, its role) made a sensitive call (an IAM, key, logging or
security-service write, a secret read) it never made before, from a network (ASN) it never used
(:func:`trailguard.findings.baseline.behaviour_findings`): novelty becomes a detection, not only a feature.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

WINDOW = pd.Timedelta(minutes=60)
FLOOR = 20.0
FOLLOW = 10.0
TACTIC = 4.0
TIE = 0.5
MAX_EVENT_IDS = 10_000  # ids listed per finding in files; the count is always exact

KILL_CHAIN: tuple[str, ...] = (
    "initial-access",
    "execution",
    "discovery",
    "credential-access",
    "privilege-escalation",
    "persistence",
    "defense-evasion",
    "lateral-movement",
    "command-and-control",
    "collection",
    "exfiltration",
    "impact",
)
_BIT = {name: 1 << i for i, name in enumerate(KILL_CHAIN)}

# ATT&CK (cloud) technique -> the tactic it serves in a cloud attack chain; sub-techniques override
TECHNIQUE_TACTIC: dict[str, str] = {
    **dict.fromkeys(("T1078", "T1190", "T1199", "T1133"), "initial-access"),
    **dict.fromkeys(("T1059", "T1648", "T1651", "T1204", "T1609", "T1610"), "execution"),
    **dict.fromkeys(
        (
            "T1087",
            "T1580",
            "T1526",
            "T1518",
            "T1069",
            "T1082",
            "T1033",
            "T1538",
            "T1619",
            "T1201",
            "T1046",
            "T1654",
        ),
        "discovery",
    ),
    **dict.fromkeys(
        ("T1110", "T1552", "T1555", "T1528", "T1040", "T1606", "T1621", "T1212"), "credential-access"
    ),
    **dict.fromkeys(("T1484", "T1548", "T1098.003"), "privilege-escalation"),
    **dict.fromkeys(("T1098", "T1136", "T1556", "T1546", "T1525", "T1543"), "persistence"),
    **dict.fromkeys(
        ("T1562", "T1666", "T1535", "T1070", "T1578", "T1550", "T1211", "T1564"), "defense-evasion"
    ),
    **dict.fromkeys(("T1021", "T1570"), "lateral-movement"),
    **dict.fromkeys(("T1090", "T1071", "T1572"), "command-and-control"),
    **dict.fromkeys(("T1530", "T1213", "T1119", "T1005", "T1074"), "collection"),
    **dict.fromkeys(("T1537", "T1567", "T1048", "T1020"), "exfiltration"),
    **dict.fromkeys(("T1485", "T1490", "T1496", "T1486", "T1531", "T1489", "T1491", "T1657"), "impact"),
}
_READ_VERBS = ("List", "Describe", "Get", "Search", "Lookup", "BatchGet", "Scan")

IDENTITY_COLUMNS: tuple[str, ...] = (
    "userIdentity.arn",
    "userIdentity.type",
    "userIdentity.principalId",
    "userIdentity.userName",
    "userIdentity.accountId",
    "userIdentity.accessKeyId",
)


def technique_tactic(technique: Any) -> str | None:
    """The kill-chain tactic of an ATT&CK technique id (``T1098.003`` before ``T1098``), None if unknown."""
    if not isinstance(technique, str) or not technique.strip():
        return None
    technique = technique.strip()
    return TECHNIQUE_TACTIC.get(technique) or TECHNIQUE_TACTIC.get(technique.split(".", 1)[0])


def tactic_names(mask: int) -> list[str]:
    """The tactics of a bit mask, in kill-chain order."""
    return [name for name in KILL_CHAIN if mask & _BIT[name]]


@functools.cache
def _rule_techniques() -> dict[str, str]:
    """Every detection's id -> its technique (per-event and window rules)."""
    from trailguard.detect.engine import all_detections

    return {d.rule_id: d.technique for d in all_detections()}


def _rule_mask(rules: Any, technique: Any) -> int:
    """Tactics backed by a technique: the event's own and every rule that fired on it."""
    mask = 0
    names = [technique]
    if isinstance(rules, str) and rules:
        known = _rule_techniques()
        names += [known.get(r.strip()) for r in rules.split(",")]
    for name in names:
        tactic = technique_tactic(name)
        if tactic:
            mask |= _BIT[tactic]
    return mask


def _implied_mask(name: Any, login: bool) -> int:
    """The tactic a call implies when no rule names it (shown, not scored)."""
    if not isinstance(name, str):
        return 0
    if login or name == "ConsoleLogin":
        return _BIT["initial-access"]
    return _BIT["discovery"] if name.startswith(_READ_VERBS) else 0


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series("", index=frame.index, dtype=object)
    return frame[column].astype(object).where(frame[column].notna(), "").astype(str)


def credential_of(frame: pd.DataFrame) -> pd.Series:
    """The credential an event was made with, as one text: the principal's ARN (role sessions keep their
    session name); a sign-in without an ARN is brought to the user's ARN by ``userName``, or to the ARN
    another event of the day shows for its ``principalId``."""
    arn = _text(frame, "userIdentity.arn")
    principal = _text(frame, "principal")
    out = arn.where(arn != "", principal)
    kind = _text(frame, "userIdentity.type")
    user = _text(frame, "userIdentity.userName")
    account = _text(frame, "userIdentity.accountId").where(lambda s: s != "", _text(frame, "account"))
    pid = _text(frame, "userIdentity.principalId")
    lacking = ~out.str.startswith("arn:")
    if lacking.any():
        as_user = lacking & (kind == "IAMUser") & (user != "") & (account != "")
        out = out.where(~as_user, "arn:aws:iam::" + account + ":user/" + user)
        as_root = lacking & (kind == "Root") & (account != "")
        out = out.where(~as_root, "arn:aws:iam::" + account + ":root")
        lacking = ~out.str.startswith("arn:")
        known = (pid != "") & (arn != "")
        if lacking.any() and known.any():
            by_id = dict(zip(pid[known], arn[known], strict=True))
            mapped = pid[lacking].map(by_id)
            out.loc[mapped.dropna().index] = mapped.dropna()
    return out.where(out != "", "unknown")


def finding_id(credential: str, source: str, first_event: str) -> str:
    """A short stable id (``F-`` + 16 hex): the same events give the same id on every rerun."""
    key = "\x1f".join((credential, source, first_event))
    return "F-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass(frozen=True)
class DayFindings:
    """A day's findings. ``table`` has one row per finding (any order); ``code`` maps each scored event
    (the rows of ``events``) to its finding's row in ``table``."""

    events: pd.DataFrame  # the scored events, reset index; plus columns "finding" and "credential"
    table: pd.DataFrame

    def ranked(self, min_score: float = 0.0, suppressed: np.ndarray | None = None) -> pd.DataFrame:
        """Findings whose lead event scores at least ``min_score``, highest finding score first; rows
        flagged in ``suppressed`` (per row of ``table``) are left out."""
        keep = (self.table["lead_risk"] >= min_score).to_numpy(copy=True)
        if suppressed is not None:
            keep &= ~suppressed
        table = self.table[keep]
        return table.sort_values(
            ["score", "first_seen", "finding_id"], ascending=[False, True, True], kind="stable"
        )

    def members(self, row: int) -> pd.DataFrame:
        """The events of one finding (by its row in ``table``), in time order."""
        members = self.events[self.events["finding"].to_numpy() == row]
        return members.sort_values(["eventTime", "eventID"], kind="stable")

    def suppressed(self, per_event: np.ndarray) -> np.ndarray:
        """Per finding: whether every one of its events is suppressed."""
        if not len(self.table):
            return np.zeros(0, dtype=bool)
        codes = self.events["finding"].to_numpy()
        covered = np.bincount(codes, weights=per_event.astype(float), minlength=len(self.table))
        return covered >= self.table["count"].to_numpy()

    def event_ids(self, row: int, limit: int = MAX_EVENT_IDS) -> list[str]:
        return [str(e) for e in self.members(row)["eventID"].head(limit)]


def correlate(
    scores: pd.DataFrame, *, window: pd.Timedelta = WINDOW, identities: pd.DataFrame | None = None
) -> DayFindings:
    """The day's scored events as findings (see the module docstring). ``identities`` (indexed by
    eventID, :data:`IDENTITY_COLUMNS`) brings the event store's identity fields when the scores lack them.
    Events without a risk score are left out. Vectorised: a million events take seconds."""
    events = scores[scores["risk_score"].notna()].reset_index(drop=True)
    if identities is not None and len(identities) and len(events):
        extra = [c for c in identities.columns if c not in events.columns]
        if extra:
            joined = identities[extra].reindex(events["eventID"].astype(str))
            events = pd.concat([events, joined.reset_index(drop=True)], axis=1)
    n = len(events)
    if n == 0:
        return DayFindings(events.assign(finding=np.zeros(0, dtype=np.int64), credential=""), _empty_table())

    credential = credential_of(events)
    source = _text(events, "sourceIPAddress")
    key_codes, _ = pd.factorize(credential + "\x1f" + source)
    times = pd.to_datetime(events["eventTime"], utc=True).dt.as_unit("us")
    micros = times.astype("int64").to_numpy()
    ids = events["eventID"].astype(str).to_numpy()
    risk = events["risk_score"].to_numpy(dtype=float)

    order = np.lexsort((ids, micros, key_codes))
    k, t = key_codes[order], micros[order]
    start = np.ones(n, dtype=bool)
    start[1:] = (k[1:] != k[:-1]) | (t[1:] - t[:-1] > int(window / pd.Timedelta(microseconds=1)))
    code = np.empty(n, dtype=np.int64)
    code[order] = np.cumsum(start) - 1
    n_findings = int(code.max()) + 1
    first_row = order[start]  # each finding's first event (time order), findings 0..n-1

    # rank within a finding by risk (desc), then time, then id: rank 0 is the lead
    by_risk = np.lexsort((ids, micros, -risk, code))
    sorted_code = code[by_risk]
    group_start = np.flatnonzero(np.r_[True, sorted_code[1:] != sorted_code[:-1]])
    rank = np.arange(n) - np.repeat(group_start, np.diff(np.r_[group_start, n]))
    lead_row = by_risk[group_start]
    strength = (np.clip(risk[by_risk] - FLOOR, 0, None) / (100.0 - FLOOR)) ** 2
    follow = np.where(rank >= 1, strength * np.exp2(-np.clip(rank - 1, 0, 1000).astype(float)), 0.0)
    follow_sum = np.bincount(sorted_code, weights=follow, minlength=n_findings)

    scored_mask, shown_mask = _tactic_masks(events, risk)
    scored = np.bitwise_or.reduceat(scored_mask[by_risk], group_start)
    shown = np.bitwise_or.reduceat((scored_mask | shown_mask)[by_risk], group_start)
    distinct = np.array([int(m).bit_count() for m in scored], dtype=float)
    anomaly = (
        pd.to_numeric(events["anomaly_score"], errors="coerce").fillna(0.0).clip(0, 1).to_numpy()
        if "anomaly_score" in events
        else np.zeros(n)
    )
    lead_risk = risk[lead_row]
    score = lead_risk + FOLLOW * follow_sum + TACTIC * np.maximum(distinct - 1, 0) + TIE * anomaly[lead_row]

    cred_text, source_text = credential.to_numpy(), source.to_numpy()
    first_ids = ids[first_row]
    table = pd.DataFrame({
        "finding_id": [finding_id(cred_text[r], source_text[r], first_ids[i]) for i, r in enumerate(first_row)],
        "credential": cred_text[first_row],
        "source": source_text[first_row],
        "lead": lead_row,
        "lead_event_id": ids[lead_row],
        "lead_risk": lead_risk,
        "score": np.round(score, 3),
        "count": np.bincount(code, minlength=n_findings),
        "evidence": np.bincount(code, weights=(risk >= FLOOR).astype(float), minlength=n_findings).astype(int),
        "first_seen": pd.to_datetime(t[start], unit="us", utc=True),
        "last_seen": pd.to_datetime(
            np.maximum.reduceat(micros[by_risk], group_start), unit="us", utc=True
        ),
        "tactics": [tuple(tactic_names(int(m))) for m in shown],
        "rule_tactics": distinct.astype(int),
    })  # fmt: skip
    return DayFindings(events.assign(finding=code, credential=credential.to_numpy()), table)


def _tactic_masks(events: pd.DataFrame, risk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per event: the tactics its rules' techniques back (scored) and the tactic its call implies (shown)."""
    rules = events["lf_rules"] if "lf_rules" in events else pd.Series(None, index=events.index, dtype=object)
    technique = (
        events["attack_technique"]
        if "attack_technique" in events
        else pd.Series(None, index=events.index, dtype=object)
    )
    pairs = (
        rules.astype(object).where(rules.notna(), "").astype(str)
        + "\x1f"
        + technique.astype(object).where(technique.notna(), "").astype(str)
    )
    codes, uniques = pd.factorize(pairs)
    table = np.array([_rule_mask(*u.split("\x1f", 1)) for u in uniques], dtype=np.int64)
    scored = table[codes] if len(uniques) else np.zeros(len(events), dtype=np.int64)

    names = (
        events["eventName"] if "eventName" in events else pd.Series(None, index=events.index, dtype=object)
    )
    name_codes, name_uniques = pd.factorize(names.astype(object).where(names.notna(), ""))
    implied = np.array([_implied_mask(u or None, False) for u in name_uniques], dtype=np.int64)
    shown = np.where((risk >= FLOOR) & (scored == 0), implied[name_codes] if len(name_uniques) else 0, 0)
    return scored, shown.astype(np.int64)


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame({
        "finding_id": pd.Series(dtype=object), "credential": pd.Series(dtype=object),
        "source": pd.Series(dtype=object), "lead": pd.Series(dtype=np.int64),
        "lead_event_id": pd.Series(dtype=object), "lead_risk": pd.Series(dtype=float),
        "score": pd.Series(dtype=float), "count": pd.Series(dtype=np.int64), "evidence": pd.Series(dtype=np.int64),
        "first_seen": pd.Series(dtype="datetime64[us, UTC]"), "last_seen": pd.Series(dtype="datetime64[us, UTC]"),
        "tactics": pd.Series(dtype=object), "rule_tactics": pd.Series(dtype=np.int64),
    })  # fmt: skip


def read_identities(store: Any, day: Any, event_ids: pd.Series | None = None) -> pd.DataFrame | None:
    """The identity fields of a day's events from the event store (indexed by eventID), None when the
    store has no such partition (a scores-only data root)."""
    try:
        table = store.read_partition(day, columns=["eventID", *IDENTITY_COLUMNS])
    except (FileNotFoundError, OSError, KeyError, ValueError) as exc:
        log.warning("%s: identity fields unavailable (%s); findings use the scores' principal", day, exc)
        return None
    if table.num_rows == 0:
        return None
    frame = table.to_pandas()
    if event_ids is not None:
        frame = frame[frame["eventID"].isin(event_ids)]
    return frame.drop_duplicates("eventID").set_index("eventID")
