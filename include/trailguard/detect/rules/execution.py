"""Execution (TA0002): commands run on instances, instance boot scripts, Lambda code changed by hand."""

from __future__ import annotations

from typing import Any

from trailguard.detect.event import Event, as_list, short
from trailguard.detect.policy import human_session
from trailguard.detect.registry import fires, near_miss, rule
from trailguard.detect.samples import ROLE, call


@rule(
    "ec2_user_data_modified",
    title="EC2 instance user data modified",
    technique="T1059",
    score=70,
    reason="User data of instance {instance} changed by {actor}",
    runbook="User data runs as root at the next boot: read the new script and compare with the launch template.",
    events=["ModifyInstanceAttribute"],
    sources=["ec2"],
    tests=[
        fires(
            "instance user data replaced",
            call(
                "ModifyInstanceAttribute", "ec2", {"instanceId": "i-1", "userData": "<sensitiveDataRemoved>"}
            ),
        ),
        near_miss(
            "instance type changed",
            call(
                "ModifyInstanceAttribute", "ec2", {"instanceId": "i-1", "instanceType": {"value": "m5.large"}}
            ),
        ),
    ],
)
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
    "ssm_command_fleet",
    title="Shell command sent to many instances via SSM",
    technique="T1651",
    score=70,
    reason="{document} sent to {how many instances} by {actor}",
    runbook="Read the command (SSM command history); a fleet-wide script from an unusual caller is an incident.",
    events=["SendCommand"],
    sources=["ssm"],
    tests=[
        fires(
            "shell script sent to 3 instances",
            call(
                "SendCommand",
                "ssm",
                {"documentName": "AWS-RunShellScript", "instanceIds": ["i-1", "i-2", "i-3"]},
            ),
        ),
        near_miss(
            "shell script sent to one instance",
            call("SendCommand", "ssm", {"documentName": "AWS-RunShellScript", "instanceIds": ["i-1"]}),
        ),
        fires(
            "shell script sent to instances chosen by tag",
            call(
                "SendCommand",
                "ssm",
                {"documentName": "AWS-RunShellScript", "targets": [{"Key": "tag:env", "Values": ["prod"]}]},
            ),
        ),
    ],
)
def ssm_command_fleet(event: Event) -> str | None:
    instances = _shell_command_targets(event)
    tag_targets = event.params("targets")
    if instances is None or (len(instances) < 2 and not tag_targets):
        return None
    scope = f"{len(instances)} instances" if len(instances) >= 2 else "instances selected by tag"
    return f"{short(event.text('requestParameters.documentName'))} sent to {scope} by {event.actor()}"


@rule(
    "ssm_command",
    title="Shell command sent to an instance via SSM",
    technique="T1651",
    score=55,
    reason="{document} sent to {instance} by {actor}",
    runbook="Read the command in SSM history; check the caller administers that instance.",
    events=["SendCommand"],
    sources=["ssm"],
    tests=[
        fires(
            "shell script sent to one instance",
            call("SendCommand", "ssm", {"documentName": "AWS-RunShellScript", "instanceIds": ["i-1"]}),
        ),
        near_miss(
            "agent update sent to one instance",
            call("SendCommand", "ssm", {"documentName": "AWS-UpdateSSMAgent", "instanceIds": ["i-1"]}),
        ),
    ],
)
def ssm_command(event: Event) -> str | None:
    instances = _shell_command_targets(event)
    if instances is None or len(instances) != 1 or event.params("targets"):
        return None
    return f"{short(event.text('requestParameters.documentName'))} sent to {short(instances[0])} by {event.actor()}"


@rule(
    "lambda_code_updated_by_human",
    title="Lambda code updated by a person",
    technique="T1648",
    score=55,
    reason="Code of Lambda function {function} replaced by {actor}",
    runbook="Deployments should come from CI/CD roles: diff the new code against the pipeline's last release.",
    events=["UpdateFunctionCode", "UpdateFunctionCode20150331", "UpdateFunctionCode20150331v2"],
    sources=["lambda"],
    tests=[
        fires(
            "an IAM user uploads new code",
            call("UpdateFunctionCode20150331v2", "lambda", {"functionName": "api"}),
        ),
        near_miss(
            "a CI role deploys the code",
            call("UpdateFunctionCode20150331v2", "lambda", {"functionName": "api"}, userIdentity=ROLE),
        ),
    ],
)
def lambda_code_updated_by_human(event: Event) -> str | None:
    if event.failed or not human_session(event):
        return None
    function = short(event.text("requestParameters.functionName").rpartition(":")[2])
    return f"Code of Lambda function {function} replaced by {event.actor()}"
