"""Frame rules added for GuardDuty parity (issue 16): admin rights through a group not named admin, console
sign-ins from two places at once, penetration-testing distributions; each on a positive and a near miss."""

from __future__ import annotations

import pandas as pd
from trailguard.detect.engine import label_events

from tests.detect.test_detections import ACCOUNT, login, row


def fired(rows: list[dict]) -> list[set[str]]:
    out = label_events(pd.DataFrame(rows))
    return [set(filter(None, r.split(","))) for r in out["lf_rules"]]


def test_user_added_to_a_group_given_admin_rights_the_same_day():
    grant = row(
        "AttachGroupPolicy",
        "iam",
        {"groupName": "platform", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
    )
    add = row("AddUserToGroup", "iam", {"groupName": "platform", "userName": "mallory"}, eventID="add-1")
    other = row("AddUserToGroup", "iam", {"groupName": "readers", "userName": "bob"}, eventID="add-2")
    assert "iam_user_added_to_privileged_group" in fired([grant, add, other])[1]
    assert (
        "iam_user_added_to_privileged_group" not in fired([grant, add, other])[2]
    )  # near miss: another group
    read_only = row(
        "AttachGroupPolicy",
        "iam",
        {"groupName": "platform", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"},
    )
    assert "iam_user_added_to_privileged_group" not in fired([read_only, add])[1]
    inline = row("PutGroupPolicy", "iam", {"groupName": "platform", "policyDocument":
                 '{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}'})  # fmt: skip
    assert "iam_user_added_to_privileged_group" in fired([inline, add])[1]


def test_console_sign_ins_from_two_places_within_the_hour():
    here = {**login({"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/alice", "accountId": ACCOUNT,
                     "userName": "alice"}, "Success", mfa="Yes"),
            "sourceIPAddress": "24.6.171.20", "eventTime": pd.Timestamp("2026-11-20T09:00:00Z"), "eventID": "here"}  # fmt: skip
    there = {
        **here,
        "sourceIPAddress": "8.210.12.33",
        "eventTime": pd.Timestamp("2026-11-20T09:20:00Z"),
        "eventID": "there",
    }
    same_net = {**there, "sourceIPAddress": "24.6.10.1", "eventID": "same-net"}
    later = {**there, "eventTime": pd.Timestamp("2026-11-20T11:30:00Z"), "eventID": "later"}
    assert "console_login_two_places" in fired([here, there])[1]
    assert not any(
        "console_login_two_places" in f for f in fired([here, same_net])
    )  # near miss: same network
    assert not any("console_login_two_places" in f for f in fired([here, later]))  # near miss: hours apart
    reasons = label_events(pd.DataFrame([here, there]))["lf_reasons"].iloc[1]
    assert "from 8.210.12.33 20 min after a sign-in from 24.6.171.20" in reasons


def test_penetration_testing_distribution_in_the_user_agent():
    kali = row(
        "ListBuckets",
        "s3",
        userAgent="aws-cli/1.22.34 Python/3.9.10 Linux/5.15.0-kali3-amd64 botocore/1.24.7",
    )
    ubuntu = row(
        "ListBuckets",
        "s3",
        userAgent="aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0-21-generic exe/x86_64.ubuntu.22",
    )
    assert fired([kali, ubuntu]) == [{"pentest_distribution_user_agent"}, set()]
