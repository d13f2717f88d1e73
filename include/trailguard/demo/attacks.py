"""Attack scenarios planted in the demo: each with its ATT&CK technique, the analyst's score and its records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trailguard.demo.organisation import (
    ACCOUNT,
    ATTACKER_IPS,
    CALLS,
    HOME_REGION,
    REGIONS,
    SECRET_NAMES,
    SERVICE_USER,
    TOOLS,
    TRAIL_NAME,
    USERS,
    Account,
    ingress_rule,
)
from trailguard.demo.traffic import (
    Actor,
    DayTraffic,
    access_key_id,
    cli_actor,
    console_login,
    detector_id,
    only_region,
    role_identity,
    root_identity,
    stable_hex,
    user_identity,
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
    build: Callable[[DayTraffic, int], None]


def _attacker_ip(gen: DayTraffic, not_country: str = "") -> str:
    return gen.rng.choice([ip for ip, country in ATTACKER_IPS if country != not_country])


def _attacker(
    gen: DayTraffic,
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
        only_region(region),
        console=console,
        tls=tls,
        subs={"<self>": self_name or identity.get("userName", "")},
    )


def _console_takeover(gen: DayTraffic, t: int) -> None:
    """Password guessing then a console sign-in without MFA from a new country, and a look around."""
    rng = gen.rng
    victim = rng.choice([u for u in USERS if not u.mfa and "prod" in u.envs])
    account = ACCOUNT["prod"]
    ip = _attacker_ip(gen, victim.country)
    browser = TOOLS["attacker_browser"]
    identity = user_identity(victim.name, account, None)
    for _ in range(rng.randint(1, 3)):
        gen.label(
            console_login(gen, t, account, identity, ip, browser, mfa=False, success=False), "T1110.001", 85
        )
        t += rng.randint(8, 40)
    gen.label(console_login(gen, t, account, identity, ip, browser, mfa=False, success=True), None, 92)
    actor = _attacker(
        gen,
        "console",
        account,
        user_identity(victim.name, account, gen.key(), console_created=gen.iso(t)),
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


def _cloudtrail_tampering(gen: DayTraffic, t: int) -> None:
    """A leaked long-lived key checks the trail, then stops logging (or deletes the trail)."""
    rng = gen.rng
    user = rng.choice([u for u in USERS if u.profile == "ops"])
    account = ACCOUNT["prod" if gen.occurrence % 2 == 0 else "dev"]
    actor = _attacker(
        gen,
        "trail",
        account,
        user_identity(user.name, account, access_key_id(user.name, account)),
        _attacker_ip(gen, user.country),
        TOOLS["attacker_cli"],
    )
    trail = {"name": f"arn:aws:cloudtrail:{HOME_REGION}:{account.id}:trail/{TRAIL_NAME}"}
    gen.call(actor, "cloudtrail:DescribeTrails", t, risk=80, technique="T1580")
    gen.call(actor, "cloudtrail:GetTrailStatus", t + rng.randint(5, 30), risk=80, technique="T1580")
    name = "StopLogging" if gen.occurrence % 2 == 0 else "DeleteTrail"
    gen.call(actor, f"cloudtrail:{name}", t + rng.randint(40, 120), params=trail, risk=98)


def _access_key_for_other_user(gen: DayTraffic, t: int) -> None:
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
            user_identity(caller.name, account, access_key_id(caller.name, account)),
            _attacker_ip(gen, caller.country),
            TOOLS["attacker_cli"],
        )
    else:
        actor = cli_actor(caller, account)
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


def _open_ssh(gen: DayTraffic, t: int) -> None:
    """A security group opened to the whole internet on port 22."""
    rng = gen.rng
    user = rng.choice([u for u in USERS if u.profile in ("ops", "dev") and "prod" in u.envs])
    account = ACCOUNT["prod"]
    actor = cli_actor(user, account)
    # the debug group belongs to a web server in us-east-1 (demo.flows.DEBUG_GROUP, the brute force's way in);
    # the draw stays so the rest of the day's stream is as before
    rng.choice(("us-east-1", "eu-west-1"))
    region = "us-east-1"
    gen.call(actor, "ec2:DescribeSecurityGroups", t, region=region)  # the look-up before is routine
    params = ingress_rule("0.0.0.0/0", 22, "temp debug", group="sg-0e5a7c9b1d3f24680", v6=gen.occurrence % 2 == 1)
    rule = {
        "securityGroupRuleId": "sgr-0" + stable_hex(gen.day.isoformat(), "ssh", length=16),
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


def _secrets_bulk_read(gen: DayTraffic, t: int) -> None:
    """Stolen EC2 instance credentials used from outside AWS to read every secret within minutes."""
    rng = gen.rng
    account = ACCOUNT["prod"]
    instance = "i-0" + stable_hex(account.id, "web-server-role", "us-east-1", "0", length=16)
    identity = role_identity("web-server-role", instance, account, gen.key(), gen.iso(max(0, t - 3 * 3600)))
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
                "secretId": f"arn:aws:secretsmanager:{HOME_REGION}:{account.id}:secret:{name.replace('<env>', 'prod')}-{stable_hex(name, length=6)}"
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


def _recon_burst(gen: DayTraffic, t: int) -> None:
    """A leaked key enumerates the account from a Kali box: dozens of List/Describe calls a minute, most denied."""
    rng = gen.rng
    account = ACCOUNT["prod"]
    user = SERVICE_USER
    actor = _attacker(
        gen,
        "recon",
        account,
        user_identity(user.name, account, access_key_id(user.name, account)),
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


def _guardduty_disabled(gen: DayTraffic, t: int) -> None:
    """Defence evasion: GuardDuty detectors deleted (or suspended) in two regions."""
    rng = gen.rng
    account = ACCOUNT["prod"]
    user = rng.choice([u for u in USERS if "prod" in u.envs])
    actor = _attacker(
        gen,
        "guardduty",
        account,
        user_identity(user.name, account, access_key_id(user.name, account)),
        _attacker_ip(gen, user.country),
        TOOLS["attacker_cli"],
    )
    for region in ("us-east-1", "eu-west-1"):
        detector = detector_id(account.id, region)
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


def _root_login(gen: DayTraffic, t: int) -> None:
    """The root user signs in without MFA from abroad and looks at the account's users and keys."""
    rng = gen.rng
    account = ACCOUNT["dev" if gen.occurrence % 2 == 0 else "security"]
    ip = _attacker_ip(gen)
    browser = TOOLS["attacker_browser"]
    gen.label(
        console_login(gen, t, account, root_identity(account), ip, browser, mfa=False, success=True),
        None,
        95,
    )
    actor = _attacker(
        gen, "root", account, root_identity(account, gen.iso(t)), ip, browser, console=True, self_name="root"
    )
    for key in ("iam:GetAccountSummary", "iam:ListUsers", "iam:ListAccessKeys"):
        t += rng.randint(20, 120)
        gen.call(
            actor, key, t, params={} if key == "iam:ListAccessKeys" else None, risk=85, technique="T1087.004"
        )


def _bucket_made_public(gen: DayTraffic, t: int) -> None:
    """Exfiltration set-up: the public access block removed and a bucket opened to everyone."""
    rng = gen.rng
    account = ACCOUNT["prod"]
    user = rng.choice([u for u in USERS if u.profile == "data"])
    actor = _attacker(
        gen,
        "s3",
        account,
        user_identity(user.name, account, access_key_id(user.name, account)),
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
            "Owner": {"ID": stable_hex(account.id, "canonical", length=64)},
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

