"""Deterministic demo CloudTrail logs, laid out exactly as AWS delivers them to S3, with labelled attacks.

Why: the demo, the tests and the benchmarks need CloudTrail data with known attacks in it, and real
customer logs cannot be shipped. This imitates a small company (three accounts, three regions, fifteen
IAM users, CI, Lambda, EC2 and AWS services) closely enough that parsing, data-quality checks, GeoIP
enrichment and detections meet the shapes they meet in production, and it writes down the attacks it
plants (``ground_truth.csv``) so models and reports can be scored against them.

Layout (what ``trailguard ingest --source <out>`` reads)::

    <out>/AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<id16>.json.gz
    <out>/AWSLogs/<account>/CloudTrail-Digest/<region>/YYYY/MM/DD/<account>_CloudTrail-Digest_<region>_<trail>_<home>_<YYYYMMDDTHHMMSSZ>.json.gz
    <out>/ground_truth.csv      eventID, date, scenario, attack_technique, risk_score (attack events only)
    <out>/demo_summary.json     counts, scenarios with their days, the deliberately bad files

As in S3, the date folders and the file-name time are the *delivery* time: a file holding 23:58 events
is delivered just after midnight, in the next day's folder. Everything comes from ``random.Random``
seeded by the caller (one stream per day), never the clock: the same arguments give byte-identical files.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import logging
import random
import re
import shutil
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import cache
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

DEFAULT_END = date(2026, 11, 20)  # fixed so that the demo (and its report day) is reproducible
DEFAULT_EVENTS_PER_DAY = 1_500
GZIP_LEVEL = 1  # AWS's own ratio does not matter here; speed does (1M events in seconds)
# AWS delivers a file per account/region about every 5 minutes. The demo starts from that cadence and
# stretches it on busy days so that a run stays in the low thousands of objects: a longer window only
# means more records per file, which ingest has to handle anyway.
WINDOW_MINUTES = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240)
FILES_PER_DAY = 110

COMPANY = "acme"
TRAIL_NAME = "acme-org-trail"
HOME_REGION = "us-east-1"  # global services (IAM, STS global endpoint, sign-in) log here
REGIONS = ("us-east-1", "eu-west-1", "us-west-2")
GROUND_TRUTH_COLUMNS = ("eventID", "date", "scenario", "attack_technique", "risk_score")


# -- public API -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoSummary:
    """What :func:`generate` wrote. ``records`` counts the records ingest should accept; ``files`` counts
    CloudTrail log files (bad ones included, digests not); ``attacks`` counts ground-truth events."""

    out_dir: Path
    start: date
    end: date
    files: int
    records: int
    bad_files: int
    attacks: int
    ground_truth: Path


def generate(
    out_dir: Path | str,
    *,
    end: date | None = None,
    days: int = 30,
    events: int | None = None,
    seed: int = 7,
    bad_files: bool = True,
    progress: Callable[[int], None] | None = None,
) -> DemoSummary:
    """Write ``days`` days of demo CloudTrail logs ending on ``end`` (inclusive) under ``out_dir``.

    ``events`` is the total number of normal events (default about 1,500 a day); attack events come on
    top. ``progress`` gets the running total of records written after each file. A previous demo in
    ``out_dir`` is replaced; a folder that holds other CloudTrail logs is refused rather than mixed.
    """
    end = end or DEFAULT_END
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    if events is not None and events < 1:
        raise ValueError(f"events must be a positive number, not {events}")
    total = DEFAULT_EVENTS_PER_DAY * days if events is None else events
    out = Path(out_dir)
    _check_target(out)
    staging = out / ".demo-partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)

    dates = [end - timedelta(days=days - 1 - i) for i in range(days)]
    targets = _daily_targets(dates, total)
    occurrences = _scenario_days(dates)
    bad_plan = _bad_file_days(dates) if bad_files else {}
    writer = _Writer(staging, seed, progress, digest_day=end)
    truth: list[tuple[str, str, str, str, int]] = []
    templates: dict[tuple, tuple] = {}  # shared by all days: a principal's calls look the same every day
    for day, target in zip(dates, targets, strict=True):
        gen = _Day(seed, day, templates)
        _normal_traffic(gen, target)
        for scenario, occurrence in occurrences.get(day, ()):
            gen.scenario, gen.occurrence = scenario, occurrence
            scenario.build(gen, gen.attack_start(scenario))
        truth.extend(gen.truth)
        writer.write_day(day, gen.buckets, {row[1] for row in gen.truth}, bad_plan.get(day, ()))
        log.debug("demo day %s: %d events, %d attack events", day, gen.count, len(gen.truth))
    writer.write_digests()

    truth.sort()
    _write_ground_truth(staging / "ground_truth.csv", truth)
    summary_json = _summary_json(seed, dates, events, writer, truth)
    (staging / "demo_summary.json").write_bytes(
        orjson.dumps(summary_json, option=orjson.OPT_INDENT_2) + b"\n"
    )
    _publish(staging, out)
    log.info(
        "wrote %d CloudTrail files (%d records, %d attack events, %d bad files) for %s..%s to %s",
        writer.files,
        writer.records,
        len(truth),
        len(writer.bad),
        dates[0],
        end,
        out,
    )
    return DemoSummary(
        out_dir=out,
        start=dates[0],
        end=end,
        files=writer.files,
        records=writer.records,
        bad_files=len(writer.bad),
        attacks=len(truth),
        ground_truth=out / "ground_truth.csv",
    )


# -- the organisation -----------------------------------------------------------------------------------
# Data tables read best one entry a line: the formatter leaves them alone.
# fmt: off
@dataclass(frozen=True)
class Account:
    env: str
    id: str
    region_weights: tuple[float, ...]  # share of regional traffic per REGIONS entry
    vpc: str  # first two octets of the account's VPCs
    nat_ips: tuple[str, ...]  # NAT gateway / Elastic IPs per REGIONS entry (real AWS ranges)


ACCOUNTS = (
    Account("prod", "418272790141", (0.62, 0.30, 0.08), "10.20", ("3.85.121.14", "34.247.113.20", "54.201.90.3")),
    Account("dev", "226741190783", (0.55, 0.10, 0.35), "10.40", ("52.204.115.8", "54.170.33.9", "44.226.17.8")),
    Account("security", "905418372216", (0.80, 0.10, 0.10), "10.60", ("18.208.77.90", "34.240.9.18", "35.160.44.122")),
)
ACCOUNT = {a.env: a for a in ACCOUNTS}
LOG_BUCKET = f"{COMPANY}-cloudtrail-logs-{ACCOUNT['security'].id}"
DIGEST_ACCOUNT = "prod"


@dataclass(frozen=True)
class User:
    """A human IAM user: where they work from, with what, when, and how."""

    name: str
    country: str  # ISO code of the home office; ``ips`` geolocate there
    ips: tuple[str, ...]  # home/office egress in a real ISP's range (GeoIP enrichment finds them)
    utc_offset: float  # November, so standard time in the US and Europe
    browser: str  # key of BROWSERS
    tool: str  # key of TOOLS
    mfa: bool
    profile: str  # key of PROFILES
    envs: tuple[str, ...]  # accounts where the user exists; the first is the usual one
    weight: float  # how busy the user is
    console: float  # share of the user's calls made in the console


USERS = (
    User("alice", "US", ("73.162.88.14", "73.162.91.203"), -8, "chrome_mac", "cli_mac", True, "dev", ("prod", "dev"), 1.4, 0.3),
    User("bob", "US", ("99.31.204.17",), -6, "firefox_win", "terraform", True, "ops", ("prod", "dev"), 1.2, 0.4),
    User("carol", "GB", ("86.150.22.41", "86.150.23.18"), 0, "chrome_win", "boto3", True, "data", ("prod",), 1.0, 0.5),
    User("dave", "DE", ("79.200.14.77",), 1, "firefox_linux", "cli_linux", True, "ops", ("prod", "dev"), 1.1, 0.3),
    User("erin", "FR", ("90.24.118.3",), 1, "safari_mac", "cli_mac", True, "security", ("security", "prod", "dev"), 0.9, 0.6),
    User("frank", "US", ("108.20.45.12",), -5, "chrome_win", "cli_v1", False, "ops", ("prod", "dev"), 0.8, 0.5),
    User("grace", "IN", ("49.36.120.55",), 5.5, "chrome_win", "boto3", True, "dev", ("dev",), 1.0, 0.2),
    User("heidi", "DE", ("87.150.3.9",), 1, "chrome_linux", "terraform", True, "dev", ("dev", "prod"), 0.9, 0.2),
    User("ivan", "ES", ("83.45.77.120",), 1, "firefox_win", "cli_win", False, "data", ("prod",), 0.7, 0.6),
    User("judy", "CA", ("99.230.14.8",), -5, "edge_win", "cli_win", True, "security", ("security", "prod"), 0.8, 0.7),
    User("karim", "FR", ("82.64.31.200",), 1, "chrome_mac", "boto3", True, "data", ("prod", "dev"), 0.8, 0.4),
    User("lena", "GB", ("82.23.140.9",), 0, "firefox_mac", "cli_mac", True, "dev", ("dev",), 0.9, 0.3),
    User("mike", "US", ("24.6.171.20",), -8, "chrome_mac", "terraform", False, "ops", ("prod", "dev"), 0.7, 0.4),
    User("nina", "AU", ("101.185.22.130",), 11, "safari_mac", "cli_mac", True, "dev", ("dev",), 0.6, 0.3),
    User("omar", "IN", ("122.161.50.90",), 5.5, "chrome_win", "cli_win", True, "security", ("security",), 0.6, 0.5),
)
# An on-premises reporting job with a long-lived access key (the key that leaks in one scenario).
SERVICE_USER = User("svc-reporting", "US", ("50.203.118.66",), -5, "chrome_win", "boto3", False, "reporting", ("prod",), 0.6, 0.0)

BROWSERS = {
    "chrome_mac": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36",
    "chrome_win": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36",
    "chrome_linux": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36",
    "edge_win": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36 Edg/142.0.0.0",
    "firefox_win": "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:145.0) Gecko/20100101 Firefox/145.0",
    "firefox_mac": "Mozilla/5.0 (Macintosh; Intel Mac OS X 15.6; rv:145.0) Gecko/20100101 Firefox/145.0",
    "firefox_linux": "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:145.0) Gecko/20100101 Firefox/145.0",
    "safari_mac": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.1 Safari/605.1.15",
}
# "<cmd>" becomes the CLI command of the call (aws-cli v2 reports it in its user agent).
TOOLS = {
    "cli_mac": "aws-cli/2.31.18 md/awscrt#0.27.6 ua/2.1 os/macos#24.6.0 md/arch#arm64 lang/python#3.13.7 md/pyimpl#CPython m/E,b,Z cfg/retry-mode#standard md/installer#exe md/prompt#off md/command#<cmd>",
    "cli_linux": "aws-cli/2.31.18 md/awscrt#0.27.6 ua/2.1 os/linux#6.8.0-85-generic md/arch#x86_64 lang/python#3.13.7 md/pyimpl#CPython m/E,b,Z cfg/retry-mode#standard md/installer#exe md/distrib#ubuntu.24 md/prompt#off md/command#<cmd>",
    "cli_win": "aws-cli/2.31.18 md/awscrt#0.27.6 ua/2.1 os/windows#11 md/arch#amd64 lang/python#3.13.7 md/pyimpl#CPython m/E,b,Z cfg/retry-mode#standard md/installer#exe md/prompt#off md/command#<cmd>",
    "cli_v1": "aws-cli/1.42.50 md/Botocore#1.40.50 ua/2.1 os/linux#6.8.0-85-generic md/arch#x86_64 lang/python#3.12.3 md/pyimpl#CPython m/b cfg/retry-mode#legacy botocore/1.40.50",
    "boto3": "Boto3/1.40.45 md/Botocore#1.40.45 ua/2.1 os/macos#24.6.0 md/arch#arm64 lang/python#3.12.11 md/pyimpl#CPython m/Z,b,D cfg/retry-mode#legacy Botocore/1.40.45",
    "terraform": "APN/1.0 HashiCorp/1.0 Terraform/1.13.4 (+https://www.terraform.io) terraform-provider-aws/6.18.0 (+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go-v2/1.39.4 ua/2.1 os/macos lang/go#1.24.8 md/GOOS#darwin md/GOARCH#arm64 m/C,g",
    "terraform_ci": "APN/1.0 HashiCorp/1.0 Terraform/1.13.4 (+https://www.terraform.io) terraform-provider-aws/6.18.0 (+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go-v2/1.39.4 ua/2.1 os/linux lang/go#1.24.8 md/GOOS#linux md/GOARCH#amd64 m/C,g",
    "gha_credentials": "aws-sdk-js/3.901.0 ua/2.1 os/linux#6.11.0-1018-azure lang/js md/nodejs#20.19.5 api/sts#3.901.0 m/E,e configure-aws-credentials-for-github-actions",
    "lambda_python": "Boto3/1.40.4 md/Botocore#1.40.4 ua/2.1 os/linux#5.10.240-258.957.amzn2.x86_64 md/arch#x86_64 lang/python#3.12.11 md/pyimpl#CPython exec-env/AWS_Lambda_python3.12 m/Z,D,b cfg/retry-mode#legacy Botocore/1.40.4",
    "lambda_nodejs": "aws-sdk-js/3.893.0 ua/2.1 os/linux#5.10.240-258.957.amzn2.x86_64 lang/js md/nodejs#20.19.4 exec-env/AWS_Lambda_nodejs20.x api/<svc>#3.893.0 m/E,e",
    "ssm_agent": "aws-sdk-go/1.55.7 (go1.24.6; linux; amd64) amazon-ssm-agent/3.3.3050.0",
    "eks_node": "aws-sdk-go-v2/1.36.3 ua/2.1 os/linux lang/go#1.23.7 md/GOOS#linux md/GOARCH#amd64 api/<svc>#1.43.1 ecr-credential-provider",
    "scanner": "Boto3/1.40.45 md/Botocore#1.40.45 ua/2.1 os/linux#6.1.155-176.282.amzn2023.x86_64 md/arch#x86_64 lang/python#3.12.12 md/pyimpl#CPython exec-env/AWS_ECS_FARGATE cfg/retry-mode#standard Botocore/1.40.45 prowler/5.13.1",
    # attackers
    "kali": "aws-cli/1.22.34 Python/3.9.10 Linux/5.15.0-kali3-amd64 botocore/1.24.7",
    "attacker_cli": "aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0-21-generic exe/x86_64.ubuntu.22 prompt/off command/<cmd>",
    "attacker_browser": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
}
# Console-driven API calls carry the console's own agent, not the browser's.
CONSOLE_AGENTS = {
    "ec2": "console.ec2.amazonaws.com",
    "s3": "[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.788 Linux/5.10.240-238.966.amzn2int.x86_64 OpenJDK_64-Bit_Server_VM/25.462-b08 java/1.8.0_462 vendor/Oracle_Corporation cfg/retry-mode/standard]",
}
CONSOLE_AGENT = "AWS Internal"

# Hosting providers far from every user's home (GeoIP: country, ASN checked with geoip2fast).
ATTACKER_IPS = (
    ("128.199.182.44", "SG"),  # DigitalOcean
    ("95.217.120.33", "FI"),  # Hetzner
    ("5.79.71.205", "NL"),  # LeaseWeb
    ("45.146.164.110", "RU"),  # Beget
    ("47.74.30.21", "JP"),  # Alibaba Cloud
    ("8.210.12.33", "HK"),  # Alibaba Cloud
)
GITHUB_RUNNER_IPS = ("20.42.64.13", "20.57.79.241", "4.148.0.17", "52.176.3.44", "172.183.51.9")  # Azure
LAMBDA_IPS = {  # AWS-owned addresses Lambda calls leave from, per region
    "us-east-1": ("3.92.40.111", "54.80.10.37", "3.218.180.10"),
    "eu-west-1": ("54.170.33.9", "34.247.113.20"),
    "us-west-2": ("35.160.44.122", "54.201.90.3"),
}
VPCE_SERVICES = frozenset({"ssm", "ec2messages", "kms", "secretsmanager", "logs", "ecr", "sts"})

REPOS = ("acme/platform", "acme/orders-service", "acme/data-pipelines")
FUNCTIONS = ("orders-api", "payments-webhook", "nightly-billing-export", "image-resizer")
BUCKETS = ("acme-<env>-assets", "acme-<env>-data-lake", "acme-<env>-terraform-state", "acme-<env>-backups", "acme-<env>-artifacts")
TABLES = ("orders", "customers", "sessions", "inventory")
SECRET_NAMES = tuple(
    f"<env>/{svc}/{kind}"
    for svc in ("orders", "payments", "billing", "auth", "search", "reporting", "inventory", "shipping", "notifications", "analytics")
    for kind in ("db-password", "api-key", "oauth-client-secret", "signing-key")
)


@dataclass(frozen=True)
class LambdaFunction:
    env: str
    name: str
    regions: tuple[str, ...]
    runtime: str  # key of TOOLS
    profile: str
    vpc: bool  # in a VPC: AWS calls leave through VPC endpoints from private addresses
    weight: float


LAMBDAS = (
    LambdaFunction("prod", "orders-api", ("us-east-1", "eu-west-1"), "lambda_python", "lambda_app", False, 3.0),
    LambdaFunction("prod", "payments-webhook", ("us-east-1",), "lambda_nodejs", "lambda_app", True, 2.0),
    LambdaFunction("prod", "nightly-billing-export", ("us-east-1",), "lambda_python", "lambda_app", False, 0.8),
    LambdaFunction("prod", "secrets-rotation", ("us-east-1", "eu-west-1"), "lambda_python", "lambda_rotation", True, 0.5),
    LambdaFunction("dev", "orders-api", ("us-east-1", "us-west-2"), "lambda_python", "lambda_app", False, 1.2),
    LambdaFunction("dev", "image-resizer", ("us-west-2",), "lambda_nodejs", "lambda_app", False, 0.8),
    LambdaFunction("security", "guardduty-findings-forwarder", ("us-east-1",), "lambda_python", "lambda_forwarder", False, 0.6),
)


@dataclass(frozen=True)
class InstanceGroup:
    env: str
    role: str  # instance profile role
    region: str
    count: int
    agent: str  # key of TOOLS
    profile: str
    weight: float


INSTANCE_GROUPS = (
    InstanceGroup("prod", "web-server-role", "us-east-1", 4, "ssm_agent", "ssm_agent", 3.0),
    InstanceGroup("prod", "web-server-role", "eu-west-1", 2, "ssm_agent", "ssm_agent", 1.5),
    InstanceGroup("prod", "eks-node-role", "us-east-1", 3, "eks_node", "eks_node", 2.5),
    InstanceGroup("dev", "dev-box-role", "us-west-2", 2, "ssm_agent", "ssm_agent", 1.0),
    InstanceGroup("dev", "eks-node-role", "us-east-1", 2, "eks_node", "eks_node", 1.2),
    InstanceGroup("security", "bastion-role", "us-east-1", 1, "ssm_agent", "ssm_agent", 0.4),
)

# Share of the day's normal events per source, on workdays and at weekends (machines do not rest).
GROUP_SHARES = {
    "workday": {"humans": 0.30, "ci": 0.18, "lambda": 0.18, "instances": 0.16, "services": 0.10, "scanner": 0.08},
    "weekend": {"humans": 0.05, "ci": 0.04, "lambda": 0.33, "instances": 0.29, "services": 0.17, "scanner": 0.12},
}
WEEKEND_VOLUME = 0.55  # a weekend day has this share of a workday's events
ERROR_RATES = {"human": 0.022, "ci": 0.012, "lambda": 0.006, "instance": 0.004, "service": 0.01, "scanner": 0.06}


# -- API calls ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """One CloudTrail eventName with the requestParameters variants it is seen with.

    Placeholders in parameters: ``<env> <acct> <region> <self>`` (caller's user name) ``<instance>``
    ``<ip>`` (caller's instance id and private address). ``via`` marks a call an AWS service makes on the
    caller's behalf (sourceIPAddress and userIdentity.invokedBy are the service)."""

    service: str
    name: str
    read_only: bool
    params: tuple[Any, ...]
    response: Any
    errors: tuple[str, ...]
    global_: bool
    via: str | None = None
    key: str = field(init=False)  # "service:eventName[@via]", the name profiles use
    templated: tuple[bool, ...] = field(init=False)  # per params variant, then the response: has placeholders

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.service}:{self.name}" + (f"@{self.via.split('.')[0]}" if self.via else ""))
        object.__setattr__(self, "templated", tuple(b"<" in orjson.dumps(v) for v in (*self.params, self.response)))

    @property
    def source(self) -> str:
        return f"{self.service}.amazonaws.com"


DENIED_CODES = {"ec2": "Client.UnauthorizedOperation", "kms": "AccessDeniedException", "lambda": "AccessDeniedException",
                "dynamodb": "AccessDeniedException", "ssm": "AccessDeniedException", "logs": "AccessDeniedException",
                "ecr": "AccessDeniedException", "guardduty": "AccessDeniedException",
                "athena": "AccessDeniedException", "glue": "AccessDeniedException", "securityhub": "AccessDeniedException",
                "organizations": "AccessDeniedException", "eks": "AccessDeniedException"}
THROTTLE_CODES = {"ec2": "Client.RequestLimitExceeded", "s3": "SlowDown"}
ERROR_MESSAGES = {
    "Client.RequestLimitExceeded": "Request limit exceeded.",
    "SlowDown": "Please reduce your request rate.",
    "ThrottlingException": "Rate exceeded",
    "NoSuchEntityException": "The user with name <self> cannot be found.",
    "ResourceNotFoundException": "Secrets Manager can't find the specified secret.",
    "ParameterNotFound": "",
    "NoSuchBucketPolicy": "The bucket policy does not exist",
    "NoSuchTagSet": "The TagSet does not exist",
    "ServerSideEncryptionConfigurationNotFoundError": "The server side encryption configuration was not found",
    "NoSuchPublicAccessBlockConfiguration": "The public access block configuration was not found",
    "Client.InvalidInstanceID.NotFound": "The instance ID 'i-0a1b2c3d4e5f60718' does not exist",
    "ValidationError": "Stack with id <env>-legacy does not exist",
    "LimitExceeded": "Cannot exceed quota for AccessKeysPerUser: 2",
    "Client.InvalidPermission.Duplicate": "the specified rule \"peer: 10.0.0.0/8, TCP, from port: 5432, to port: 5432, ALLOW\" already exists",
    "ResourceAlreadyExistsException": "The specified log stream already exists",
}


def _r(service: str, name: str, *params: Any, errors: tuple[str, ...] = (), global_: bool = False, via: str | None = None) -> Call:
    return Call(service, name, True, params or (None,), None, ("<denied>", "<denied>", "<throttle>") + errors * 2, global_, via)


def _w(service: str, name: str, *params: Any, response: Any = None, errors: tuple[str, ...] = (), global_: bool = False) -> Call:
    return Call(service, name, False, params or (None,), response, ("<denied>", "<denied>", "<throttle>") + errors * 2, global_)


def _bucket_params(extra: str, **more: Any) -> tuple[dict, ...]:
    return tuple({"bucketName": b, "Host": f"{b}.s3.amazonaws.com", extra: "", **more} for b in BUCKETS)


_SG = "sg-0b4c6a1d9e2f3a587"
_INGRESS = {"groupId": _SG, "ipPermissions": {"items": []}}


def _ingress(cidr: str, port: int, description: str, group: str = _SG, v6: bool = False) -> dict:
    ranges = {"items": [{"cidrIp": cidr, "description": description}]}
    v6ranges = {"items": [{"cidrIpv6": "::/0", "description": description}]} if v6 else {}
    return {"groupId": group, "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": port, "toPort": port, "groups": {},
                                                           "ipRanges": ranges, "ipv6Ranges": v6ranges, "prefixListIds": {}}]}}


