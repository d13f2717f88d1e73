"""The GuardDuty parity table: every covered or partial finding type fires its rule on a positive event and
stays silent on a near miss; the table names only rules that exist; the attack sequence is one finding."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pytest
from trailguard.detect import guardduty
from trailguard.detect.engine import all_detections, label_events
from trailguard.detect.samples import ACCOUNT, ALICE, ROOT, call
from trailguard.detect.samples import login as login_record
from trailguard.ingest import normalise
from trailguard.intel import reputation


def row(name: str, source: str, params: Any = None, **fields: Any) -> dict[str, Any]:
    """A normalised record, as the rules see it in production."""
    return normalise.normalise(call(name, source, params, **fields), "test")


def login(identity: dict[str, Any], result: str, mfa: str = "No") -> dict[str, Any]:
    return normalise.normalise(login_record(identity, result, mfa), "test")


INSTANCE = {"type": "AssumedRole", "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/web/i-0382ede3231f87fc1",
            "accountId": ACCOUNT, "principalId": "AROAEXAMPLE:i-0382ede3231f87fc1"}  # fmt: skip
SUCCESS = {
    "type": "IAMUser",
    "arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
    "accountId": ACCOUNT,
    "userName": "alice",
}


def at(event: dict[str, Any], minute: int, **values: Any) -> dict[str, Any]:
    return {
        **event,
        "eventTime": datetime(2026, 11, 20, 9, tzinfo=timezone.utc) + timedelta(minutes=minute),
        **values,
    }


def secrets(n: int) -> list[dict[str, Any]]:
    return [
        at(row("GetSecretValue", "secretsmanager", {"secretId": f"s{i}"}, eventID=f"s-{i}"), i // 6)
        for i in range(n)
    ]


def denied(n: int) -> list[dict[str, Any]]:
    return [at(row("DescribeInstances", "ec2", errorCode="Client.UnauthorizedOperation", eventID=f"d-{i}"), i // 10)
            for i in range(n)]  # fmt: skip


def deletions(n: int) -> list[dict[str, Any]]:
    return [at(row("DeleteObject", "s3", {"bucketName": "b", "key": f"k{i}"}, eventID=f"o-{i}"), i // 100)
            for i in range(n)]  # fmt: skip


def case(rule_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """The rule's own first firing case and first near miss from the catalogue."""
    detection = next(d for d in all_detections() if d.rule_id == rule_id)
    positive = next(c for c in detection.cases if c.fires)
    near = next(c for c in detection.cases if not c.fires)
    normal = [normalise.normalise(dict(r), "test") for r in positive.records]
    return normal, [normalise.normalise(dict(r), "test") for r in near.records], rule_id


def two_logins(ip: str) -> list[dict[str, Any]]:
    first = at(login(SUCCESS, "Success", "Yes"), 0, sourceIPAddress="24.6.171.20", eventID="l-1")
    return [first, at(login(SUCCESS, "Success", "Yes"), 20, sourceIPAddress=ip, eventID="l-2")]


AGENT = "aws-cli/1.22.34 Python/3.9.10 Linux/5.15.0-{}-amd64"
UBUNTU = "aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0-21-generic exe/x86_64.ubuntu.22"
LISTED, TOR = "203.0.113.66", "185.220.101.1"

