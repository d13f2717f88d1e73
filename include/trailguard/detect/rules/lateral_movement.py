"""Lateral movement (TA0008): shell sessions and SSH keys into instances, API keys turned into sessions."""

from __future__ import annotations

from trailguard.detect.event import Event, short
from trailguard.detect.registry import fires, near_miss, rule
from trailguard.detect.samples import DENIED, ROLE, SSO, call


@rule(
    "signin_token_from_api_credentials",
    title="Console sign-in token minted from API credentials",
    technique="T1550.001",
    score=45,
    reason="Console sign-in token minted for {actor} from {ip}",
    runbook="Check whether the role's owner turns CLI credentials into console sessions; stolen keys are often used so.",
    events=["GetSigninToken"],
    sources=["signin"],
    tests=[
        fires(
            "a role's keys turned into a console session", call("GetSigninToken", "signin", userIdentity=ROLE)
        ),
        near_miss("the SSO portal mints one", call("GetSigninToken", "signin", userIdentity=SSO)),
    ],
)
def signin_token_from_api_credentials(event: Event) -> str | None:
    if event.failed or "AWSReservedSSO" in event.text("userIdentity.arn")[:400]:
        return None  # the SSO portal mints these for every console session
    return f"Console sign-in token minted for {event.actor()} from {event.ip()}"


@rule(
    "sts_session_token_iam_user",
    title="Session token minted by an IAM user",
    technique="T1550.001",
    score=25,
    reason="Session token minted by IAM user {user}",
    runbook="Usually MFA for the CLI; unexpected when the user never uses MFA or the IP is new.",
    events=["GetSessionToken"],
    identity_types=["IAMUser"],
    sources=["sts"],
    tests=[
        fires("IAM user gets a session token", call("GetSessionToken", "sts")),
        near_miss("a role session asks (not an IAM user)", call("GetSessionToken", "sts", userIdentity=ROLE)),
    ],
)
def sts_session_token_iam_user(event: Event) -> str | None:
    return None if event.failed else f"Session token minted by IAM user {short(event.caller_name())}"


@rule(
    "ssm_session_started",
    title="SSM shell session started",
    technique="T1021.008",
    score=40,
    reason="SSM session to {target} started by {actor}",
    runbook="Check the caller administers the target instance.",
    events=["StartSession"],
    sources=["ssm"],
    tests=[
        fires("session started", call("StartSession", "ssm", {"target": "i-1"})),
        near_miss("the call was denied", call("StartSession", "ssm", {"target": "i-1"}, **DENIED)),
    ],
)
def ssm_session_started(event: Event) -> str | None:
    if event.failed:
        return None
    return f"SSM session to {short(event.text('requestParameters.target'))} started by {event.actor()}"


@rule(
    "ec2_instance_connect_key",
    title="SSH key pushed with EC2 Instance Connect",
    technique="T1021.008",
    score=45,
    reason="SSH key pushed to {instance} as {os user} by {actor}",
    runbook="Check the caller administers the instance; repeated pushes to many instances suggest lateral movement.",
    events=["SendSSHPublicKey"],
    sources=["ec2-instance-connect"],
    tests=[
        fires(
            "key pushed",
            call(
                "SendSSHPublicKey",
                "ec2-instance-connect",
                {"instanceId": "i-1", "instanceOSUser": "ec2-user"},
            ),
        ),
        near_miss("the call was denied", call("SendSSHPublicKey", "ec2-instance-connect", None, **DENIED)),
    ],
)
def ec2_instance_connect_key(event: Event) -> str | None:
    if event.failed:
        return None
    instance = short(event.text("requestParameters.instanceId"))
    return f"SSH key pushed to {instance} as {short(event.text('requestParameters.instanceOSUser'), 32)} by {event.actor()}"


@rule(
    "ec2_serial_console_access",
    title="EC2 serial console enabled or used",
    technique="T1021.008",
    score=70,
    reason="{EC2 serial console access enabled for the account|SSH key pushed to the serial console of X} by {actor}",
    runbook="The serial console bypasses network controls and is rarely needed: confirm an outage required it.",
    events=["EnableSerialConsoleAccess", "SendSerialConsoleSSHPublicKey"],
    sources=["ec2", "ec2-instance-connect"],
    tests=[
        fires("serial console enabled", call("EnableSerialConsoleAccess", "ec2")),
        near_miss(
            "the call failed",
            call("EnableSerialConsoleAccess", "ec2", errorCode="Client.UnauthorizedOperation"),
        ),
        fires(
            "key pushed to a serial console",
            call("SendSerialConsoleSSHPublicKey", "ec2-instance-connect", {"instanceId": "i-1"}),
        ),
    ],
)
def ec2_serial_console_access(event: Event) -> str | None:
    if event.failed:
        return None
    if event.name == "EnableSerialConsoleAccess":
        return f"EC2 serial console access enabled for the account by {event.actor()}"
    return f"SSH key pushed to the serial console of {short(event.text('requestParameters.instanceId'))} by {event.actor()}"
