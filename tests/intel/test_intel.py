"""Networks and threat lists: the shipped dated data, AWS ranges refreshed from a file, user lists in every
format from a file and from S3 (a real moto server), and the frame rules that use them."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from trailguard.detect.engine import label_events
from trailguard.intel import networks, reputation
from trailguard.intel.networks import aws_ranges, origin_of, refresh_aws_ranges, snapshot_date
from trailguard.intel.reputation import ThreatListError, load_list, matches, parse_list

ACCOUNT = "111122223333"
INSTANCE = f"arn:aws:sts::{ACCOUNT}:assumed-role/web-server-role/i-0382ede3231f87fc1"
TOR_EXIT = "185.220.101.1"  # in the shipped Tor ranges
AWS_IP = "3.218.180.10"  # an EC2 address in AWS's published ranges
OUTSIDE = "8.210.12.33"  # Alibaba Cloud

STIX = {
    "type": "bundle", "id": "bundle--1", "objects": [
        {"type": "indicator", "id": "indicator--1", "name": "Botnet C2", "pattern_type": "stix",
         "pattern": "[ipv4-addr:value = '203.0.113.66']"},
        {"type": "indicator", "id": "indicator--2", "name": "Scanner net", "pattern_type": "stix",
         "pattern": "[ipv4-addr:value ISSUBSET '198.51.100.0/24'] OR [ipv6-addr:value = '2001:db8::1']"},
        {"type": "indicator", "id": "indicator--3", "name": "revoked", "revoked": True, "pattern_type": "stix",
         "pattern": "[ipv4-addr:value = '192.0.2.1']"},
        {"type": "indicator", "id": "indicator--4", "name": "a domain", "pattern_type": "stix",
         "pattern": "[domain-name:value = 'evil.example']"},
        {"type": "malware", "id": "malware--1", "name": "not an indicator"},
    ],
}  # fmt: skip


def test_plain_csv_stix_and_tor_lists():
    plain = parse_list("blocklist", b"# my list\n203.0.113.66\n198.51.100.0/24  # a net\nnot-an-ip\n\n")
    assert plain.entries == 2 and plain.rejected == 1
    assert (
        plain.match("198.51.100.200") == ""
        and plain.match("203.0.113.66") == ""
        and plain.match("192.0.2.1") is None
    )
    csv_list = parse_list(
        "feed", b"first_seen,ip_address,threat\n2026-11-01,203.0.113.66,botnet\n2026-11-02,,x\n"
    )
    assert csv_list.entries == 1 and csv_list.rejected == 1 and csv_list.match("203.0.113.66") == "botnet"
    stix = parse_list("stix", json.dumps(STIX).encode())
    assert stix.match("203.0.113.66") == "Botnet C2" and stix.match("198.51.100.9") == "Scanner net"
    assert stix.match("2001:db8::1") == "Scanner net" and stix.match("192.0.2.1") is None  # revoked
    assert stix.rejected == 1  # the domain indicator
    tor = parse_list(
        "tor", b"ExitNode 0011\nPublished 2026-11-20\nExitAddress 185.220.101.1 2026-11-20 10:00:00\n"
    )
    assert tor.match(TOR_EXIT) == "Tor exit"
    nested = parse_list("nested", b"10.0.0.0/8\n10.1.2.3\n")
    assert nested.match("10.200.0.1") == "" and nested.match("10.1.2.3") == ""
    assert matches("203.0.113.66", (plain, stix)) == [("blocklist", ""), ("stix", "Botnet C2")]
    with pytest.raises(ThreatListError, match="no address"):
        parse_list("empty", b"# nothing here\n")


def test_lists_from_a_file_and_from_s3(tmp_path, moto_server, monkeypatch):
    path = tmp_path / "acme-blocklist.txt"
    path.write_text("203.0.113.66\n")
    assert load_list(str(path)).name == "acme-blocklist" and load_list(f"partners={path}").name == "partners"
    with pytest.raises(ThreatListError, match=r"threat list missing .* cannot be read"):
        load_list(str(tmp_path / "missing.txt"))

    import boto3
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s3fs.S3FileSystem.clear_instance_cache()
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    client.create_bucket(Bucket="intel")
    client.put_object(Bucket="intel", Key="feeds/stix.json", Body=json.dumps(STIX).encode())
    threat = load_list("vendor=s3://intel/feeds/stix.json")
    assert threat.name == "vendor" and threat.match("203.0.113.66") == "Botnet C2"
    s3fs.S3FileSystem.clear_instance_cache()


def test_shipped_network_data_is_dated_and_offline():
    assert snapshot_date().startswith("2026-")
    assert origin_of(TOR_EXIT).kind == "tor" and origin_of(OUTSIDE).provider == "Alibaba Cloud"
    assert origin_of("10.1.2.3").kind == "reserved" and origin_of("ec2.amazonaws.com").kind == ""
    shipped = aws_ranges("/nonexistent-root")
    assert AWS_IP in shipped and OUTSIDE not in shipped and "2a05:d018::1" in shipped
    assert shipped.label == f"AWS IP ranges of {snapshot_date()} (shipped)"


def test_aws_ranges_refreshed_from_a_file(tmp_path):
    document = {"syncToken": "1", "createDate": "2026-11-30-08-00-00",
                "prefixes": [{"ip_prefix": "8.210.0.0/16", "region": "ap-east-1", "service": "EC2"}],
                "ipv6_prefixes": [{"ipv6_prefix": "2600:1f00::/24", "region": "us-east-1", "service": "EC2"}]}  # fmt: skip
    source = tmp_path / "ip-ranges.json"
    source.write_text(json.dumps(document))
    root = tmp_path / "data"
    ranges = refresh_aws_ranges(source, root)
    assert (root / "intel" / "aws-ip-ranges.json").exists() and ranges.date == "2026-11-30"
    loaded = aws_ranges(str(root))
    assert OUTSIDE in loaded and AWS_IP not in loaded and "2600:1f00::5" in loaded
    assert loaded.label == "AWS IP ranges of 2026-11-30 (refreshed, aws-ip-ranges.json)"
    bad = tmp_path / "bad.json"
    bad.write_text('{"nothing": 1}')
    with pytest.raises(ValueError, match="no 'prefixes' list"):
        refresh_aws_ranges(bad, root)
    assert aws_ranges(str(root)).date == "2026-11-30"  # a bad refresh leaves the good file
    networks.aws_ranges.cache_clear()


def event(
    event_id: str, ip: str, arn: str = f"arn:aws:iam::{ACCOUNT}:user/alice", kind: str = "IAMUser"
) -> dict:
    return {"eventID": event_id, "eventTime": pd.Timestamp("2026-11-20T10:00:00Z"), "eventName": "DescribeInstances",
            "eventSource": "ec2.amazonaws.com", "sourceIPAddress": ip, "userIdentity.arn": arn,
            "userIdentity.type": kind, "userIdentity.accountId": ACCOUNT, "recipientAccountId": ACCOUNT}  # fmt: skip


def rules_of(frame: pd.DataFrame) -> dict[str, set[str]]:
    out = label_events(frame)
    return {
        e: set(filter(None, r.split(","))) for e, r in zip(frame["eventID"], out["lf_rules"], strict=True)
    }


def test_instance_credentials_outside_aws(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAILGUARD_DATA", str(tmp_path))
    networks.aws_ranges.cache_clear()
    frame = pd.DataFrame([
        event("stolen", OUTSIDE, INSTANCE, "AssumedRole"),
        event("on-aws", AWS_IP, INSTANCE, "AssumedRole"),
        event("private", "10.20.3.41", INSTANCE, "AssumedRole"),
        event("service", "secretsmanager.amazonaws.com", INSTANCE, "AssumedRole"),
        event("not-instance", OUTSIDE, f"arn:aws:sts::{ACCOUNT}:assumed-role/web-server-role/alice", "AssumedRole"),
    ])  # fmt: skip
    fired = rules_of(frame)
    assert "instance_credentials_outside_aws" in fired["stolen"]
    assert not any("instance_credentials" in r for e, rs in fired.items() if e != "stolen" for r in rs)
    reasons = label_events(frame)["lf_reasons"].iloc[0]
    assert "role web-server-role (instance i-0382ede3231f87fc1) used from 8.210.12.33, outside AWS" in reasons
    assert f"AWS IP ranges of {snapshot_date()} (shipped)" in reasons
    networks.aws_ranges.cache_clear()


def test_instance_credentials_through_another_accounts_endpoint():
    inside = {**event("other-account", "10.20.3.41", INSTANCE, "AssumedRole"), "vpcEndpointId": "vpce-0abc",
              "vpcEndpointAccountId": "999988887777"}  # fmt: skip
    same = {**inside, "eventID": "same-account", "vpcEndpointAccountId": ACCOUNT}
    fired = rules_of(pd.DataFrame([inside, same]))
    assert "instance_credentials_other_account" in fired["other-account"]
    assert "instance_credentials_other_account" not in fired["same-account"]


def test_threat_list_and_tor_callers_name_their_source(monkeypatch, tmp_path):
    path = tmp_path / "stix.json"
    path.write_text(json.dumps(STIX))
    frame = pd.DataFrame(
        [event("listed", "203.0.113.66"), event("tor", TOR_EXIT), event("clean", "192.0.2.200")]
    )
    monkeypatch.delenv("TRAILGUARD_THREAT_LISTS", raising=False)
    assert "ip_on_threat_list" not in rules_of(frame)["listed"]  # offline default: no lists
    monkeypatch.setenv("TRAILGUARD_THREAT_LISTS", f"acme-intel={path}")
    reputation.load_lists.cache_clear()
    out = label_events(frame)
    fired = rules_of(frame)
    assert (
        fired["listed"] == {"ip_on_threat_list"} and "tor_exit_caller" in fired["tor"] and not fired["clean"]
    )
    assert "source 203.0.113.66 is on threat list 'acme-intel' (Botnet C2)" in out["lf_reasons"].iloc[0]
    assert f"Tor exit node (network data of {snapshot_date()})" in out["lf_reasons"].iloc[1]
    reputation.load_lists.cache_clear()
