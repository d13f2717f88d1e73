"""Impact (TA0040): keys, buckets and databases destroyed, recovery weakened, paid services abused."""

from __future__ import annotations

import re

from trailguard.detect.event import Event, as_list, is_true, short
from trailguard.detect.policy import failure_note, port_number
from trailguard.detect.registry import fires, near_miss, rule
from trailguard.detect.samples import DENIED, call

_ACCELERATED_FAMILY = re.compile(r"^(?:p\d|g\d|gr\d|inf\d|trn\d|dl\d|f\d|vt\d)")


@rule(
    "ec2_gpu_instances",
    title="GPU / accelerated EC2 instances launched",
    technique="T1496.001",
    score=60,
    reason="{count} x {instance type} instances launched by {actor}{failure}",
    runbook="Cryptomining starts like this: check the caller runs ML or GPU workloads; terminate unknown instances.",
    events=["RunInstances"],
    sources=["ec2"],
    tests=[
        fires(
            "four p4d instances launched",
            call(
                "RunInstances",
                "ec2",
                {"instanceType": "p4d.24xlarge", "instancesSet": {"items": [{"maxCount": 4}]}},
            ),
        ),
        near_miss(
            "four t3.micro launched",
            call(
                "RunInstances",
                "ec2",
                {"instanceType": "t3.micro", "instancesSet": {"items": [{"maxCount": 4}]}},
            ),
        ),
        near_miss(
            "a dry run",
            call("RunInstances", "ec2", {"instanceType": "p4d.24xlarge"}, errorCode="Client.DryRunOperation"),
        ),
    ],
)
def ec2_gpu_instances(event: Event) -> str | None:
    if event.text("errorCode").endswith("DryRunOperation"):
        return None
    kind = event.params("instanceType")
    if isinstance(kind, dict):
        kind = kind.get("value")
    if not isinstance(kind, str) or not _ACCELERATED_FAMILY.match(kind.strip().lower()):
        return None
    counts = [
        port_number(i.get("maxCount"))
        for i in as_list(event.params("instancesSet.items"))
        if isinstance(i, dict)
    ]
    count = sum(c for c in counts if c) or 1
    return f"{count} x {short(kind, 24)} instances launched by {event.actor()}{failure_note(event)}"


@rule(
    "kms_key_deletion_scheduled",
    title="KMS key scheduled for deletion",
    technique="T1485",
    score=75,
    reason="KMS key {key} scheduled for deletion in {days} days by {actor}",
    runbook="Cancel the deletion (CancelKeyDeletion) unless approved: data encrypted with the key becomes unreadable.",
    events=["ScheduleKeyDeletion"],
    sources=["kms"],
    tests=[
        fires(
            "deletion in 7 days",
            call("ScheduleKeyDeletion", "kms", {"keyId": "k1", "pendingWindowInDays": 7}),
        ),
        near_miss(
            "the key did not exist",
            call("ScheduleKeyDeletion", "kms", {"keyId": "k1"}, errorCode="NotFoundException"),
        ),
    ],
)
def kms_key_deletion_scheduled(event: Event) -> str | None:
    if event.failed:
        return None
    days = short(event.text("requestParameters.pendingWindowInDays") or "30", 4)
    return f"KMS key {short(event.text('requestParameters.keyId'))} scheduled for deletion in {days} days by {event.actor()}"


@rule(
    "kms_key_disabled",
    title="KMS key disabled",
    technique="T1485",
    score=55,
    reason="KMS key {key} disabled by {actor}",
    runbook="Re-enable the key unless the change is approved; data under it cannot be decrypted meanwhile.",
    events=["DisableKey"],
    sources=["kms"],
    tests=[
        fires("key disabled", call("DisableKey", "kms", {"keyId": "k1"})),
        near_miss("the call was denied", call("DisableKey", "kms", {"keyId": "k1"}, **DENIED)),
    ],
)
def kms_key_disabled(event: Event) -> str | None:
    return (
        None
        if event.failed
        else f"KMS key {short(event.text('requestParameters.keyId'))} disabled by {event.actor()}"
    )


@rule(
    "s3_bucket_deleted",
    title="S3 bucket deleted",
    technique="T1485",
    score=55,
    reason="S3 bucket {bucket} deleted by {actor}",
    runbook="Confirm the bucket was meant to go; bucket names can be re-registered by others (takeover).",
    events=["DeleteBucket"],
    sources=["s3"],
    tests=[
        fires("bucket deleted", call("DeleteBucket", "s3", {"bucketName": "b"})),
        near_miss("the call was denied", call("DeleteBucket", "s3", {"bucketName": "b"}, **DENIED)),
    ],
)
def s3_bucket_deleted(event: Event) -> str | None:
    if event.failed:
        return None
    return f"S3 bucket {short(event.text('requestParameters.bucketName'))} deleted by {event.actor()}"


