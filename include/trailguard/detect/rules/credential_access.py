"""Credential access (TA0006): secrets and parameters read, password guessing, leaked keys, traffic mirrored."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from trailguard.detect.event import Event, as_list, is_true, short
from trailguard.detect.registry import fires, frame_rule, near_miss, rule
from trailguard.detect.samples import ACCOUNT, ALICE, DENIED, ROOT, call, login
from trailguard.intel.networks import aws_ranges, parse_ip


@rule(
    "console_login_failure",
    title="Failed console login",
    technique="T1110.001",
    score=40,
    reason="Failed console login for {user} from {ip}",
    runbook="Check for repeated failures for this user or from this IP; lock or reset the account if guessing continues.",
    events=["ConsoleLogin"],
    sources=["signin"],
    tests=[
        fires("IAM user's password rejected", login(ALICE, "Failure")),
        near_miss("IAM user signs in", login(ALICE, "Success", "Yes")),
    ],
)
def console_login_failure(event: Event) -> str | None:
    if event.identity_type == "Root" or not event.failed:
        return None
    return f"Failed console login for {short(event.text('userIdentity.userName') or event.actor())} from {event.ip()}"


@rule(
    "root_console_login_failure",
    title="Failed root console login",
    technique="T1110.001",
    score=60,
    reason="Failed root console login from {ip}",
    runbook="Someone knows the root e-mail address: confirm root MFA is on and watch for further attempts from this IP.",
    events=["ConsoleLogin"],
    identity_types=["Root"],
    sources=["signin"],
    tests=[
        fires("root password rejected", login(ROOT, "Failure")),
        near_miss("an IAM user's password rejected", login(ALICE, "Failure")),
    ],
)
def root_console_login_failure(event: Event) -> str | None:
    return f"Failed root console login from {event.ip()}" if event.failed else None


@rule(
    "iam_compromised_key_quarantine",
    title="AWS quarantined a leaked access key",
    technique="T1552.001",
    score=80,
    reason="Leaked-key quarantine policy attached to user {user}",
    runbook="AWS found the user's key exposed in public (e.g. a code repository): rotate the key, review its recent use.",
    events=["AttachUserPolicy"],
    sources=["iam"],
    tests=[
        fires(
            "AWS attaches the quarantine policy",
            call(
                "AttachUserPolicy",
                "iam",
                {"userName": "bob", "policyArn": "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"},
            ),
        ),
        near_miss(
            "ReadOnlyAccess attached",
            call(
                "AttachUserPolicy",
                "iam",
                {"userName": "bob", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"},
            ),
        ),
    ],
)
def iam_compromised_key_quarantine(event: Event) -> str | None:
    arn = event.text("requestParameters.policyArn")
    if event.failed or not arn.rpartition("/")[2].startswith("AWSCompromisedKeyQuarantine"):
        return None
    return f"Leaked-key quarantine policy attached to user {short(event.text('requestParameters.userName'))}"


@rule(
    "traffic_mirroring",
    title="VPC traffic mirroring set up",
    technique="T1040",
    score=60,
    reason="Traffic mirroring {eventName} by {actor}",
    runbook="Mirroring copies packets out of instances: confirm the target belongs to a sanctioned monitoring tool.",
    events=[
        "CreateTrafficMirrorSession",
        "CreateTrafficMirrorTarget",
        "CreateTrafficMirrorFilter",
        "CreateTrafficMirrorFilterRule",
        "ModifyTrafficMirrorSession",
    ],
    sources=["ec2"],
    tests=[
        fires(
            "mirror session created",
            call(
                "CreateTrafficMirrorSession",
                "ec2",
                {"CreateTrafficMirrorSessionRequest": {"NetworkInterfaceId": "eni-1"}},
            ),
        ),
        near_miss(
            "the call failed",
            call("CreateTrafficMirrorSession", "ec2", {}, errorCode="Client.NetworkInterfaceNotSupported"),
        ),
    ],
)
def traffic_mirroring(event: Event) -> str | None:
    return None if event.failed else f"Traffic mirroring {short(event.name)} by {event.actor()}"


@rule(
    "secret_value_read",
    title="Secrets Manager secret read",
    technique="T1555.006",
    score=35,
    reason="Secret {secret} read by {actor}",
    runbook="Normal for applications; check when the reader is a person or the secret is not the reader's own.",
    events=["GetSecretValue"],
    sources=["secretsmanager"],
    tests=[
        fires("secret read", call("GetSecretValue", "secretsmanager", {"secretId": "db-password"})),
        near_miss(
            "the read was denied",
            call("GetSecretValue", "secretsmanager", {"secretId": "db-password"}, **DENIED),
        ),
    ],
)
def secret_value_read(event: Event) -> str | None:
    if event.failed:
        return None
    return (
        f"Secret {short(event.text('requestParameters.secretId').rpartition(':')[2])} read by {event.actor()}"
    )


@rule(
    "secrets_batch_read",
    title="Secrets read in bulk (BatchGetSecretValue)",
    technique="T1555.006",
    score=70,
    reason="BatchGetSecretValue read {N secrets|secrets matching a filter} by {actor}",
    runbook="Bulk reads are rare in applications: confirm the caller, rotate the secrets if not explained.",
    events=["BatchGetSecretValue"],
    sources=["secretsmanager"],
    tests=[
        fires(
            "two secrets read in one call",
            call("BatchGetSecretValue", "secretsmanager", {"secretIdList": ["a", "b"]}),
        ),
        near_miss(
            "the read was denied",
            call("BatchGetSecretValue", "secretsmanager", {"secretIdList": ["a", "b"]}, **DENIED),
        ),
    ],
)
def secrets_batch_read(event: Event) -> str | None:
    if event.failed:
        return None
    ids = as_list(event.params("secretIdList"))
    what = f"{len(ids)} secrets" if ids else "secrets matching a filter"
    return f"BatchGetSecretValue read {what} by {event.actor()}"


def _decrypted_parameter_names(event: Event) -> list[Any] | None:
    if event.failed or not is_true(event.params("withDecryption")):
        return None
    if event.name == "GetParameter":
        return [event.params("name")]
    return as_list(event.params("names"))


@rule(
    "ssm_parameter_decrypted",
    title="SSM SecureString parameter decrypted",
    technique="T1555.006",
    score=35,
    reason="SSM parameter {name} decrypted by {actor}",
    runbook="Normal for applications; check when the reader is a person or reads parameters of other services.",
    events=["GetParameter", "GetParameters"],
    sources=["ssm"],
    tests=[
        fires(
            "SecureString read with decryption",
            call("GetParameter", "ssm", {"name": "/app/db", "withDecryption": True}),
        ),
        near_miss(
            "read without decryption",
            call("GetParameter", "ssm", {"name": "/app/db", "withDecryption": False}),
        ),
    ],
)
def ssm_parameter_decrypted(event: Event) -> str | None:
    names = _decrypted_parameter_names(event)
    if names is None or len(names) >= 5:
        return None
    return f"SSM parameter {short(names[0] if names else '?')} decrypted by {event.actor()}"


@rule(
    "ssm_parameters_bulk_decrypted",
    title="Many SSM SecureString parameters decrypted at once",
    technique="T1555.006",
    score=70,
    reason="{SSM parameters under PATH|N SSM SecureString parameters} decrypted {in one call }by {actor}",
    runbook="Harvesting parameters is a credential-access step: confirm the caller and rotate what it read.",
    events=["GetParameters", "GetParametersByPath"],
    sources=["ssm"],
    tests=[
        fires(
            "six parameters decrypted at once",
            call("GetParameters", "ssm", {"names": [f"/app/{i}" for i in range(6)], "withDecryption": True}),
        ),
        near_miss(
            "two parameters decrypted",
            call("GetParameters", "ssm", {"names": ["/app/a", "/app/b"], "withDecryption": True}),
        ),
        fires(
            "a whole path decrypted",
            call("GetParametersByPath", "ssm", {"path": "/app", "withDecryption": True}),
        ),
    ],
)
def ssm_parameters_bulk_decrypted(event: Event) -> str | None:
    if event.name == "GetParametersByPath":
        if event.failed or not is_true(event.params("withDecryption")):
            return None
        return (
            f"SSM parameters under {short(event.text('requestParameters.path'))} decrypted by {event.actor()}"
        )
    names = _decrypted_parameter_names(event)
    if names is None or len(names) < 5:
        return None
    return f"{len(names)} SSM SecureString parameters decrypted in one call by {event.actor()}"


@rule(
    "ec2_password_data_read",
    title="EC2 Windows password data retrieved",
    technique="T1552",
    score=70,
    reason="Windows password data of {instance} read by {actor}",
    runbook="Confirm an administrator needed the instance's password; rotate the local Administrator password if not.",
    events=["GetPasswordData"],
    sources=["ec2"],
    tests=[
        fires("password data read", call("GetPasswordData", "ec2", {"instanceId": "i-1"})),
        near_miss(
            "the call was denied",
            call("GetPasswordData", "ec2", {"instanceId": "i-1"}, errorCode="Client.UnauthorizedOperation"),
        ),
    ],
)
def ec2_password_data_read(event: Event) -> str | None:
    if event.failed:
        return None
    return f"Windows password data of {short(event.text('requestParameters.instanceId'))} read by {event.actor()}"


# --- EC2 instance credentials (frame rules: one look-up per distinct session and address) -----------------

_INSTANCE_SESSION = re.compile(r":assumed-role/[^/]{1,128}/i-[0-9a-f]{8,17}$")
_INSTANCE = {"type": "AssumedRole", "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/web/i-0382ede3231f87fc1",
             "accountId": ACCOUNT, "principalId": "AROAEXAMPLE:i-0382ede3231f87fc1"}  # fmt: skip


_OTHER_ACCOUNT_FIELDS = (  # what instance_credentials_other_account reads (Event.get finds the rest in `raw`)
    "vpcEndpointId", "vpcEndpointAccountId", "userIdentity.accountId", "recipientAccountId", "userIdentity.arn",
    "userIdentity.userName", "userIdentity.principalId", "eventName", "eventSource", "userIdentity.type", "raw",
)  # fmt: skip


def _present(values: pd.Series) -> np.ndarray:
    """Rows where a field holds something other than null or empty text (what ``Event.text`` reads as "")."""
    return (values.notna() & values.astype("str").ne("")).to_numpy(dtype=bool)


def _instance_rows(df: pd.DataFrame) -> np.ndarray:
    """Rows made with an EC2 instance profile's credentials: a role session named after the instance."""
    if "userIdentity.arn" not in df:
        return np.zeros(len(df), dtype=bool)
    codes, arns = pd.factorize(df["userIdentity.arn"])  # a day has far fewer sessions than events
    session = np.array(
        [*(isinstance(a, str) and _INSTANCE_SESSION.search(a) is not None for a in arns), False]
    )
    found = session[codes]
    if "userIdentity.type" in df:
        found &= (df["userIdentity.type"] == "AssumedRole").to_numpy(dtype=bool)
    return found