# finding type -> (positive events, near-miss events, the rule expected on the positive)
SAMPLES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]], str]] = {
    "CredentialAccess:IAMUser/AnomalousBehavior": (secrets(30), secrets(3), "secrets_harvest"),
    "DefenseEvasion:IAMUser/AnomalousBehavior": case("cloudtrail_stopped"),
    "Discovery:IAMUser/AnomalousBehavior": (denied(40), denied(5), "access_denied_burst"),
    "Exfiltration:IAMUser/AnomalousBehavior": case("s3_bucket_replication_set"),
    "Impact:IAMUser/AnomalousBehavior": (deletions(600), deletions(20), "s3_mass_deletion"),
    "InitialAccess:IAMUser/AnomalousBehavior": case("console_login_without_mfa"),
    "Persistence:IAMUser/AnomalousBehavior": case("iam_access_key_for_other_user"),
    "PrivilegeEscalation:IAMUser/AnomalousBehavior": case("iam_admin_policy_attached"),
    "Recon:IAMUser/MaliciousIPCaller": ([row("ListUsers", "iam", sourceIPAddress=LISTED)], [row("ListUsers", "iam")], "ip_on_threat_list"),
    "Recon:IAMUser/MaliciousIPCaller.Custom": ([row("ListRoles", "iam", sourceIPAddress=LISTED)], [row("ListRoles", "iam")], "ip_on_threat_list"),
    "Recon:IAMUser/TorIPCaller": ([row("ListUsers", "iam", sourceIPAddress=TOR)], [row("ListUsers", "iam")], "tor_exit_caller"),
    "UnauthorizedAccess:IAMUser/MaliciousIPCaller": ([row("CreateUser", "iam", {"userName": "x"}, sourceIPAddress=LISTED)],
                                                      [row("CreateUser", "iam", {"userName": "x"})], "ip_on_threat_list"),
    "UnauthorizedAccess:IAMUser/MaliciousIPCaller.Custom": ([row("PutObject", "s3", sourceIPAddress=LISTED)], [row("PutObject", "s3")], "ip_on_threat_list"),
    "UnauthorizedAccess:IAMUser/TorIPCaller": ([row("PutObject", "s3", sourceIPAddress=TOR)], [row("PutObject", "s3")], "tor_exit_caller"),
    "UnauthorizedAccess:IAMUser/ConsoleLoginSuccess.B": (two_logins("8.210.12.33"), two_logins("24.6.10.1"), "console_login_two_places"),
    "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS": (
        [row("ListBuckets", "s3", userIdentity=INSTANCE, sourceIPAddress="8.210.12.33")],
        [row("ListBuckets", "s3", userIdentity=INSTANCE, sourceIPAddress="3.218.180.10")], "instance_credentials_outside_aws"),
    "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.InsideAWS": (
        [row("ListBuckets", "s3", userIdentity=INSTANCE, sourceIPAddress="10.1.2.3", vpcEndpointId="vpce-1", vpcEndpointAccountId="999988887777")],
        [row("ListBuckets", "s3", userIdentity=INSTANCE, sourceIPAddress="10.1.2.3", vpcEndpointId="vpce-1", vpcEndpointAccountId=ACCOUNT)],
        "instance_credentials_other_account"),
    "Stealth:IAMUser/CloudTrailLoggingDisabled": case("cloudtrail_stopped"),
    "Stealth:IAMUser/PasswordPolicyChange": ([row("DeleteAccountPasswordPolicy", "iam")],
                                             [row("DeleteAccountPasswordPolicy", "iam", errorCode="NoSuchEntity")], "iam_password_policy_changed"),
    "Policy:IAMUser/RootCredentialUsage": case("root_activity"),
    "Policy:IAMUser/ShortTermRootCredentialUsage": (
        [row("PutBucketVersioning", "s3", {"bucketName": "b"}, userIdentity={**ROOT, "accessKeyId": "ASIAROOTTEMP"}, readOnly=False)],
        [row("PutBucketVersioning", "s3", {"bucketName": "b"}, userIdentity=ALICE, readOnly=False)], "root_activity"),
    "PenTest:IAMUser/KaliLinux": ([row("ListUsers", "iam", userAgent=AGENT.format("kali3"))], [row("ListUsers", "iam", userAgent=UBUNTU)], "pentest_distribution_user_agent"),
    "PenTest:IAMUser/ParrotLinux": ([row("ListUsers", "iam", userAgent=AGENT.format("parrot"))], [row("ListUsers", "iam", userAgent=UBUNTU)], "pentest_distribution_user_agent"),
    "PenTest:IAMUser/PentooLinux": ([row("ListUsers", "iam", userAgent=AGENT.format("pentoo"))], [row("ListUsers", "iam", userAgent=UBUNTU)], "pentest_distribution_user_agent"),
    "Policy:S3/AccountBlockPublicAccessDisabled": ([row("DeleteAccountPublicAccessBlock", "s3control")],
                                                    [row("GetAccountPublicAccessBlock", "s3control")], "s3_public_access_block_removed"),
    "Policy:S3/BucketBlockPublicAccessDisabled": ([row("DeleteBucketPublicAccessBlock", "s3", {"bucketName": "b"})],
                                                   [row("GetBucketPublicAccessBlock", "s3", {"bucketName": "b"})], "s3_public_access_block_removed"),
    "Policy:S3/BucketAnonymousAccessGranted": case("s3_bucket_acl_public"),
    "Policy:S3/BucketPublicAccessGranted": case("s3_bucket_policy_public"),
    "Stealth:S3/ServerAccessLoggingDisabled": case("logs_deleted_or_disabled"),
}  # fmt: skip


