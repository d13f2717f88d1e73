"""Features and enrichment on tiny frames with known answers (fast, no MLflow)."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from trailguard.ingest.normalise import normalise, rows_to_table
from trailguard.model import enrich
from trailguard.model.enrich import Enricher, Geoip2FastLookup, MaxMindLookup
from trailguard.model.features import (
    FEATURE_SETS,
    RULE_SCORE,
    build_features,
    load_day_features,
    load_history,
    profile_path,
    window_stats,
)
from trailguard.store.events import EventStore

ALICE = "arn:aws:iam::111122223333:user/alice"
BOB = "arn:aws:iam::111122223333:user/bob"
DAY = datetime(2026, 11, 20, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    return Enricher(Geoip2FastLookup())


def event(
    minute: float,
    *,
    day: datetime = DAY,
    arn: str | None = ALICE,
    name: str = "ListBuckets",
    source: str = "s3.amazonaws.com",
    ip: str = "8.8.8.8",
    ua: str = "aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0",
    region: str = "us-east-1",
    event_type: str = "AwsApiCall",
    identity_type: str = "IAMUser",
    error: str | None = None,
    **extra: object,
) -> dict:
    """One normalised event row, as the store holds it (dotted column names)."""
    return {
        "eventID": f"e-{day:%m%d}-{minute}-{name}-{arn}-{ip}",
        "eventTime": day + timedelta(minutes=minute),
        "eventType": event_type,
        "eventSource": source,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": ip,
        "userAgent": ua,
        "userIdentity.type": identity_type,
        "userIdentity.arn": arn,
        "userIdentity.accountId": "111122223333",
        "recipientAccountId": "111122223333",
        "errorCode": error,
        **extra,
    }


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


# -- behaviour against the principal's history ---------------------------------------------------------
def test_first_time_flags_against_history_and_earlier_today(enricher):
    history = frame(
        event(60, day=DAY - timedelta(days=3)),
        event(90, day=DAY - timedelta(days=2), name="GetObject"),
    )
    day = frame(
        event(600),  # usual IP, usual call
        event(610, ip="200.147.3.157"),  # Brazil: new IP, network, ASN and country for alice
        event(620, ip="200.147.3.157"),  # the same again: no longer new (causal)
        event(630, name="CreateUser", source="iam.amazonaws.com"),  # new call, new service
    )
    f = build_features(day, history, enricher=enricher)
    assert list(f.index) == list(day.index)
    assert f["first_ip"].tolist() == [0, 1, 0, 0]
    assert f["first_country"].tolist() == [0, 1, 0, 0]
    assert f["first_asn"].tolist() == [0, 1, 0, 0]
    assert f["first_network"].tolist() == [0, 1, 0, 0]
    assert f["first_event_name"].tolist() == [0, 0, 0, 1]
    assert f["first_event_source"].tolist() == [0, 0, 0, 1]
    assert f["novel_country"].tolist() == [0, 1, 1, 0]  # stays set for the whole day
    assert f["novel_event_name"].tolist() == [0, 0, 0, 1]
    assert f["new_principal"].tolist() == [0, 0, 0, 0]
    assert f.loc[1, "country"] == "BR" and f.loc[0, "country"] == "US"
    # rarity: the more often alice did it before, the lower
    assert f.loc[0, "rarity_ip"] < f.loc[1, "rarity_ip"]


def test_features_of_some_rows_equal_the_whole_days(enricher):
    """A part of the day (one region, say) gets exactly its rows of the whole day's features: each
    principal's counts take its events in the other parts too, the organisation's counts every event."""
    carol = "arn:aws:iam::444455556666:user/carol"
    history = frame(
        event(60, day=DAY - timedelta(days=2)),
        event(70, day=DAY - timedelta(days=2), arn=BOB, region="eu-west-1", name="GetObject"),
        event(-20, arn=carol, region="eu-west-1"),  # the last hour before the day: the window's tail
    )
    day = frame(
        event(5, arn=carol, region="eu-west-1", name="GetObject"),
        event(10),
        event(10, region="eu-west-1", ip="200.147.3.157"),  # alice in both regions, same minute
        event(12, arn=BOB, region="eu-west-1", name="GetObject", error="AccessDenied"),
        event(15, ip="200.147.3.157", name="CreateUser", source="iam.amazonaws.com"),
        event(16, arn=BOB, region="us-east-1", name="GetObject"),
        event(30, arn=carol, region="eu-west-1", name="CreateUser", source="iam.amazonaws.com"),
        event(31, arn=None, region="us-east-1", **{"userIdentity.principalId": "AIDAEXAMPLE"}),
    )
    whole = build_features(day, history, enricher=enricher)
    for region in ("us-east-1", "eu-west-1"):
        rows = (day["awsRegion"] == region).to_numpy()
        part = build_features(day, history, enricher=enricher, rows=rows)
        assert list(part.index) == list(day.index[rows])
        pd.testing.assert_frame_equal(part, whole[rows])
    none = build_features(day, history, enricher=enricher, rows=np.zeros(len(day), dtype=bool))
    assert len(none) == 0


def test_causal_order_follows_event_time_not_row_order(enricher):
    day = frame(event(620, ip="200.147.3.157"), event(610, ip="200.147.3.157"))
    f = build_features(day, frame(event(1, day=DAY - timedelta(days=1))), enricher=enricher)
    assert f["first_ip"].tolist() == [0, 1]  # the 10:10 one came first


def test_new_principal_has_no_history(enricher):
    history = frame(event(60, day=DAY - timedelta(days=1)))
    day = frame(event(600, arn=BOB), event(601, arn=BOB), event(602))
    f = build_features(day, history, enricher=enricher)
    assert f["new_principal"].tolist() == [1, 1, 0]
    assert f["log_prior_events"].tolist() == [0.0, pytest.approx(np.log1p(1)), pytest.approx(np.log1p(1))]


def test_principal_falls_back_to_principal_id_then_account(enricher):
    day = frame(
        event(1, arn=None, **{"userIdentity.principalId": "AIDAEXAMPLE"}),
        event(2, arn=None, **{"userIdentity.accountId": "999988887777"}),
    )
    f = build_features(day, None, enricher=enricher)
    assert f["principal"].tolist() == ["AIDAEXAMPLE", "999988887777"]


def test_last_hour_counts_errors_and_distinct_names(enricher):
    history = frame(event(-30, name="GetObject"))  # 23:30 the day before: inside the first event's hour
    day = frame(
        event(10, name="ListBuckets", error="AccessDenied"),
        event(20, name="ListBuckets"),
        event(50, name="GetBucketAcl", error="AccessDenied"),
        event(80, name="ListBuckets"),  # 01:20: only 00:50 and itself are inside (00:20, 01:20]
        event(30, arn=BOB, name="ListUsers"),  # another principal: its own window
    )
    f = build_features(day, history, enricher=enricher)
    assert f["last_hour_events"].tolist() == [2, 3, 3, 2, 1]
    assert f["last_hour_failures"].tolist() == [1, 1, 2, 1, 0]
    assert f["last_hour_distinct_names"].tolist() == [2, 2, 2, 2, 1]
    assert f.loc[2, "last_hour_failure_rate"] == pytest.approx(2 / 3)


def test_window_stats_matches_brute_force():
    rng = np.random.default_rng(3)
    n = 600
    principal = rng.integers(0, 5, n)
    times = np.sort(rng.integers(0, 6 * 3_600_000_000, n))
    rng.shuffle(times)
    names = rng.integers(0, 7, n)
    failed = rng.random(n) < 0.2
    window = 3_600_000_000
    counts, fails, distinct = window_stats(principal, times, names, failed, window)
    for i in range(n):
        # (t - window, t], earlier rows at the same time count, later ones do not
        inside = [
            j
            for j in range(n)
            if principal[j] == principal[i]
            and times[i] - window < times[j] <= times[i]
            and (times[j] < times[i] or j <= i)
        ]
        assert counts[i] == len(inside)
        assert fails[i] == sum(failed[j] for j in inside)
        assert distinct[i] == len({names[j] for j in inside})


# -- context --------------------------------------------------------------------------------------------
def test_aws_service_principals_and_automation_are_recognised(enricher):
    day = frame(
        event(
            1,
            arn=None,
            identity_type="AWSService",
            ip="config.amazonaws.com",
            ua="config.amazonaws.com",
            **{"userIdentity.invokedBy": "config.amazonaws.com"},
        ),
        event(
            2,
            arn="arn:aws:sts::111122223333:assumed-role/AWSServiceRoleForConfig/AWSConfig-Describe",
            identity_type="AssumedRole",
        ),
        event(
            3,
            arn="arn:aws:iam::111122223333:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS",
            identity_type="AssumedRole",
        ),
        event(4, ip="AWS Internal"),
        event(5, identity_type="IAMUser", **{"userIdentity.invokedBy": "cloudformation.amazonaws.com"}),
        event(6),
        event(
            7, ua="APN/1.0 HashiCorp/1.0 Terraform/1.13.4 terraform-provider-aws/6.18.0 aws-sdk-go-v2/1.39.4"
        ),
    )
    f = build_features(day, None, enricher=enricher)
    assert f["is_aws_service"].tolist() == [1, 1, 1, 1, 1, 0, 0]
    assert f["is_automation"].tolist() == [1, 1, 1, 1, 1, 0, 1]
    assert f.loc[0, "country"] == "AWS" and f.loc[0, "network_zone"] == "aws_service"


def test_console_sign_in_fields(enricher):
    day = frame(
        event(
            1,
            event_type="AwsConsoleSignIn",
            name="ConsoleLogin",
            source="signin.amazonaws.com",
            ua="Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            **{"responseElements.ConsoleLogin": "Success", "additionalEventData.MFAUsed": "No"},
        ),
        event(
            2,
            event_type="AwsConsoleSignIn",
            name="ConsoleLogin",
            source="signin.amazonaws.com",
            identity_type="Root",
            arn="arn:aws:iam::111122223333:root",
            **{"responseElements.ConsoleLogin": "Failure", "additionalEventData.MFAUsed": "Yes"},
        ),
        event(3, event_type="AwsServiceEvent"),
    )
    f = build_features(day, None, enricher=enricher)
    assert f["use_case"].tolist() == ["console_login", "console_login", "other"]
    assert f["login_outcome"].tolist()[:2] == ["success", "failure"]
    assert f["mfa"].tolist()[:2] == ["no", "yes"]
    assert f["failed"].tolist() == [0, 1, 0]
    assert f["is_root"].tolist() == [0, 1, 0]
    assert f["category"].tolist()[:2] == ["auth", "error"]
    assert f["ua_family"].tolist()[0] == "browser"
    assert f["principal_short"].tolist()[:2] == ["alice", "root"]


def test_every_feature_set_column_is_built(enricher):
    f = build_features(
        frame(event(1), event(2, event_type="AwsConsoleSignIn", name="ConsoleLogin")), None, enricher=enricher
    )
    for fs in FEATURE_SETS.values():
        missing = [
            c for c in fs.columns if c not in f.columns and c != RULE_SCORE
        ]  # added by training/scoring
        assert not missing, missing
        assert f[[c for c in fs.numeric if c != RULE_SCORE]].notna().all().all()


@pytest.mark.parametrize(
    ("source", "name", "error", "read_only", "expected"),
    [
        ("iam.amazonaws.com", "CreateAccessKey", None, None, "iam_change"),
        ("iam.amazonaws.com", "ListUsers", None, True, "read"),
        ("ec2.amazonaws.com", "AuthorizeSecurityGroupIngress", None, None, "notable_network"),
        ("ec2.amazonaws.com", "CreateSubnet", None, None, "network"),
        ("ec2.amazonaws.com", "RunInstances", None, None, "ec2"),
        ("ec2.amazonaws.com", "DescribeInstances", None, True, "read"),
        ("s3.amazonaws.com", "DeleteBucket", None, None, "delete"),
        ("sns.amazonaws.com", "Publish", None, None, "sns"),
        ("sts.amazonaws.com", "AssumeRole", None, None, "auth"),
        ("signin.amazonaws.com", "ConsoleLogin", None, None, "auth"),
        ("s3.amazonaws.com", "PutBucketPolicy", None, False, "change"),
        ("s3.amazonaws.com", "PutBucketPolicy", "AccessDenied", False, "error"),
        ("cloudtrail.amazonaws.com", "LookupEvents", None, None, "read"),
    ],
)
def test_event_category(source, name, error, read_only, expected):
    df = pd.DataFrame([{"eventSource": source, "eventName": name, "errorCode": error, "readOnly": read_only}])
    assert enrich.event_category(df).tolist() == [expected]


@pytest.mark.parametrize(
    ("agent", "family"),
    [
        ("aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0-21-generic exe/x86_64.ubuntu.22", "aws-cli"),
        ("aws-cli/1.22.34 Python/3.9.10 Linux/5.15.0-kali3-amd64 botocore/1.24.7", "aws-cli"),
        ("Boto3/1.40.4 md/Botocore#1.40.4 ua/2.1 os/linux lang/python#3.12.11", "boto3"),
        ("aws-sdk-go/1.55.7 (go1.24.6; linux; amd64) amazon-ssm-agent/3.3.3050.0", "aws-sdk-go"),
        ("aws-sdk-java/1.12.788 Linux/5.10 OpenJDK_64-Bit_Server_VM/25.462-b08", "aws-sdk-java"),
        ("aws-sdk-js/3.893.0 ua/2.1 os/linux lang/js md/nodejs#20.19.4", "aws-sdk-js"),
        (
            "APN/1.0 HashiCorp/1.0 Terraform/1.13.4 terraform-provider-aws/6.18.0 aws-sdk-go-v2/1.39.4",
            "terraform",
        ),
        ("cloudformation.amazonaws.com", "cloudformation"),
        ("console.ec2.amazonaws.com", "console"),
        ("[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.788]", "console"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Safari/605.1.15", "browser"),
        ("AWS Internal", "aws-service"),
        ("lambda.amazonaws.com", "aws-service"),
        ("python-requests/2.31.0", "other"),
        (None, "none"),
    ],
)
def test_user_agent_family(agent, family):
    assert enrich.ua_family(pd.Series([agent], dtype=object)).tolist() == [family]


def test_offensive_user_agents():
    agents = pd.Series(
        ["aws-cli/1.22.34 Python/3.9.10 Linux/5.15.0-kali3-amd64", "aws-cli/2.15.30 Linux/6.5", None]
    )
    assert enrich.ua_offensive(agents).tolist() == [True, False, False]


# -- GeoIP ----------------------------------------------------------------------------------------------
def test_geoip_of_real_addresses(enricher):
    ips = pd.Series(
        [
            "8.8.8.8",
            "10.1.2.3",
            "2001:4860:4860::8888",
            "200.147.3.157",
            "ec2.amazonaws.com",
            "AWS Internal",
            "not-an-ip",
            None,
            "172.16.5.4",
            "fd00::1",
            "192.168.1.9",
        ]
    )
    geo = enricher.enrich(ips)
    assert geo["country"].tolist() == [
        "US",
        "private",
        "US",
        "BR",
        "AWS",
        "AWS",
        "unknown",
        "unknown",
        "private",
        "private",
        "private",
    ]
    assert geo["network_zone"].tolist()[:5] == ["public", "private", "public", "public", "aws_service"]
    assert geo.loc[0, "asn"] == "GOOGLE"
    assert geo.loc[0, "ip_network"] == "8.8.8.0/24"
    assert geo.loc[2, "ip_network"] == "2001:4860:4860::/48"


def test_vpc_endpoint_calls_are_private(enricher):
    ips = pd.Series(["8.8.8.8", "8.8.8.8"])
    geo = enricher.enrich(ips, pd.Series([None, "vpce-0123456789abcdef0"]))
    assert geo["country"].tolist() == ["US", "private"]
    assert geo["network_zone"].tolist() == ["public", "vpc_endpoint"]


def _mmdb(path: Path, database_type: str, networks: dict[str, dict]) -> Path:
    """Write a real MaxMind DB file (format 2.0, IPv4 tree, 24-bit records) holding ``networks``."""

    def enc(value: object) -> bytes:
        def ctrl(kind: int, size: int) -> bytes:
            assert size < 285
            low, extra = (size, b"") if size < 29 else (29, bytes([size - 29]))
            head = bytes([(kind << 5) | low]) if kind <= 7 else bytes([low, kind - 7])
            return head + extra

        if isinstance(value, str):
            raw = value.encode()
            return ctrl(2, len(raw)) + raw
        if isinstance(value, dict):
            return ctrl(7, len(value)) + b"".join(enc(k) + enc(v) for k, v in value.items())
        if isinstance(value, list):
            return ctrl(11, len(value)) + b"".join(enc(v) for v in value)
        if isinstance(value, tuple):  # (type, int): 5 uint16, 6 uint32, 9 uint64
            kind, number = value
            raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
            return ctrl(kind, len(raw)) + raw
        raise TypeError(value)

    data, offsets = b"", []
    for record in networks.values():
        offsets.append(len(data))
        data += enc(record)
    nodes: list[list[object]] = [[None, None]]
    for (net, _), offset in zip(networks.items(), offsets, strict=True):
        network = ipaddress.ip_network(net)
        bits = format(int(network.network_address), "032b")[: network.prefixlen]
        node = 0
        for depth, bit in enumerate(bits):
            side = int(bit)
            if depth == len(bits) - 1:
                nodes[node][side] = ("data", offset)
            else:
                if not isinstance(nodes[node][side], int):
                    nodes.append([None, None])
                    nodes[node][side] = len(nodes) - 1
                node = nodes[node][side]  # type: ignore[assignment]
    count = len(nodes)

    def record(value: object) -> int:
        if value is None:
            return count
        if isinstance(value, tuple):
            return count + 16 + value[1]
        return value  # type: ignore[return-value]

    tree = b"".join(
        record(left).to_bytes(3, "big") + record(right).to_bytes(3, "big") for left, right in nodes
    )
    metadata = enc(
        {
            "binary_format_major_version": (5, 2),
            "binary_format_minor_version": (5, 0),
            "build_epoch": (9, 1_700_000_000),
            "database_type": database_type,
            "description": {"en": "TrailGuard test database"},
            "ip_version": (5, 4),
            "languages": ["en"],
            "node_count": (6, count),
            "record_size": (5, 24),
        }
    )
    path.write_bytes(tree + b"\x00" * 16 + data + b"\xab\xcd\xefMaxMind.com" + metadata)
    return path


def test_maxmind_files_when_configured(tmp_path):
    country = _mmdb(
        tmp_path / "country.mmdb",
        "GeoLite2-Country",
        {"200.147.0.0/16": {"country": {"iso_code": "BR", "names": {"en": "Brazil"}}}},
    )
    asn = _mmdb(
        tmp_path / "asn.mmdb",
        "GeoLite2-ASN",
        {
            "200.147.0.0/16": {
                "autonomous_system_number": (6, 7162),
                "autonomous_system_organization": "Universo Online S.A.",
            }
        },
    )
    geo = MaxMindLookup(str(country), str(asn))
    assert geo.lookup("200.147.3.157") == ("BR", "AS7162 Universo Online S.A.")
    assert geo.lookup("8.8.8.8") == ("", "")  # not in these files
    out = Enricher(geo).enrich(pd.Series(["200.147.3.157", "8.8.8.8", "10.0.0.1"]))
    assert out["country"].tolist() == ["BR", "unknown", "private"]


# -- the store side: history profiles --------------------------------------------------------------------
def _raw(row: dict) -> dict:
    """A CloudTrail record for :func:`event`'s row (for the store, through the real normaliser)."""
    record = {
        "eventID": row["eventID"],
        "eventTime": row["eventTime"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventType": row["eventType"],
        "eventSource": row["eventSource"],
        "eventName": row["eventName"],
        "awsRegion": row["awsRegion"],
        "sourceIPAddress": row["sourceIPAddress"],
        "userAgent": row["userAgent"],
        "userIdentity": {
            "type": row["userIdentity.type"],
            "arn": row["userIdentity.arn"],
            "accountId": row["userIdentity.accountId"],
        },
        "recipientAccountId": row["recipientAccountId"],
    }
    if row.get("errorCode"):
        record["errorCode"] = row["errorCode"]
    return record


def _store(tmp_path: Path, rows: list[dict]) -> EventStore:
    store = EventStore(tmp_path / "data")
    store.append_events(rows_to_table([normalise(_raw(r), "test") for r in rows]), "run1")
    return store


def test_load_day_features_uses_cached_profiles_and_rebuilds_them_when_a_day_changes(tmp_path, enricher):
    before = DAY - timedelta(days=1)
    store = _store(
        tmp_path, [event(600, day=before), event(1430, day=before), event(10), event(20, ip="200.147.3.157")]
    )
    f = load_day_features(store, DAY.date(), enricher=enricher)
    assert f["first_ip"].tolist() == [0, 1]
    assert f["last_hour_events"].tolist() == [2, 3]  # 23:50 the day before is in both hours
    assert profile_path(store, "2026-11-19").exists() and profile_path(store, "2026-11-20").exists()
    # a late file for the day before: alice was in Brazil then too; the cached profile is rebuilt
    store.append_events(
        rows_to_table([normalise(_raw(event(700, day=before, ip="200.147.3.158")), "late")]), "run2"
    )
    f = load_day_features(store, DAY.date(), enricher=enricher)
    assert f["first_ip"].tolist() == [0, 1] and f["first_country"].tolist() == [0, 0]
    history = load_history(store, DAY.date(), enricher=enricher)
    assert history.days == ["2026-11-19"]
