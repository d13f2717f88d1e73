"""The demo organisation: its accounts, regions, people, machines, the API calls they make and how often.

Data tables read best one entry a line: they are kept out of the formatter's reach.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

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


def read_call(service: str, name: str, *params: Any, errors: tuple[str, ...] = (), global_: bool = False, via: str | None = None) -> Call:
    return Call(service, name, True, params or (None,), None, ("<denied>", "<denied>", "<throttle>") + errors * 2, global_, via)


def write_call(service: str, name: str, *params: Any, response: Any = None, errors: tuple[str, ...] = (), global_: bool = False) -> Call:
    return Call(service, name, False, params or (None,), response, ("<denied>", "<denied>", "<throttle>") + errors * 2, global_)


def _bucket_params(extra: str, **more: Any) -> tuple[dict, ...]:
    return tuple({"bucketName": b, "Host": f"{b}.s3.amazonaws.com", extra: "", **more} for b in BUCKETS)


_SG = "sg-0b4c6a1d9e2f3a587"
_INGRESS = {"groupId": _SG, "ipPermissions": {"items": []}}


def ingress_rule(cidr: str, port: int, description: str, group: str = _SG, v6: bool = False) -> dict:
    ranges = {"items": [{"cidrIp": cidr, "description": description}]}
    v6ranges = {"items": [{"cidrIpv6": "::/0", "description": description}]} if v6 else {}
    return {"groupId": group, "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": port, "toPort": port, "groups": {},
                                                           "ipRanges": ranges, "ipv6Ranges": v6ranges, "prefixListIds": {}}]}}


CALL_LIST: tuple[Call, ...] = (
    # EC2
    read_call("ec2", "DescribeInstances", {"instancesSet": {}, "filterSet": {}},
       {"instancesSet": {}, "filterSet": {"items": [{"name": "tag:Environment", "valueSet": {"items": [{"value": "<env>"}]}}]}},
       {"maxResults": 1000, "instancesSet": {}, "filterSet": {}}, errors=("Client.InvalidInstanceID.NotFound",)),
    read_call("ec2", "DescribeSecurityGroups", {"securityGroupSet": {}, "securityGroupIdSet": {}, "filterSet": {}},
       {"securityGroupSet": {}, "securityGroupIdSet": {"items": [{"groupId": _SG}]}, "filterSet": {}}),
    read_call("ec2", "DescribeVpcs", {"vpcSet": {}, "filterSet": {}}),
    read_call("ec2", "DescribeSubnets", {"subnetSet": {}, "filterSet": {}}),
    read_call("ec2", "DescribeVolumes", {"volumeSet": {}, "filterSet": {}}),
    read_call("ec2", "DescribeNetworkInterfaces", {"networkInterfaceIdSet": {}, "filterSet": {}}),
    read_call("ec2", "DescribeInstanceStatus", {"instancesSet": {}, "filterSet": {}, "includeAllInstances": False}),
    read_call("ec2", "DescribeTags", {"filterSet": {"items": [{"name": "resource-id", "valueSet": {"items": [{"value": "<instance>"}]}}]}}),
    read_call("ec2", "DescribeRegions", {"regionSet": {}}),
    read_call("ec2", "DescribeAvailabilityZones", {"availabilityZoneSet": {}, "availabilityZoneIdSet": {}}),
    read_call("ec2", "DescribeSnapshots", {"snapshotSet": {}, "ownersSet": {"items": [{"owner": "self"}]}, "sharedUsersSet": {}, "filterSet": {}}),
    read_call("ec2", "DescribeImages", {"executableBySet": {}, "imagesSet": {}, "ownersSet": {"items": [{"owner": "self"}]}, "filterSet": {}}),
    read_call("ec2", "DescribeLaunchTemplates", {"launchTemplateIdSet": {}, "launchTemplateNameSet": {}}),
    read_call("ec2", "DescribeRouteTables", {"routeTableIdSet": {}, "filterSet": {}}),
    read_call("ec2", "DescribeNatGateways", {"DescribeNatGatewaysRequest": {}}),
    read_call("ec2", "DescribeKeyPairs", {"keySet": {}, "filterSet": {}}),
    write_call("ec2", "CreateTags", {"resourcesSet": {"items": [{"resourceId": "i-0a1b2c3d4e5f60718"}]}, "tagSet": {"items": [{"key": "Owner", "value": "<self>"}]}},
       response={"_return": True}),
    write_call("ec2", "StartInstances", {"instancesSet": {"items": [{"instanceId": "i-07c1e5b9d2a4f8e31"}]}},
       response={"instancesSet": {"items": [{"instanceId": "i-07c1e5b9d2a4f8e31", "currentState": {"code": 0, "name": "pending"}, "previousState": {"code": 80, "name": "stopped"}}]}}),
    write_call("ec2", "StopInstances", {"instancesSet": {"items": [{"instanceId": "i-07c1e5b9d2a4f8e31"}]}, "force": False},
       response={"instancesSet": {"items": [{"instanceId": "i-07c1e5b9d2a4f8e31", "currentState": {"code": 64, "name": "stopping"}, "previousState": {"code": 16, "name": "running"}}]}}),
    # benign near misses of the open-SSH scenario: HTTPS open to the world on the load balancer, SSH from the VPC
    write_call("ec2", "AuthorizeSecurityGroupIngress", ingress_rule("0.0.0.0/0", 443, "public HTTPS to the ALB", "sg-02f1d3c4b5a697081"),
       ingress_rule("<vpc>.0.0/16", 22, "SSH from the bastion subnet"), ingress_rule("10.0.0.0/8", 5432, "postgres from VPCs"),
       response={"_return": True}, errors=("Client.InvalidPermission.Duplicate",)),
    write_call("ec2", "RevokeSecurityGroupIngress", ingress_rule("10.0.0.0/8", 5432, "postgres from VPCs"), response={"_return": True}),
    write_call("ec2", "RunInstances", {"instancesSet": {"items": [{"imageId": "ami-0c7217cdde317cfec", "minCount": 1, "maxCount": 1}]}, "instanceType": "m7i.large",
                               "launchTemplate": {"launchTemplateName": "<env>-web"}, "monitoring": {"enabled": False}, "disableApiTermination": False},
       response={"reservationId": "r-0f4e1b2a3c5d69870", "ownerId": "<acct>", "instancesSet": {"items": [{"instanceId": "i-0d3f9a1b7c2e45a86", "instanceState": {"code": 0, "name": "pending"}}]}}),
    write_call("ec2", "TerminateInstances", {"instancesSet": {"items": [{"instanceId": "i-0d3f9a1b7c2e45a86"}]}},
       response={"instancesSet": {"items": [{"instanceId": "i-0d3f9a1b7c2e45a86", "currentState": {"code": 32, "name": "shutting-down"}, "previousState": {"code": 16, "name": "running"}}]}}),
    # IAM (global)
    read_call("iam", "ListUsers", None, {"maxItems": 100}, global_=True),
    read_call("iam", "GetUser", {"userName": "<self>"}, errors=("NoSuchEntityException",), global_=True),
    read_call("iam", "ListAccessKeys", {"userName": "<self>"}, global_=True),
    read_call("iam", "ListMFADevices", {"userName": "<self>"}, global_=True),
    read_call("iam", "ListGroupsForUser", {"userName": "<self>"}, global_=True),
    read_call("iam", "ListAttachedUserPolicies", {"userName": "<self>"}, global_=True),
    read_call("iam", "GetLoginProfile", {"userName": "<self>"}, errors=("NoSuchEntityException",), global_=True),
    read_call("iam", "ListRoles", None, {"maxItems": 1000}, global_=True),
    read_call("iam", "GetRole", {"roleName": "github-actions-deploy"}, {"roleName": "orders-api-role"}, {"roleName": "web-server-role"}, global_=True),
    read_call("iam", "ListAttachedRolePolicies", {"roleName": "orders-api-role"}, {"roleName": "web-server-role"}, global_=True),
    read_call("iam", "ListRolePolicies", {"roleName": "orders-api-role"}, {"roleName": "github-actions-deploy"}, global_=True),
    read_call("iam", "GetRolePolicy", {"roleName": "orders-api-role", "policyName": "orders-table-access"}, global_=True),
    read_call("iam", "ListPolicies", {"scope": "Local", "onlyAttached": False}, global_=True),
    read_call("iam", "GetPolicy", {"policyArn": "arn:aws:iam::<acct>:policy/deploy-boundary"}, global_=True),
    read_call("iam", "GetPolicyVersion", {"policyArn": "arn:aws:iam::<acct>:policy/deploy-boundary", "versionId": "v3"}, global_=True),
    read_call("iam", "GetAccountSummary", global_=True),
    read_call("iam", "GetAccountPasswordPolicy", errors=("NoSuchEntityException",), global_=True),
    read_call("iam", "GetCredentialReport", global_=True),
    read_call("iam", "ListInstanceProfilesForRole", {"roleName": "web-server-role"}, global_=True),
    write_call("iam", "GenerateCredentialReport", global_=True),
    # key rotation of one's own key: the near miss of "access key for another user"
    write_call("iam", "CreateAccessKey", {"userName": "<self>"}, None,
       response={"accessKey": {"accessKeyId": "AKIAWJ2R6Q3HNX4TZ5PM", "status": "Active", "userName": "<self>", "createDate": "<date>"}},
       errors=("LimitExceeded",), global_=True),
    write_call("iam", "UpdateAccessKey", {"userName": "<self>", "accessKeyId": "AKIAWJ2R6Q3HQ7D2KL8V", "status": "Inactive"}, global_=True),
    write_call("iam", "PutRolePolicy", {"roleName": "orders-api-role", "policyName": "orders-table-access",
                                "policyDocument": '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["dynamodb:GetItem","dynamodb:PutItem","dynamodb:Query"],"Resource":"arn:aws:dynamodb:*:<acct>:table/orders"}]}'},
       global_=True),
    write_call("iam", "TagRole", {"roleName": "orders-api-role", "tags": [{"key": "team", "value": "orders"}]}, global_=True),
    # STS
    read_call("sts", "GetCallerIdentity"),
    # S3 (bucket-level management events)
    read_call("s3", "ListBuckets", {"Host": "s3.amazonaws.com"}, global_=True),
    read_call("s3", "GetBucketLocation", *_bucket_params("location")),
    read_call("s3", "GetBucketPolicy", *_bucket_params("policy"), errors=("NoSuchBucketPolicy",)),
    read_call("s3", "GetBucketAcl", *_bucket_params("acl")),
    read_call("s3", "GetBucketVersioning", *_bucket_params("versioning")),
    read_call("s3", "GetBucketEncryption", *_bucket_params("encryption"), errors=("ServerSideEncryptionConfigurationNotFoundError",)),
    read_call("s3", "GetBucketTagging", *_bucket_params("tagging"), errors=("NoSuchTagSet",)),
    read_call("s3", "GetBucketPublicAccessBlock", *_bucket_params("publicAccessBlock"), errors=("NoSuchPublicAccessBlockConfiguration",)),
    read_call("s3", "GetBucketLogging", *_bucket_params("logging")),
    write_call("s3", "PutBucketTagging", *_bucket_params("tagging")),
    write_call("s3", "PutBucketVersioning", *_bucket_params("versioning", VersioningConfiguration={"Status": "Enabled"})),
    write_call("s3", "PutBucketPublicAccessBlock", *_bucket_params("publicAccessBlock", PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})),
    # a bucket policy for CloudFront only: the near miss of "bucket made public"
    write_call("s3", "PutBucketPolicy", {"bucketName": "acme-<env>-assets", "Host": "acme-<env>-assets.s3.amazonaws.com", "policy": "", "bucketPolicy": {
        "Version": "2012-10-17", "Statement": [{"Sid": "AllowCloudFrontRead", "Effect": "Allow", "Principal": {"Service": "cloudfront.amazonaws.com"},
                                                "Action": "s3:GetObject", "Resource": "arn:aws:s3:::acme-<env>-assets/*",
                                                "Condition": {"StringEquals": {"AWS:SourceArn": "arn:aws:cloudfront::<acct>:distribution/E2QWRUHAPOMQZL"}}}]}}),
    # Lambda
    read_call("lambda", "ListFunctions20150331", None, {"functionVersion": "ALL"}),
    *(read_call("lambda", name, *({"functionName": f} for f in FUNCTIONS), errors=("ResourceNotFoundException",))
      for name in ("GetFunction20150331v2", "GetFunctionConfiguration20150331v2", "GetPolicy20150331v2", "ListVersionsByFunction20150331")),
    read_call("lambda", "ListEventSourceMappings20150331", {"functionName": "orders-api"}),
    write_call("lambda", "UpdateFunctionCode20150331v2", *({"functionName": f, "s3Bucket": "acme-<env>-artifacts", "s3Key": f"{f}/build.zip", "publish": True} for f in FUNCTIONS),
       response={"functionName": "orders-api", "runtime": "python3.12", "state": "Active", "lastUpdateStatus": "InProgress"}),
    write_call("lambda", "UpdateFunctionConfiguration20150331v2", *({"functionName": f, "timeout": 30, "memorySize": 512} for f in FUNCTIONS),
       response={"functionName": "orders-api", "lastUpdateStatus": "InProgress"}),
    write_call("lambda", "PublishVersion20150331", *({"functionName": f} for f in FUNCTIONS), response={"version": "42", "state": "Active"}),
    # CloudWatch Logs and alarms
    read_call("logs", "DescribeLogGroups", {"limit": 50}, {"logGroupNamePrefix": "/aws/lambda/"}),
    read_call("logs", "DescribeLogStreams", *({"logGroupName": f"/aws/lambda/{f}", "orderBy": "LastEventTime", "descending": True, "limit": 5} for f in FUNCTIONS),
       errors=("ResourceNotFoundException",)),
    read_call("logs", "FilterLogEvents", *({"logGroupName": f"/aws/lambda/{f}", "filterPattern": "ERROR", "interleaved": True} for f in FUNCTIONS)),
    read_call("logs", "GetLogEvents", *({"logGroupName": f"/aws/lambda/{f}", "logStreamName": "2026/11/20/[$LATEST]8d1f0c2b5a7e4f3b9c6d0e1f2a3b4c5d", "startFromHead": False} for f in FUNCTIONS)),
    read_call("logs", "DescribeMetricFilters", {"logGroupName": "/aws/cloudtrail/acme-org-trail"}),
    write_call("logs", "CreateLogStream", {"logGroupName": "/ec2/<env>/app", "logStreamName": "<instance>"}, errors=("ResourceAlreadyExistsException",)),
    write_call("logs", "PutRetentionPolicy", {"logGroupName": "/aws/lambda/orders-api", "retentionInDays": 30}),
    read_call("cloudwatch", "DescribeAlarms", {"maxRecords": 100}, {"alarmNamePrefix": "<env>-"}),
    read_call("cloudwatch", "ListDashboards"),
    write_call("cloudwatch", "PutMetricAlarm", {"alarmName": "<env>-orders-api-errors", "metricName": "Errors", "namespace": "AWS/Lambda", "statistic": "Sum",
                                        "period": 300, "evaluationPeriods": 1, "threshold": 5.0, "comparisonOperator": "GreaterThanThreshold"}),
    # DynamoDB
    read_call("dynamodb", "ListTables"),
    *(read_call("dynamodb", name, *({"tableName": t} for t in TABLES), errors=("ResourceNotFoundException",))
      for name in ("DescribeTable", "DescribeContinuousBackups", "DescribeTimeToLive")),
    read_call("dynamodb", "ListTagsOfResource", *({"resourceArn": f"arn:aws:dynamodb:<region>:<acct>:table/{t}"} for t in TABLES)),
    write_call("dynamodb", "UpdateContinuousBackups", {"tableName": "orders", "pointInTimeRecoverySpecification": {"pointInTimeRecoveryEnabled": True}}),
    # KMS
    read_call("kms", "Decrypt", {"encryptionAlgorithm": "SYMMETRIC_DEFAULT"}, {"encryptionAlgorithm": "SYMMETRIC_DEFAULT", "encryptionContext": {"service": "orders"}}),
    read_call("kms", "Decrypt", {"encryptionAlgorithm": "SYMMETRIC_DEFAULT", "encryptionContext": {"SecretARN": "arn:aws:secretsmanager:<region>:<acct>:secret:<env>/orders/db-password-Qx3rTb", "SecretVersionId": "8f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"}},
       via="secretsmanager.amazonaws.com"),
    read_call("kms", "GenerateDataKey", {"keyId": "alias/<env>-app", "keySpec": "AES_256"}),
    read_call("kms", "DescribeKey", {"keyId": "alias/<env>-app"}, {"keyId": "alias/aws/secretsmanager"}),
    read_call("kms", "GetKeyRotationStatus", {"keyId": "arn:aws:kms:<region>:<acct>:key/6f1c9a3e-2b4d-4e8f-9a1b-3c5d7e9f1a2b"}),
    read_call("kms", "GetKeyPolicy", {"keyId": "6f1c9a3e-2b4d-4e8f-9a1b-3c5d7e9f1a2b", "policyName": "default"}),
    read_call("kms", "ListAliases"),
    # Secrets Manager and SSM
    read_call("secretsmanager", "GetSecretValue", *({"secretId": s} for s in SECRET_NAMES[:12]), errors=("ResourceNotFoundException",)),
    read_call("secretsmanager", "DescribeSecret", *({"secretId": s} for s in SECRET_NAMES[:12])),
    read_call("secretsmanager", "ListSecrets", None, {"maxResults": 100}),
    read_call("secretsmanager", "GetResourcePolicy", {"secretId": SECRET_NAMES[0]}),
    read_call("secretsmanager", "GetRandomPassword", {"passwordLength": 32, "excludeCharacters": "/@\"'\\"}),
    write_call("secretsmanager", "PutSecretValue", {"secretId": SECRET_NAMES[0], "clientRequestToken": "3b6f8e1c-2a4d-4f9e-8c7b-1d0e2f3a4b5c", "versionStages": ["AWSPENDING"]}),
    write_call("secretsmanager", "UpdateSecretVersionStage", {"secretId": SECRET_NAMES[0], "versionStage": "AWSCURRENT", "moveToVersionId": "3b6f8e1c-2a4d-4f9e-8c7b-1d0e2f3a4b5c"}),
    read_call("ssm", "GetParameter", {"name": "/<env>/orders/db-host", "withDecryption": False}, {"name": "/<env>/orders/feature-flags", "withDecryption": False},
       errors=("ParameterNotFound",)),
    read_call("ssm", "GetParameters", {"names": ["/<env>/orders/db-host", "/<env>/orders/db-user"], "withDecryption": True}),
    read_call("ssm", "GetParametersByPath", {"path": "/<env>/orders/", "recursive": True, "withDecryption": True}),
    read_call("ssm", "DescribeParameters", {"maxResults": 50}),
    read_call("ssm", "DescribeInstanceInformation", {"maxResults": 50}),
    read_call("ssm", "ListInstanceAssociations", {"instanceId": "<instance>", "maxResults": 20}),
    write_call("ssm", "UpdateInstanceInformation", {"instanceId": "<instance>", "agentVersion": "3.3.3050.0", "agentStatus": "Active", "platformType": "Linux",
                                            "platformName": "Amazon Linux", "platformVersion": "2023", "iPAddress": "<ip>", "agentName": "amazon-ssm-agent"}),
    write_call("ssm", "PutParameter", {"name": "/<env>/orders/feature-flags", "type": "String", "overwrite": True, "tier": "Standard"}, response={"version": 17, "tier": "Standard"}),
    # containers
    read_call("ecr", "GetAuthorizationToken"),
    read_call("ecr", "BatchGetImage", {"repositoryName": "orders-api", "imageIds": [{"imageTag": "v1.84.2"}],
                                "acceptedMediaTypes": ["application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json"]}),
    read_call("ecr", "DescribeRepositories"),
    read_call("ecr", "DescribeImages", {"repositoryName": "orders-api", "maxResults": 100}),
    read_call("eks", "DescribeCluster", {"name": "<env>-main"}),
    read_call("eks", "ListClusters"),
    # databases, stacks, load balancers, messaging, DNS
    read_call("rds", "DescribeDBInstances"),
    read_call("rds", "DescribeDBClusters"),
    read_call("rds", "DescribeDBSnapshots", {"snapshotType": "manual"}),
    read_call("cloudformation", "DescribeStacks", {"stackName": "<env>-network"}, {"stackName": "<env>-orders"}, None, errors=("ValidationError",)),
    read_call("cloudformation", "DescribeStackEvents", {"stackName": "<env>-orders"}),
    read_call("cloudformation", "ListStacks", {"stackStatusFilter": ["CREATE_COMPLETE", "UPDATE_COMPLETE"]}),
    read_call("elasticloadbalancing", "DescribeLoadBalancers"),
    read_call("elasticloadbalancing", "DescribeTargetGroups"),
    read_call("elasticloadbalancing", "DescribeTargetHealth", {"targetGroupArn": "arn:aws:elasticloadbalancing:<region>:<acct>:targetgroup/<env>-web/6d0ecf831eec9f09"}),
    read_call("autoscaling", "DescribeAutoScalingGroups", None, {"autoScalingGroupNames": ["<env>-web"]}),
    write_call("autoscaling", "UpdateAutoScalingGroup", {"autoScalingGroupName": "<env>-web", "minSize": 2, "maxSize": 8, "desiredCapacity": 4}),
    read_call("sns", "ListTopics"),
    read_call("sns", "GetTopicAttributes", {"topicArn": "arn:aws:sns:<region>:<acct>:<env>-alerts"}),
    read_call("sqs", "ListQueues"),
    read_call("sqs", "GetQueueAttributes", {"queueUrl": "https://sqs.<region>.amazonaws.com/<acct>/<env>-orders", "attributeNames": ["All"]}),
    read_call("route53", "ListHostedZones", global_=True),
    read_call("route53", "ListResourceRecordSets", {"hostedZoneId": "Z04521472MB1HKQ9T0LS"}, global_=True),
    # data
    read_call("athena", "GetQueryExecution", {"queryExecutionId": "5f1d6a0b-7c2e-4e9f-8a3b-1c2d3e4f5a6b"}),
    read_call("athena", "ListWorkGroups"),
    write_call("athena", "StartQueryExecution", {"queryString": "SELECT order_id, total FROM orders_daily WHERE dt = current_date - interval '1' day",
                                          "workGroup": "primary", "queryExecutionContext": {"database": "datalake_curated"}},
       response={"queryExecutionId": "5f1d6a0b-7c2e-4e9f-8a3b-1c2d3e4f5a6b"}),
    read_call("glue", "GetTables", {"databaseName": "datalake_curated"}, {"databaseName": "datalake_raw"}),
    read_call("glue", "GetDatabases"),
    read_call("glue", "GetPartitions", {"databaseName": "datalake_curated", "tableName": "orders_daily"}),
    # security services
    read_call("cloudtrail", "DescribeTrails", {"trailNameList": [], "includeShadowTrails": True}),
    read_call("cloudtrail", "GetTrailStatus", {"name": f"arn:aws:cloudtrail:{HOME_REGION}:<acct>:trail/{TRAIL_NAME}"}),
    read_call("cloudtrail", "GetEventSelectors", {"trailName": f"arn:aws:cloudtrail:{HOME_REGION}:<acct>:trail/{TRAIL_NAME}"}),
    read_call("cloudtrail", "LookupEvents", {"maxResults": 50, "lookupAttributes": [{"attributeKey": "EventName", "attributeValue": "ConsoleLogin"}]}),
    read_call("guardduty", "ListDetectors"),
    read_call("guardduty", "GetDetector", {"detectorId": "<detector>"}),
    read_call("guardduty", "ListFindings", {"detectorId": "<detector>", "findingCriteria": {"criterion": {"service.archived": {"eq": ["false"]}}}, "maxResults": 50}),
    read_call("guardduty", "GetFindings", {"detectorId": "<detector>", "findingIds": ["7ac9b2d1e0f34a5b6c7d8e9f0a1b2c3d"]}),
    read_call("securityhub", "GetFindings", {"filters": {"RecordState": [{"value": "ACTIVE", "comparison": "EQUALS"}]}, "maxResults": 100}),
    read_call("securityhub", "DescribeHub"),
    read_call("config", "DescribeConfigRules"),
    read_call("config", "DescribeComplianceByConfigRule"),
    read_call("config", "DescribeConfigurationRecorderStatus"),
    write_call("config", "PutEvaluations", {"evaluations": [{"complianceResourceType": "AWS::EC2::SecurityGroup", "complianceResourceId": _SG, "complianceType": "COMPLIANT"}],
                                   "resultToken": "<token>", "testMode": False}),
    read_call("organizations", "DescribeOrganization", global_=True),
    read_call("organizations", "ListAccounts", global_=True),
    read_call("acm", "ListCertificates", {"certificateStatuses": ["ISSUED"]}),
    # only attackers call these (the scenarios give their parameters)
    write_call("cloudtrail", "StopLogging"), write_call("cloudtrail", "DeleteTrail"),
    write_call("guardduty", "DeleteDetector"), write_call("guardduty", "UpdateDetector"),
    write_call("s3", "DeleteBucketPublicAccessBlock"), write_call("s3", "PutBucketAcl"),
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