@pytest.fixture
def threat_list(tmp_path, monkeypatch):
    path = tmp_path / "acme.txt"
    path.write_text(f"{LISTED}\n")
    monkeypatch.setenv("TRAILGUARD_THREAT_LISTS", f"acme={path}")
    reputation.load_lists.cache_clear()
    yield
    reputation.load_lists.cache_clear()


def rules_fired(events: list[dict[str, Any]]) -> set[str]:
    out = label_events(pd.DataFrame(events))
    return {r for rules in out["lf_rules"] for r in rules.split(",") if r}


def test_the_table_names_existing_rules_and_counts_every_row():
    known = {d.rule_id for d in all_detections()} | {guardduty.CORRELATION, guardduty.NOVELTY}
    for row_ in guardduty.PARITY:
        assert set(row_.covered_by) <= known, row_
        assert row_.status in (guardduty.COVERED, guardduty.PARTIAL, guardduty.NOT_COVERABLE) and row_.note
    counts = guardduty.counts()
    assert sum(counts.values()) == len(guardduty.PARITY) == len({r.finding_type for r in guardduty.PARITY})
    assert counts == {"covered": 25, "partial": 5, "not coverable": 1}
    coverable = {r.finding_type for r in guardduty.PARITY if r.status != guardduty.NOT_COVERABLE}
    assert coverable - {"AttackSequence:IAM/CompromisedCredentials"} == set(SAMPLES)
    assert "25 covered, 5 partial, 1 not coverable" in guardduty.markdown()


@pytest.mark.parametrize("finding_type", sorted(SAMPLES))
def test_positive_fires_and_near_miss_is_silent(finding_type, threat_list):
    positive, near_miss, rule_id = SAMPLES[finding_type]
    entry = next(r for r in guardduty.PARITY if r.finding_type == finding_type)
    assert rule_id in entry.covered_by
    assert rule_id in rules_fired(positive), finding_type
    assert rule_id not in rules_fired(near_miss), finding_type


def test_attack_sequence_compromised_credentials_is_one_finding():
    from trailguard.findings.correlate import correlate

    def scored(events: list[dict[str, Any]], risks: list[float]) -> pd.DataFrame:
        frame = pd.DataFrame(events)
        labels = label_events(frame)
        return frame.assign(risk_score=risks, lf_rules=labels["lf_rules"], attack_technique=labels["attack_technique"],
                            principal=frame["userIdentity.arn"])  # fmt: skip

    chain = [at(row("ListUsers", "iam", sourceIPAddress=TOR, eventID="c-1"), 0),
             at(row("CreateAccessKey", "iam", {"userName": "bob"}, sourceIPAddress=TOR, eventID="c-2"), 2),
             at(row("StopLogging", "cloudtrail", {"name": "t"}, sourceIPAddress=TOR, eventID="c-3"), 5)]  # fmt: skip
    day = correlate(scored(chain, [75, 80, 90]))
    assert len(day.table) == 1
    finding = day.table.iloc[0]
    assert finding["count"] == 3 and {"persistence", "defense-evasion"} <= set(finding["tactics"])
    lone = correlate(scored(chain[2:], [90]))
    assert finding["score"] > lone.table.iloc[0]["score"]
    # near miss: the same calls by three different credentials are three findings, none a sequence
    apart = [{**e, "userIdentity.arn": f"arn:aws:iam::{ACCOUNT}:user/u{i}"} for i, e in enumerate(chain)]
    assert len(correlate(scored(apart, [75, 80, 90])).table) == 3
    json.dumps(guardduty.markdown())


def test_rules_guardduty_command(capsys):
    from trailguard import cli

    assert cli.main(["rules", "--guardduty"]) == 0
    out = capsys.readouterr().out
    assert "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS" in out
    assert out.rstrip().endswith("31 finding types: 25 covered, 5 partial, 1 not coverable")
    assert cli.main(["rules", "--guardduty", "--format", "markdown"]) == 0
    assert capsys.readouterr().out == guardduty.markdown()