CALL_LIST: tuple[Call, ...] = (
    # EC2
    _r("ec2", "DescribeInstances", {"instancesSet": {}, "filterSet": {}},
       {"instancesSet": {}, "filterSet": {"items": [{"name": "tag:Environment", "valueSet": {"items": [{"value": "<env>"}]}}]}},
       {"maxResults": 1000, "instancesSet": {}, "filterSet": {}}, errors=("Client.InvalidInstanceID.NotFound",)),
    _r("ec2", "DescribeSecurityGroups", {"securityGroupSet": {}, "securityGroupIdSet": {}, "filterSet": {}},
       {"securityGroupSet": {}, "securityGroupIdSet": {"items": [{"groupId": _SG}]}, "filterSet": {}}),
    _r("ec2", "DescribeVpcs", {"vpcSet": {}, "filterSet": {}}),
    _r("ec2", "DescribeSubnets", {"subnetSet": {}, "filterSet": {}}),
    _r("ec2", "DescribeVolumes", {"volumeSet": {}, "filterSet": {}}),
    _r("ec2", "DescribeNetworkInterfaces", {"networkInterfaceIdSet": {}, "filterSet": {}}),
    _r("ec2", "DescribeInstanceStatus", {"instancesSet": {}, "filterSet": {}, "includeAllInstances": False}),
    _r("ec2", "DescribeTags", {"filterSet": {"items": [{"name": "resource-id", "valueSet": {"items": [{"value": "<instance>"}]}}]}}),
    _r("ec2", "DescribeRegions", {"regionSet": {}}),
    _r("ec2", "DescribeAvailabilityZones", {"availabilityZoneSet": {}, "availabilityZoneIdSet": {}}),
    _r("ec2", "DescribeSnapshots", {"snapshotSet": {}, "ownersSet": {"items": [{"owner": "self"}]}, "sharedUsersSet": {}, "filterSet": {}}),
    _r("ec2", "DescribeImages", {"executableBySet": {}, "imagesSet": {}, "ownersSet": {"items": [{"owner": "self"}]}, "filterSet": {}}),
    _r("ec2", "DescribeLaunchTemplates", {"launchTemplateIdSet": {}, "launchTemplateNameSet": {}}),
    _r("ec2", "DescribeRouteTables", {"routeTableIdSet": {}, "filterSet": {}}),
    _r("ec2", "DescribeNatGateways", {"DescribeNatGatewaysRequest": {}}),
    _r("ec2", "DescribeKeyPairs", {"keySet": {}, "filterSet": {}}),
    _w("ec2", "CreateTags", {"resourcesSet": {"items": [{"resourceId": "i-0a1b2c3d4e5f60718"}]}, "tagSet": {"items": [{"key": "Owner", "value": "<self>"}]}},
       response={"_return": True}),
    _w("ec2", "StartInstances", {"instancesSet": {"items": [{"instanceId": "i-07c1e5b9d2a4f8e31"}]}},
       response={"instancesSet": {"items": [{"instanceId": "i-07c1e5b9d2a4f8e31", "currentState": {"code": 0, "name": "pending"}, "previousState": {"code": 80, "name": "stopped"}}]}}),
    _w("ec2", "StopInstances", {"instancesSet": {"items": [{"instanceId": "i-07c1e5b9d2a4f8e31"}]}, "force": False},
       response={"instancesSet": {"items": [{"instanceId": "i-07c1e5b9d2a4f8e31", "currentState": {"code": 64, "name": "stopping"}, "previousState": {"code": 16, "name": "running"}}]}}),
    # benign near misses of the open-SSH scenario: HTTPS open to the world on the load balancer, SSH from the VPC
    _w("ec2", "AuthorizeSecurityGroupIngress", _ingress("0.0.0.0/0", 443, "public HTTPS to the ALB", "sg-02f1d3c4b5a697081"),
       _ingress("<vpc>.0.0/16", 22, "SSH from the bastion subnet"), _ingress("10.0.0.0/8", 5432, "postgres from VPCs"),
       response={"_return": True}, errors=("Client.InvalidPermission.Duplicate",)),
    _w("ec2", "RevokeSecurityGroupIngress", _ingress("10.0.0.0/8", 5432, "postgres from VPCs"), response={"_return": True}),
    _w("ec2", "RunInstances", {"instancesSet": {"items": [{"imageId": "ami-0c7217cdde317cfec", "minCount": 1, "maxCount": 1}]}, "instanceType": "m7i.large",
                               "launchTemplate": {"launchTemplateName": "<env>-web"}, "monitoring": {"enabled": False}, "disableApiTermination": False},
       response={"reservationId": "r-0f4e1b2a3c5d69870", "ownerId": "<acct>", "instancesSet": {"items": [{"instanceId": "i-0d3f9a1b7c2e45a86", "instanceState": {"code": 0, "name": "pending"}}]}}),
    _w("ec2", "TerminateInstances", {"instancesSet": {"items": [{"instanceId": "i-0d3f9a1b7c2e45a86"}]}},
       response={"instancesSet": {"items": [{"instanceId": "i-0d3f9a1b7c2e45a86", "currentState": {"code": 32, "name": "shutting-down"}, "previousState": {"code": 16, "name": "running"}}]}}),
    # IAM (global)
    _r("iam", "ListUsers", None, {"maxItems": 100}, global_=True),
    _r("iam", "GetUser", {"userName": "<self>"}, errors=("NoSuchEntityException",), global_=True),
    _r("iam", "ListAccessKeys", {"userName": "<self>"}, global_=True),
    _r("iam", "ListMFADevices", {"userName": "<self>"}, global_=True),
    _r("iam", "ListGroupsForUser", {"userName": "<self>"}, global_=True),
    _r("iam", "ListAttachedUserPolicies", {"userName": "<self>"}, global_=True),
    _r("iam", "GetLoginProfile", {"userName": "<self>"}, errors=("NoSuchEntityException",), global_=True),
    _r("iam", "ListRoles", None, {"maxItems": 1000}, global_=True),
    _r("iam", "GetRole", {"roleName": "github-actions-deploy"}, {"roleName": "orders-api-role"}, {"roleName": "web-server-role"}, global_=True),
    _r("iam", "ListAttachedRolePolicies", {"roleName": "orders-api-role"}, {"roleName": "web-server-role"}, global_=True),
    _r("iam", "ListRolePolicies", {"roleName": "orders-api-role"}, {"roleName": "github-actions-deploy"}, global_=True),
    _r("iam", "GetRolePolicy", {"roleName": "orders-api-role", "policyName": "orders-table-access"}, global_=True),
    _r("iam", "ListPolicies", {"scope": "Local", "onlyAttached": False}, global_=True),
    _r("iam", "GetPolicy", {"policyArn": "arn:aws:iam::<acct>:policy/deploy-boundary"}, global_=True),
    _r("iam", "GetPolicyVersion", {"policyArn": "arn:aws:iam::<acct>:policy/deploy-boundary", "versionId": "v3"}, global_=True),
    _r("iam", "GetAccountSummary", global_=True),
    _r("iam", "GetAccountPasswordPolicy", errors=("NoSuchEntityException",), global_=True),
    _r("iam", "GetCredentialReport", global_=True),
    _r("iam", "ListInstanceProfilesForRole", {"roleName": "web-server-role"}, global_=True),
    _w("iam", "GenerateCredentialReport", global_=True),
    # key rotation of one's own key: the near miss of "access key for another user"
    _w("iam", "CreateAccessKey", {"userName": "<self>"}, None,
       response={"accessKey": {"accessKeyId": "AKIAWJ2R6Q3HNX4TZ5PM", "status": "Active", "userName": "<self>", "createDate": "<date>"}},
       errors=("LimitExceeded",), global_=True),
    _w("iam", "UpdateAccessKey", {"userName": "<self>", "accessKeyId": "AKIAWJ2R6Q3HQ7D2KL8V", "status": "Inactive"}, global_=True),
    _w("iam", "PutRolePolicy", {"roleName": "orders-api-role", "policyName": "orders-table-access",
                                "policyDocument": '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["dynamodb:GetItem","dynamodb:PutItem","dynamodb:Query"],"Resource":"arn:aws:dynamodb:*:<acct>:table/orders"}]}'},
       global_=True),
    _w("iam", "TagRole", {"roleName": "orders-api-role", "tags": [{"key": "team", "value": "orders"}]}, global_=True),
    # STS
    _r("sts", "GetCallerIdentity"),
    # S3 (bucket-level management events)
    _r("s3", "ListBuckets", {"Host": "s3.amazonaws.com"}, global_=True),
    _r("s3", "GetBucketLocation", *_bucket_params("location")),
    _r("s3", "GetBucketPolicy", *_bucket_params("policy"), errors=("NoSuchBucketPolicy",)),
    _r("s3", "GetBucketAcl", *_bucket_params("acl")),
    _r("s3", "GetBucketVersioning", *_bucket_params("versioning")),
    _r("s3", "GetBucketEncryption", *_bucket_params("encryption"), errors=("ServerSideEncryptionConfigurationNotFoundError",)),
    _r("s3", "GetBucketTagging", *_bucket_params("tagging"), errors=("NoSuchTagSet",)),
    _r("s3", "GetBucketPublicAccessBlock", *_bucket_params("publicAccessBlock"), errors=("NoSuchPublicAccessBlockConfiguration",)),
    _r("s3", "GetBucketLogging", *_bucket_params("logging")),
    _w("s3", "PutBucketTagging", *_bucket_params("tagging")),
    _w("s3", "PutBucketVersioning", *_bucket_params("versioning", VersioningConfiguration={"Status": "Enabled"})),
    _w("s3", "PutBucketPublicAccessBlock", *_bucket_params("publicAccessBlock", PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})),
    # a bucket policy for CloudFront only: the near miss of "bucket made public"
    _w("s3", "PutBucketPolicy", {"bucketName": "acme-<env>-assets", "Host": "acme-<env>-assets.s3.amazonaws.com", "policy": "", "bucketPolicy": {
        "Version": "2012-10-17", "Statement": [{"Sid": "AllowCloudFrontRead", "Effect": "Allow", "Principal": {"Service": "cloudfront.amazonaws.com"},
                                                "Action": "s3:GetObject", "Resource": "arn:aws:s3:::acme-<env>-assets/*",
                                                "Condition": {"StringEquals": {"AWS:SourceArn": "arn:aws:cloudfront::<acct>:distribution/E2QWRUHAPOMQZL"}}}]}}),
    # Lambda
    _r("lambda", "ListFunctions20150331", None, {"functionVersion": "ALL"}),
    *(_r("lambda", name, *({"functionName": f} for f in FUNCTIONS), errors=("ResourceNotFoundException",))
      for name in ("GetFunction20150331v2", "GetFunctionConfiguration20150331v2", "GetPolicy20150331v2", "ListVersionsByFunction20150331")),
    _r("lambda", "ListEventSourceMappings20150331", {"functionName": "orders-api"}),
    _w("lambda", "UpdateFunctionCode20150331v2", *({"functionName": f, "s3Bucket": "acme-<env>-artifacts", "s3Key": f"{f}/build.zip", "publish": True} for f in FUNCTIONS),
       response={"functionName": "orders-api", "runtime": "python3.12", "state": "Active", "lastUpdateStatus": "InProgress"}),
    _w("lambda", "UpdateFunctionConfiguration20150331v2", *({"functionName": f, "timeout": 30, "memorySize": 512} for f in FUNCTIONS),
       response={"functionName": "orders-api", "lastUpdateStatus": "InProgress"}),
    _w("lambda", "PublishVersion20150331", *({"functionName": f} for f in FUNCTIONS), response={"version": "42", "state": "Active"}),
    # CloudWatch Logs and alarms
    _r("logs", "DescribeLogGroups", {"limit": 50}, {"logGroupNamePrefix": "/aws/lambda/"}),
    _r("logs", "DescribeLogStreams", *({"logGroupName": f"/aws/lambda/{f}", "orderBy": "LastEventTime", "descending": True, "limit": 5} for f in FUNCTIONS),
       errors=("ResourceNotFoundException",)),
    _r("logs", "FilterLogEvents", *({"logGroupName": f"/aws/lambda/{f}", "filterPattern": "ERROR", "interleaved": True} for f in FUNCTIONS)),
    _r("logs", "GetLogEvents", *({"logGroupName": f"/aws/lambda/{f}", "logStreamName": "2026/11/20/[$LATEST]8d1f0c2b5a7e4f3b9c6d0e1f2a3b4c5d", "startFromHead": False} for f in FUNCTIONS)),
    _r("logs", "DescribeMetricFilters", {"logGroupName": "/aws/cloudtrail/acme-org-trail"}),
    _w("logs", "CreateLogStream", {"logGroupName": "/ec2/<env>/app", "logStreamName": "<instance>"}, errors=("ResourceAlreadyExistsException",)),
    _w("logs", "PutRetentionPolicy", {"logGroupName": "/aws/lambda/orders-api", "retentionInDays": 30}),
    _r("cloudwatch", "DescribeAlarms", {"maxRecords": 100}, {"alarmNamePrefix": "<env>-"}),
    _r("cloudwatch", "ListDashboards"),
    _w("cloudwatch", "PutMetricAlarm", {"alarmName": "<env>-orders-api-errors", "metricName": "Errors", "namespace": "AWS/Lambda", "statistic": "Sum",
                                        "period": 300, "evaluationPeriods": 1, "threshold": 5.0, "comparisonOperator": "GreaterThanThreshold"}),
    # DynamoDB
    _r("dynamodb", "ListTables"),
    *(_r("dynamodb", name, *({"tableName": t} for t in TABLES), errors=("ResourceNotFoundException",))
      for name in ("DescribeTable", "DescribeContinuousBackups", "DescribeTimeToLive")),
    _r("dynamodb", "ListTagsOfResource", *({"resourceArn": f"arn:aws:dynamodb:<region>:<acct>:table/{t}"} for t in TABLES)),
    _w("dynamodb", "UpdateContinuousBackups", {"tableName": "orders", "pointInTimeRecoverySpecification": {"pointInTimeRecoveryEnabled": True}}),
    # KMS
    _r("kms", "Decrypt", {"encryptionAlgorithm": "SYMMETRIC_DEFAULT"}, {"encryptionAlgorithm": "SYMMETRIC_DEFAULT", "encryptionContext": {"service": "orders"}}),
    _r("kms", "Decrypt", {"encryptionAlgorithm": "SYMMETRIC_DEFAULT", "encryptionContext": {"SecretARN": "arn:aws:secretsmanager:<region>:<acct>:secret:<env>/orders/db-password-Qx3rTb", "SecretVersionId": "8f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"}},
       via="secretsmanager.amazonaws.com"),
    _r("kms", "GenerateDataKey", {"keyId": "alias/<env>-app", "keySpec": "AES_256"}),
    _r("kms", "DescribeKey", {"keyId": "alias/<env>-app"}, {"keyId": "alias/aws/secretsmanager"}),
    _r("kms", "GetKeyRotationStatus", {"keyId": "arn:aws:kms:<region>:<acct>:key/6f1c9a3e-2b4d-4e8f-9a1b-3c5d7e9f1a2b"}),
    _r("kms", "GetKeyPolicy", {"keyId": "6f1c9a3e-2b4d-4e8f-9a1b-3c5d7e9f1a2b", "policyName": "default"}),
    _r("kms", "ListAliases"),
    # Secrets Manager and SSM
    _r("secretsmanager", "GetSecretValue", *({"secretId": s} for s in SECRET_NAMES[:12]), errors=("ResourceNotFoundException",)),
    _r("secretsmanager", "DescribeSecret", *({"secretId": s} for s in SECRET_NAMES[:12])),
    _r("secretsmanager", "ListSecrets", None, {"maxResults": 100}),
    _r("secretsmanager", "GetResourcePolicy", {"secretId": SECRET_NAMES[0]}),
    _r("secretsmanager", "GetRandomPassword", {"passwordLength": 32, "excludeCharacters": "/@\"'\\"}),
    _w("secretsmanager", "PutSecretValue", {"secretId": SECRET_NAMES[0], "clientRequestToken": "3b6f8e1c-2a4d-4f9e-8c7b-1d0e2f3a4b5c", "versionStages": ["AWSPENDING"]}),
    _w("secretsmanager", "UpdateSecretVersionStage", {"secretId": SECRET_NAMES[0], "versionStage": "AWSCURRENT", "moveToVersionId": "3b6f8e1c-2a4d-4f9e-8c7b-1d0e2f3a4b5c"}),
    _r("ssm", "GetParameter", {"name": "/<env>/orders/db-host", "withDecryption": False}, {"name": "/<env>/orders/feature-flags", "withDecryption": False},
       errors=("ParameterNotFound",)),
    _r("ssm", "GetParameters", {"names": ["/<env>/orders/db-host", "/<env>/orders/db-user"], "withDecryption": True}),
    _r("ssm", "GetParametersByPath", {"path": "/<env>/orders/", "recursive": True, "withDecryption": True}),
    _r("ssm", "DescribeParameters", {"maxResults": 50}),
    _r("ssm", "DescribeInstanceInformation", {"maxResults": 50}),
    _r("ssm", "ListInstanceAssociations", {"instanceId": "<instance>", "maxResults": 20}),
    _w("ssm", "UpdateInstanceInformation", {"instanceId": "<instance>", "agentVersion": "3.3.3050.0", "agentStatus": "Active", "platformType": "Linux",
                                            "platformName": "Amazon Linux", "platformVersion": "2023", "iPAddress": "<ip>", "agentName": "amazon-ssm-agent"}),
    _w("ssm", "PutParameter", {"name": "/<env>/orders/feature-flags", "type": "String", "overwrite": True, "tier": "Standard"}, response={"version": 17, "tier": "Standard"}),
    # containers
    _r("ecr", "GetAuthorizationToken"),
    _r("ecr", "BatchGetImage", {"repositoryName": "orders-api", "imageIds": [{"imageTag": "v1.84.2"}],
                                "acceptedMediaTypes": ["application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json"]}),
    _r("ecr", "DescribeRepositories"),
    _r("ecr", "DescribeImages", {"repositoryName": "orders-api", "maxResults": 100}),
    _r("eks", "DescribeCluster", {"name": "<env>-main"}),
    _r("eks", "ListClusters"),
    # databases, stacks, load balancers, messaging, DNS
    _r("rds", "DescribeDBInstances"),
    _r("rds", "DescribeDBClusters"),
    _r("rds", "DescribeDBSnapshots", {"snapshotType": "manual"}),
    _r("cloudformation", "DescribeStacks", {"stackName": "<env>-network"}, {"stackName": "<env>-orders"}, None, errors=("ValidationError",)),
    _r("cloudformation", "DescribeStackEvents", {"stackName": "<env>-orders"}),
    _r("cloudformation", "ListStacks", {"stackStatusFilter": ["CREATE_COMPLETE", "UPDATE_COMPLETE"]}),
    _r("elasticloadbalancing", "DescribeLoadBalancers"),
    _r("elasticloadbalancing", "DescribeTargetGroups"),
    _r("elasticloadbalancing", "DescribeTargetHealth", {"targetGroupArn": "arn:aws:elasticloadbalancing:<region>:<acct>:targetgroup/<env>-web/6d0ecf831eec9f09"}),
    _r("autoscaling", "DescribeAutoScalingGroups", None, {"autoScalingGroupNames": ["<env>-web"]}),
    _w("autoscaling", "UpdateAutoScalingGroup", {"autoScalingGroupName": "<env>-web", "minSize": 2, "maxSize": 8, "desiredCapacity": 4}),
    _r("sns", "ListTopics"),
    _r("sns", "GetTopicAttributes", {"topicArn": "arn:aws:sns:<region>:<acct>:<env>-alerts"}),
    _r("sqs", "ListQueues"),
    _r("sqs", "GetQueueAttributes", {"queueUrl": "https://sqs.<region>.amazonaws.com/<acct>/<env>-orders", "attributeNames": ["All"]}),
    _r("route53", "ListHostedZones", global_=True),
    _r("route53", "ListResourceRecordSets", {"hostedZoneId": "Z04521472MB1HKQ9T0LS"}, global_=True),
    # data
    _r("athena", "GetQueryExecution", {"queryExecutionId": "5f1d6a0b-7c2e-4e9f-8a3b-1c2d3e4f5a6b"}),
    _r("athena", "ListWorkGroups"),
    _w("athena", "StartQueryExecution", {"queryString": "SELECT order_id, total FROM orders_daily WHERE dt = current_date - interval '1' day",
                                          "workGroup": "primary", "queryExecutionContext": {"database": "datalake_curated"}},
       response={"queryExecutionId": "5f1d6a0b-7c2e-4e9f-8a3b-1c2d3e4f5a6b"}),
    _r("glue", "GetTables", {"databaseName": "datalake_curated"}, {"databaseName": "datalake_raw"}),
    _r("glue", "GetDatabases"),
    _r("glue", "GetPartitions", {"databaseName": "datalake_curated", "tableName": "orders_daily"}),
    # security services
    _r("cloudtrail", "DescribeTrails", {"trailNameList": [], "includeShadowTrails": True}),
    _r("cloudtrail", "GetTrailStatus", {"name": f"arn:aws:cloudtrail:{HOME_REGION}:<acct>:trail/{TRAIL_NAME}"}),
    _r("cloudtrail", "GetEventSelectors", {"trailName": f"arn:aws:cloudtrail:{HOME_REGION}:<acct>:trail/{TRAIL_NAME}"}),
    _r("cloudtrail", "LookupEvents", {"maxResults": 50, "lookupAttributes": [{"attributeKey": "EventName", "attributeValue": "ConsoleLogin"}]}),
    _r("guardduty", "ListDetectors"),
    _r("guardduty", "GetDetector", {"detectorId": "<detector>"}),
    _r("guardduty", "ListFindings", {"detectorId": "<detector>", "findingCriteria": {"criterion": {"service.archived": {"eq": ["false"]}}}, "maxResults": 50}),
    _r("guardduty", "GetFindings", {"detectorId": "<detector>", "findingIds": ["7ac9b2d1e0f34a5b6c7d8e9f0a1b2c3d"]}),
    _r("securityhub", "GetFindings", {"filters": {"RecordState": [{"value": "ACTIVE", "comparison": "EQUALS"}]}, "maxResults": 100}),
    _r("securityhub", "DescribeHub"),
    _r("config", "DescribeConfigRules"),
    _r("config", "DescribeComplianceByConfigRule"),
    _r("config", "DescribeConfigurationRecorderStatus"),
    _w("config", "PutEvaluations", {"evaluations": [{"complianceResourceType": "AWS::EC2::SecurityGroup", "complianceResourceId": _SG, "complianceType": "COMPLIANT"}],
                                   "resultToken": "<token>", "testMode": False}),
    _r("organizations", "DescribeOrganization", global_=True),
    _r("organizations", "ListAccounts", global_=True),
    _r("acm", "ListCertificates", {"certificateStatuses": ["ISSUED"]}),
    # only attackers call these (the scenarios give their parameters)
    _w("cloudtrail", "StopLogging"), _w("cloudtrail", "DeleteTrail"),
    _w("guardduty", "DeleteDetector"), _w("guardduty", "UpdateDetector"),
    _w("s3", "DeleteBucketPublicAccessBlock"), _w("s3", "PutBucketAcl"),
)
CALLS = {c.key: c for c in CALL_LIST}


