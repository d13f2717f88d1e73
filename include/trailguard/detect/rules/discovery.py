"""Discovery (TA0007): reconnaissance a single event shows (instance user data, SES sending quota)."""

from __future__ import annotations

from trailguard.detect.event import Event, short
from trailguard.detect.registry import fires, near_miss, rule
from trailguard.detect.samples import call


@rule(
    "ec2_user_data_read",
    title="EC2 instance user data downloaded",
    technique="T1580",
    score=45,
    reason="User data of {instance} downloaded by {actor}",
    runbook="User data often carries bootstrap secrets: check the caller is a scanner or the instance's owner.",
    events=["DescribeInstanceAttribute"],
    sources=["ec2"],
    tests=[
        fires(
            "userData attribute read",
            call("DescribeInstanceAttribute", "ec2", {"instanceId": "i-1", "attribute": "userData"}),
        ),
        near_miss(
            "instanceType attribute read",
            call("DescribeInstanceAttribute", "ec2", {"instanceId": "i-1", "attribute": "instanceType"}),
        ),
    ],
)
def ec2_user_data_read(event: Event) -> str | None:
    if event.failed or event.text("requestParameters.attribute") != "userData":
        return None
    return f"User data of {short(event.text('requestParameters.instanceId'))} downloaded by {event.actor()}"


@rule(
    "ses_quota_recon",
    title="SES sending quota / identities checked",
    technique="T1526",
    score=25,
    reason="SES {eventName} by {actor}",
    runbook="The first calls of SES-abuse kits; harmless alone, notable from a principal that never sends mail.",
    events=[
        "GetSendQuota",
        "GetAccountSendingEnabled",
        "ListIdentities",
        "GetIdentityVerificationAttributes",
        "GetAccount",
    ],
    sources=["ses"],
    tests=[
        fires("SES sending quota read", call("GetSendQuota", "ses")),
        near_miss("API Gateway's GetAccount", call("GetAccount", "apigateway")),
    ],
)
def ses_quota_recon(event: Event) -> str | None:
    return None if event.failed else f"SES {short(event.name)} by {event.actor()}"
