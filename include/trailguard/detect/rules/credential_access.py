"""Credential access (TA0006): secrets, parameters, instance passwords and user data read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from trailguard.detect.event import Event, as_list, is_true, short
from trailguard.detect.registry import frame_rule, rule
from trailguard.intel.networks import aws_ranges, parse_ip

# --- credential access ----------------------------------------------------------------------------


@rule(
    "secret_value_read", "T1555.006", 35, "Secrets Manager secret read",
    "Normal for applications; check when the reader is a person or the secret is not the reader's own.",
    events=["GetSecretValue"], sources=["secretsmanager"],
)  # fmt: skip
def secret_value_read(event: Event) -> str | None:
    if event.failed:
        return None
    return f"Secret {short(event.text('requestParameters.secretId').rpartition(':')[2])} read by {event.actor()}"


@rule(
    "secrets_batch_read", "T1555.006", 70, "Secrets read in bulk (BatchGetSecretValue)",
    "Bulk reads are rare in applications: confirm the caller, rotate the secrets if not explained.",
    events=["BatchGetSecretValue"], sources=["secretsmanager"],
)  # fmt: skip
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
    "ssm_parameter_decrypted", "T1555.006", 35, "SSM SecureString parameter decrypted",
    "Normal for applications; check when the reader is a person or reads parameters of other services.",
    events=["GetParameter", "GetParameters"], sources=["ssm"],
)  # fmt: skip
def ssm_parameter_decrypted(event: Event) -> str | None:
    names = _decrypted_parameter_names(event)
    if names is None or len(names) >= 5:
        return None
    return f"SSM parameter {short(names[0] if names else '?')} decrypted by {event.actor()}"


@rule(
    "ssm_parameters_bulk_decrypted", "T1555.006", 70, "Many SSM SecureString parameters decrypted at once",
    "Harvesting parameters is a credential-access step: confirm the caller and rotate what it read.",
    events=["GetParameters", "GetParametersByPath"], sources=["ssm"],
)  # fmt: skip
def ssm_parameters_bulk_decrypted(event: Event) -> str | None:
    if event.name == "GetParametersByPath":
        if event.failed or not is_true(event.params("withDecryption")):
            return None
        return f"SSM parameters under {short(event.text('requestParameters.path'))} decrypted by {event.actor()}"
    names = _decrypted_parameter_names(event)
    if names is None or len(names) < 5:
        return None
    return f"{len(names)} SSM SecureString parameters decrypted in one call by {event.actor()}"


@rule(
    "ec2_password_data_read", "T1552", 70, "EC2 Windows password data retrieved",
    "Confirm an administrator needed the instance's password; rotate the local Administrator password if not.",
    events=["GetPasswordData"], sources=["ec2"],
)  # fmt: skip
def ec2_password_data_read(event: Event) -> str | None:
    if event.failed:
        return None
    return f"Windows password data of {short(event.text('requestParameters.instanceId'))} read by {event.actor()}"


@rule(
    "ec2_user_data_read", "T1580", 45, "EC2 instance user data downloaded",
    "User data often carries bootstrap secrets: check the caller is a scanner or the instance's owner.",
    events=["DescribeInstanceAttribute"], sources=["ec2"],
)  # fmt: skip
def ec2_user_data_read(event: Event) -> str | None:
    if event.failed or event.text("requestParameters.attribute") != "userData":
        return None
    return f"User data of {short(event.text('requestParameters.instanceId'))} downloaded by {event.actor()}"




# --- EC2 instance credentials (frame rules: one look-up per distinct session and address) -----------------

_INSTANCE_SESSION = r":assumed-role/[^/]{1,128}/i-[0-9a-f]{8,17}$"


def _instance_rows(df: pd.DataFrame) -> np.ndarray:
    """Rows made with an EC2 instance profile's credentials: a role session named after the instance."""
    if "userIdentity.arn" not in df:
        return np.zeros(len(df), dtype=bool)
    codes, arns = pd.factorize(df["userIdentity.arn"])  # a day has far fewer sessions than events
    session = np.array([*(isinstance(a, str) and re.search(_INSTANCE_SESSION, a) is not None for a in arns), False])
    found = session[codes]
    if "userIdentity.type" in df:
        found &= (df["userIdentity.type"] == "AssumedRole").to_numpy(dtype=bool)
    return found


@frame_rule(
    "instance_credentials_outside_aws", "T1552.005", 85, "EC2 instance credentials used outside AWS",
    "An instance profile's keys were taken from the instance (metadata service, SSRF, a backup) and used from "
    "elsewhere: revoke the role's sessions (a deny on aws:TokenIssueTime), find how they left the instance.",
)  # fmt: skip
def instance_credentials_outside_aws(df: pd.DataFrame) -> Iterable[tuple[int, str]]:
    rows = np.flatnonzero(_instance_rows(df))
    if not len(rows):
        return []
    ranges = aws_ranges()
    ips = df["sourceIPAddress"].iloc[rows] if "sourceIPAddress" in df else pd.Series(dtype=object)
    arns = df["userIdentity.arn"].iloc[rows]
    outside: dict[str, bool] = {}
    hits = []
    for position, ip, arn in zip(rows, ips.tolist(), arns.tolist(), strict=True):
        if not isinstance(ip, str):
            continue
        if ip not in outside:
            address = parse_ip(ip)
            outside[ip] = address is not None and address.is_global and ip not in ranges
        if outside[ip]:
            role, _, session = str(arn).rpartition(":assumed-role/")[2].rpartition("/")
            hits.append((int(position), f"EC2 instance credentials of role {short(role, 80)} (instance "
                         f"{short(session, 24)}) used from {short(ip, 40)}, outside AWS ({ranges.label})"))  # fmt: skip
    return hits


@frame_rule(
    "instance_credentials_other_account", "T1552.005", 80, "EC2 instance credentials used from another AWS account",
    "The call came through a VPC endpoint of another account: the instance's keys are used from an account that "
    "is not the role's. Revoke the role's sessions and find how the keys left the instance.",
)  # fmt: skip
def instance_credentials_other_account(df: pd.DataFrame) -> Iterable[tuple[int, str]]:
    rows = np.flatnonzero(_instance_rows(df))
    hits = []
    for position in rows:
        event = Event(df.iloc[int(position)].to_dict())
        endpoint_account = event.text("vpcEndpointAccountId")
        if endpoint_account and endpoint_account != event.account and event.text("vpcEndpointId"):
            hits.append((int(position), f"EC2 instance credentials of {event.actor()} used through VPC endpoint "
                         f"{short(event.text('vpcEndpointId'), 40)} of account {short(endpoint_account, 20)}, "
                         f"not the role's account {short(event.account, 20)}"))  # fmt: skip
    return hits