@rule(
    "s3_versioning_weakened",
    title="S3 versioning suspended or MFA delete disabled",
    technique="T1490",
    score=45,
    reason="S3 bucket {bucket}: {versioning suspended and/or MFA delete disabled} by {actor}",
    runbook="Versioning is what lets you recover from ransomware or mass deletion: re-enable it.",
    events=["PutBucketVersioning"],
    sources=["s3"],
    tests=[
        fires(
            "versioning suspended",
            call(
                "PutBucketVersioning",
                "s3",
                {"bucketName": "b", "VersioningConfiguration": {"Status": "Suspended"}},
            ),
        ),
        near_miss(
            "versioning enabled",
            call(
                "PutBucketVersioning",
                "s3",
                {"bucketName": "b", "VersioningConfiguration": {"Status": "Enabled"}},
            ),
        ),
    ],
)
def s3_versioning_weakened(event: Event) -> str | None:
    if event.failed:
        return None
    status = event.text("requestParameters.VersioningConfiguration.Status").lower()
    mfa_delete = event.text("requestParameters.VersioningConfiguration.MfaDelete").lower()
    changes = [c for c, hit in (("versioning suspended", status in ("suspended", "disabled")),
                                ("MFA delete disabled", mfa_delete == "disabled")) if hit]  # fmt: skip
    if not changes:
        return None
    bucket = short(event.text("requestParameters.bucketName"))
    return f"S3 bucket {bucket}: {' and '.join(changes)} by {event.actor()}"


@rule(
    "rds_deleted_without_snapshot",
    title="RDS database deleted without a final snapshot",
    technique="T1485",
    score=60,
    reason="RDS database {database} deleted without a final snapshot by {actor}",
    runbook="Restore from automated backups if any remain; confirm the deletion was approved.",
    events=["DeleteDBInstance", "DeleteDBCluster"],
    sources=["rds"],
    tests=[
        fires(
            "deleted, final snapshot skipped",
            call("DeleteDBInstance", "rds", {"dBInstanceIdentifier": "db", "skipFinalSnapshot": True}),
        ),
        near_miss(
            "deleted with a final snapshot",
            call("DeleteDBInstance", "rds", {"dBInstanceIdentifier": "db", "skipFinalSnapshot": False}),
        ),
    ],
)
def rds_deleted_without_snapshot(event: Event) -> str | None:
    if event.failed or not is_true(event.params("skipFinalSnapshot")):
        return None
    target = event.text("requestParameters.dBInstanceIdentifier") or event.text(
        "requestParameters.dBClusterIdentifier"
    )
    return f"RDS database {short(target)} deleted without a final snapshot by {event.actor()}"


@rule(
    "bedrock_model_access_enabled",
    title="Bedrock model access enabled",
    technique="T1496.004",
    score=70,
    reason="Bedrock access to {model} enabled ({eventName}) by {actor}",
    runbook="LLM-jacking starts by enabling models: confirm a team asked for the model, else revoke and rotate keys.",
    events=["PutFoundationModelEntitlement", "PutUseCaseForModelAccess", "CreateFoundationModelAgreement"],
    sources=["bedrock"],
    tests=[
        fires(
            "model entitlement added",
            call("PutFoundationModelEntitlement", "bedrock", {"modelId": "anthropic.claude-3"}),
        ),
        near_miss(
            "the call was denied",
            call("PutFoundationModelEntitlement", "bedrock", {"modelId": "anthropic.claude-3"}, **DENIED),
        ),
    ],
)
def bedrock_model_access_enabled(event: Event) -> str | None:
    if event.failed:
        return None
    model = short(event.text("requestParameters.modelId") or "models", 48)
    return f"Bedrock access to {model} enabled ({short(event.name)}) by {event.actor()}"


_SES_SETUP = (
    "UpdateAccountSendingEnabled", "PutAccountDetails", "VerifyEmailIdentity", "VerifyDomainIdentity",
    "CreateEmailIdentity", "PutAccountSendingAttributes",
)  # fmt: skip


_SENDING_SETUP: dict[str, frozenset[str]] = {
    **{name: frozenset({"ses.amazonaws.com"}) for name in _SES_SETUP},
    **{
        name: frozenset({"sns.amazonaws.com"}) for name in ("SetSMSAttributes", "CreateSMSSandboxPhoneNumber")
    },
}


@rule(
    "ses_sns_sending_setup",
    title="Email / SMS sending set up or enabled",
    technique="T1496.004",
    score=50,
    reason="{eventName}{ for identity} by {actor}",
    runbook="Spammers enable SES/SNS sending in stolen accounts: confirm a product team owns this identity.",
    events=_SENDING_SETUP,
    sources=["ses", "sns"],
    tests=[
        fires(
            "sender address verified",
            call("VerifyEmailIdentity", "ses", {"emailAddress": "promo@example.com"}),
        ),
        near_miss("sending switched off", call("UpdateAccountSendingEnabled", "ses", {"enabled": False})),
    ],
)
def ses_sns_sending_setup(event: Event) -> str | None:
    if event.failed or event.source not in _SENDING_SETUP.get(event.name, ()):
        return None
    if event.name == "UpdateAccountSendingEnabled" and not is_true(event.params("enabled")):
        return None
    identity = (
        event.text("requestParameters.emailAddress")
        or event.text("requestParameters.domain")
        or event.text("requestParameters.emailIdentity")
    )
    suffix = f" for {short(identity)}" if identity else ""
    return f"{short(event.name)}{suffix} by {event.actor()}"
