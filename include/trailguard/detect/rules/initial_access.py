"""Initial access (TA0001): root and IAM-user console sign-ins, root credentials in use."""

from __future__ import annotations

from trailguard.detect.event import Event, short
from trailguard.detect.policy import ROOT_HYGIENE, failure_note, is_read_only, is_root_call
from trailguard.detect.registry import fires, near_miss, rule
from trailguard.detect.samples import ACCOUNT, ALICE, DENIED, ROOT, call, login


@rule(
    "root_console_login",
    title="Root user console login",
    technique="T1078.004",
    score=85,
    reason="Root console login from {ip} (MFA: {mfa used})",
    runbook="Confirm with the account owner; if unexpected reset the root password, check root MFA and review the session.",
    events=["ConsoleLogin"],
    identity_types=["Root"],
    tests=[
        fires("root signs in to the console", login(ROOT, "Success")),
        near_miss("root sign-in fails", login(ROOT, "Failure")),
    ],
)
def root_console_login(event: Event) -> str | None:
    if event.failed:
        return None
    mfa = short(event.text("additionalEventData.MFAUsed") or "unknown", 10)
    return f"Root console login from {event.ip()} (MFA: {mfa})"


@rule(
    "root_activity",
    title="Root credentials used for a change",
    technique="T1078.004",
    score=75,
    reason="Root user called {eventName} from {ip}{failure}",
    runbook="Root should never be used day to day: confirm with the owner, review the change, rotate root credentials.",
    identity_types=["Root"],
    tests=[
        fires(
            "root changes bucket versioning",
            call("PutBucketVersioning", "s3", {"bucketName": "b"}, userIdentity=ROOT, readOnly=False),
        ),
        near_miss("root lists buckets (a read)", call("ListBuckets", "s3", userIdentity=ROOT, readOnly=True)),
        fires(
            "root change without a readOnly flag, denied",
            call("PutBucketPolicy", "s3", userIdentity=ROOT, **DENIED),
        ),
    ],
)
def root_activity(event: Event) -> str | None:
    if not is_root_call(event) or is_read_only(event) or event.name in ROOT_HYGIENE:
        return None
    return f"Root user called {short(event.name)} from {event.ip()}{failure_note(event)}"


@rule(
    "root_read_activity",
    title="Root credentials used to read or set up MFA",
    technique="T1078.004",
    score=55,
    reason="Root user called {eventName} from {ip}{failure}",
    runbook="Confirm who holds the root credentials and why they were used; reads often precede a change.",
    identity_types=["Root"],
    tests=[
        fires("root lists its access keys", call("ListAccessKeys", "iam", userIdentity=ROOT, readOnly=True)),
        near_miss(
            "an AWS service reads on root's behalf",
            call(
                "GetAccountSummary",
                "iam",
                userIdentity={**ROOT, "invokedBy": "config.amazonaws.com"},
                readOnly=True,
            ),
        ),
    ],
)
def root_read_activity(event: Event) -> str | None:
    if not is_root_call(event) or not (is_read_only(event) or event.name in ROOT_HYGIENE):
        return None
    return f"Root user called {short(event.name)} from {event.ip()}{failure_note(event)}"


@rule(
    "console_login_without_mfa",
    title="IAM user console login without MFA",
    technique="T1078.004",
    score=70,
    reason="IAM user {user} signed in to the console without MFA from {ip}",
    runbook="Ask the user whether they signed in; enforce MFA on the user; if unknown, reset the password and keys.",
    events=["ConsoleLogin"],
    identity_types=["IAMUser"],
    sources=["signin"],
    tests=[
        fires("IAM user signs in without MFA", login(ALICE, "Success", "No")),
        near_miss("IAM user signs in with MFA", login(ALICE, "Success", "Yes")),
        near_miss(
            "SAML sign-in (the IdP did the MFA)",
            login(ALICE, "Success", "No", SamlProviderArn=f"arn:aws:iam::{ACCOUNT}:saml-provider/Okta"),
        ),
    ],
)
def console_login_without_mfa(event: Event) -> str | None:
    if event.failed or event.text("additionalEventData.MFAUsed").strip().lower() != "no":
        return None
    if event.get("additionalEventData.SamlProviderArn") is not None:
        return None  # the identity provider did the authentication
    return f"IAM user {short(event.caller_name())} signed in to the console without MFA from {event.ip()}"
