"""Exfiltration and exposure (TA0010): public or cross-account access to buckets, snapshots, images, policies, networks.
"""

from __future__ import annotations

from trailguard.detect.event import Event, is_false, is_true, short
from trailguard.detect.policy import (
    accounts_text,
    as_strings,
    describe_port,
    exposes_admin_port,
    open_ingress,
    public_statements,
    share_targets,
    walk_params,
)
from trailguard.detect.registry import rule

# --- public exposure and sharing ------------------------------------------------------------------

_PUBLIC_GRANTEES = (
    "acs.amazonaws.com/groups/global/allusers",
    "acs.amazonaws.com/groups/global/authenticatedusers",
)
_PUBLIC_CANNED_ACLS = frozenset({"public-read", "public-read-write", "authenticated-read"})


@rule(
    "s3_bucket_acl_public", "T1530", 80, "S3 bucket ACL grants public access",
    "Remove the AllUsers / AuthenticatedUsers grant and turn on Block Public Access for the bucket.",
    events=["PutBucketAcl"], sources=["s3"],
)  # fmt: skip
def s3_bucket_acl_public(event: Event) -> str | None:
    if event.failed:
        return None
    text = event.json_text("requestParameters").lower()
    canned = {a.strip().lower() for a in as_strings(event.params("x-amz-acl"))}
    if not (any(g in text for g in _PUBLIC_GRANTEES) or canned & _PUBLIC_CANNED_ACLS):
        return None
    return (
        f"S3 bucket {short(event.text('requestParameters.bucketName'))} ACL made public by {event.actor()}"
    )


@rule(
    "s3_bucket_policy_public", "T1530", 80, "S3 bucket policy allows anyone",
    "Remove the Principal * statement (or add an org / VPC condition) and check what was read meanwhile.",
    events=["PutBucketPolicy"], sources=["s3"],
)  # fmt: skip
def s3_bucket_policy_public(event: Event) -> str | None:
    if event.failed or not public_statements(event.params("bucketPolicy")):
        return None
    return f"S3 bucket {short(event.text('requestParameters.bucketName'))} policy opened to anyone by {event.actor()}"


_PUBLIC_ACCESS_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


@rule(
    "s3_public_access_block_removed", "T1562", 65, "S3 Block Public Access removed or loosened",
    "Restore Block Public Access; then look for ACL or policy changes that make data public.",
    events=[
        "DeleteBucketPublicAccessBlock", "PutBucketPublicAccessBlock",
        "DeleteAccountPublicAccessBlock", "PutAccountPublicAccessBlock",
        "DeletePublicAccessBlock", "PutPublicAccessBlock",
    ],
    sources=["s3", "s3control"],
)  # fmt: skip
def s3_public_access_block_removed(event: Event) -> str | None:
    if event.failed:
        return None
    scope = (
        "bucket " + short(event.text("requestParameters.bucketName"))
        if "Bucket" in event.name
        else "account"
    )
    if event.name.startswith("Delete"):
        return f"S3 Block Public Access removed for {scope} by {event.actor()}"
    loosened = sorted(
        {
            key
            for node, _ in walk_params(event.parsed("requestParameters"))
            for key, value in node.items()
            if key in _PUBLIC_ACCESS_FLAGS and is_false(value)
        }
    )
    if not loosened:
        return None
    return f"S3 Block Public Access loosened for {scope} ({', '.join(loosened)} off) by {event.actor()}"


@rule(
    "rds_made_public", "T1562.007", 65, "RDS database made publicly accessible",
    "Turn public accessibility off unless the database must be reachable from the internet; check its SG.",
    events=["ModifyDBInstance", "ModifyDBCluster", "RestoreDBInstanceFromDBSnapshot", "RestoreDBClusterFromSnapshot"],
    sources=["rds"],
)  # fmt: skip
def rds_made_public(event: Event) -> str | None:
    if event.failed or not is_true(event.params("publiclyAccessible")):
        return None
    target = event.text("requestParameters.dBInstanceIdentifier") or event.text(
        "requestParameters.dBClusterIdentifier"
    )
    return f"RDS database {short(target)} made publicly accessible ({short(event.name)}) by {event.actor()}"


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
    "snapshot_or_image_public", "T1537", 85, "Snapshot or AMI made public",
    "Remove the public permission now; assume the data was copied and assess what the snapshot/AMI holds.",
    events=_SHARE_EVENTS, sources=["ec2", "rds"],
)  # fmt: skip
def snapshot_or_image_public(event: Event) -> str | None:
    public, _, resource = (False, [], "") if event.failed else share_targets(event)
    if not public:
        return None
    return f"{_shared_kind(event)} {short(resource)} made public by {event.actor()}"


