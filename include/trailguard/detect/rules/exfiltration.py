"""Exfiltration (TA0010): snapshots, images and resources shared with other accounts or everyone."""

from __future__ import annotations

from trailguard.detect.event import Event, short
from trailguard.detect.policy import accounts_text, public_statements, share_targets
from trailguard.detect.registry import fires, near_miss, rule
from trailguard.detect.samples import ACCOUNT, FOREIGN, call, policy

_SHARE_EVENTS = (
    "ModifySnapshotAttribute",
    "ModifyImageAttribute",
    "ModifyDBSnapshotAttribute",
    "ModifyDBClusterSnapshotAttribute",
)


def _shared_kind(event: Event) -> str:
    return {"ModifyImageAttribute": "AMI", "ModifySnapshotAttribute": "EBS snapshot"}.get(
        event.name, "DB snapshot"
    )


@rule(
    "snapshot_or_image_public",
    title="Snapshot or AMI made public",
    technique="T1537",
    score=85,
    reason="{AMI|EBS snapshot|DB snapshot} {resource} made public by {actor}",
    runbook="Remove the public permission now; assume the data was copied and assess what the snapshot/AMI holds.",
    events=_SHARE_EVENTS,
    sources=["ec2", "rds"],
    tests=[
        fires(
            "EBS snapshot shared with all",
            call(
                "ModifySnapshotAttribute",
                "ec2",
                {"snapshotId": "snap-1", "createVolumePermission": {"add": {"items": [{"group": "all"}]}}},
            ),
        ),
        near_miss(
            "EBS snapshot shared with one account",
            call(
                "ModifySnapshotAttribute",
                "ec2",
                {"snapshotId": "snap-1", "createVolumePermission": {"add": {"items": [{"userId": FOREIGN}]}}},
            ),
        ),
    ],
)
def snapshot_or_image_public(event: Event) -> str | None:
    public, _, resource = (False, [], "") if event.failed else share_targets(event)
    if not public:
        return None
    return f"{_shared_kind(event)} {short(resource)} made public by {event.actor()}"


@rule(
    "snapshot_or_image_shared",
    title="Snapshot or AMI shared with another account",
    technique="T1537",
    score=70,
    reason="{AMI|EBS snapshot|DB snapshot} {resource} shared with account {accounts} by {actor}",
    runbook="Check the account belongs to your organisation or a known partner; otherwise revoke the share.",
    events=_SHARE_EVENTS,
    sources=["ec2", "rds"],
    tests=[
        fires(
            "AMI shared with a foreign account",
            call(
                "ModifyImageAttribute",
                "ec2",
                {"imageId": "ami-1", "launchPermission": {"add": {"items": [{"userId": FOREIGN}]}}},
            ),
        ),
        near_miss(
            "AMI shared with its own account",
            call(
                "ModifyImageAttribute",
                "ec2",
                {"imageId": "ami-1", "launchPermission": {"add": {"items": [{"userId": ACCOUNT}]}}},
            ),
        ),
        fires(
            "RDS snapshot shared with a foreign account",
            call(
                "ModifyDBSnapshotAttribute",
                "rds",
                {"dBSnapshotIdentifier": "db-snap", "attributeName": "restore", "valuesToAdd": [FOREIGN]},
            ),
        ),
    ],
)
def snapshot_or_image_shared(event: Event) -> str | None:
    _, accounts, resource = (False, [], "") if event.failed else share_targets(event)
    if not accounts:
        return None
    return f"{_shared_kind(event)} {short(resource)} shared with account {accounts_text(accounts)} by {event.actor()}"


_RESOURCE_POLICY_KEYS = (
    "policy",
    "policyText",
    "resourcePolicy",
    "policyDocument",
    "accessPolicies",
    "attributes.Policy",
)


