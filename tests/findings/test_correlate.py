"""Correlation of scored events into findings on hand-built chains, and the finding score's ordering."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from trailguard.findings.correlate import (
    FLOOR,
    KILL_CHAIN,
    correlate,
    technique_tactic,
)

START = datetime(2026, 11, 20, 3, tzinfo=timezone.utc)
ACCOUNT = "111122223333"
MALLORY_IP = "203.0.113.66"


def row(event_id: str, second: int, risk: float, **values) -> dict:
    base = {
        "eventID": event_id,
        "eventTime": START + timedelta(seconds=second),
        "risk_score": risk,
        "principal": f"arn:aws:iam::{ACCOUNT}:user/alice",
        "userIdentity.arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
        "userIdentity.type": "IAMUser",
        "userIdentity.userName": "alice",
        "userIdentity.accountId": ACCOUNT,
        "userIdentity.principalId": "AIDAALICE",
        "account": ACCOUNT,
        "sourceIPAddress": MALLORY_IP,
        "eventName": "DescribeInstances",
        "attack_technique": None,
        "lf_rules": "",
        "anomaly_score": 0.5,
    }
    base.update(values)
    return base


def chain(prefix: str = "", user: str = "alice", ip: str = MALLORY_IP, at: int = 0) -> list[dict]:
    """A takeover: failed sign-in (principalId only), sign-in, enumeration, key for another user, StopLogging."""
    ident = {
        "principal": f"arn:aws:iam::{ACCOUNT}:user/{user}",
        "userIdentity.arn": f"arn:aws:iam::{ACCOUNT}:user/{user}",
        "userIdentity.userName": user,
        "userIdentity.principalId": f"AIDA{user.upper()}",
        "sourceIPAddress": ip,
    }
    failed = {**ident, "principal": f"AIDA{user.upper()}", "userIdentity.arn": None}
    return [
        row(f"{prefix}fail", at, 60, eventName="ConsoleLogin", attack_technique="T1110.001",
            lf_rules="console_login_failure", **failed),
        row(f"{prefix}login", at + 30, 92, eventName="ConsoleLogin", attack_technique="T1078.004",
            lf_rules="console_login_without_mfa", **ident),
        row(f"{prefix}list-users", at + 60, 36, eventName="ListUsers", **ident),
        row(f"{prefix}list-keys", at + 90, 33, eventName="ListAccessKeys", **ident),
        row(f"{prefix}create-key", at + 120, 95, eventName="CreateAccessKey", attack_technique="T1098.001",
            lf_rules="iam_access_key_for_other_user", **ident),
        row(f"{prefix}stop", at + 300, 98, eventName="StopLogging", attack_technique="T1562.008",
            lf_rules="cloudtrail_stopped", **ident),
    ]  # fmt: skip


def routine(
    n: int, user: str = "bob", ip: str = "198.51.100.7", risk: float = 5.0, step: int = 60
) -> list[dict]:
    ident = {"principal": f"arn:aws:iam::{ACCOUNT}:user/{user}", "userIdentity.arn": f"arn:aws:iam::{ACCOUNT}:user/{user}",
             "userIdentity.userName": user, "userIdentity.principalId": f"AIDA{user.upper()}"}  # fmt: skip
    return [row(f"{user}-{i}", i * step, risk, sourceIPAddress=ip, **ident) for i in range(n)]


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def finding_of(day, event_id: str) -> pd.Series:
    code = int(day.events.loc[day.events["eventID"] == event_id, "finding"].iloc[0])
    return day.table.loc[code]


def test_one_credentials_chain_is_one_finding_with_its_tactics_in_kill_chain_order():
    day = correlate(frame(chain() + routine(50)))
    found = finding_of(day, "login")
    members = set(day.event_ids(int(found.name)))
    assert members == {"fail", "login", "list-users", "list-keys", "create-key", "stop"}
    assert found["count"] == 6 and found["credential"] == f"arn:aws:iam::{ACCOUNT}:user/alice"
    assert found["lead_event_id"] == "stop" and found["lead_risk"] == 98
    assert found["tactics"] == (
        "initial-access",
        "discovery",
        "credential-access",
        "persistence",
        "defense-evasion",
    )
    assert list(found["tactics"]) == sorted(found["tactics"], key=KILL_CHAIN.index)
    assert found["first_seen"] == pd.Timestamp(START) and found["last_seen"] == pd.Timestamp(
        START + timedelta(seconds=300)
    )
    assert day.ranked().iloc[0]["finding_id"] == found["finding_id"]  # the chain tops the day
    assert len(day.table) == 2  # the chain and bob's routine session


def test_two_attackers_at_once_are_two_findings():
    # two credentials from the same address, interleaved in time
    rows = chain("a-", user="alice") + chain("m-", user="mallory", at=15)
    day = correlate(frame(rows))
    assert len(day.table) == 2
    assert set(day.event_ids(int(finding_of(day, "a-stop").name))) == {r["eventID"] for r in rows[:6]}
    assert set(day.event_ids(int(finding_of(day, "m-stop").name))) == {r["eventID"] for r in rows[6:]}
    # one credential used from two addresses at once: two findings too
    day = correlate(frame(chain("a-") + chain("b-", ip="192.0.2.9", at=5)))
    assert len(day.table) == 2 and finding_of(day, "a-stop")["source"] == MALLORY_IP


def test_a_burst_is_one_finding_and_a_later_return_is_another():
    burst = [row(f"denied-{i}", i, 100.0 if i % 3 else 36.0, eventName="ListSecrets", errorCode="AccessDenied",
                 attack_technique="T1580", lf_rules="access_denied_burst") for i in range(45)]  # fmt: skip
    later = [row("later", 45 + 3 * 3600, 40.0, eventName="ListUsers")]
    day = correlate(frame(burst + later))
    assert len(day.table) == 2
    assert finding_of(day, "denied-0")["count"] == 45 and finding_of(day, "later")["count"] == 1


def lone(event_id: str, risk: float, anomaly: float = 0.5, **values) -> list[dict]:
    user = f"user-{event_id}"
    return [row(event_id, 0, risk, anomaly_score=anomaly, principal=f"arn:aws:iam::{ACCOUNT}:user/{user}",
                **{"userIdentity.arn": f"arn:aws:iam::{ACCOUNT}:user/{user}"}, **values)]  # fmt: skip


def score_of(rows: list[dict], event_id: str) -> float:
    return float(finding_of(correlate(frame(rows)), event_id)["score"])


def test_a_chain_outranks_each_of_its_events_alone():
    rows = chain()
    whole = score_of(rows, "stop")
    for single in rows:
        assert whole > score_of([single], single["eventID"]), single["eventID"]
    assert whole > 100  # not capped: order above 100 stays visible


def test_routine_events_add_nothing_and_many_weak_ones_do_not_beat_one_strong():
    alone = score_of(lone("strong", 80), "strong")
    with_noise = score_of(lone("strong", 80) + routine(1000, user="user-strong", step=3), "strong")
    assert with_noise - alone < 1e-9  # a thousand routine events (risk 5) add nothing
    weak = routine(1000, user="busy", risk=FLOOR + 15, step=3)
    assert score_of(weak, "busy-0") < score_of(lone("x", 80), "x") - 40


def test_lone_events_at_100_do_not_tie_and_more_tactics_rank_higher():
    scores = [score_of(lone(f"e{i}", 100.0, anomaly=a), f"e{i}") for i, a in enumerate((0.91, 0.93, 0.97))]
    assert len(set(scores)) == 3 and scores == sorted(scores)
    two = lone("t", 90, attack_technique="T1562.008") + [
        row("t2", 10, 90, attack_technique="T1098.001", principal=f"arn:aws:iam::{ACCOUNT}:user/user-t",
            **{"userIdentity.arn": f"arn:aws:iam::{ACCOUNT}:user/user-t"})]  # fmt: skip
    same = lone("s", 90, attack_technique="T1562.008") + [
        row("s2", 10, 90, attack_technique="T1562.001", principal=f"arn:aws:iam::{ACCOUNT}:user/user-s",
            **{"userIdentity.arn": f"arn:aws:iam::{ACCOUNT}:user/user-s"})]  # fmt: skip
    assert score_of(two, "t") > score_of(same, "s")


def test_ids_are_stable_across_reruns_and_row_order():
    rows = chain() + routine(30) + chain("m-", user="mallory", at=15)
    first = correlate(frame(rows)).table.set_index("finding_id")
    shuffled = frame(rows).sample(frac=1.0, random_state=7)
    second = correlate(shuffled).table.set_index("finding_id")
    assert sorted(first.index) == sorted(second.index)
    assert (first.loc[second.index, "score"].to_numpy() == second["score"].to_numpy()).all()


def test_identities_from_the_store_join_a_failed_sign_in_to_its_user():
    rows = chain()
    scores = frame(rows).drop(columns=[c for c in frame(rows).columns if c.startswith("userIdentity.")])
    without = correlate(scores)
    assert len(without.table) == 2  # the failed sign-in names only the principalId
    identities = frame(rows).set_index("eventID")[
        [c for c in frame(rows).columns if c.startswith("userIdentity.")]
    ]
    joined = correlate(scores, identities=identities)
    assert len(joined.table) == 1


def test_unscored_and_empty():
    rows = chain()
    rows[0]["risk_score"] = np.nan
    day = correlate(frame(rows))
    assert day.table["count"].sum() == 5
    empty = correlate(frame(rows).iloc[:0])
    assert empty.table.empty and empty.ranked().empty


@pytest.mark.parametrize(
    ("technique", "tactic"),
    [("T1098.003", "privilege-escalation"), ("T1098.001", "persistence"), ("T1562.008", "defense-evasion"),
     ("T1580", "discovery"), ("javascript:alert(1)", None), (None, None)],
)  # fmt: skip
def test_technique_tactic(technique, tactic):
    assert technique_tactic(technique) == tactic
