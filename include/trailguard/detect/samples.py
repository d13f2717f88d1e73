"""Builders of the sample CloudTrail records that detections carry as their test cases.

A case reads like the record it stands for: ``call("StopLogging", "cloudtrail", {"name": "org-trail"})``
is a complete raw record (made by alice, an IAM user of account 111122223333, from 198.51.100.7) with the
request parameters given; keyword arguments override or add top-level fields (``errorCode=...``,
``userIdentity=ROOT``). The test suite normalises each record exactly as ingestion does before a rule
sees it. Nothing here reads data: these are plain dicts, built once at import.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

ACCOUNT = "111122223333"
FOREIGN = "999988887777"  # an account outside the organisation
ALICE: dict[str, Any] = {
    "type": "IAMUser",
    "arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
    "accountId": ACCOUNT,
    "userName": "alice",
    "principalId": "AIDAEXAMPLEALICE",
    "accessKeyId": "AKIAEXAMPLEALICE",
}
ROLE: dict[str, Any] = {
    "type": "AssumedRole",
    "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/deploy/ci-session",
    "accountId": ACCOUNT,
    "principalId": "AROAEXAMPLE:ci-session",
    "sessionContext": {"sessionIssuer": {"type": "Role", "arn": f"arn:aws:iam::{ACCOUNT}:role/deploy"}},
}
SSO: dict[str, Any] = {
    **ROLE,
    "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_Admin_0123abcd/bob@example.com",
}
ROOT: dict[str, Any] = {
    "type": "Root",
    "arn": f"arn:aws:iam::{ACCOUNT}:root",
    "accountId": ACCOUNT,
    "principalId": ACCOUNT,
}
DENIED: dict[str, str] = {"errorCode": "AccessDenied", "errorMessage": "User is not authorized"}
ADMIN_STATEMENT: dict[str, Any] = {"Effect": "Allow", "Action": "*", "Resource": "*"}
TIME = "2024-08-01T12:00:00Z"


def call(name: str, source: str, params: Any = None, **fields: Any) -> dict[str, Any]:
    """A raw CloudTrail record of an API call; ``source`` is a service name or a full eventSource."""
    record: dict[str, Any] = {
        "eventVersion": "1.09",
        "eventID": "00000000-0000-0000-0000-000000000001",
        "eventTime": TIME,
        "eventSource": source if "." in source else f"{source}.amazonaws.com",
        "eventName": name,
        "eventType": "AwsApiCall",
        "awsRegion": "eu-west-1",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.17.0",
        "userIdentity": ALICE,
        "requestParameters": params,
        "responseElements": None,
        "recipientAccountId": ACCOUNT,
    }
    record.update(fields)
    return record


def login(identity: dict[str, Any], result: str, mfa: str = "No", **extra: Any) -> dict[str, Any]:
    """A ConsoleLogin record: ``result`` "Success" or "Failure"; ``extra`` goes to additionalEventData."""
    return call(
        "ConsoleLogin",
        "signin",
        eventType="AwsConsoleSignIn",
        userIdentity=identity,
        responseElements={"ConsoleLogin": result},
        additionalEventData={
            "LoginTo": "https://console.aws.amazon.com/console/home",
            "MFAUsed": mfa,
            **extra,
        },
        **({"errorMessage": "Failed authentication"} if result == "Failure" else {}),
    )


def policy(*statements: dict[str, Any]) -> str:
    """An IAM policy document as the JSON text CloudTrail records carry."""
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def trust(principal: dict[str, Any]) -> str:
    """A role trust policy letting ``principal`` assume the role."""
    return policy({"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"})


def sg_ingress(cidr: str, port: int, key: str = "cidrIp") -> dict[str, Any]:
    """AuthorizeSecurityGroupIngress parameters opening one TCP port to ``cidr`` (``key``: cidrIp / cidrIpv6)."""
    ranges = "ipv6Ranges" if key == "cidrIpv6" else "ipRanges"
    permission = {"ipProtocol": "tcp", "fromPort": port, "toPort": port, ranges: {"items": [{key: cidr}]}}
    return {"groupId": "sg-0123456789abcdef0", "ipPermissions": {"items": [permission]}}


def burst(
    count: int, seconds_apart: int, record: dict[str, Any] | Callable[[int], dict[str, Any]]
) -> tuple[dict[str, Any], ...]:
    """``count`` records ``seconds_apart`` apart with their own eventIDs (a window rule's case): copies of
    ``record``, or ``record(i)`` for the i-th when they differ in more than time and id."""
    start = datetime.fromisoformat(TIME.replace("Z", "+00:00")).astimezone(timezone.utc)
    return tuple(
        {
            **(record(i) if callable(record) else record),
            "eventID": f"00000000-0000-0000-0000-{i:012d}",
            "eventTime": (start + timedelta(seconds=i * seconds_apart)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for i in range(count)
    )
