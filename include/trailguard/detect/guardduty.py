"""GuardDuty parity: each of GuardDuty's finding types built on CloudTrail management events, and what in
TrailGuard covers it (rules, behaviour features, finding correlation), or why CloudTrail alone cannot.

Why: a team moving from (or running beside) GuardDuty asks "what would I lose?". The table answers it row
by row; ``trailguard rules --guardduty`` prints it and the README gives the counts. Status:

* ``covered``: the same behaviour raises a detection here, tested with a positive and a near-miss event;
* ``partial``: the behaviour is detected in part (the reason says which part is missing);
* ``not coverable``: the finding needs data CloudTrail management events do not hold.

The tests (``tests/detect/test_guardduty_parity.py``) fire every ``covered`` and ``partial`` row's rules on
a positive event and check they stay silent on a near miss.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

COVERED, PARTIAL, NOT_COVERABLE = "covered", "partial", "not coverable"
CORRELATION = "findings.correlate"  # the finding logic: one credential's chain, scored across tactics
NOVELTY = "features.novel_*"  # per-principal novelty (first API, ASN, country, client) in the risk model


@dataclass(frozen=True)
class Parity:
    finding_type: str
    status: str
    covered_by: tuple[str, ...]
    note: str


# fmt: off
PARITY: tuple[Parity, ...] = (
    Parity("CredentialAccess:IAMUser/AnomalousBehavior", COVERED,
           ("secrets_harvest", "secrets_batch_read", "ssm_parameters_bulk_decrypted", "ec2_password_data_read", NOVELTY),
           "credential reads by rule (bulk secrets, parameters, instance passwords) plus first use of the API by the principal"),
    Parity("DefenseEvasion:IAMUser/AnomalousBehavior", COVERED,
           ("cloudtrail_stopped", "cloudtrail_deleted", "guardduty_disabled", "config_recording_stopped", "vpc_flow_logs_deleted", NOVELTY),
           "logging and security services turned off, by rule"),
    Parity("Discovery:IAMUser/AnomalousBehavior", PARTIAL, ("access_denied_burst", "access_denied_burst_identity", NOVELTY),
           "bursts of denied enumeration by rule; successful enumeration only as novelty in the model score, "
           "not as a detection of its own (GuardDuty's per-API anomaly model has no rule equivalent)"),
    Parity("Exfiltration:IAMUser/AnomalousBehavior", COVERED,
           ("s3_bucket_replication_set", "snapshot_or_image_shared", "snapshot_or_image_public", "ebs_snapshot_copied", NOVELTY),
           "replication, snapshot and image sharing or copies by rule"),
    Parity("Impact:IAMUser/AnomalousBehavior", COVERED,
           ("s3_mass_deletion", "kms_key_deletion_scheduled", "rds_deleted_without_snapshot", "s3_bucket_deleted", NOVELTY),
           "destructive calls by rule, bursts by window rule"),
    Parity("InitialAccess:IAMUser/AnomalousBehavior", PARTIAL,
           ("console_login_without_mfa", "console_login_two_places", "signin_token_from_api_credentials", NOVELTY),
           "sign-in anomalies by rule and first sign-in from a country/ASN as novelty; GuardDuty's anomaly model "
           "over every API has no rule equivalent"),
    Parity("Persistence:IAMUser/AnomalousBehavior", COVERED,
           ("iam_access_key_for_other_user", "iam_access_key_created_for_self", "iam_login_profile_for_other_user",
            "iam_user_created", "ec2_key_pair_created", NOVELTY),
           "keys, users, passwords and SSH key pairs by rule; a key for oneself scores by its novelty"),
    Parity("PrivilegeEscalation:IAMUser/AnomalousBehavior", COVERED,
           ("iam_admin_policy_attached", "iam_admin_inline_policy", "iam_user_added_to_privileged_group",
            "ec2_instance_profile_attached", "iam_pass_role_denied", NOVELTY),
           "admin grants (also through a group not named admin), instance profiles and denied PassRole by rule"),
    Parity("Recon:IAMUser/MaliciousIPCaller", PARTIAL, ("ip_on_threat_list",),
           "only against threat lists the user supplies: GuardDuty's own threat intelligence cannot be shipped"),
    Parity("Recon:IAMUser/MaliciousIPCaller.Custom", COVERED, ("ip_on_threat_list",), "the user's lists, named in the reason"),
    Parity("Recon:IAMUser/TorIPCaller", COVERED, ("tor_exit_caller",), "Tor exits from the shipped dated ranges or a Tor exit list"),
    Parity("UnauthorizedAccess:IAMUser/MaliciousIPCaller", PARTIAL, ("ip_on_threat_list",),
           "only against threat lists the user supplies: GuardDuty's own threat intelligence cannot be shipped"),
    Parity("UnauthorizedAccess:IAMUser/MaliciousIPCaller.Custom", COVERED, ("ip_on_threat_list",),
           "the user's lists (plain, CSV, STIX 2.1, Tor), files or s3://"),
    Parity("UnauthorizedAccess:IAMUser/TorIPCaller", COVERED, ("tor_exit_caller",), "any call from a Tor exit"),
    Parity("UnauthorizedAccess:IAMUser/ConsoleLoginSuccess.B", COVERED, ("console_login_two_places",),
           "successful sign-ins of one user from two networks within the hour"),
    Parity("UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS", COVERED,
           ("instance_credentials_outside_aws",), "an instance session (i-...) used from an address outside AWS's ranges"),
    Parity("UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.InsideAWS", PARTIAL,
           ("instance_credentials_other_account",),
           "only through another account's VPC endpoint (vpcEndpointAccountId); CloudTrail does not say which account "
           "owns a public AWS address, which GuardDuty knows"),
    Parity("Stealth:IAMUser/CloudTrailLoggingDisabled", COVERED, ("cloudtrail_stopped", "cloudtrail_deleted"),
           "StopLogging and DeleteTrail"),
    Parity("Stealth:IAMUser/PasswordPolicyChange", COVERED, ("iam_password_policy_changed",),
           "UpdateAccountPasswordPolicy (weakened settings named) and DeleteAccountPasswordPolicy"),
    Parity("Policy:IAMUser/RootCredentialUsage", COVERED, ("root_activity", "root_read_activity", "root_console_login"),
           "every call by root"),
    Parity("Policy:IAMUser/ShortTermRootCredentialUsage", COVERED, ("root_activity", "root_read_activity"),
           "root's temporary credentials are root calls too"),
    Parity("PenTest:IAMUser/KaliLinux", COVERED, ("pentest_distribution_user_agent",), "'kali' in the user agent"),
    Parity("PenTest:IAMUser/ParrotLinux", COVERED, ("pentest_distribution_user_agent",), "'parrot' in the user agent"),
    Parity("PenTest:IAMUser/PentooLinux", COVERED, ("pentest_distribution_user_agent",), "'pentoo' in the user agent"),
    Parity("Policy:S3/AccountBlockPublicAccessDisabled", COVERED, ("s3_public_access_block_removed",),
           "DeleteAccountPublicAccessBlock / loosened PutAccountPublicAccessBlock"),
    Parity("Policy:S3/BucketBlockPublicAccessDisabled", COVERED, ("s3_public_access_block_removed",),
           "DeleteBucketPublicAccessBlock / loosened PutBucketPublicAccessBlock"),
    Parity("Policy:S3/BucketAnonymousAccessGranted", COVERED, ("s3_bucket_acl_public", "s3_bucket_policy_public"),
           "an ACL grant to AllUsers or a policy allowing Principal '*'"),
    Parity("Policy:S3/BucketPublicAccessGranted", COVERED, ("s3_bucket_acl_public", "s3_bucket_policy_public"),
           "an ACL grant to AllUsers/AuthenticatedUsers or a public bucket policy"),
    Parity("Stealth:S3/ServerAccessLoggingDisabled", COVERED, ("logs_deleted_or_disabled",),
           "PutBucketLogging without LoggingEnabled"),
    Parity("AttackSequence:IAM/CompromisedCredentials", COVERED, (CORRELATION,),
           "one credential's events from one source correlated into a finding whose score grows with each tactic"),
    Parity("AttackSequence:S3/CompromisedData", NOT_COVERABLE, (CORRELATION,),
           "needs S3 data events (GetObject, DeleteObject); TrailGuard reads management events, so only the "
           "control-plane half (bucket made public, replication) is correlated"),
)
# fmt: on


def counts() -> dict[str, int]:
    """Rows per status, e.g. ``{"covered": 24, "partial": 6, "not coverable": 1}``."""
    found = Counter(row.status for row in PARITY)
    return {status: found.get(status, 0) for status in (COVERED, PARTIAL, NOT_COVERABLE)}


def markdown() -> str:
    """The table as Markdown (what ``trailguard rules --guardduty --format markdown`` prints)."""
    lines = ["| GuardDuty finding type | status | covered by | note |", "|---|---|---|---|"]
    for row in PARITY:
        lines.append(
            f"| `{row.finding_type}` | {row.status} | {', '.join(f'`{c}`' for c in row.covered_by)} | {row.note} |"
        )
    c = counts()
    lines.append("")
    lines.append(
        f"{len(PARITY)} finding types: {c[COVERED]} covered, {c[PARTIAL]} partial, {c[NOT_COVERABLE]} not coverable."
    )
    return "\n".join(lines) + "\n"


def text_lines() -> list[str]:
    """The table for a terminal: one line per finding type."""
    width = max(len(row.finding_type) for row in PARITY)
    out = [f"{row.finding_type:<{width}}  {row.status:<13}  {', '.join(row.covered_by)}" for row in PARITY]
    c = counts()
    out.append(
        f"{len(PARITY)} finding types: {c[COVERED]} covered, {c[PARTIAL]} partial, {c[NOT_COVERABLE]} not coverable"
    )
    return out
