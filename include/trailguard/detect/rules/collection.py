"""Collection (TA0009): S3 buckets opened to the internet."""

from __future__ import annotations

import json

from trailguard.detect.event import Event, short
from trailguard.detect.policy import as_strings, public_statements
from trailguard.detect.registry import fires, near_miss, rule
from trailguard.detect.samples import call, policy

_PUBLIC_GRANTEES = (
    "acs.amazonaws.com/groups/global/allusers",
    "acs.amazonaws.com/groups/global/authenticatedusers",
)

_PUBLIC_CANNED_ACLS = frozenset({"public-read", "public-read-write", "authenticated-read"})


@rule(
    "s3_bucket_acl_public",
    title="S3 bucket ACL grants public access",
    technique="T1530",
    score=80,
    reason="S3 bucket {bucket} ACL made public by {actor}",
    runbook="Remove the AllUsers / AuthenticatedUsers grant and turn on Block Public Access for the bucket.",
    events=["PutBucketAcl"],
    sources=["s3"],
    tests=[
        fires(
            "AllUsers granted READ",
            call(
                "PutBucketAcl",
                "s3",
                {
                    "bucketName": "reports",
                    "AccessControlPolicy": {
                        "AccessControlList": {
                            "Grant": [
                                {
                                    "Grantee": {"URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
                                    "Permission": "READ",
                                }
                            ]
                        }
                    },
                },
            ),
        ),
        near_miss(
            "canned ACL private",
            call("PutBucketAcl", "s3", {"bucketName": "reports", "x-amz-acl": ["private"]}),
        ),
        fires(
            "canned ACL public-read",
            call("PutBucketAcl", "s3", {"bucketName": "reports", "x-amz-acl": ["public-read"]}),
        ),
    ],
)
def s3_bucket_acl_public(event: Event) -> str | None:
    if event.failed:
        return None
    text = event.json_text("requestParameters").lower()
    canned = {a.strip().lower() for a in as_strings(event.params("x-amz-acl"))}
    if not (any(g in text for g in _PUBLIC_GRANTEES) or canned & _PUBLIC_CANNED_ACLS):
        return None
    return f"S3 bucket {short(event.text('requestParameters.bucketName'))} ACL made public by {event.actor()}"


@rule(
    "s3_bucket_policy_public",
    title="S3 bucket policy allows anyone",
    technique="T1530",
    score=80,
    reason="S3 bucket {bucket} policy opened to anyone by {actor}",
    runbook="Remove the Principal * statement (or add an org / VPC condition) and check what was read meanwhile.",
    events=["PutBucketPolicy"],
    sources=["s3"],
    tests=[
        fires(
            "Principal * may read",
            call(
                "PutBucketPolicy",
                "s3",
                {
                    "bucketName": "reports",
                    "bucketPolicy": json.loads(
                        policy(
                            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}
                        )
                    ),
                },
            ),
        ),
        near_miss(
            "Principal * limited to the organisation",
            call(
                "PutBucketPolicy",
                "s3",
                {
                    "bucketName": "reports",
                    "bucketPolicy": json.loads(
                        policy(
                            {
                                "Effect": "Allow",
                                "Principal": "*",
                                "Action": "s3:GetObject",
                                "Resource": "*",
                                "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abc"}},
                            }
                        )
                    ),
                },
            ),
        ),
    ],
)
def s3_bucket_policy_public(event: Event) -> str | None:
    if event.failed or not public_statements(event.params("bucketPolicy")):
        return None
    return f"S3 bucket {short(event.text('requestParameters.bucketName'))} policy opened to anyone by {event.actor()}"
