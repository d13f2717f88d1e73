"""The usual-vs-now panel on a hand-built history profile."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
from trailguard.findings.baseline import load_baseline, org_counts, panel, panel_lines, role_of

ALICE = "arn:aws:iam::111122223333:user/alice"
ROLE = "arn:aws:sts::111122223333:assumed-role/web-server-role/"


def profile(rows: list[tuple[str, str, str, int]]) -> pa.Table:
    return pa.Table.from_pandas(
        pd.DataFrame(rows, columns=["dim", "principal", "value", "count"]), preserve_index=False
    )


HISTORY = profile([
    ("_events", ALICE, "", 1240), ("event_name", ALICE, "DescribeInstances", 1000),
    ("event_name", ALICE, "ListBuckets", 240), ("asn", ALICE, "AMAZON-02", 1240), ("country", ALICE, "US", 1240),
    ("ua", ALICE, "aws-cli", 1240), ("region", ALICE, "us-east-1", 1240), ("hour", ALICE, "9", 1240),
    ("asn", "arn:aws:iam::111122223333:user/bob", "M247", 3), ("asn", "*", "M247", 3),
    ("_events", ROLE + "i-0aaa", "", 500), ("asn", ROLE + "i-0aaa", "private", 500),
    ("country", ROLE + "i-0aaa", "private", 500), ("event_name", ROLE + "i-0aaa", "GetSecretValue", 500),
])  # fmt: skip


def members(principal: str, names: list[str], asn: str = "M247", country: str = "RO") -> pd.DataFrame:
    return pd.DataFrame({
        "principal": principal, "eventName": names, "asn": asn, "country": country, "ua_family": "aws-cli",
        "awsRegion": "us-east-1", "eventTime": datetime(2026, 11, 20, 3, tzinfo=timezone.utc),
    })  # fmt: skip


def dimension(result: dict, name: str) -> dict:
    return next(d for d in result["dimensions"] if d["dimension"] == name)


def test_usual_vs_now_with_counts_and_organisation_rarity():
    now = members(ALICE, ["CreateAccessKey"] * 1 + ["DescribeInstances"] * 13)
    baseline = load_baseline(HISTORY, [ALICE], days=30)
    org = org_counts(HISTORY, {"event_name": {"CreateAccessKey", "DescribeInstances"}, "asn": {"M247"}})
    result = panel(now, ALICE, baseline, org)
    assert result["baseline"] == {"level": "principal", "days": 30, "events": 1240}
    api = dimension(result, "event_name")
    assert api["usual"] == [["DescribeInstances", 1000], ["ListBuckets", 240]] and api["usual_total"] == 1240
    assert (
        api["now"][0]["value"] == "DescribeInstances"
        and api["now"][0]["now"] == 13
        and not api["now"][0]["first_seen"]
    )
    key = next(i for i in api["now"] if i["value"] == "CreateAccessKey")
    assert key["first_seen"] and key["before"] == 0 and key["org_events"] == 0
    asn = dimension(result, "asn")
    assert asn["usual"] == [["AMAZON-02", 1240]]
    assert asn["now"] == [
        {"value": "M247", "now": 14, "before": 0, "first_seen": True, "org_events": 3, "org_principals": 1}
    ]
    assert dimension(result, "hour")["now"][0]["value"] == "03:00" and dimension(result, "hour")["usual"] == [
        ["09:00", 1240]
    ]
    assert set(result["new_dimensions"]) == {"API", "network (ASN)", "country", "hour (UTC)"}
    lines = panel_lines(result)
    assert any(line.startswith("network (ASN): usually AMAZON-02 1,240 (of 1,240 over 30 days); now M247 x14 (first seen; 3 events by 1 principals")
               for line in lines), lines  # fmt: skip


def test_a_new_role_session_is_compared_with_its_role():
    session = ROLE + "i-0bbb"  # never seen: its instance was started today
    assert role_of(session) == ROLE and role_of(ALICE) is None
    result = panel(
        members(session, ["GetSecretValue"] * 5, asn="M247"), session, load_baseline(HISTORY, [session], 30)
    )
    assert result["baseline"]["level"] == "role web-server-role" and result["baseline"]["events"] == 500
    assert dimension(result, "asn")["usual"] == [["private", 500]]
    assert dimension(result, "event_name")["now"][0]["before"] == 500


def test_no_history_says_so():
    result = panel(
        members(ALICE, ["ListUsers"]), ALICE, load_baseline(profile([]).cast(HISTORY.schema), [ALICE], 30)
    )
    assert result["baseline"]["events"] == 0
    assert panel_lines(result)[0] == "no history for this principal in the last 30 days"


def test_a_sensitive_first_call_from_a_new_network_raises_the_finding():
    from trailguard.findings.baseline import behaviour_findings
    from trailguard.findings.correlate import correlate

    def scored(event_id: str, principal: str, name: str, source: str, asn: str, ip: str, error=None) -> dict:
        return {"eventID": event_id, "eventTime": datetime(2026, 11, 20, 3, tzinfo=timezone.utc), "risk_score": 30.0,
                "principal": principal, "eventName": name, "eventSource": source, "asn": asn, "sourceIPAddress": ip,
                "errorCode": error}  # fmt: skip

    frame = pd.DataFrame([
        scored("new", ALICE, "CreateAccessKey", "iam.amazonaws.com", "M247", "192.0.2.1"),  # first use, new network
        scored("usual-net", ALICE, "CreateAccessKey", "iam.amazonaws.com", "AMAZON-02", "192.0.2.2"),  # known network
        scored("known-api", ALICE, "DescribeInstances", "ec2.amazonaws.com", "M247", "192.0.2.3"),  # not sensitive
        scored("denied", ALICE, "CreateUser", "iam.amazonaws.com", "M247", "192.0.2.4", error="AccessDenied"),
        scored("no-history", "arn:aws:iam::111122223333:user/zed", "CreateUser", "iam.amazonaws.com", "M247", "192.0.2.5"),
        scored("role", ROLE + "i-0ccc", "PutRolePolicy", "iam.amazonaws.com", "M247", "192.0.2.6"),  # judged by its role
    ])  # fmt: skip
    day = correlate(frame)
    found = behaviour_findings(day, HISTORY, 30)
    flagged = {day.table.loc[row, "lead_event_id"] for row in found}
    assert flagged == {"new", "role"}
    reason = next(r for row, r in found.items() if day.table.loc[row, "lead_event_id"] == "new")
    assert reason == "first CreateAccessKey by alice from a network it never used (M247) in 30 days"