@rule(
    "snapshot_or_image_shared", "T1537", 70, "Snapshot or AMI shared with another account",
    "Check the account belongs to your organisation or a known partner; otherwise revoke the share.",
    events=_SHARE_EVENTS, sources=["ec2", "rds"],
)  # fmt: skip
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
    "resource_policy_public", "T1537", 75, "Resource policy allows anyone (KMS, SQS, SNS, ECR, secrets, ...)",
    "Remove the Principal * statement or restrict it with an org / account condition.",
    events=[
        "PutKeyPolicy", "CreateKey", "SetRepositoryPolicy", "SetQueueAttributes", "SetTopicAttributes",
        "PutResourcePolicy", "SetVaultAccessPolicy", "CreateElasticsearchDomain", "UpdateElasticsearchDomainConfig",
        "CreateDomain", "UpdateDomainConfig",
    ],
)  # fmt: skip
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


@rule(
    "security_group_admin_port_open", "T1562.007", 80, "Security group opens SSH/RDP (or all ports) to the internet",
    "Revoke the 0.0.0.0/0 rule; use SSM Session Manager or a bastion with a narrow CIDR instead.",
    events=["AuthorizeSecurityGroupIngress"], sources=["ec2"],
)  # fmt: skip
def security_group_admin_port_open(event: Event) -> str | None:
    exposed = (
        []
        if event.failed
        else [r for r in open_ingress(event.parsed("requestParameters")) if exposes_admin_port(r)]
    )
    if not exposed:
        return None
    group = short(event.text("requestParameters.groupId") or event.text("requestParameters.groupName"))
    return f"Security group {group} opened {describe_port(exposed[0])} by {event.actor()}"


@rule(
    "security_group_open_world", "T1562.007", 50, "Security group opens a port to the internet",
    "Check the port should be public (a web front end); otherwise narrow the CIDR.",
    events=["AuthorizeSecurityGroupIngress"], sources=["ec2"],
)  # fmt: skip
def security_group_open_world(event: Event) -> str | None:
    exposed = [] if event.failed else open_ingress(event.parsed("requestParameters"))
    if not exposed or any(exposes_admin_port(r) for r in exposed):
        return None  # the admin-port rule scores those
    group = short(event.text("requestParameters.groupId") or event.text("requestParameters.groupName"))
    return f"Security group {group} opened {describe_port(exposed[0])} by {event.actor()}"


@rule(
    "nacl_open_world", "T1562.007", 55, "Network ACL allows inbound traffic from the internet",
    "Check the subnet should accept internet traffic on these ports; narrow the entry otherwise.",
    events=["CreateNetworkAclEntry", "ReplaceNetworkAclEntry"], sources=["ec2"],
)  # fmt: skip
def nacl_open_world(event: Event) -> str | None:
    if (
        event.failed
        or is_true(event.params("egress"))
        or event.text("requestParameters.ruleAction").lower() != "allow"
    ):
        return None
    cidr = event.text("requestParameters.cidrBlock") or event.text("requestParameters.ipv6CidrBlock")
    if not cidr.strip().endswith("/0"):
        return None
    acl = short(event.text("requestParameters.networkAclId"))
    return f"Network ACL {acl} allows inbound from {short(cidr, 45)} by {event.actor()}"


@rule(
    "vpc_network_change", "T1562.007", 25, "VPC routing or gateway changed",
    "Routine for network admins; check it matches a change request when the caller is unusual.",
    events=[
        "CreateRoute", "ReplaceRoute", "AttachInternetGateway", "CreateVpcPeeringConnection",
        "AcceptVpcPeeringConnection", "DeleteNetworkAcl", "DeleteNetworkAclEntry", "ReplaceNetworkAclAssociation",
    ],
    sources=["ec2"],
)  # fmt: skip
def vpc_network_change(event: Event) -> str | None:
    return None if event.failed else f"{short(event.name)} by {event.actor()}"


