"""Impact (TA0040): destruction of keys, buckets, databases; abuse of paid services; regions enabled.
"""

from __future__ import annotations

from trailguard.detect.event import Event, is_true, short
from trailguard.detect.registry import rule

# --- impact ---------------------------------------------------------------------------------------


@rule(
    "kms_key_deletion_scheduled", "T1485", 75, "KMS key scheduled for deletion",
    "Cancel the deletion (CancelKeyDeletion) unless approved: data encrypted with the key becomes unreadable.",
    events=["ScheduleKeyDeletion"], sources=["kms"],
)  # fmt: skip
def kms_key_deletion_scheduled(event: Event) -> str | None:
    if event.failed:
        return None
    days = short(event.text("requestParameters.pendingWindowInDays") or "30", 4)
    return f"KMS key {short(event.text('requestParameters.keyId'))} scheduled for deletion in {days} days by {event.actor()}"


@rule(
    "kms_key_disabled", "T1485", 55, "KMS key disabled",
    "Re-enable the key unless the change is approved; data under it cannot be decrypted meanwhile.",
    events=["DisableKey"], sources=["kms"],
)  # fmt: skip
def kms_key_disabled(event: Event) -> str | None:
    return (
        None
        if event.failed
        else f"KMS key {short(event.text('requestParameters.keyId'))} disabled by {event.actor()}"
    )


@rule(
    "s3_bucket_deleted", "T1485", 55, "S3 bucket deleted",
    "Confirm the bucket was meant to go; bucket names can be re-registered by others (takeover).",
    events=["DeleteBucket"], sources=["s3"],
)  # fmt: skip
def s3_bucket_deleted(event: Event) -> str | None:
    if event.failed:
        return None
    return f"S3 bucket {short(event.text('requestParameters.bucketName'))} deleted by {event.actor()}"


@rule(
    "s3_versioning_weakened", "T1490", 45, "S3 versioning suspended or MFA delete disabled",
    "Versioning is what lets you recover from ransomware or mass deletion: re-enable it.",
    events=["PutBucketVersioning"], sources=["s3"],
)  # fmt: skip
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
    "rds_deleted_without_snapshot", "T1485", 60, "RDS database deleted without a final snapshot",
    "Restore from automated backups if any remain; confirm the deletion was approved.",
    events=["DeleteDBInstance", "DeleteDBCluster"], sources=["rds"],
)  # fmt: skip
def rds_deleted_without_snapshot(event: Event) -> str | None:
    if event.failed or not is_true(event.params("skipFinalSnapshot")):
        return None
    target = event.text("requestParameters.dBInstanceIdentifier") or event.text(
        "requestParameters.dBClusterIdentifier"
    )
    return f"RDS database {short(target)} deleted without a final snapshot by {event.actor()}"


@rule(
    "bedrock_model_access_enabled", "T1496.004", 70, "Bedrock model access enabled",
    "LLM-jacking starts by enabling models: confirm a team asked for the model, else revoke and rotate keys.",
    events=["PutFoundationModelEntitlement", "PutUseCaseForModelAccess", "CreateFoundationModelAgreement"],
    sources=["bedrock"],
)  # fmt: skip
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
    "ses_sns_sending_setup", "T1496.004", 50, "Email / SMS sending set up or enabled",
    "Spammers enable SES/SNS sending in stolen accounts: confirm a product team owns this identity.",
    events=_SENDING_SETUP, sources=["ses", "sns"],
)  # fmt: skip
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


@rule(
    "ses_quota_recon", "T1526", 25, "SES sending quota / identities checked",
    "The first calls of SES-abuse kits; harmless alone, notable from a principal that never sends mail.",
    events=["GetSendQuota", "GetAccountSendingEnabled", "ListIdentities", "GetIdentityVerificationAttributes", "GetAccount"],
    sources=["ses"],
)  # fmt: skip
def ses_quota_recon(event: Event) -> str | None:
    return None if event.failed else f"SES {short(event.name)} by {event.actor()}"


@rule(
    "region_enabled", "T1535", 45, "Opt-in AWS region enabled",
    "Attackers enable unused regions to hide resources: confirm the business needs the region.",
    events=["EnableRegion"],
)  # fmt: skip
def region_enabled(event: Event) -> str | None:
    if event.failed:
        return None
    region = event.text("requestParameters.RegionName") or event.text("requestParameters.regionName")
    return f"Region {short(region, 32)} enabled by {event.actor()}"


