"""Execution and lateral movement (TA0002, TA0008): commands on instances, sessions, code changes, GPU launches.
"""

from __future__ import annotations

import re
from typing import Any

from trailguard.detect.event import Event, as_list, short
from trailguard.detect.policy import as_strings, failure_note, human_session, port_number
from trailguard.detect.registry import rule

# --- execution and lateral movement ---------------------------------------------------------------


@rule(
    "ec2_user_data_modified", "T1059", 70, "EC2 instance user data modified",
    "User data runs as root at the next boot: read the new script and compare with the launch template.",
    events=["ModifyInstanceAttribute"], sources=["ec2"],
)  # fmt: skip
def ec2_user_data_modified(event: Event) -> str | None:
    if event.failed or event.params("userData") is None:
        return None
    return f"User data of instance {short(event.text('requestParameters.instanceId'))} changed by {event.actor()}"


_SHELL_DOCUMENTS = frozenset({"AWS-RunShellScript", "AWS-RunPowerShellScript", "AWS-RunRemoteScript"})


def _shell_command_targets(event: Event) -> list[Any] | None:
    """Instances a successful SSM shell command went to; None when the event is not one."""
    if event.failed or event.text("requestParameters.documentName") not in _SHELL_DOCUMENTS:
        return None
    return as_list(event.params("instanceIds"))


@rule(
    "ssm_command_fleet", "T1651", 70, "Shell command sent to many instances via SSM",
    "Read the command (SSM command history); a fleet-wide script from an unusual caller is an incident.",
    events=["SendCommand"], sources=["ssm"],
)  # fmt: skip
def ssm_command_fleet(event: Event) -> str | None:
    instances = _shell_command_targets(event)
    tag_targets = event.params("targets")
    if instances is None or (len(instances) < 2 and not tag_targets):
        return None
    scope = f"{len(instances)} instances" if len(instances) >= 2 else "instances selected by tag"
    return f"{short(event.text('requestParameters.documentName'))} sent to {scope} by {event.actor()}"


@rule(
    "ssm_command", "T1651", 55, "Shell command sent to an instance via SSM",
    "Read the command in SSM history; check the caller administers that instance.",
    events=["SendCommand"], sources=["ssm"],
)  # fmt: skip
def ssm_command(event: Event) -> str | None:
    instances = _shell_command_targets(event)
    if instances is None or len(instances) != 1 or event.params("targets"):
        return None
    return f"{short(event.text('requestParameters.documentName'))} sent to {short(instances[0])} by {event.actor()}"


@rule(
    "ssm_session_started", "T1021.008", 40, "SSM shell session started",
    "Check the caller administers the target instance.",
    events=["StartSession"], sources=["ssm"],
)  # fmt: skip
def ssm_session_started(event: Event) -> str | None:
    if event.failed:
        return None
    return f"SSM session to {short(event.text('requestParameters.target'))} started by {event.actor()}"


@rule(
    "ec2_instance_connect_key", "T1021.008", 45, "SSH key pushed with EC2 Instance Connect",
    "Check the caller administers the instance; repeated pushes to many instances suggest lateral movement.",
    events=["SendSSHPublicKey"], sources=["ec2-instance-connect"],
)  # fmt: skip
def ec2_instance_connect_key(event: Event) -> str | None:
    if event.failed:
        return None
    instance = short(event.text("requestParameters.instanceId"))
    return f"SSH key pushed to {instance} as {short(event.text('requestParameters.instanceOSUser'), 32)} by {event.actor()}"


@rule(
    "ec2_serial_console_access", "T1021.008", 70, "EC2 serial console enabled or used",
    "The serial console bypasses network controls and is rarely needed: confirm an outage required it.",
    events=["EnableSerialConsoleAccess", "SendSerialConsoleSSHPublicKey"], sources=["ec2", "ec2-instance-connect"],
)  # fmt: skip
def ec2_serial_console_access(event: Event) -> str | None:
    if event.failed:
        return None
    if event.name == "EnableSerialConsoleAccess":
        return f"EC2 serial console access enabled for the account by {event.actor()}"
    return f"SSH key pushed to the serial console of {short(event.text('requestParameters.instanceId'))} by {event.actor()}"


_ACCELERATED_FAMILY = re.compile(r"^(?:p\d|g\d|gr\d|inf\d|trn\d|dl\d|f\d|vt\d)")


@rule(
    "ec2_gpu_instances", "T1496.001", 60, "GPU / accelerated EC2 instances launched",
    "Cryptomining starts like this: check the caller runs ML or GPU workloads; terminate unknown instances.",
    events=["RunInstances"], sources=["ec2"],
)  # fmt: skip
def ec2_gpu_instances(event: Event) -> str | None:
    if event.text("errorCode").endswith("DryRunOperation"):
        return None
    kind = event.params("instanceType")
    if isinstance(kind, dict):
        kind = kind.get("value")
    if not isinstance(kind, str) or not _ACCELERATED_FAMILY.match(kind.strip().lower()):
        return None
    counts = [
        port_number(i.get("maxCount")) for i in as_list(event.params("instancesSet.items")) if isinstance(i, dict)
    ]
    count = sum(c for c in counts if c) or 1
    return f"{count} x {short(kind, 24)} instances launched by {event.actor()}{failure_note(event)}"


@rule(
    "lambda_code_updated_by_human", "T1648", 55, "Lambda code updated by a person",
    "Deployments should come from CI/CD roles: diff the new code against the pipeline's last release.",
    events=["UpdateFunctionCode", "UpdateFunctionCode20150331", "UpdateFunctionCode20150331v2"], sources=["lambda"],
)  # fmt: skip
def lambda_code_updated_by_human(event: Event) -> str | None:
    if event.failed or not human_session(event):
        return None
    function = short(event.text("requestParameters.functionName").rpartition(":")[2])
    return f"Code of Lambda function {function} replaced by {event.actor()}"


@rule(
    "lambda_layer_added", "T1546", 50, "Lambda layer attached to a function",
    "Layers (and extensions in them) run with the function: check the layer's origin and content.",
    events=[
        "UpdateFunctionConfiguration", "UpdateFunctionConfiguration20150331",
        "UpdateFunctionConfiguration20150331v2",
    ],
    sources=["lambda"],
)  # fmt: skip
def lambda_layer_added(event: Event) -> str | None:
    layers = [] if event.failed else as_strings(event.params("layers"))
    if not layers:
        return None
    function = short(event.text("requestParameters.functionName").rpartition(":")[2])
    layer = short(layers[0].split(":layer:")[-1], 48)
    return f"Layer {layer} attached to Lambda function {function} by {event.actor()}"