@dataclass(frozen=True)
class Profile:
    """A weighted mix of API calls, prepared for ``random.choices``."""

    calls: tuple[Call, ...]
    cum_weights: tuple[float, ...]

    @classmethod
    def of(cls, weights: dict[str, float]) -> Profile:
        calls, cum, total = [], [], 0.0
        for key, weight in weights.items():
            calls.append(CALLS[key])
            total += weight
            cum.append(total)
        return cls(tuple(calls), tuple(cum))


def _mix(spec: str) -> dict[str, float]:
    """``"ec2:DescribeInstances=6 sts:GetCallerIdentity=2"`` as a dict of call key to weight."""
    return {key: float(weight) for key, weight in (item.rsplit("=", 1) for item in spec.split())}


PROFILES = {
    name: Profile.of(_mix(spec))
    for name, spec in {
        "dev": "ec2:DescribeInstances=6 lambda:GetFunction20150331v2=4 lambda:ListFunctions20150331=3 logs:DescribeLogGroups=4 "
               "logs:FilterLogEvents=6 logs:GetLogEvents=5 logs:DescribeLogStreams=4 cloudwatch:DescribeAlarms=3 dynamodb:DescribeTable=3 "
               "dynamodb:ListTables=2 s3:ListBuckets=3 s3:GetBucketLocation=2 sts:GetCallerIdentity=5 ssm:GetParameter=3 ssm:GetParametersByPath=2 "
               "cloudformation:DescribeStacks=3 cloudformation:DescribeStackEvents=2 ecr:DescribeImages=2 ecr:DescribeRepositories=1 "
               "eks:DescribeCluster=2 sqs:ListQueues=1 sqs:GetQueueAttributes=1 kms:DescribeKey=1 secretsmanager:DescribeSecret=1 "
               "secretsmanager:GetSecretValue=1 lambda:UpdateFunctionConfiguration20150331v2=0.3 ec2:CreateTags=0.3 ssm:PutParameter=0.2 "
               "iam:ListAccessKeys=0.2 iam:CreateAccessKey=0.04 iam:UpdateAccessKey=0.03",
        "ops": "ec2:DescribeInstances=8 ec2:DescribeSecurityGroups=4 ec2:DescribeVpcs=2 ec2:DescribeSubnets=2 ec2:DescribeVolumes=2 "
               "ec2:DescribeInstanceStatus=3 ec2:DescribeRouteTables=1 ec2:DescribeNatGateways=1 ec2:DescribeImages=1 ec2:DescribeSnapshots=1 "
               "autoscaling:DescribeAutoScalingGroups=3 elasticloadbalancing:DescribeLoadBalancers=2 elasticloadbalancing:DescribeTargetHealth=3 "
               "rds:DescribeDBInstances=2 rds:DescribeDBClusters=1 iam:ListRoles=1 iam:GetRole=2 iam:ListAttachedRolePolicies=1 "
               "cloudtrail:LookupEvents=1 cloudwatch:DescribeAlarms=3 route53:ListHostedZones=1 route53:ListResourceRecordSets=1 "
               "sts:GetCallerIdentity=4 logs:FilterLogEvents=2 ssm:DescribeInstanceInformation=2 ec2:StartInstances=0.2 ec2:StopInstances=0.2 "
               "autoscaling:UpdateAutoScalingGroup=0.2 ec2:AuthorizeSecurityGroupIngress=0.12 ec2:RevokeSecurityGroupIngress=0.05 "
               "ec2:CreateTags=0.4 iam:ListAccessKeys=0.2 iam:CreateAccessKey=0.04 iam:UpdateAccessKey=0.03",
        "data": "athena:StartQueryExecution=4 athena:GetQueryExecution=8 athena:ListWorkGroups=1 glue:GetTables=4 glue:GetDatabases=2 "
                "glue:GetPartitions=3 s3:ListBuckets=3 s3:GetBucketLocation=3 s3:GetBucketPolicy=1 dynamodb:DescribeTable=2 "
                "dynamodb:ListTables=1 rds:DescribeDBInstances=1 kms:DescribeKey=1 sts:GetCallerIdentity=3 secretsmanager:GetSecretValue=1 "
                "iam:ListAccessKeys=0.2 iam:CreateAccessKey=0.03",
        "security": "iam:ListUsers=3 iam:GetUser=2 iam:ListAccessKeys=3 iam:ListMFADevices=2 iam:ListAttachedUserPolicies=2 iam:GetLoginProfile=1 "
                    "iam:ListRoles=2 iam:GetRole=1 iam:GetAccountSummary=1 iam:GetCredentialReport=1 iam:GenerateCredentialReport=0.5 "
                    "guardduty:ListDetectors=2 guardduty:ListFindings=4 guardduty:GetFindings=5 securityhub:GetFindings=4 securityhub:DescribeHub=1 "
                    "cloudtrail:LookupEvents=4 cloudtrail:DescribeTrails=2 cloudtrail:GetTrailStatus=2 config:DescribeComplianceByConfigRule=2 "
                    "organizations:DescribeOrganization=1 organizations:ListAccounts=1 kms:GetKeyRotationStatus=1 s3:GetBucketPolicy=2 "
                    "s3:GetBucketPublicAccessBlock=2 ec2:DescribeSecurityGroups=3 sts:GetCallerIdentity=3",
        "reporting": "athena:StartQueryExecution=3 athena:GetQueryExecution=9 glue:GetTables=2 s3:GetBucketLocation=2 sts:GetCallerIdentity=1",
        "ci": "ec2:DescribeInstances=3 ec2:DescribeSecurityGroups=4 ec2:DescribeVpcs=3 ec2:DescribeSubnets=4 ec2:DescribeRouteTables=2 "
              "ec2:DescribeNatGateways=1 ec2:DescribeLaunchTemplates=2 ec2:DescribeImages=1 ec2:DescribeAvailabilityZones=1 "
              "iam:GetRole=5 iam:GetPolicy=3 iam:GetPolicyVersion=3 iam:ListRolePolicies=3 iam:ListAttachedRolePolicies=3 iam:GetRolePolicy=2 "
              "iam:ListInstanceProfilesForRole=1 s3:GetBucketPolicy=3 s3:GetBucketAcl=2 s3:GetBucketVersioning=2 s3:GetBucketEncryption=2 "
              "s3:GetBucketTagging=2 s3:GetBucketPublicAccessBlock=2 s3:GetBucketLogging=1 lambda:GetFunction20150331v2=3 "
              "lambda:GetPolicy20150331v2=2 lambda:ListVersionsByFunction20150331=2 logs:DescribeLogGroups=3 dynamodb:DescribeTable=2 "
              "dynamodb:DescribeContinuousBackups=1 dynamodb:DescribeTimeToLive=1 dynamodb:ListTagsOfResource=1 kms:DescribeKey=2 "
              "kms:GetKeyPolicy=1 kms:GetKeyRotationStatus=1 sts:GetCallerIdentity=2 cloudwatch:DescribeAlarms=1 "
              "elasticloadbalancing:DescribeLoadBalancers=1 elasticloadbalancing:DescribeTargetGroups=1 route53:ListResourceRecordSets=1 "
              "secretsmanager:DescribeSecret=1 secretsmanager:GetResourcePolicy=1 sns:GetTopicAttributes=1 sqs:GetQueueAttributes=1 "
              "ecr:DescribeRepositories=1 lambda:UpdateFunctionCode20150331v2=1 lambda:PublishVersion20150331=0.5 ec2:CreateTags=0.5 "
              "iam:PutRolePolicy=0.2 iam:TagRole=0.1 s3:PutBucketPolicy=0.1 s3:PutBucketTagging=0.2 s3:PutBucketVersioning=0.05 "
              "s3:PutBucketPublicAccessBlock=0.05 ec2:AuthorizeSecurityGroupIngress=0.1 ssm:PutParameter=0.3 logs:PutRetentionPolicy=0.1 "
              "cloudwatch:PutMetricAlarm=0.2 dynamodb:UpdateContinuousBackups=0.05",
        "lambda_app": "kms:Decrypt=5 kms:GenerateDataKey=2 secretsmanager:GetSecretValue=3 kms:Decrypt@secretsmanager=2 ssm:GetParameter=3 "
                      "ssm:GetParameters=2 dynamodb:DescribeTable=1 sts:GetCallerIdentity=1 sqs:GetQueueAttributes=1",
        "lambda_rotation": "secretsmanager:DescribeSecret=2 secretsmanager:GetSecretValue=3 secretsmanager:PutSecretValue=1 "
                           "secretsmanager:UpdateSecretVersionStage=1 secretsmanager:GetRandomPassword=1 kms:Decrypt@secretsmanager=2 kms:GenerateDataKey=1",
        "lambda_forwarder": "guardduty:GetFindings=3 guardduty:ListFindings=2 sts:GetCallerIdentity=1 kms:Decrypt=2 secretsmanager:GetSecretValue=1",
        "ssm_agent": "ssm:UpdateInstanceInformation=6 ssm:ListInstanceAssociations=4 ec2:DescribeTags=2 logs:CreateLogStream=0.5 kms:Decrypt=1 "
                     "secretsmanager:GetSecretValue=1 sts:GetCallerIdentity=0.5 ssm:GetParameter=1",
        "eks_node": "ecr:GetAuthorizationToken=3 ecr:BatchGetImage=3 ec2:DescribeInstances=2 ec2:DescribeNetworkInterfaces=2 ec2:DescribeTags=1 "
                    "ssm:UpdateInstanceInformation=2 eks:DescribeCluster=1 sts:GetCallerIdentity=1",
        "config_recorder": "ec2:DescribeInstances=4 ec2:DescribeSecurityGroups=4 ec2:DescribeVpcs=2 ec2:DescribeSubnets=2 ec2:DescribeVolumes=2 "
                           "ec2:DescribeNetworkInterfaces=2 ec2:DescribeRouteTables=1 iam:GetRole=2 iam:ListRolePolicies=1 iam:ListAttachedRolePolicies=1 "
                           "iam:GetPolicy=1 iam:GetUser=1 s3:GetBucketPolicy=2 s3:GetBucketAcl=2 s3:GetBucketVersioning=1 s3:GetBucketEncryption=1 "
                           "s3:GetBucketPublicAccessBlock=1 s3:GetBucketLogging=1 s3:GetBucketTagging=1 lambda:GetFunction20150331v2=1 "
                           "lambda:GetPolicy20150331v2=1 kms:DescribeKey=1 kms:GetKeyRotationStatus=1 rds:DescribeDBInstances=1 "
                           "dynamodb:DescribeTable=1 cloudtrail:DescribeTrails=1 cloudtrail:GetTrailStatus=1 config:PutEvaluations=1",
        "autoscaling": "ec2:DescribeInstances=3 ec2:DescribeInstanceStatus=3 elasticloadbalancing:DescribeTargetHealth=2 ec2:DescribeLaunchTemplates=1 "
                       "ec2:RunInstances=0.15 ec2:TerminateInstances=0.15 ec2:CreateTags=0.2",
        "scanner": "iam:ListUsers=1 iam:GetUser=1 iam:ListAccessKeys=2 iam:ListMFADevices=2 iam:ListAttachedUserPolicies=2 iam:ListRoles=1 "
                   "iam:GetRole=2 iam:ListRolePolicies=1 iam:GetAccountPasswordPolicy=1 iam:GetAccountSummary=1 iam:GetCredentialReport=1 "
                   "iam:GenerateCredentialReport=0.5 s3:ListBuckets=1 s3:GetBucketPolicy=2 s3:GetBucketAcl=2 s3:GetBucketEncryption=2 "
                   "s3:GetBucketPublicAccessBlock=2 s3:GetBucketLogging=2 s3:GetBucketVersioning=2 ec2:DescribeInstances=2 "
                   "ec2:DescribeSecurityGroups=3 ec2:DescribeVpcs=1 ec2:DescribeSnapshots=1 ec2:DescribeImages=1 ec2:DescribeRegions=1 "
                   "ec2:DescribeVolumes=1 ec2:DescribeKeyPairs=1 kms:ListAliases=1 kms:GetKeyRotationStatus=2 kms:GetKeyPolicy=1 "
                   "cloudtrail:DescribeTrails=1 cloudtrail:GetTrailStatus=1 cloudtrail:GetEventSelectors=1 guardduty:ListDetectors=1 "
                   "guardduty:GetDetector=1 config:DescribeConfigurationRecorderStatus=1 rds:DescribeDBInstances=1 rds:DescribeDBSnapshots=1 "
                   "lambda:ListFunctions20150331=1 lambda:GetPolicy20150331v2=1 secretsmanager:ListSecrets=1 secretsmanager:DescribeSecret=1 "
                   "logs:DescribeMetricFilters=1 cloudwatch:DescribeAlarms=1 sns:ListTopics=1 sqs:ListQueues=1 ecr:DescribeRepositories=1 "
                   "eks:ListClusters=1 acm:ListCertificates=1 securityhub:DescribeHub=1",
    }.items()
}