@rule(
    "traffic_mirroring", "T1040", 60, "VPC traffic mirroring set up",
    "Mirroring copies packets out of instances: confirm the target belongs to a sanctioned monitoring tool.",
    events=[
        "CreateTrafficMirrorSession", "CreateTrafficMirrorTarget", "CreateTrafficMirrorFilter",
        "CreateTrafficMirrorFilterRule", "ModifyTrafficMirrorSession",
    ],
    sources=["ec2"],
)  # fmt: skip
def traffic_mirroring(event: Event) -> str | None:
    return None if event.failed else f"Traffic mirroring {short(event.name)} by {event.actor()}"


_LAMBDA_PERMISSION_EVENTS = ("AddPermission", "AddPermission20150331", "AddPermission20150331v2")
_LAMBDA_URL_EVENTS = (
    "CreateFunctionUrlConfig", "UpdateFunctionUrlConfig",
    "CreateFunctionUrlConfig20211031", "UpdateFunctionUrlConfig20211031",
)  # fmt: skip


@rule(
    "lambda_public_permission", "T1546", 80, "Lambda function invocable by anyone",
    "Remove the public permission / NONE-auth URL; review invocations and the function's code and role.",
    events=[*_LAMBDA_PERMISSION_EVENTS, *_LAMBDA_URL_EVENTS], sources=["lambda"],
)  # fmt: skip
def lambda_public_permission(event: Event) -> str | None:
    if event.failed:
        return None
    function = short(event.text("requestParameters.functionName").rpartition(":")[2])
    if event.name in _LAMBDA_URL_EVENTS:
        if event.text("requestParameters.authType").upper() != "NONE":
            return None
        return f"Lambda function {function} given a public URL (no auth) by {event.actor()}"
    principal = event.text("requestParameters.principal").strip()
    if principal != "*" and event.text("requestParameters.functionUrlAuthType").upper() != "NONE":
        return None
    return f"Lambda function {function} made invocable by anyone by {event.actor()}"




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


@rule(
    "s3_bucket_replication_set", "T1537", 55, "S3 bucket replication configured",
    "Replication copies every new object to the destination: confirm the destination bucket is yours; to "
    "another account it is a quiet exfiltration channel.",
    events=["PutBucketReplication"], sources=["s3"],
)  # fmt: skip
def s3_bucket_replication_set(event: Event) -> str | None:
    if event.failed:
        return None
    bucket = short(event.text("requestParameters.bucketName"), 80)
    targets = _replication_destinations(event)
    foreign = [(b, a) for b, a in targets if a and a != event.account]
    where = ", ".join(short(b, 80) + (f" (account {short(a, 20)})" if a else "") for b, a in (foreign or targets))
    prefix = "to another account: " if foreign else ""
    return f"Bucket {bucket} now replicates {prefix}{where or 'to an unnamed destination'}; set by {event.actor()}"


@rule(
    "ebs_snapshot_copied", "T1537", 45, "EBS or RDS snapshot copied",
    "A copy can move a disk to another region or be shared on from there: confirm the copy belongs to a backup "
    "plan; otherwise delete it and check who else can read it.",
    events=["CopySnapshot", "CopyDBSnapshot", "CopyDBClusterSnapshot"], sources=["ec2", "rds"],
)  # fmt: skip
def ebs_snapshot_copied(event: Event) -> str | None:
    if event.failed:
        return None
    source = event.text("requestParameters.sourceSnapshotId") or event.text(
        "requestParameters.sourceDBSnapshotIdentifier") or event.text("requestParameters.sourceDBClusterSnapshotIdentifier")
    region = event.text("requestParameters.sourceRegion")
    return (f"Snapshot {short(source or '?', 120)} copied{' from ' + short(region, 20) if region else ''} "
            f"into {short(event.text('awsRegion'), 20) or 'this region'} by {event.actor()}")  # fmt: skip


@rule(
    "ebs_snapshot_created", "T1578.001", 25, "EBS snapshot created by a person",
    "Backups are made by AWS Backup or automation; a person snapshotting a disk may be about to copy or share "
    "it: check what the volume holds and what happens to the snapshot next.",
    events=["CreateSnapshot", "CreateSnapshots"], identity_types=["IAMUser", "Root", "AssumedRole"], sources=["ec2"],
)  # fmt: skip
def ebs_snapshot_created(event: Event) -> str | None:
    if event.failed or event.text("userIdentity.invokedBy") or "AWSBackup" in event.text("userIdentity.arn")[:300]:
        return None
    volume = event.text("requestParameters.volumeId") or event.text("requestParameters.instanceSpecification.instanceId")
    return f"Snapshot of {short(volume or '?', 40)} created by {event.actor()}"
