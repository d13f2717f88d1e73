"""Credential access (TA0006): secrets, parameters, instance passwords and user data read.
"""

from __future__ import annotations

from typing import Any

from trailguard.detect.event import Event, as_list, is_true, short
from trailguard.detect.registry import rule

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