# fmt: on


# -- identities and sessions ----------------------------------------------------------------------------
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _stable_id(prefix: str, *parts: str, length: int = 17) -> str:
    """An AWS-looking id that depends only on the name (so principals keep their ids across seeds)."""
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return prefix + "".join(_B32[b & 31] for b in digest[:length])


def _stable_hex(*parts: str, length: int = 17) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:length]


def _iso(day: date, sec: int) -> str:
    return f"{day.isoformat()}T{_hms()[sec % 86400]}"


@cache
def _hms() -> tuple[str, ...]:
    """``HH:MM:SSZ`` for every second of a day, built once: formatting times was the hot spot."""
    return tuple(f"{h:02d}:{m:02d}:{s:02d}Z" for h in range(24) for m in range(60) for s in range(60))


def _user_identity(
    user: str, account: Account, key: str | None, *, console_created: str | None = None, mfa: bool = False
) -> dict:
    identity: dict[str, Any] = {
        "type": "IAMUser",
        "principalId": _stable_id("AIDA", account.id, user),
        "arn": f"arn:aws:iam::{account.id}:user/{user}",
        "accountId": account.id,
    }
    if key is not None:
        identity["accessKeyId"] = key
    identity["userName"] = user
    if console_created is not None:
        identity["sessionContext"] = {
            "sessionIssuer": {},
            "webIdFederationData": {},
            "attributes": {"creationDate": console_created, "mfaAuthenticated": "true" if mfa else "false"},
        }
    return identity


def _role_identity(
    role: str,
    session: str,
    account: Account,
    key: str,
    created: str,
    *,
    path: str = "",
    web_identity: str | None = None,
    mfa: bool = False,
) -> dict:
    role_id = _stable_id("AROA", account.id, role)
    return {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{session}",
        "arn": f"arn:aws:sts::{account.id}:assumed-role/{role}/{session}",
        "accountId": account.id,
        "accessKeyId": key,
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role_id,
                "arn": f"arn:aws:iam::{account.id}:role/{path}{role}",
                "accountId": account.id,
                "userName": role,
            },
            "webIdFederationData": {}
            if web_identity is None
            else {"federatedProvider": web_identity, "attributes": {}},
            "attributes": {"creationDate": created, "mfaAuthenticated": "true" if mfa else "false"},
        },
    }


def _root_identity(account: Account, created: str | None = None) -> dict:
    identity: dict[str, Any] = {
        "type": "Root",
        "principalId": account.id,
        "arn": f"arn:aws:iam::{account.id}:root",
        "accountId": account.id,
        "accessKeyId": "",
    }
    if created is not None:
        identity["accessKeyId"] = "ASIA" + _stable_id("", account.id, created, length=16)
        identity["sessionContext"] = {
            "sessionIssuer": {},
            "webIdFederationData": {},
            "attributes": {"creationDate": created, "mfaAuthenticated": "false"},
        }
    return identity