@frame_rule(
    "instance_credentials_outside_aws",
    title="EC2 instance credentials used outside AWS",
    technique="T1552.005",
    score=85,
    reason="EC2 instance credentials of role {role} (instance {instance}) used from {ip}, outside AWS "
    "(AWS IP ranges of {date} ({source}))",
    runbook="An instance profile's keys were taken from the instance (metadata service, SSRF, a backup) and used "
    "from elsewhere: revoke the role's sessions (a deny on aws:TokenIssueTime), find how they left the instance.",
    tests=[
        fires("an instance session from a foreign cloud", call("ListBuckets", "s3", userIdentity=_INSTANCE, sourceIPAddress="8.210.12.33")),
        near_miss("an instance session from an AWS address", call("ListBuckets", "s3", userIdentity=_INSTANCE, sourceIPAddress="3.218.180.10")),
        near_miss("an instance session from its VPC", call("ListBuckets", "s3", userIdentity=_INSTANCE, sourceIPAddress="10.20.3.41")),
    ],
)  # fmt: skip
def instance_credentials_outside_aws(df: pd.DataFrame) -> list[tuple[int, str]]:
    rows = np.flatnonzero(_instance_rows(df))
    if not len(rows) or "sourceIPAddress" not in df:
        return []
    ranges = aws_ranges()
    outside: dict[str, bool] = {}
    hits = []
    ips, arns = df["sourceIPAddress"].iloc[rows].tolist(), df["userIdentity.arn"].iloc[rows].tolist()
    for position, ip, arn in zip(rows, ips, arns, strict=True):
        if not isinstance(ip, str):
            continue
        if ip not in outside:
            address = parse_ip(ip)
            outside[ip] = address is not None and address.is_global and ip not in ranges
        if outside[ip]:
            role, _, session = str(arn).rpartition(":assumed-role/")[2].rpartition("/")
            hits.append((int(position), f"EC2 instance credentials of role {short(role)} (instance {short(session)}) "
                         f"used from {short(ip)}, outside AWS ({ranges.label})"))  # fmt: skip
    return hits


