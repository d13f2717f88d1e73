"""Helpers over event content that several rules share: IAM policy documents, network ingress, sharing, root calls."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote

import numpy as np

from trailguard.detect.event import WALK_DEPTH, WALK_NODES, Event, as_list, parse_json, short

# --- shared helpers over event content ------------------------------------------------------------

_ACCOUNT_ID = re.compile(r"^\d{12}$")
_ARN_ACCOUNT = re.compile(r"^arn:aws[\w-]*:(?:iam|sts)::(\d{12}):")
# Condition keys that tie a "Principal: *" statement to the organisation, a network or an account
_RESTRICTING_CONDITION_KEYS = frozenset(
    k.lower()
    for k in (
        "aws:SourceVpc", "aws:SourceVpce", "aws:SourceIp", "aws:PrincipalOrgID", "aws:PrincipalOrgPaths",
        "aws:PrincipalAccount", "aws:PrincipalArn", "aws:SourceAccount", "aws:SourceArn", "aws:SourceOwner",
        "aws:userid", "aws:username", "kms:CallerAccount", "kms:ViaService", "s3:DataAccessPointAccount",
        "lambda:FunctionArn",
    )
)  # fmt: skip


def _policy(value: Any) -> Any:
    """A policy document given as a dict, JSON text or URL-encoded JSON text (IAM response elements)."""
    if isinstance(value, str):
        parsed = parse_json(value)
        if parsed is None and "%7B" in value[:16]:
            parsed = parse_json(unquote(value))
        return parsed
    return value


def statements(document: Any) -> list[dict[str, Any]]:
    """The statements of a policy document (dict, JSON or URL-encoded JSON); [] when it is not one."""
    doc = _policy(document)
    if not isinstance(doc, dict):
        return []
    return [s for s in as_list(doc.get("Statement")) if isinstance(s, dict)]


def _allows(statement: dict[str, Any]) -> bool:
    effect = statement.get("Effect")
    return isinstance(effect, str) and effect.strip().lower() == "allow"


def _aws_principals(statement: dict[str, Any]) -> list[str]:
    """The AWS principals of a statement; "*" for everyone (``Principal: "*"``, ``{"AWS": "*"}``, NotPrincipal)."""
    if "NotPrincipal" in statement:
        return ["*"]
    principal = statement.get("Principal")
    if principal == "*":
        return ["*"]
    if isinstance(principal, dict):
        return [p for p in as_list(principal.get("AWS")) if isinstance(p, str)]
    return []


def _restricted(statement: dict[str, Any]) -> bool:
    condition = statement.get("Condition")
    if not isinstance(condition, dict):
        return False
    for operator in condition.values():
        if isinstance(operator, dict) and any(
            isinstance(key, str) and key.lower() in _RESTRICTING_CONDITION_KEYS for key in operator
        ):
            return True
    return False


def public_statements(document: Any) -> list[dict[str, Any]]:
    """Allow statements open to every AWS principal and not narrowed by an org/network/account condition."""
    return [
        s for s in statements(document) if _allows(s) and "*" in _aws_principals(s) and not _restricted(s)
    ]


def _principal_account(principal: str) -> str | None:
    if _ACCOUNT_ID.match(principal):
        return principal
    match = _ARN_ACCOUNT.match(principal)
    return match.group(1) if match else None


def trust_exposure(document: Any, own_account: str) -> list[str]:
    """Who outside the account a trust policy lets in: "anyone" or the foreign account ids.

    When the caller's own account is unknown every named account counts as foreign: the label errs
    towards review rather than silence.
    """
    found: list[str] = []
    for statement in statements(document):
        if not _allows(statement):
            continue
        for principal in _aws_principals(statement):
            if principal == "*":
                if not _restricted(statement):
                    found.append("anyone")
                continue
            account = _principal_account(principal)
            if account and account != own_account:
                found.append(account)
    return sorted(set(found))


def as_strings(value: Any) -> list[str]:
    """The text values of a value or list (policy Action / Resource lists mix types in hostile input)."""
    return [v for v in as_list(value) if isinstance(v, str)]


def is_admin_statement(statement: dict[str, Any]) -> bool:
    """An Allow of every action (``*``, ``*:*``, ``iam:*`` or a NotAction) on every resource."""
    if not _allows(statement):
        return False
    resources = as_strings(statement.get("Resource"))
    if "NotAction" in statement:
        return "*" in resources
    actions = {a.strip().lower() for a in as_strings(statement.get("Action"))}
    return bool(actions & {"*", "*:*", "iam:*"}) and "*" in resources


def walk_params(value: Any) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Every dict inside a JSON value with its ancestors (nearest last), depth- and size-bounded."""
    stack: list[tuple[Any, list[dict[str, Any]]]] = [(value, [])]
    visited = 0
    while stack and visited < WALK_NODES:
        node, ancestors = stack.pop()
        visited += 1
        if len(ancestors) > WALK_DEPTH:
            continue
        if isinstance(node, dict):
            yield node, ancestors
            children: Iterable[Any] = node.values()
            ancestors = [*ancestors, node]
        elif isinstance(node, list):
            children = node
        else:
            continue
        stack.extend((child, ancestors) for child in children if isinstance(child, (dict, list)))


def _lower_keys(node: dict[str, Any]) -> dict[str, Any]:
    return {k.lower(): v for k, v in node.items() if isinstance(k, str)}


def port_number(value: Any) -> int | None:
    """A port (or count) given as a number, digits or ``{"value": n}``; None when it is none of these."""
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


_CIDR_KEYS = frozenset({"cidrip", "cidripv4", "cidripv6", "cidrblock", "ipv6cidrblock"})