@dataclass
class Actor:
    """A principal in one session: who calls, from where, with what, and in which regions."""

    key: str
    account: Account
    identity: dict[str, Any]
    ips: tuple[str, ...]
    agent: str  # user agent; "<cmd>"/"<svc>" are filled per call
    region_cum: tuple[float, ...]  # cumulative weights over REGIONS
    console: bool = False  # console session: per-service console agents
    service: str | None = None  # a service-linked role: every call made by this AWS service
    vpce: str | None = None  # calls to VPCE_SERVICES go through this endpoint from ``private_ip``
    private_ip: str = ""
    tls: tuple[str, str] = ("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    subs: dict[str, str] = field(default_factory=dict)
    _via: dict[str, dict] = field(default_factory=dict)

    def identity_via(self, service: str) -> dict:
        """The identity with ``invokedBy``, as CloudTrail shows calls a service makes for the caller."""
        if service not in self._via:
            self._via[service] = {**self.identity, "invokedBy": service}
        return self._via[service]


def _cum(weights: Iterable[float]) -> tuple[float, ...]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return tuple(out)


@cache
def _single_region(cum_weights: tuple[float, ...]) -> str | None:
    """The only region with weight, if there is just one (the hot loop then skips the draw)."""
    regions = [
        r for r, c, before in zip(REGIONS, cum_weights, (0.0, *cum_weights)[:-1], strict=True) if c > before
    ]
    return regions[0] if len(regions) == 1 else None


def _only(region: str) -> tuple[float, ...]:
    return _cum(1.0 if r == region else 0.0 for r in REGIONS)


EVEN_REGIONS = _cum(1.0 for _ in REGIONS)


# -- one day of events ----------------------------------------------------------------------------------
class _Day:
    """Generates one day's records into per-(account, region) buckets, from a stream seeded by the day."""

    def __init__(self, seed: int, day: date, templates: dict[tuple, tuple]) -> None:
        self.rng = random.Random(f"trailguard-demo:{seed}:{day.isoformat()}")
        self.day = day
        self.prefix = day.isoformat() + "T"
        self.weekend = day.weekday() >= 5
        self.buckets: dict[tuple[str, str], list[tuple[int, dict]]] = defaultdict(list)
        # ground truth rows: (eventTime, eventID, scenario, technique, risk)
        self.truth: list[tuple[str, str, str, str, int]] = []
        self.count = 0
        self.scenario: Scenario | None = None
        self.occurrence = 0
        self._templates = templates

    # random pieces
    def key(self, prefix: str = "ASIA") -> str:
        return prefix + "".join(self.rng.choices(_B32, k=16))

    def region(self, actor: Actor) -> str:
        return self.rng.choices(REGIONS, cum_weights=actor.region_cum)[0]

    def iso(self, sec: int) -> str:
        return self.prefix + _hms()[sec]

    # records
    def emit(self, sec: int, record: dict) -> dict:
        """Stamp a record with its time and ids and file it under its account and region."""
        record["eventTime"] = self.prefix + _hms()[sec]
        if "requestID" in record:
            record["requestID"] = _request_id(self.rng, record["eventSource"] == "s3.amazonaws.com")
        record["eventID"] = _uuid4(self.rng)
        self.buckets[(record["recipientAccountId"], record["awsRegion"])].append((sec, record))
        self.count += 1
        return record

    def traffic(self, actor: Actor, profile: Profile, secs: list[int], error_rate: float) -> None:
        """Normal calls of ``actor`` at ``secs``: the hot loop, so records are copies of cached templates.

        Templates are keyed by the principal (``actor.key``), not the session: every session of a Lambda
        function shares them and gets its own userIdentity per record."""
        if not secs:
            return
        rng, templates, hms, prefix, buckets = self.rng, self._templates, _hms(), self.prefix, self.buckets
        rand, ips, cum = rng.random, actor.ips, actor.region_cum
        fixed_region, total = _single_region(cum), cum[-1]
        calls = rng.choices(profile.calls, cum_weights=profile.cum_weights, k=len(secs))
        for sec, call in zip(secs, calls, strict=True):
            region = (
                HOME_REGION if call.global_ else fixed_region or REGIONS[bisect.bisect(cum, rand() * total)]
            )
            variant = int(rand() * len(call.params)) if len(call.params) > 1 else 0
            ip = ips[int(rand() * len(ips))] if len(ips) > 1 else ips[0]
            error = rng.choice(call.errors) if rand() < error_rate else None
            tkey = (actor.key, call.key, region, variant, ip, error)
            entry = templates.get(tkey)
            if entry is None:
                template = _call_record(actor, call, region, variant, ip, error)
                entry = templates[tkey] = (template, actor.service or call.via, _dated_fields(template))
            template, via, dated = entry
            record = template.copy()
            record["userIdentity"] = actor.identity_via(via) if via else actor.identity
            if dated:
                self.fill_dates(record, dated, sec)
            record["eventTime"] = prefix + hms[sec]
            record["requestID"] = _request_id(rng, call.service == "s3")
            record["eventID"] = _uuid4(rng)
            buckets[(actor.account.id, region)].append((sec, record))
        self.count += len(secs)

    def call(
        self,
        actor: Actor,
        key: str,
        sec: int,
        *,
        region: str | None = None,
        params: Any = None,
        response: Any = None,
        error: str | None = None,
        technique: str | None = None,
        risk: int | None = None,
    ) -> dict:
        """One call outside the hot loop (scenarios, session starts); labelled when a scenario is running
        and ``risk`` is given."""
        call = CALLS[key]
        if region is None:
            region = HOME_REGION if call.global_ else self.region(actor)
        record = _call_record(actor, call, region, 0, actor.ips[0], error, params=params, response=response)
        self.fill_dates(record, _dated_fields(record), sec)
        self.emit(sec, record)
        if risk is not None:
            self.label(record, technique, risk)
        return record

    def fill_dates(self, record: dict, fields: tuple[str, ...], sec: int) -> None:
        """Fill ``<date>`` (the only day-dependent placeholder, e.g. a new key's createDate) in ``fields``."""
        if fields:
            subs = {
                "<date>": _aws_create_date(
                    datetime.combine(self.day, time(), timezone.utc) + timedelta(seconds=sec)
                )
            }
            for name in fields:
                record[name] = _replace(record[name], subs)

    def label(self, record: dict, technique: str | None, risk: int) -> None:
        assert self.scenario is not None
        self.truth.append(
            (
                record["eventTime"],
                record["eventID"],
                self.scenario.name,
                technique or self.scenario.technique,
                risk,
            )
        )

    def attack_start(self, scenario: Scenario) -> int:
        """Seconds into the day when this occurrence starts: the scenario's hour, give or take 40 minutes."""
        return int(min(max(scenario.hour * 3600 + self.rng.randint(-2400, 2400), 600), 84_600))


_UUID_CLEAR = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID_SET = (0x4 << 76) | (0x2 << 62)  # version 4, RFC 4122 variant


def _uuid4(rng: random.Random) -> str:
    """A uuid4-shaped id from the seeded stream (``uuid.uuid4`` would use the OS's randomness)."""
    h = f"{(rng.getrandbits(128) & _UUID_CLEAR) | _UUID_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _request_id(rng: random.Random, s3: bool) -> str:
    """S3's request ids are 16 hex digits; every other service uses a uuid."""
    return f"{rng.getrandbits(64):016X}" if s3 else _uuid4(rng)


def _replace(value: Any, subs: dict[str, str]) -> Any:
    """``value`` with ``<placeholders>`` replaced in its strings (a copy: catalogue values stay intact)."""
    if isinstance(value, str):
        if "<" in value:
            for k, v in subs.items():
                value = value.replace(k, v)
        return value
    if isinstance(value, dict):
        return {k: _replace(v, subs) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, subs) for v in value]
    return value


def _dated_fields(record: dict) -> tuple[str, ...]:
    return tuple(
        k
        for k in ("requestParameters", "responseElements")
        if record.get(k) is not None and b"<date>" in orjson.dumps(record[k])
    )


def _aws_create_date(moment: datetime) -> str:
    """IAM's createDate format, e.g. ``Nov 20, 2026 5:06:35 AM``."""
    return _aws_time(moment).replace(f"{moment.year},", str(moment.year), 1)


@cache
def _amz_id(*parts: str) -> str:
    return _stable_hex(*parts, length=56)


@cache
def _detector(account: str, region: str) -> str:
    """The account's GuardDuty detector id in a region."""
    return _stable_hex(account, region, "detector", length=32)


def _api_name(call: Call) -> str:
    """The API behind an eventName: Lambda's carry a version (``GetFunction20150331v2``)."""
    return _API_VERSION.sub("", call.name)


def _cli_command(call: Call) -> str:
    """``ec2.describe-instances``, as aws-cli v2 reports the command in its user agent."""
    return f"{call.service}.{_CAMEL.sub('-', _api_name(call)).lower()}"


_API_VERSION = re.compile(r"\d{8}(v\d)?$")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _error(code: str, actor: Actor, call: Call, region: str) -> tuple[str, str]:
    if code == "<denied>":
        code = DENIED_CODES.get(call.service, "AccessDenied")
        arn = actor.identity.get("arn") or f"arn:aws:iam::{actor.account.id}:root"
        action = f"{call.service}:{_api_name(call)}"
        if call.service == "s3":
            return code, "Access Denied"
        resource = f"arn:aws:{call.service}:{'' if call.global_ else region}:{actor.account.id}:*"
        return code, (
            f"User: {arn} is not authorized to perform: {action} on resource: {resource} "
            f"because no identity-based policy allows the {action} action"
        )
    if code == "<throttle>":
        code = THROTTLE_CODES.get(call.service, "ThrottlingException")
    return code, ERROR_MESSAGES.get(code, "").replace("<self>", actor.subs.get("<self>", "unknown")).replace(
        "<env>", actor.account.env
    )


def _call_record(
    actor: Actor,
    call: Call,
    region: str,
    variant: int,
    ip: str,
    error: str | None,
    *,
    params: Any = None,
    response: Any = None,
) -> dict:
    """A complete CloudTrail record for one API call, in AWS's key order, with empty time and ids."""
    subs = {
        "<env>": actor.account.env,
        "<acct>": actor.account.id,
        "<region>": region,
        "<vpc>": actor.account.vpc,
        "<detector>": _detector(actor.account.id, region),
        **actor.subs,
    }
    via = actor.service or call.via
    if via:
        identity, source_ip, agent, tls, vpce = actor.identity_via(via), via, via, None, None
    else:
        identity, agent = actor.identity, actor.agent
        if actor.console:
            agent = CONSOLE_AGENTS.get(call.service, CONSOLE_AGENT)
        elif "<" in agent:
            agent = agent.replace("<cmd>", _cli_command(call)).replace("<svc>", call.service)
        vpce = actor.vpce if actor.vpce and call.service in VPCE_SERVICES else None
        source_ip = actor.private_ip if vpce else ip
        host = (
            f"{call.service}.amazonaws.com"
            if call.global_ and call.service != "s3"
            else "s3.amazonaws.com"
            if call.service == "s3"
            else f"{call.service}.{region}.amazonaws.com"
        )
        tls = {"tlsVersion": actor.tls[0], "cipherSuite": actor.tls[1], "clientProvidedHostHeader": host}
    record: dict[str, Any] = {
        "eventVersion": "1.08" if call.service == "sts" else "1.10" if call.service == "s3" else "1.11",
        "userIdentity": identity,
        "eventTime": "",
        "eventSource": call.source,
        "eventName": call.name,
        "awsRegion": region,
        "sourceIPAddress": source_ip,
        "userAgent": agent,
    }
    if error:
        record["errorCode"], record["errorMessage"] = _error(error, actor, call, region)
    # catalogue values without placeholders are shared by all records (nothing ever mutates them)
    if params is None:
        params = _replace(call.params[variant], subs) if call.templated[variant] else call.params[variant]
    else:
        params = _replace(params, subs)
    record["requestParameters"] = params
    if error or call.read_only:
        response = None
    elif response is None:
        response = _replace(call.response, subs) if call.templated[-1] else call.response
    else:
        response = _replace(response, subs)
    record["responseElements"] = response
    if call.service == "s3":
        record["additionalEventData"] = {
            "SignatureVersion": "SigV4",
            "CipherSuite": actor.tls[1],
            "bytesTransferredIn": 0,
            "AuthenticationMethod": "AuthHeader",
            "x-amz-id-2": _amz_id(actor.key, call.name),
            "bytesTransferredOut": 0 if not call.read_only else 512,
        }
    record["requestID"] = ""
    record["eventID"] = ""
    record["readOnly"] = call.read_only
    if call.service == "kms":
        record["resources"] = [
            {
                "accountId": actor.account.id,
                "type": "AWS::KMS::Key",
                "ARN": f"arn:aws:kms:{region}:{actor.account.id}:key/6f1c9a3e-2b4d-4e8f-9a1b-3c5d7e9f1a2b",
            }
        ]
    record["eventType"] = "AwsApiCall"
    record["managementEvent"] = True
    record["recipientAccountId"] = actor.account.id
    if not via and vpce:
        record["vpcEndpointId"] = f"vpce-{_stable_hex(actor.account.id, region, call.service)}"
        record["vpcEndpointAccountId"] = actor.account.id
    record["eventCategory"] = "Management"
    if not via:
        record["tlsDetails"] = tls
    if actor.console and not via:
        record["sessionCredentialFromConsole"] = "true"
    return record


def _special(
    actor: Actor,
    *,
    source: str,
    name: str,
    region: str,
    params: Any,
    response: Any,
    read_only: bool,
    event_type: str = "AwsApiCall",
    extra: Any = None,
    resources: list | None = None,
    error: tuple[str | None, str] | None = None,
    identity: dict | None = None,
    version: str = "1.08",
    request_id: bool = True,
    service_details: dict | None = None,
    host: str | None = None,
) -> dict:
    """A record that is not a plain API call of the catalogue: sign-ins, role assumptions, service events."""
    record: dict[str, Any] = {
        "eventVersion": version,
        "userIdentity": actor.identity if identity is None else identity,
        "eventTime": "",
        "eventSource": source,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": actor.ips[0],
        "userAgent": actor.agent,
    }
    if error:
        if error[0]:
            record["errorCode"] = error[0]
        record["errorMessage"] = error[1]
    record["requestParameters"] = params
    record["responseElements"] = response
    if extra is not None:
        record["additionalEventData"] = extra
    if request_id:
        record["requestID"] = ""
    record["eventID"] = ""
    record["readOnly"] = read_only
    if resources:
        record["resources"] = resources
    record["eventType"] = event_type
    if service_details is not None:
        record["serviceEventDetails"] = service_details
    record["managementEvent"] = True
    record["recipientAccountId"] = actor.account.id
    record["eventCategory"] = "Management"
    if host:
        record["tlsDetails"] = {
            "tlsVersion": actor.tls[0],
            "cipherSuite": actor.tls[1],
            "clientProvidedHostHeader": host,
        }
    return record


def _console_login(
    gen: _Day,
    sec: int,
    account: Account,
    identity: dict,
    ip: str,
    browser: str,
    *,
    mfa: bool,
    success: bool,
    mfa_identifier: str | None = None,
) -> dict:
    """A ConsoleLogin event as AWS writes it: a failure has an errorMessage but no errorCode, and its
    identity no ARN and an empty access key."""
    actor = Actor("signin", account, identity, (ip,), browser, EVEN_REGIONS)
    if not success:
        identity = _signin_identity(identity)
    extra: dict[str, Any] = {
        "LoginTo": "https://console.aws.amazon.com/console/home?hashArgs=%23&isauthcode=true&state=hashArgsFromTB_us-east-1_c6b7c9e9c1a3f2d4",
        "MobileVersion": "No",
    }
    if mfa and mfa_identifier:
        extra["MFAIdentifier"] = mfa_identifier
    extra["MFAUsed"] = "Yes" if mfa else "No"
    record = _special(
        actor,
        source="signin.amazonaws.com",
        name="ConsoleLogin",
        region=HOME_REGION,
        params=None,
        response={"ConsoleLogin": "Success" if success else "Failure"},
        read_only=False,
        event_type="AwsConsoleSignIn",
        extra=extra,
        error=None if success else (None, "Failed authentication"),
        identity=identity,
        version="1.09",
        request_id=False,
        host="signin.aws.amazon.com",
    )
    return gen.emit(sec, record)


def _signin_identity(identity: dict) -> dict:
    """The identity of a failed sign-in or an MFA check: no ARN, an empty access key."""
    if identity.get("type") != "IAMUser":
        return identity
    return {
        "type": "IAMUser",
        "principalId": identity["principalId"],
        "accountId": identity["accountId"],
        "accessKeyId": "",
        "userName": identity["userName"],
    }


def _assume_role_by_service(
    gen: _Day,
    sec: int,
    account: Account,
    region: str,
    service: str,
    role: str,
    session: str,
    key: str,
    path: str = "",
) -> None:
    """The sts:AssumeRole an AWS service (Lambda, EC2, Config) makes to get a role's credentials."""
    role_arn = f"arn:aws:iam::{account.id}:role/{path}{role}"
    identity = {"type": "AWSService", "invokedBy": service}
    actor = Actor("svc", account, identity, (service,), service, _only(region))
    expires = datetime.combine(gen.day, time(), timezone.utc) + timedelta(seconds=sec + BLOCK + 3600)
    gen.emit(
        sec,
        _special(
            actor,
            source="sts.amazonaws.com",
            name="AssumeRole",
            region=region,
            read_only=True,
            params={"roleArn": role_arn, "roleSessionName": session},
            response={
                "credentials": {
                    "accessKeyId": key,
                    "sessionToken": _session_token(gen),
                    "expiration": _aws_time(expires),
                }
            },
            resources=[{"accountId": account.id, "type": "AWS::IAM::Role", "ARN": role_arn}],
        ),
    )


def _session_token(gen: _Day) -> str:
    return "IQoJb3JpZ2luX2VjE" + "".join(gen.rng.choices(_ALNUM, k=48))