@rule(
    "resource_policy_public",
    title="Resource policy allows anyone (KMS, SQS, SNS, ECR, secrets, ...)",
    technique="T1537",
    score=75,
    reason="{eventName} on {resource} allows anyone; by {actor}",
    runbook="Remove the Principal * statement or restrict it with an org / account condition.",
    events=[
        "PutKeyPolicy",
        "CreateKey",
        "SetRepositoryPolicy",
        "SetQueueAttributes",
        "SetTopicAttributes",
        "PutResourcePolicy",
        "SetVaultAccessPolicy",
        "CreateElasticsearchDomain",
        "UpdateElasticsearchDomainConfig",
        "CreateDomain",
        "UpdateDomainConfig",
    ],
    tests=[
        fires(
            "KMS key policy with Principal AWS *",
            call(
                "PutKeyPolicy",
                "kms",
                {
                    "keyId": "k1",
                    "policy": policy(
                        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"}
                    ),
                },
            ),
        ),
        near_miss(
            "KMS key policy for the own account",
            call(
                "PutKeyPolicy",
                "kms",
                {
                    "keyId": "k1",
                    "policy": policy(
                        {
                            "Effect": "Allow",
                            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                            "Action": "kms:*",
                            "Resource": "*",
                        }
                    ),
                },
            ),
        ),
    ],
)
def resource_policy_public(event: Event) -> str | None:
    if event.failed:
        return None
    documents = [event.params(key) for key in _RESOURCE_POLICY_KEYS]
    if event.name == "SetTopicAttributes" and event.text("requestParameters.attributeName") == "Policy":
        documents.append(event.params("attributeValue"))
    if not any(public_statements(doc) for doc in documents if doc is not None):
        return None
    target = next(
        (
            event.text(f"requestParameters.{k}")
            for k in (
                "keyId",
                "repositoryName",
                "queueUrl",
                "topicArn",
                "secretId",
                "resourceArn",
                "domainName",
            )
            if event.text(f"requestParameters.{k}")
        ),
        "?",
    )
    return f"{short(event.name)} on {short(target)} allows anyone; by {event.actor()}"


# --- added for GuardDuty parity (issue 16): replication and snapshot copies -----------------------------------


def _replication_destinations(event: Event) -> list[tuple[str, str]]:
    """(bucket ARN, account) of every rule's destination in a PutBucketReplication request."""
    config = event.params("ReplicationConfiguration") or {}
    rules = config.get("Rule") if isinstance(config, dict) else None
    out = []
    for item in rules if isinstance(rules, list) else [rules]:
        destination = item.get("Destination") if isinstance(item, dict) else None
        if isinstance(destination, dict):
            out.append((str(destination.get("Bucket") or ""), str(destination.get("Account") or "")))
    return out


def _replication(account: str) -> dict:
    return {"bucketName": "acme-data", "ReplicationConfiguration": {"Role": f"arn:aws:iam::{ACCOUNT}:role/repl", "Rule": [
        {"Status": "Enabled", "Destination": {"Bucket": "arn:aws:s3:::copy-bucket", "Account": account}}]}}  # fmt: skip


@rule(
    "s3_bucket_replication_set",
    title="S3 bucket replication configured",
    technique="T1537",
    score=55,
    reason="Bucket {bucketName} now replicates {to another account: }{destination}; set by {actor}",
    runbook="Replication copies every new object to the destination: confirm the destination bucket is yours; "
    "to another account it is a quiet exfiltration channel.",
    events=["PutBucketReplication"],
    sources=["s3"],
    tests=[
        fires("replication to another account", call("PutBucketReplication", "s3", _replication(FOREIGN))),
        fires("replication within the account", call("PutBucketReplication", "s3", _replication(ACCOUNT))),
        near_miss("replication read", call("GetBucketReplication", "s3", {"bucketName": "acme-data"})),
    ],
)
def s3_bucket_replication_set(event: Event) -> str | None:
    if event.failed:
        return None
    targets = _replication_destinations(event)
    foreign = [(b, a) for b, a in targets if a and a != event.account]
    where = ", ".join(short(b) + (f" (account {short(a)})" if a else "") for b, a in (foreign or targets))
    prefix = "to another account: " if foreign else ""
    bucket = short(event.text("requestParameters.bucketName"))
    return f"Bucket {bucket} now replicates {prefix}{where or 'to an unnamed destination'}; set by {event.actor()}"


@rule(
    "ebs_snapshot_copied",
    title="EBS or RDS snapshot copied",
    technique="T1537",
    score=45,
    reason="Snapshot {source} copied{ from region} into {awsRegion} by {actor}",
    runbook="A copy can move a disk to another region or be shared on from there: confirm the copy belongs to a "
    "backup plan; otherwise delete it and check who else can read it.",
    events=["CopySnapshot", "CopyDBSnapshot", "CopyDBClusterSnapshot"],
    sources=["ec2", "rds"],
    tests=[
        fires("a snapshot copied from another region", call("CopySnapshot", "ec2", {"sourceSnapshotId": "snap-0abc", "sourceRegion": "us-east-1"})),
        near_miss("the copy was denied", call("CopySnapshot", "ec2", {"sourceSnapshotId": "snap-0abc"}, errorCode="AccessDenied")),
    ],
)  # fmt: skip
def ebs_snapshot_copied(event: Event) -> str | None:
    if event.failed:
        return None
    source = (event.text("requestParameters.sourceSnapshotId") or event.text("requestParameters.sourceDBSnapshotIdentifier")
              or event.text("requestParameters.sourceDBClusterSnapshotIdentifier"))  # fmt: skip
    region = event.text("requestParameters.sourceRegion")
    where = short(event.text("awsRegion")) or "this region"
    return f"Snapshot {short(source or '?')} copied{' from ' + short(region) if region else ''} into {where} by {event.actor()}"