@frame_rule(
    "instance_credentials_other_account",
    title="EC2 instance credentials used from another AWS account",
    technique="T1552.005",
    score=80,
    reason="EC2 instance credentials of {actor} used through VPC endpoint {vpcEndpointId} of account "
    "{vpcEndpointAccountId}, not the role's account {account}",
    runbook="The call came through a VPC endpoint of another account: the instance's keys are used from an account "
    "that is not the role's. Revoke the role's sessions and find how the keys left the instance.",
    tests=[
        fires("through another account's endpoint", call("ListBuckets", "s3", userIdentity=_INSTANCE, sourceIPAddress="10.1.2.3",
              vpcEndpointId="vpce-1", vpcEndpointAccountId="999988887777")),
        near_miss("through the role's own endpoint", call("ListBuckets", "s3", userIdentity=_INSTANCE, sourceIPAddress="10.1.2.3",
                  vpcEndpointId="vpce-1", vpcEndpointAccountId=ACCOUNT)),
    ],
)  # fmt: skip
def instance_credentials_other_account(df: pd.DataFrame) -> list[tuple[int, str]]:
    # only calls through a VPC endpoint can fire: look at those rows alone (a day has millions of others),
    # and at the few fields the rule reads, column by column (a row dict of every column costs far more);
    # the endpoint's account is not a column: each of those rows reads it from its record
    through = _present(df["vpcEndpointId"]) if "vpcEndpointId" in df else True
    positions = np.flatnonzero(_instance_rows(df) & through)
    if not len(positions):
        return []
    names = [c for c in _OTHER_ACCOUNT_FIELDS if c in df]
    columns = [df[c].iloc[positions].tolist() for c in names]
    hits = []
    for i, position in enumerate(positions):
        event = Event({name: column[i] for name, column in zip(names, columns, strict=True)})
        endpoint_account = event.text("vpcEndpointAccountId")
        if endpoint_account and endpoint_account != event.account and event.text("vpcEndpointId"):
            hits.append((int(position), f"EC2 instance credentials of {event.actor()} used through VPC endpoint "
                         f"{short(event.text('vpcEndpointId'))} of account {short(endpoint_account)}, "
                         f"not the role's account {short(event.account)}"))  # fmt: skip
    return hits