def _aws_time(moment: datetime) -> str:
    """STS's ``expiration`` format, e.g. ``Nov 20, 2026, 3:04:05 PM``."""
    hour = moment.hour % 12 or 12
    return (
        f"{moment:%b} {moment.day}, {moment.year}, {hour}:{moment:%M:%S} {'AM' if moment.hour < 12 else 'PM'}"
    )


# -- normal traffic -------------------------------------------------------------------------------------
def _normal_traffic(gen: _Day, target: int) -> None:
    shares = GROUP_SHARES["weekend" if gen.weekend else "workday"]
    _humans(gen, round(target * shares["humans"]))
    _ci(gen, round(target * shares["ci"]))
    _lambdas(gen, round(target * shares["lambda"]))
    _instances(gen, round(target * shares["instances"]))
    _services(gen, round(target * shares["services"]))
    _scanner(gen, round(target * shares["scanner"]))


def _spread(gen: _Day, n: int, start: int, length: int) -> list[int]:
    """``n`` seconds of the day, uniform in ``[start, start + length)``, wrapping at midnight."""
    rand = gen.rng.random
    return [(start + int(rand() * length)) % 86400 for _ in range(n)]


def _humans(gen: _Day, budget: int) -> None:
    """People: a console sign-in or two in their working hours, then console and CLI calls."""
    rng = gen.rng
    plans = []
    for user in USERS:
        active = (user.profile == "ops" and rng.random() < 0.2) if gen.weekend else rng.random() < 0.93
        if active:
            start_local = 7.5 + rng.random() * 2.5
            plans.append(
                (
                    user,
                    int(((start_local - user.utc_offset) % 24) * 3600),
                    int((7.5 + rng.random() * 2.5) * 3600),
                )
            )
    if not gen.weekend:
        plans.append((SERVICE_USER, 5 * 3600 + rng.randrange(1800), 3600))
    weight = sum(p[0].weight for p in plans) or 1.0
    for user, start, length in plans:
        profile, rate = PROFILES[user.profile], ERROR_RATES["human"]
        n = round(budget * user.weight / weight)
        sessions = _console_sessions(gen, user, start, length) if user.console > 0 else []
        n_console = round(n * user.console) if sessions else 0
        console_time = sum(end - begin for begin, end, _, _ in sessions)
        for begin, end, today, yesterday in sessions:
            times = [
                begin + 20 + int(rng.random() * (end - begin - 20))
                for _ in range(round(n_console * (end - begin) / console_time))
            ]
            gen.traffic(today, profile, [t for t in times if t < 86400], rate)
            gen.traffic(yesterday, profile, [t - 86400 for t in times if t >= 86400], rate)
        n_cli = max(0, n - n_console - 2 * len(sessions))
        for i, env in enumerate(user.envs):
            part = (
                n_cli
                if len(user.envs) == 1
                else round(n_cli * (0.7 if i == 0 else 0.3 / (len(user.envs) - 1)))
            )
            gen.traffic(_cli_actor(user, ACCOUNT[env]), profile, _spread(gen, part, start, length), rate)


def _access_key(user: str, account: Account) -> str:
    """The user's long-lived access key id: the same every day (and when it leaks)."""
    return _stable_id("AKIA", account.id, user, "key1", length=16)


def _cli_actor(user: User, account: Account) -> Actor:
    return Actor(
        f"cli:{user.name}:{account.env}",
        account,
        _user_identity(user.name, account, _access_key(user.name, account)),
        user.ips,
        TOOLS[user.tool],
        _cum(account.region_weights),
        subs={"<self>": user.name},
    )