def open_ingress(params: Any) -> list[tuple[str, int | None, int | None, str]]:
    """(cidr, fromPort, toPort, protocol) of every rule in the request open to the whole internet (/0).

    Handles the flat shape (``cidrIp`` next to the ports) and ``ipPermissions.items[].ipRanges.items[]``:
    ports and protocol come from the nearest dict that has them.
    """
    found = []
    for node, ancestors in walk_params(params):
        keys = _lower_keys(node)
        for key in _CIDR_KEYS & keys.keys():
            cidr = keys[key]
            if not (isinstance(cidr, str) and cidr.strip().endswith("/0")):
                continue
            ports: dict[str, Any] = {}
            for holder in [node, *reversed(ancestors)]:
                lowered = _lower_keys(holder)
                if "fromport" in lowered or "ipprotocol" in lowered:
                    ports = lowered
                    break
            protocol = ports.get("ipprotocol")
            found.append(
                (
                    cidr.strip()[:45],
                    port_number(ports.get("fromport")),
                    port_number(ports.get("toport")),
                    protocol if isinstance(protocol, str) else str(port_number(protocol) or ""),
                )
            )
    return found


_ADMIN_PORTS = (22, 3389)


def exposes_admin_port(rule: tuple[str, int | None, int | None, str]) -> bool:
    """Whether an open ingress rule reaches SSH or RDP (all protocols and missing ports count as yes)."""
    _, low, high, protocol = rule
    if protocol.lower() in ("-1", "all") or (low is None and high is None):
        return True
    if protocol.lower() not in ("tcp", "6", ""):
        return False
    low = low if low is not None else high
    high = high if high is not None else low
    return any(low is not None and high is not None and low <= port <= high for port in _ADMIN_PORTS)


def describe_port(rule: tuple[str, int | None, int | None, str]) -> str:
    """An ingress rule for a reason: "port 22 from 0.0.0.0/0", "all ports from ::/0"."""
    cidr, low, high, protocol = rule
    if protocol.lower() in ("-1", "all") or (low is None and high is None):
        return f"all ports from {cidr}"
    span = str(low) if low == high or high is None else f"{low}-{high}"
    return f"port {span} from {cidr}"


def share_targets(event: Event) -> tuple[bool, list[str], str]:
    """(made public, foreign accounts added, resource id) for snapshot and image permission changes."""
    own = event.account
    accounts: set[str] = set()
    public = False
    if event.name in ("ModifyDBSnapshotAttribute", "ModifyDBClusterSnapshotAttribute"):
        if event.text("requestParameters.attributeName").lower() != "restore":
            return False, [], ""
        for value in as_strings(event.params("valuesToAdd")):
            if value.strip().lower() == "all":
                public = True
            elif _ACCOUNT_ID.match(value) and value != own:
                accounts.add(value)
        resource = event.text("requestParameters.dBSnapshotIdentifier") or event.text(
            "requestParameters.dBClusterSnapshotIdentifier"
        )
        return public, sorted(accounts), resource
    attribute = "launchPermission" if event.name == "ModifyImageAttribute" else "createVolumePermission"
    added = event.params(f"{attribute}.add")
    items = added.get("items") if isinstance(added, dict) else added
    for item in as_list(items):
        if not isinstance(item, dict):
            continue
        group, user = item.get("group"), item.get("userId")
        if isinstance(group, str) and group.strip().lower() == "all":
            public = True
        if isinstance(user, str) and _ACCOUNT_ID.match(user) and user != own:
            accounts.add(user)
    resource = event.text("requestParameters.imageId") or event.text("requestParameters.snapshotId")
    return public, sorted(accounts), resource


def accounts_text(accounts: list[str]) -> str:
    """Account ids for a reason: the first three, then "and N more"."""
    shown = ", ".join(accounts[:3])
    return shown + (f" and {len(accounts) - 3} more" if len(accounts) > 3 else "")


def human_session(event: Event) -> bool:
    """A person rather than a pipeline: IAM user keys, root, a federated user or an SSO session."""
    kind = event.identity_type
    return kind in ("IAMUser", "Root", "FederatedUser") or (
        kind == "AssumedRole" and "AWSReservedSSO" in event.text("userIdentity.arn")[:400]
    )


# --- identity and sign-in -------------------------------------------------------------------------

# eventName prefixes of calls that only read: the one list (the rules' root read/change split and the
# model's "read" category both use it; model/enrich.py imports it from here)
READ_ONLY_PREFIXES = (
    "Get", "List", "Describe", "Head", "Lookup", "Search", "Check", "View", "Scan", "Query",
    "BatchGet", "Select", "Test", "Validate", "Estimate", "Preview", "Filter", "Retrieve",
)  # fmt: skip
ROOT_HYGIENE = frozenset({"EnableMFADevice", "CreateVirtualMFADevice", "ResyncMFADevice", "CheckMfa"})


def is_root_call(event: Event) -> bool:
    """Root credentials were accepted for this call (sign-in failures and AWS-internal calls excluded)."""
    if event.name in ("", "ConsoleLogin") or event.text("eventType") == "AwsServiceEvent":
        return False
    invoked_by = event.text("userIdentity.invokedBy")
    if invoked_by and invoked_by != "signin.amazonaws.com":
        return False
    return event.text(f"responseElements.{event.name[:100]}").lower() != "failure"


def is_read_only(event: Event) -> bool:
    """The readOnly flag when CloudTrail gives one, else the eventName starts with a READ_ONLY_PREFIXES prefix."""
    flag = event.get("readOnly")
    if isinstance(flag, (bool, np.bool_)):
        return bool(flag)
    return event.name.startswith(READ_ONLY_PREFIXES)


def failure_note(event: Event) -> str:
    """The errorCode as " (failed: ...)" for a reason, or "" when the call succeeded."""
    code = event.text("errorCode")
    return f" (failed: {short(code, 40)})" if code else ""