def _console_sessions(gen: _Day, user: User, start: int, length: int) -> list[tuple[int, int, Actor, Actor]]:
    """One or two console sign-ins (now and then after a mistyped password) and the sessions they open.

    Times run past 86400 when the working day crosses midnight UTC; calls after midnight belong to the
    same session begun the evening before, so they get a second actor whose creationDate is yesterday's."""
    rng = gen.rng
    logins = [start + rng.randrange(1800)]
    if rng.random() < 0.3:
        logins.append(start + length // 2 + rng.randrange(1800))
    sessions = []
    for i, login in enumerate(logins):
        end = logins[i + 1] if i + 1 < len(logins) else start + length
        if login >= 86400:
            login, end = login - 86400, end - 86400
        account = ACCOUNT[user.envs[0] if i == 0 or len(user.envs) == 1 else rng.choice(user.envs[1:])]
        ip = rng.choice(user.ips)
        browser = BROWSERS[user.browser]
        identity = _user_identity(user.name, account, None)
        if rng.random() < 0.06:
            _console_login(
                gen,
                max(0, login - rng.randint(15, 90)),
                account,
                identity,
                ip,
                browser,
                mfa=user.mfa,
                success=False,
            )
        if user.mfa:
            gen.emit(
                login,
                _special(
                    Actor("signin", account, _signin_identity(identity), (ip,), browser, EVEN_REGIONS),
                    source="signin.amazonaws.com",
                    name="CheckMfa",
                    region=HOME_REGION,
                    params=None,
                    response={"CheckMfa": "Success"},
                    read_only=False,
                    event_type="AwsConsoleSignIn",
                    extra={"MfaType": "Virtual MFA"},
                    version="1.09",
                    request_id=False,
                    host="signin.aws.amazon.com",
                ),
            )
        _console_login(
            gen,
            login,
            account,
            identity,
            ip,
            browser,
            mfa=user.mfa,
            success=True,
            mfa_identifier=f"arn:aws:iam::{account.id}:mfa/{user.name}-phone",
        )
        if end - login < 120:
            continue
        today, yesterday = (
            Actor(
                f"console:{user.name}:{account.env}",
                account,
                _user_identity(user.name, account, gen.key(), console_created=created, mfa=user.mfa),
                (ip,),
                browser,
                _cum(account.region_weights),
                console=True,
                subs={"<self>": user.name},
            )
            for created in (gen.iso(login), _iso(gen.day - timedelta(days=1), login))
        )
        sessions.append((login, end, today, yesterday))
    return sessions


def _ci(gen: _Day, budget: int) -> None:
    """GitHub Actions deploys: AssumeRoleWithWebIdentity, then a Terraform burst as the deploy role."""
    rng = gen.rng
    runs = []
    for env, workday, weekend in (("prod", (3, 6), (0, 1)), ("dev", (5, 10), (0, 2))):
        lo, hi = weekend if gen.weekend else workday
        for _ in range(rng.randint(lo, hi)):
            runs.append((ACCOUNT[env], int((13 + rng.random() * 10) * 3600), rng.randint(90, 480)))
    if not runs:
        return
    per_run = max(0, budget - len(runs)) / len(runs)
    for account, t0, duration in sorted(runs, key=itemgetter(1)):
        repo = rng.choice(REPOS)
        subject = f"repo:{repo}:ref:refs/heads/main"
        provider = f"arn:aws:iam::{account.id}:oidc-provider/token.actions.githubusercontent.com"
        role = "github-actions-deploy"
        role_arn = f"arn:aws:iam::{account.id}:role/{role}"
        key, ip = gen.key(), rng.choice(GITHUB_RUNNER_IPS)
        web = Actor(
            "gha",
            account,
            {
                "type": "WebIdentityUser",
                "principalId": f"{provider}:sts.amazonaws.com:{subject}",
                "userName": subject,
                "identityProvider": provider,
            },
            (ip,),
            TOOLS["gha_credentials"],
            _only(HOME_REGION),
        )
        expires = datetime.combine(gen.day, time(), timezone.utc) + timedelta(seconds=t0 + 3600)
        role_id = _stable_id("AROA", account.id, role)
        gen.emit(
            t0,
            _special(
                web,
                source="sts.amazonaws.com",
                name="AssumeRoleWithWebIdentity",
                region=HOME_REGION,
                read_only=True,
                params={"roleArn": role_arn, "roleSessionName": "GitHubActions", "durationSeconds": 3600},
                response={
                    "credentials": {
                        "accessKeyId": key,
                        "sessionToken": _session_token(gen),
                        "expiration": _aws_time(expires),
                    },
                    "subjectFromWebIdentityToken": subject,
                    "assumedRoleUser": {
                        "assumedRoleId": f"{role_id}:GitHubActions",
                        "arn": f"arn:aws:sts::{account.id}:assumed-role/{role}/GitHubActions",
                    },
                    "provider": provider,
                    "audience": "sts.amazonaws.com",
                },
                extra={
                    "identityProviderConnectionVerificationMethod": "IAMTrustStore",
                    "RoleSessionName": "GitHubActions",
                },
                resources=[
                    {"accountId": account.id, "type": "AWS::IAM::Role", "ARN": role_arn},
                    {"accountId": account.id, "type": "AWS::IAM::OIDCProvider", "ARN": provider},
                ],
                host=f"sts.{HOME_REGION}.amazonaws.com",
            ),
        )
        actor = Actor(
            f"ci:{account.env}",
            account,
            _role_identity(role, "GitHubActions", account, key, gen.iso(t0), web_identity=provider),
            (ip,),
            TOOLS["terraform_ci"],
            _cum(account.region_weights),
            subs={"<self>": "deploy"},
        )
        gen.traffic(actor, PROFILES["ci"], _spread(gen, round(per_run), t0 + 4, duration), ERROR_RATES["ci"])


BLOCK = 4 * 3600  # Lambda and instance credentials are refreshed about this often


def _sessions(gen: _Day, n: int, block: int) -> list[tuple[int, list[int]]]:
    """Spread ``n`` calls over the day and group them by credential block: (session start, call times)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for sec in _spread(gen, n, 0, 86400):
        groups[sec // block].append(sec)
    out = []
    for b, secs in sorted(groups.items()):
        first = min(secs)
        out.append((max(b * block, first - gen.rng.randint(1, 120)), secs))
    return out


def _lambdas(gen: _Day, budget: int) -> None:
    """Lambda functions: the service assumes the execution role, the function calls KMS, Secrets Manager, SSM."""
    units = [(f, region) for f in LAMBDAS for region in f.regions]
    weight = sum(f.weight for f, _ in units)
    for f, region in units:
        account = ACCOUNT[f.env]
        n = max(0, round(budget * f.weight / weight) - 6)
        role = f"{f.name}-role"
        for created, secs in _sessions(gen, n, BLOCK):
            key = gen.key()
            _assume_role_by_service(gen, created, account, region, "lambda.amazonaws.com", role, f.name, key)
            ri = REGIONS.index(region)
            actor = Actor(
                f"lambda:{f.env}:{f.name}:{region}",
                account,
                _role_identity(role, f.name, account, key, gen.iso(created)),
                (account.nat_ips[ri],) if f.vpc else LAMBDA_IPS[region],
                TOOLS[f.runtime],
                _only(region),
                vpce="on" if f.vpc else None,
                private_ip=_private_ip(account, ri, 3, 40 + LAMBDAS.index(f)),
            )
            gen.traffic(actor, PROFILES[f.profile], secs, ERROR_RATES["lambda"])


def _instances(gen: _Day, budget: int) -> None:
    """EC2 instance profiles: EC2 assumes the role, the SSM agent and kubelet call through VPC endpoints."""
    units = [(g, i) for g in INSTANCE_GROUPS for i in range(g.count)]
    weight = sum(g.weight / g.count for g, _ in units)
    for g, i in units:
        account = ACCOUNT[g.env]
        ri = REGIONS.index(g.region)
        instance = "i-0" + _stable_hex(account.id, g.role, g.region, str(i), length=16)
        private_ip = _private_ip(account, ri, i % 8, 11 + (i * 37) % 240)
        n = max(0, round(budget * (g.weight / g.count) / weight) - 6)
        for created, secs in _sessions(gen, n, BLOCK):
            key = gen.key()
            _assume_role_by_service(
                gen, created, account, g.region, "ec2.amazonaws.com", g.role, instance, key
            )
            actor = Actor(
                f"ec2:{instance}",
                account,
                _role_identity(g.role, instance, account, key, gen.iso(created)),
                (account.nat_ips[ri],),
                TOOLS[g.agent],
                _only(g.region),
                vpce="on",
                private_ip=private_ip,
                subs={"<instance>": instance, "<ip>": private_ip, "<self>": instance},
            )
            gen.traffic(actor, PROFILES[g.profile], secs, ERROR_RATES["instance"])


def _private_ip(account: Account, region_index: int, subnet: int, host: int) -> str:
    """An address in the account's VPC for the region: 10.<account>.<region subnet>.<host>."""
    return f"{account.vpc}.{16 * region_index + subnet}.{host}"


def _services(gen: _Day, budget: int) -> None:
    """AWS services at work: AWS Config's recorder, Auto Scaling, key rotation and secret rotation events."""
    rng = gen.rng
    recorders = [(a, r) for a in ACCOUNTS for r in REGIONS]
    config_n = round(budget * 0.78 / len(recorders))
    for account, region in recorders:
        role, session = "AWSServiceRoleForConfig", "AWSConfig-Describe"
        for created, secs in _sessions(gen, max(0, config_n - 6), BLOCK):
            key = gen.key()
            _assume_role_by_service(
                gen,
                created,
                account,
                region,
                "config.amazonaws.com",
                role,
                session,
                key,
                path="aws-service-role/config.amazonaws.com/",
            )
            actor = Actor(
                f"config:{account.env}:{region}",
                account,
                _role_identity(
                    role,
                    session,
                    account,
                    key,
                    gen.iso(created),
                    path="aws-service-role/config.amazonaws.com/",
                ),
                ("config.amazonaws.com",),
                "config.amazonaws.com",
                _only(region),
                service="config.amazonaws.com",
                subs={"<token>": _stable_hex(account.id, region, "config", length=40)},
            )
            gen.traffic(actor, PROFILES["config_recorder"], secs, ERROR_RATES["service"])
    groups = [(ACCOUNT["prod"], "us-east-1"), (ACCOUNT["prod"], "eu-west-1"), (ACCOUNT["dev"], "us-east-1")]
    for account, region in groups:
        role = "AWSServiceRoleForAutoScaling"
        actor = Actor(
            f"autoscaling:{account.env}:{region}",
            account,
            _role_identity(
                role,
                "AutoScaling",
                account,
                gen.key(),
                gen.iso(0),
                path="aws-service-role/autoscaling.amazonaws.com/",
            ),
            ("autoscaling.amazonaws.com",),
            "autoscaling.amazonaws.com",
            _only(region),
            service="autoscaling.amazonaws.com",
        )
        gen.traffic(
            actor,
            PROFILES["autoscaling"],
            _spread(gen, round(budget * 0.2 / len(groups)), 0, 86400),
            ERROR_RATES["service"],
        )
    for account in ACCOUNTS:
        internal = Actor(
            "aws-internal",
            account,
            {"accountId": account.id, "invokedBy": "AWS Internal"},
            ("AWS Internal",),
            "AWS Internal",
            EVEN_REGIONS,
        )
        if rng.random() < 0.3:
            key_id = _uuid_from(account.id, gen.day.isoformat())
            region = rng.choices(REGIONS, cum_weights=_cum(account.region_weights))[0]
            gen.emit(
                rng.randrange(86400),
                _special(
                    internal,
                    source="kms.amazonaws.com",
                    name="RotateKey",
                    region=region,
                    params=None,
                    response=None,
                    read_only=False,
                    event_type="AwsServiceEvent",
                    resources=[
                        {
                            "accountId": account.id,
                            "type": "AWS::KMS::Key",
                            "ARN": f"arn:aws:kms:{region}:{account.id}:key/{key_id}",
                        }
                    ],
                    service_details={"keyId": key_id},
                    request_id=False,
                    version="1.11",
                ),
            )
        if account.env != "security" and rng.random() < 0.5:
            secret = f"arn:aws:secretsmanager:{HOME_REGION}:{account.id}:secret:{SECRET_NAMES[0].replace('<env>', account.env)}-Qx3rTb"
            sec = rng.randrange(86400 - 600)
            for offset, name in ((0, "RotationStarted"), (rng.randint(20, 300), "RotationSucceeded")):
                gen.emit(
                    sec + offset,
                    _special(
                        Actor(
                            "sm",
                            account,
                            {"accountId": account.id, "invokedBy": "secretsmanager.amazonaws.com"},
                            ("secretsmanager.amazonaws.com",),
                            "secretsmanager.amazonaws.com",
                            EVEN_REGIONS,
                        ),
                        source="secretsmanager.amazonaws.com",
                        name=name,
                        region=HOME_REGION,
                        params=None,
                        response=None,
                        read_only=False,
                        event_type="AwsServiceEvent",
                        service_details={"secretId": secret},
                        request_id=False,
                        version="1.11",
                    ),
                )


def _uuid_from(*parts: str) -> str:
    h = _stable_hex(*parts, length=32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def _scanner(gen: _Day, budget: int) -> None:
    """The nightly posture scan: the security account's task assumes an audit role in every account and
    reads everything in every region (many List/Describe calls, some AccessDenied: the near miss of recon)."""
    if budget <= 0:
        return
    rng = gen.rng
    security = ACCOUNT["security"]
    task_role_id = _stable_id("AROA", security.id, "prowler-task-role")
    start = int(1.5 * 3600) + rng.randrange(1200)
    for account in ACCOUNTS:
        t0 = start + rng.randrange(300)
        key = gen.key()
        session = f"prowler-{gen.day:%Y%m%d}"
        role = "security-audit"
        role_arn = f"arn:aws:iam::{account.id}:role/{role}"
        if account is security:
            caller = _role_identity("prowler-task-role", "ecs-task", security, gen.key(), gen.iso(t0 - 60))
        else:
            caller = {
                "type": "AWSAccount",
                "principalId": f"{task_role_id}:ecs-task",
                "accountId": security.id,
            }
        nat = (security.nat_ips[0],)
        expires = datetime.combine(gen.day, time(), timezone.utc) + timedelta(seconds=t0 + 3600)
        gen.emit(
            t0,
            _special(
                Actor("scanner", account, caller, nat, TOOLS["scanner"], _only(HOME_REGION)),
                source="sts.amazonaws.com",
                name="AssumeRole",
                region=HOME_REGION,
                read_only=True,
                params={
                    "roleArn": role_arn,
                    "roleSessionName": session,
                    "externalId": "HIDDEN_DUE_TO_SECURITY_REASONS",
                    "durationSeconds": 3600,
                },
                response={
                    "credentials": {
                        "accessKeyId": key,
                        "sessionToken": _session_token(gen),
                        "expiration": _aws_time(expires),
                    },
                    "assumedRoleUser": {
                        "assumedRoleId": f"{_stable_id('AROA', account.id, role)}:{session}",
                        "arn": f"arn:aws:sts::{account.id}:assumed-role/{role}/{session}",
                    },
                },
                resources=[{"accountId": account.id, "type": "AWS::IAM::Role", "ARN": role_arn}],
                host=f"sts.{HOME_REGION}.amazonaws.com",
            ),
        )
        actor = Actor(
            f"scanner:{account.env}",
            account,
            _role_identity(role, session, account, key, gen.iso(t0)),
            nat,
            TOOLS["scanner"],
            EVEN_REGIONS,
            subs={"<self>": SERVICE_USER.name},
        )
        duration = rng.randint(1200, 2400)
        gen.traffic(
            actor,
            PROFILES["scanner"],
            _spread(gen, max(0, budget // len(ACCOUNTS) - 1), t0 + 2, duration),
            ERROR_RATES["scanner"],
        )


# -- attack scenarios -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    """A labelled attack: its ATT&CK technique, the analyst's score, when it happens and what marks it."""

    name: str
    technique: str
    risk: int  # score of the decisive event; the surrounding recon scores lower (but at least 80)
    hour: float  # usual UTC hour
    earlier: tuple[int, ...]  # also happens this many days before the last day
    marks: str  # the fields a detection rule can key on
    build: Callable[[_Day, int], None]


def _attacker_ip(gen: _Day, not_country: str = "") -> str:
    return gen.rng.choice([ip for ip, country in ATTACKER_IPS if country != not_country])


def _attacker(
    gen: _Day,
    name: str,
    account: Account,
    identity: dict,
    ip: str,
    agent: str,
    *,
    console: bool = False,
    region: str = HOME_REGION,
    self_name: str = "",
) -> Actor:
    tls = (
        ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")
        if "kali" in agent or "aws-cli/1" in agent
        else ("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    )
    return Actor(
        f"attacker:{name}",
        account,
        identity,
        (ip,),
        agent,
        _only(region),
        console=console,
        tls=tls,
        subs={"<self>": self_name or identity.get("userName", "")},
    )


def _console_takeover(gen: _Day, t: int) -> None:
    """Password guessing then a console sign-in without MFA from a new country, and a look around."""
    rng = gen.rng
    victim = rng.choice([u for u in USERS if not u.mfa and "prod" in u.envs])
    account = ACCOUNT["prod"]
    ip = _attacker_ip(gen, victim.country)
    browser = TOOLS["attacker_browser"]
    identity = _user_identity(victim.name, account, None)
    for _ in range(rng.randint(1, 3)):
        gen.label(
            _console_login(gen, t, account, identity, ip, browser, mfa=False, success=False), "T1110.001", 85
        )
        t += rng.randint(8, 40)
    gen.label(_console_login(gen, t, account, identity, ip, browser, mfa=False, success=True), None, 92)
    actor = _attacker(
        gen,
        "console",
        account,
        _user_identity(victim.name, account, gen.key(), console_created=gen.iso(t)),
        ip,
        browser,
        console=True,
    )
    recon = [
        "sts:GetCallerIdentity",
        "iam:GetAccountSummary",
        "iam:ListUsers",
        "iam:ListRoles",
        "iam:ListAttachedUserPolicies",
        "s3:ListBuckets",
        "ec2:DescribeInstances",
        "secretsmanager:ListSecrets",
        "ec2:DescribeRegions",
        "organizations:DescribeOrganization",
    ]
    for key in recon[:2] + rng.sample(recon[2:], rng.randint(4, 7)):
        t += rng.randint(10, 60)
        gen.call(
            actor,
            key,
            t,
            region=HOME_REGION,
            technique="T1087.004" if key.startswith("iam:") else "T1580",
            risk=80,
        )


def _cloudtrail_tampering(gen: _Day, t: int) -> None:
    """A leaked long-lived key checks the trail, then stops logging (or deletes the trail)."""
    rng = gen.rng
    user = rng.choice([u for u in USERS if u.profile == "ops"])
    account = ACCOUNT["prod" if gen.occurrence % 2 == 0 else "dev"]
    actor = _attacker(
        gen,
        "trail",
        account,
        _user_identity(user.name, account, _access_key(user.name, account)),
        _attacker_ip(gen, user.country),
        TOOLS["attacker_cli"],
    )
    trail = {"name": f"arn:aws:cloudtrail:{HOME_REGION}:{account.id}:trail/{TRAIL_NAME}"}
    gen.call(actor, "cloudtrail:DescribeTrails", t, risk=80, technique="T1580")
    gen.call(actor, "cloudtrail:GetTrailStatus", t + rng.randint(5, 30), risk=80, technique="T1580")
    name = "StopLogging" if gen.occurrence % 2 == 0 else "DeleteTrail"
    gen.call(actor, f"cloudtrail:{name}", t + rng.randint(40, 120), params=trail, risk=98)


def _access_key_for_other_user(gen: _Day, t: int) -> None:
    """Persistence: a caller creates an access key for somebody else (on the last day from an attacker's
    address, earlier as an insider from their usual one)."""
    rng = gen.rng
    caller, target = rng.sample([u for u in USERS if "prod" in u.envs], 2)
    account = ACCOUNT["prod"]
    if gen.occurrence == 0:
        actor = _attacker(
            gen,
            "akey",
            account,
            _user_identity(caller.name, account, _access_key(caller.name, account)),
            _attacker_ip(gen, caller.country),
            TOOLS["attacker_cli"],
        )
    else:
        actor = _cli_actor(caller, account)
    new_key = gen.key("AKIA")
    gen.call(actor, "iam:ListUsers", t, risk=80, technique="T1087.004")
    gen.call(
        actor,
        "iam:ListAccessKeys",
        t + rng.randint(10, 40),
        params={"userName": target.name},
        risk=80,
        technique="T1087.004",
    )
    gen.call(
        actor,
        "iam:CreateAccessKey",
        t + 60,
        params={"userName": target.name},
        response={
            "accessKey": {
                "accessKeyId": new_key,
                "status": "Active",
                "userName": target.name,
                "createDate": "<date>",
            }
        },
        risk=95,
    )


def _open_ssh(gen: _Day, t: int) -> None:
    """A security group opened to the whole internet on port 22."""
    rng = gen.rng
    user = rng.choice([u for u in USERS if u.profile in ("ops", "dev") and "prod" in u.envs])
    account = ACCOUNT["prod"]
    actor = _cli_actor(user, account)
    region = rng.choice(("us-east-1", "eu-west-1"))
    gen.call(actor, "ec2:DescribeSecurityGroups", t, region=region)  # the look-up before is routine
    params = _ingress("0.0.0.0/0", 22, "temp debug", group="sg-0e5a7c9b1d3f24680", v6=gen.occurrence % 2 == 1)
    rule = {
        "securityGroupRuleId": "sgr-0" + _stable_hex(gen.day.isoformat(), "ssh", length=16),
        "groupId": "sg-0e5a7c9b1d3f24680",
        "groupOwnerId": account.id,
        "isEgress": False,
        "ipProtocol": "tcp",
        "fromPort": 22,
        "toPort": 22,
        "cidrIpv4": "0.0.0.0/0",
    }
    gen.call(
        actor,
        "ec2:AuthorizeSecurityGroupIngress",
        t + rng.randint(20, 90),
        region=region,
        params=params,
        response={"_return": True, "securityGroupRuleSet": {"items": [rule]}},
        risk=85,
    )


def _secrets_bulk_read(gen: _Day, t: int) -> None:
    """Stolen EC2 instance credentials used from outside AWS to read every secret within minutes."""
    rng = gen.rng
    account = ACCOUNT["prod"]
    instance = "i-0" + _stable_hex(account.id, "web-server-role", "us-east-1", "0", length=16)
    identity = _role_identity("web-server-role", instance, account, gen.key(), gen.iso(max(0, t - 3 * 3600)))
    actor = _attacker(gen, "secrets", account, identity, _attacker_ip(gen), TOOLS["attacker_cli"])
    gen.call(
        actor,
        "secretsmanager:ListSecrets",
        t,
        region=HOME_REGION,
        params={"maxResults": 100},
        risk=80,
        technique="T1526",
    )
    names = rng.sample(SECRET_NAMES, rng.randint(24, 36))
    for name in names:
        t += rng.randint(1, 6)
        denied = rng.random() < 0.12
        gen.call(
            actor,
            "secretsmanager:GetSecretValue",
            t,
            region=HOME_REGION,
            params={
                "secretId": f"arn:aws:secretsmanager:{HOME_REGION}:{account.id}:secret:{name.replace('<env>', 'prod')}-{_stable_hex(name, length=6)}"
            },
            error="<denied>" if denied else None,
            risk=85,
        )


# fmt: off
RECON_CALLS = ("iam:ListUsers", "iam:ListRoles", "iam:ListPolicies", "iam:GetAccountSummary", "iam:GetAccountPasswordPolicy",
               "s3:ListBuckets", "ec2:DescribeInstances", "ec2:DescribeVpcs", "ec2:DescribeSecurityGroups", "ec2:DescribeSnapshots",
               "ec2:DescribeRegions", "ec2:DescribeKeyPairs", "rds:DescribeDBInstances", "lambda:ListFunctions20150331",
               "secretsmanager:ListSecrets", "kms:ListAliases", "dynamodb:ListTables", "organizations:ListAccounts",
               "organizations:DescribeOrganization", "guardduty:ListDetectors", "cloudtrail:DescribeTrails", "eks:ListClusters",
               "ecr:DescribeRepositories", "sns:ListTopics", "sqs:ListQueues", "ssm:DescribeParameters", "logs:DescribeLogGroups")
# fmt: on


def _recon_burst(gen: _Day, t: int) -> None:
    """A leaked key enumerates the account from a Kali box: dozens of List/Describe calls a minute, most denied."""
    rng = gen.rng
    account = ACCOUNT["prod"]
    user = SERVICE_USER
    actor = _attacker(
        gen,
        "recon",
        account,
        _user_identity(user.name, account, _access_key(user.name, account)),
        _attacker_ip(gen, "US"),
        TOOLS["kali"],
        self_name=user.name,
    )
    gen.call(actor, "sts:GetCallerIdentity", t, region=HOME_REGION, risk=80, technique="T1087.004")
    for _ in range(rng.randint(35, 55)):
        key = rng.choice(RECON_CALLS)
        t += rng.randint(0, 2)
        region = rng.choice(REGIONS)
        allowed = key == "s3:ListBuckets" or rng.random() < 0.1
        gen.call(
            actor,
            key,
            t,
            region=None if CALLS[key].global_ else region,
            error=None if allowed else "<denied>",
            technique="T1087.004" if key.startswith(("iam:", "organizations:")) else "T1580",
            risk=80,
        )


def _guardduty_disabled(gen: _Day, t: int) -> None:
    """Defence evasion: GuardDuty detectors deleted (or suspended) in two regions."""
    rng = gen.rng
    account = ACCOUNT["prod"]
    user = rng.choice([u for u in USERS if "prod" in u.envs])
    actor = _attacker(
        gen,
        "guardduty",
        account,
        _user_identity(user.name, account, _access_key(user.name, account)),
        _attacker_ip(gen, user.country),
        TOOLS["attacker_cli"],
    )
    for region in ("us-east-1", "eu-west-1"):
        detector = _detector(account.id, region)
        gen.call(actor, "guardduty:ListDetectors", t, region=region, risk=80, technique="T1518.001")
        t += rng.randint(5, 30)
        if gen.occurrence == 0:
            gen.call(
                actor, "guardduty:DeleteDetector", t, region=region, params={"detectorId": detector}, risk=95
            )
        else:
            gen.call(
                actor,
                "guardduty:UpdateDetector",
                t,
                region=region,
                params={"detectorId": detector, "enable": False},
                risk=92,
            )
        t += rng.randint(20, 90)


def _root_login(gen: _Day, t: int) -> None:
    """The root user signs in without MFA from abroad and looks at the account's users and keys."""
    rng = gen.rng
    account = ACCOUNT["dev" if gen.occurrence % 2 == 0 else "security"]
    ip = _attacker_ip(gen)
    browser = TOOLS["attacker_browser"]
    gen.label(
        _console_login(gen, t, account, _root_identity(account), ip, browser, mfa=False, success=True),
        None,
        95,
    )
    actor = _attacker(
        gen, "root", account, _root_identity(account, gen.iso(t)), ip, browser, console=True, self_name="root"
    )
    for key in ("iam:GetAccountSummary", "iam:ListUsers", "iam:ListAccessKeys"):
        t += rng.randint(20, 120)
        gen.call(
            actor, key, t, params={} if key == "iam:ListAccessKeys" else None, risk=85, technique="T1087.004"
        )


def _bucket_made_public(gen: _Day, t: int) -> None:
    """Exfiltration set-up: the public access block removed and a bucket opened to everyone."""
    rng = gen.rng
    account = ACCOUNT["prod"]
    user = rng.choice([u for u in USERS if u.profile == "data"])
    actor = _attacker(
        gen,
        "s3",
        account,
        _user_identity(user.name, account, _access_key(user.name, account)),
        _attacker_ip(gen, user.country),
        TOOLS["attacker_cli"],
    )
    bucket = "acme-prod-data-lake"
    host = f"{bucket}.s3.amazonaws.com"
    gen.call(
        actor,
        "s3:DeleteBucketPublicAccessBlock",
        t,
        params={"bucketName": bucket, "Host": host, "publicAccessBlock": ""},
        risk=88,
    )
    if gen.occurrence % 2 == 0:
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "PublicRead",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{bucket}/*",
                }
            ],
        }
        gen.call(
            actor,
            "s3:PutBucketPolicy",
            t + rng.randint(20, 80),
            params={"bucketName": bucket, "Host": host, "policy": "", "bucketPolicy": policy},
            risk=92,
        )
    else:
        acl = {
            "AccessControlList": {
                "Grant": [
                    {
                        "Grantee": {
                            "xsi:type": "Group",
                            "URI": "http://acs.amazonaws.com/groups/global/AllUsers",
                        },
                        "Permission": "READ",
                    }
                ]
            },
            "Owner": {"ID": _stable_hex(account.id, "canonical", length=64)},
        }
        gen.call(
            actor,
            "s3:PutBucketAcl",
            t + rng.randint(20, 80),
            params={"bucketName": bucket, "Host": host, "acl": "", "AccessControlPolicy": acl},
            risk=90,
        )


# fmt: off
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("console_login_new_country", "T1078.004", 92, 3.2, (9, 23),
             "eventName=ConsoleLogin, responseElements.ConsoleLogin=Success, additionalEventData.MFAUsed=No, sourceIPAddress in a "
             "hosting ASN in a country the user never signed in from, Linux Firefox userAgent; preceded by 1-3 Failure sign-ins "
             "(T1110.001) and followed by console recon as the user (T1087.004/T1580)", _console_takeover),
    Scenario("cloudtrail_tampering", "T1562.008", 98, 4.3, (16, 27),
             "eventSource=cloudtrail.amazonaws.com, eventName=StopLogging (last day) or DeleteTrail, requestParameters.name=the trail ARN; "
             "an IAM user's access key from a hosting IP with an aws-cli userAgent", _cloudtrail_tampering),
    Scenario("access_key_for_other_user", "T1098.001", 95, 5.1, (5, 19),
             "eventName=CreateAccessKey with requestParameters.userName != userIdentity.userName (self-rotation, where they are equal, "
             "is normal traffic); preceded by ListUsers/ListAccessKeys for the target", _access_key_for_other_user),
    Scenario("security_group_open_ssh", "T1562.007", 85, 14.5, (12, 26),
             "eventName=AuthorizeSecurityGroupIngress with requestParameters.ipPermissions.items[].ipRanges.items[].cidrIp=0.0.0.0/0 and "
             "fromPort=toPort=22 (plus ipv6 ::/0 on odd occurrences); 0.0.0.0/0 on 443 and 22 from 10.x are normal", _open_ssh),
    Scenario("secrets_bulk_read", "T1555.006", 85, 9.7, (8, 22),
             "eventSource=secretsmanager.amazonaws.com, eventName=GetSecretValue, 24-36 distinct secretIds in 1-3 minutes by one "
             "userIdentity.arn (an EC2 instance role session) from a non-AWS IP with an aws-cli userAgent; after a ListSecrets", _secrets_bulk_read),
    Scenario("recon_access_denied", "T1580", 80, 11.2, (3, 14, 27),
             "35-55 List*/Describe* calls within about a minute by one principal (svc-reporting's access key), most with errorCode "
             "AccessDenied / Client.UnauthorizedOperation / AccessDeniedException, userAgent containing 'kali', many eventSources", _recon_burst),
    Scenario("guardduty_disabled", "T1562.001", 95, 4.6, (20,),
             "eventSource=guardduty.amazonaws.com, eventName=DeleteDetector (last day) or UpdateDetector with requestParameters.enable=false, "
             "in two regions, after ListDetectors", _guardduty_disabled),
    Scenario("root_console_login_no_mfa", "T1078.004", 95, 20.0, (11,),
             "eventName=ConsoleLogin, userIdentity.type=Root, additionalEventData.MFAUsed=No, foreign hosting IP; then console calls "
             "as Root", _root_login),
    Scenario("s3_bucket_made_public", "T1530", 92, 16.8, (6, 24),
             "eventName=DeleteBucketPublicAccessBlock then PutBucketPolicy with Principal '*' (last day) or PutBucketAcl granting "
             "http://acs.amazonaws.com/groups/global/AllUsers; a CloudFront-only PutBucketPolicy is normal traffic", _bucket_made_public),
)
# fmt: on


def _scenario_days(dates: list[date]) -> dict[date, list[tuple[Scenario, int]]]:
    """Each scenario on the last day (occurrence 0) and on its earlier days that fall inside the range."""
    out: dict[date, list[tuple[Scenario, int]]] = defaultdict(list)
    for scenario in SCENARIOS:
        for occurrence, days_before in enumerate((0, *scenario.earlier)):
            if days_before < len(dates):
                out[dates[-1 - days_before]].append((scenario, occurrence))
    return out


# -- volumes --------------------------------------------------------------------------------------------
def _daily_targets(dates: list[date], total: int) -> list[int]:
    """Split ``total`` over the days, weekends lighter, so that the sum is exactly ``total``."""
    weights = [WEEKEND_VOLUME if d.weekday() >= 5 else 1.0 for d in dates]
    scale = total / sum(weights)
    targets = [int(w * scale) for w in weights]
    targets[-1] += total - sum(targets)
    return targets


# -- delivery: files, bad files, digests ----------------------------------------------------------------
# fmt: off
BAD_FILES = (  # kind, days before the last day, the problem as the summary states it
    ("truncated_gzip", 2, "gzip stream cut off part-way (an interrupted upload)"),
    ("not_json", 4, "gzip of plain text (a CSV export), not JSON"),
    ("no_records", 6, "JSON without a Records array (one EventBridge event)"),
    ("bad_records", 1, "valid file; one record lacks eventID and one has an unparseable eventTime, the others are fine"),
)
# fmt: on
_BAD_PROBLEMS = {kind: problem for kind, _, problem in BAD_FILES}


def _bad_file_days(dates: list[date]) -> dict[date, list[str]]:
    out: dict[date, list[str]] = defaultdict(list)
    for kind, days_before, _ in BAD_FILES:
        out[dates[max(0, len(dates) - 1 - days_before)]].append(kind)
    return out


@dataclass
class _FileInfo:
    key: str
    sha256: str
    oldest: str
    newest: str
    delivered: datetime


class _Writer:
    """Cuts each day's buckets into delivery windows and writes them as AWS names them."""

    def __init__(
        self, root: Path, seed: int, progress: Callable[[int], None] | None, digest_day: date
    ) -> None:
        self.root = root
        self.seed = seed
        self.progress = progress
        self.digest_day = digest_day
        self.files = 0
        self.records = 0
        self.bad_records = 0
        self.bad: list[dict[str, str]] = []
        self.digest_files = 0
        self._digest_log: dict[str, list[_FileInfo]] = defaultdict(list)  # region: digest account's files
        self._dirs: set[Path] = set()

    def write_day(
        self,
        day: date,
        buckets: dict[tuple[str, str], list[tuple[int, dict]]],
        attack_ids: set[str],
        bad_kinds: Iterable[str],
    ) -> None:
        rng = random.Random(f"trailguard-demo:{self.seed}:{day.isoformat()}:delivery")
        for items in buckets.values():
            items.sort(key=itemgetter(0))
        window = _window_seconds({k: [s for s, _ in v] for k, v in buckets.items()})
        files = []  # (account, region, delivered, records)
        midnight = datetime.combine(day, time(), timezone.utc)
        for account, region in sorted(buckets):
            items = buckets[(account, region)]
            secs = [s for s, _ in items]
            edge = 0
            while edge < 86400:
                nxt = min(86400, edge + int(window * (0.7 + 0.6 * rng.random())))
                lo, hi = bisect.bisect_left(secs, edge), bisect.bisect_left(secs, nxt)
                if hi > lo:
                    delivered = midnight + timedelta(seconds=nxt + rng.randint(20, 300))
                    files.append((account, region, delivered, [r for _, r in items[lo:hi]]))
                edge = nxt
        bad = self._pick_bad(files, attack_ids, list(bad_kinds), rng)
        for i, (account, region, delivered, records) in enumerate(files):
            self._write_log(account, region, delivered, records, rng, bad.get(i))

    @staticmethod
    def _pick_bad(files: list, attack_ids: set[str], kinds: list[str], rng: random.Random) -> dict[int, str]:
        """Windows to spoil on purpose: several records, none of them an attack."""
        candidates = [
            i
            for i, (_, _, _, records) in enumerate(files)
            if len(records) >= 4 and not any(r["eventID"] in attack_ids for r in records)
        ]
        chosen = rng.sample(candidates, min(len(kinds), len(candidates)))
        return dict(zip(chosen, kinds[: len(chosen)], strict=True))

    def _path(self, account: str, kind: str, region: str, delivered: datetime, name: str) -> Path:
        folder = self.root / "AWSLogs" / account / kind / region / f"{delivered:%Y/%m/%d}"
        if folder not in self._dirs:
            folder.mkdir(parents=True, exist_ok=True)
            self._dirs.add(folder)
        return folder / name

    def _write_log(
        self,
        account: str,
        region: str,
        delivered: datetime,
        records: list[dict],
        rng: random.Random,
        bad: str | None,
    ) -> None:
        file_id = "".join(rng.choices(_ALNUM, k=16))
        path = self._path(
            account,
            "CloudTrail",
            region,
            delivered,
            f"{account}_CloudTrail_{region}_{delivered:%Y%m%dT%H%MZ}_{file_id}.json.gz",
        )
        good = len(records)
        if bad is None:
            payload = orjson.dumps({"Records": records})
            path.write_bytes(_gzip(payload))
            if account == ACCOUNT[DIGEST_ACCOUNT].id and delivered.date() >= self.digest_day:
                self._digest_log[region].append(
                    _FileInfo(
                        str(path.relative_to(self.root)),
                        hashlib.sha256(payload).hexdigest(),
                        records[0]["eventTime"],
                        records[-1]["eventTime"],
                        delivered,
                    )
                )
        else:
            data, good = _spoil(bad, records)
            path.write_bytes(data)
            if bad == "bad_records":
                self.bad_records += len(records) - good
            self.bad.append(
                {"key": str(path.relative_to(self.root)), "kind": bad, "problem": _BAD_PROBLEMS[bad]}
            )
        self.files += 1
        self.records += good
        if self.progress:
            self.progress(self.records)

    def write_digests(self) -> None:
        """Hourly digest files for the last day of the digest account, chained like AWS's."""
        account = ACCOUNT[DIGEST_ACCOUNT].id
        midnight = datetime.combine(self.digest_day, time(), timezone.utc)
        for ri, region in enumerate(REGIONS):
            previous: tuple[str, str] | None = None  # key, sha256 of the previous digest
            offset = timedelta(minutes=7 + 13 * ri, seconds=31)
            for hour in range(24):
                start, end = (
                    midnight + offset + timedelta(hours=hour),
                    midnight + offset + timedelta(hours=hour + 1),
                )
                logs = [f for f in self._digest_log[region] if start <= f.delivered < end]
                name = f"{account}_CloudTrail-Digest_{region}_{TRAIL_NAME}_{HOME_REGION}_{end:%Y%m%dT%H%M%SZ}.json.gz"
                path = self._path(account, "CloudTrail-Digest", region, end, name)
                key = str(path.relative_to(self.root))
                digest = {
                    "awsAccountId": account,
                    "digestStartTime": f"{start:%Y-%m-%dT%H:%M:%SZ}",
                    "digestEndTime": f"{end:%Y-%m-%dT%H:%M:%SZ}",
                    "digestS3Bucket": LOG_BUCKET,
                    "digestS3Object": key,
                    "digestPublicKeyFingerprint": _stable_hex(account, region, "fingerprint", length=32),
                    "digestSignatureAlgorithm": "SHA256withRSA",
                    "newestEventTime": max((f.newest for f in logs), default=None),
                    "oldestEventTime": min((f.oldest for f in logs), default=None),
                    "previousDigestS3Bucket": LOG_BUCKET if previous else None,
                    "previousDigestS3Object": previous[0] if previous else None,
                    "previousDigestHashValue": previous[1] if previous else None,
                    "previousDigestHashAlgorithm": "SHA-256" if previous else None,
                    "previousDigestSignature": _stable_hex(previous[0], length=64) * 8 if previous else None,
                    "logFiles": [
                        {
                            "s3Bucket": LOG_BUCKET,
                            "s3Object": f.key,
                            "hashValue": f.sha256,
                            "hashAlgorithm": "SHA-256",
                            "newestEventTime": f.newest,
                            "oldestEventTime": f.oldest,
                        }
                        for f in logs
                    ],
                }
                payload = orjson.dumps(digest)
                path.write_bytes(_gzip(payload))
                previous = (key, hashlib.sha256(payload).hexdigest())
                self.digest_files += 1


def _window_seconds(secs_by_bucket: dict[Any, list[int]]) -> int:
    """The shortest delivery window (from WINDOW_MINUTES) that keeps the day within FILES_PER_DAY files."""
    for minutes in WINDOW_MINUTES:
        width = minutes * 60
        if sum(len({s // width for s in secs}) for secs in secs_by_bucket.values()) <= FILES_PER_DAY:
            return width
    return WINDOW_MINUTES[-1] * 60


def _gzip(data: bytes) -> bytes:
    """gzip with a fixed header (no name, mtime 0), so equal input gives equal bytes."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def _spoil(kind: str, records: list[dict]) -> tuple[bytes, int]:
    """The bytes of a deliberately bad file and how many of its records ingest should still accept."""
    if kind == "truncated_gzip":
        data = _gzip(orjson.dumps({"Records": records}))
        return data[: len(data) * 2 // 3], 0
    if kind == "not_json":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["eventTime", "eventSource", "eventName", "awsRegion", "sourceIPAddress"])
        for r in records:
            writer.writerow(
                [r["eventTime"], r["eventSource"], r["eventName"], r["awsRegion"], r["sourceIPAddress"]]
            )
        return _gzip(out.getvalue().encode()), 0
    if kind == "no_records":
        r = records[0]
        event = {
            "version": "0",
            "id": r["eventID"],
            "detail-type": "AWS API Call via CloudTrail",
            "source": "aws." + r["eventSource"].split(".")[0],
            "account": r["recipientAccountId"],
            "time": r["eventTime"],
            "region": r["awsRegion"],
            "resources": [],
            "detail": r,
        }
        return _gzip(orjson.dumps(event)), 0
    if kind == "bad_records":
        spoilt = [dict(r) for r in records]
        del spoilt[0]["eventID"]
        moment = datetime.fromisoformat(spoilt[1]["eventTime"].replace("Z", "+00:00"))
        spoilt[1]["eventTime"] = f"{moment:%d/%m/%Y %H:%M:%S}"
        return _gzip(orjson.dumps({"Records": spoilt})), len(records) - 2
    raise ValueError(f"unknown bad file kind {kind!r}")


# -- outputs --------------------------------------------------------------------------------------------
def _write_ground_truth(path: Path, truth: list[tuple[str, str, str, str, int]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(GROUND_TRUTH_COLUMNS)
        for event_time, event_id, scenario, technique, risk in truth:
            writer.writerow([event_id, event_time[:10], scenario, technique, risk])


def _summary_json(
    seed: int, dates: list[date], events: int | None, writer: _Writer, truth: list
) -> dict[str, Any]:
    scenarios = []
    for s in SCENARIOS:
        rows = [t for t in truth if t[2] == s.name]
        scenarios.append(
            {
                "scenario": s.name,
                "attack_technique": s.technique,
                "events": len(rows),
                "dates": sorted({t[0][:10] for t in rows}),
                "techniques": sorted({t[3] for t in rows}),
                "marks": s.marks,
            }
        )
    return {
        "generator": "trailguard.demo_data",
        "seed": seed,
        "start": dates[0].isoformat(),
        "end": dates[-1].isoformat(),
        "days": len(dates),
        "events_requested": events,
        "files": writer.files,
        "digest_files": writer.digest_files,
        "records": writer.records,
        "bad_files": len(writer.bad),
        "bad_records": writer.bad_records,
        "attacks": len(truth),
        "accounts": {a.env: a.id for a in ACCOUNTS},
        "regions": list(REGIONS),
        "log_bucket": LOG_BUCKET,
        "scenarios": scenarios,
        "bad_file_keys": writer.bad,
    }


def _check_target(out: Path) -> None:
    """Refuse to mix demo files into a folder that holds CloudTrail logs from somewhere else."""
    if (out / "AWSLogs").exists() and not (out / "demo_summary.json").exists():
        raise FileExistsError(f"{out / 'AWSLogs'} exists and is not a previous demo: choose an empty folder")


def _publish(staging: Path, out: Path) -> None:
    """Replace the previous demo with the staged one (the summary goes last: its presence marks a whole demo)."""
    for name in ("demo_summary.json", "ground_truth.csv", "AWSLogs"):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for name in ("AWSLogs", "ground_truth.csv", "demo_summary.json"):
        (staging / name).rename(out / name)
    staging.rmdir()
