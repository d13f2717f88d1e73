"""Labelling functions: analyst knowledge as code, for the cold start of the risk model.

Before analysts have scored enough events, these rules produce the training labels: a risk score 0-100,
a one-line reason a human can check, and the MITRE ATT&CK technique. They follow panther-analysis: each
detection is a small typed function over ONE event that reads every field defensively (an attacker
controls all of them: any may be missing, of the wrong type or huge), with its ATT&CK id, score and
runbook line next to it.

:func:`label_events` runs them over a whole day: a vectorised prefilter (``isin`` on eventName and
userIdentity.type) picks the few candidate rows, only those reach the Python functions, and the window
rules (bursts of access-denied calls, secret reads, failed logins, deletions) are computed over the frame.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any
from urllib.parse import unquote

import numpy as np
import orjson
import pandas as pd

from trailguard.schema import EVENT_COLUMNS

log = logging.getLogger(__name__)

OUTPUT_COLUMNS: tuple[str, ...] = ("lf_score", "lf_reasons", "attack_technique", "lf_rules")
WINDOW = pd.Timedelta(minutes=10)
REASON_VALUE_CHARS = 64  # interpolated event values are cut to this many characters
_WALK_DEPTH = 24  # JSON nesting followed when searching request parameters
_WALK_NODES = 20_000  # JSON nodes visited at most per search: a 1 MB list must not stall a run


@dataclass(frozen=True)
class Detection:
    """Metadata of one rule: what the label means and what an analyst should do about it."""

    rule_id: str
    technique: str
    score: int
    title: str
    runbook: str


_MISSING: Any = object()
# fields different in every event: a check that reads them may answer differently for events otherwise alike
_UNIQUE_FIELDS = frozenset({"eventID", "raw"})


def _is_missing(value: Any) -> bool:
    return (
        value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))
    )


def _parse_json(value: Any) -> Any:
    """Parsed JSON text, or the value itself when it is already decoded; None when it does not parse."""
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return value
    try:
        return orjson.loads(value)
    except (orjson.JSONDecodeError, ValueError, TypeError, RecursionError):
        return None


def _dig(value: Any, parts: Iterable[str]) -> Any:
    for part in parts:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _short(value: Any, limit: int = REASON_VALUE_CHARS) -> str:
    """An event value fit for a one-line reason: text, no control characters, at most `limit` chars."""
    if _is_missing(value) or value == "":
        return "?"
    text = value if isinstance(value, str) else str(value)
    text = _CONTROL.sub(" ", text[: limit + 1]).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _false(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def _as_list(value: Any) -> list[Any]:
    if _is_missing(value):
        return []
    return value if isinstance(value, list) else [value]


class Event:
    """Read-only view of one normalised row (a mapping with the schema's dotted column names).

    ``get("requestParameters.x.y")``, ``get("responseElements.x")`` and ``get("additionalEventData.x")``
    reach into the JSON text of those columns (or into ``raw``), parsed once and only when asked for.
    Every failure (missing key, wrong type, unparsable JSON) returns the default instead of raising.
    """

    __slots__ = ("_row", "_docs", "name", "source", "identity_type", "unique")

    def __init__(self, row: Mapping[str, Any]) -> None:
        self._row: Mapping[str, Any] = row if isinstance(row, Mapping) else {}
        self._docs: dict[str, Any] = {}
        self.unique = False  # set when something read eventID or `raw`: what fired then belongs to this event only
        self.name = self.text("eventName")  # read by nearly every check: resolved once
        self.source = self.text("eventSource")
        self.identity_type = self.text("userIdentity.type")

    def get(self, key: str, default: Any = None) -> Any:
        if not isinstance(key, str):
            return default
        if key in _UNIQUE_FIELDS:
            self.unique = True
        value = self._row.get(key, _MISSING)
        if value is _MISSING:  # not a column: look into the JSON of its root column, or into `raw`
            root, _, rest = key.partition(".")
            value = self._doc(root)
            if rest:
                value = _dig(value, rest.split("."))
        return default if _is_missing(value) else value

    def _doc(self, root: str) -> Any:
        if root in _UNIQUE_FIELDS:
            self.unique = True
        if root not in self._docs:
            value = self._row.get(root, _MISSING)
            if value is _MISSING:
                raw = self._doc("raw") if root != "raw" else None
                self._docs[root] = raw.get(root) if isinstance(raw, dict) else None  # already decoded
            else:
                self._docs[root] = None if _is_missing(value) else _parse_json(value)
        return self._docs[root]

    def parsed(self, root: str) -> Any:
        """The decoded JSON of a column such as ``requestParameters`` (None when missing or not JSON)."""
        return self._doc(root)

    def text(self, key: str) -> str:
        """A field as text: strings as they are, numbers as digits, anything else (or missing) as ""."""
        value = self.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            return str(value)
        return ""

    def json_text(self, key: str) -> str:
        """The JSON text of a field, for substring scans; "" when missing."""
        value = self.get(key)
        if isinstance(value, str):
            return value
        try:
            return orjson.dumps(value).decode() if value is not None else ""
        except (TypeError, orjson.JSONEncodeError):
            return ""

    @property
    def failed(self) -> bool:
        """The call did not do what it asked: an errorCode, or a sign-in step that reports Failure."""
        if self.text("errorCode"):
            return True
        if self.name == "ConsoleLogin":
            return (
                self.text("responseElements.ConsoleLogin").lower() == "failure"
                or "failed authentication" in self.text("errorMessage")[:200].lower()
            )
        return self.text("eventType") == "AwsConsoleSignIn" and (
            self.text(f"responseElements.{self.name[:100]}").lower() == "failure"
        )

    @property
    def account(self) -> str:
        return self.text("userIdentity.accountId") or self.text("recipientAccountId")

    def actor(self) -> str:
        return _short(
            self.text("userIdentity.arn")
            or self.text("userIdentity.userName")
            or self.text("userIdentity.principalId")
            or "unknown principal"
        )

    def ip(self) -> str:
        return _short(self.text("sourceIPAddress"), 40)

    def caller_name(self) -> str:
        """The caller's own user name (IAM user, root or the session name of a role): "for oneself" checks."""
        kind = self.identity_type
        if kind == "Root":
            return "root"
        if kind == "IAMUser":
            return self.text("userIdentity.userName") or self.text("userIdentity.arn").rpartition("/")[2]
        return self.text("userIdentity.arn").rpartition("/")[2]

    def params(self, key: str) -> Any:
        return self.get(f"requestParameters.{key}")


RuleCheck = Callable[[Event], "str | None"]


@dataclass(frozen=True)
class Rule:
    """One per-event rule: Detection metadata, the check, and where it can fire (used by the prefilter)."""

    detection: Detection
    check: RuleCheck
    event_names: frozenset[str] = frozenset()
    identity_types: frozenset[str] = frozenset()
    event_sources: frozenset[str] = frozenset()

    def applies(self, name: str, identity_type: str, source: str) -> bool:
        """Whether the check should see this event. A rule bound to services skips events of another
        service (eventNames repeat across services); an event without any eventSource is not excluded."""
        return (
            (not self.event_names or name in self.event_names)
            and (not self.identity_types or identity_type in self.identity_types)
            and (not self.event_sources or not source or source in self.event_sources)
        )


_RULES: list[Rule] = []


def _rule(
    rule_id: str,
    technique: str,
    score: int,
    title: str,
    runbook: str,
    *,
    events: Iterable[str] = (),
    identity_types: Iterable[str] = (),
    sources: Iterable[str] = (),
) -> Callable[[RuleCheck], RuleCheck]:
    """Register a check as a rule. A rule must name its eventNames or identity types: no rule sees every row."""

    def register(check: RuleCheck) -> RuleCheck:
        rule = Rule(
            Detection(rule_id, technique, score, title, runbook),
            check,
            frozenset(events),
            frozenset(identity_types),
            frozenset(f"{s}.amazonaws.com" if "." not in s else s for s in sources),
        )
        if not rule.event_names and not rule.identity_types:
            raise ValueError(f"rule {rule_id} names neither eventNames nor identity types")
        if not 0 <= score <= 100:
            raise ValueError(f"rule {rule_id} has score {score} outside 0-100")
        _RULES.append(rule)
        return check

    return register


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
        parsed = _parse_json(value)
        if parsed is None and "%7B" in value[:16]:
            parsed = _parse_json(unquote(value))
        return parsed
    return value


def _statements(document: Any) -> list[dict[str, Any]]:
    doc = _policy(document)
    if not isinstance(doc, dict):
        return []
    return [s for s in _as_list(doc.get("Statement")) if isinstance(s, dict)]


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
        return [p for p in _as_list(principal.get("AWS")) if isinstance(p, str)]
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


def _public_statements(document: Any) -> list[dict[str, Any]]:
    """Allow statements open to every AWS principal and not narrowed by an org/network/account condition."""
    return [
        s for s in _statements(document) if _allows(s) and "*" in _aws_principals(s) and not _restricted(s)
    ]


def _principal_account(principal: str) -> str | None:
    if _ACCOUNT_ID.match(principal):
        return principal
    match = _ARN_ACCOUNT.match(principal)
    return match.group(1) if match else None


def _trust_exposure(document: Any, own_account: str) -> list[str]:
    """Who outside the account a trust policy lets in: "anyone" or the foreign account ids.

    When the caller's own account is unknown every named account counts as foreign: the label errs
    towards review rather than silence.
    """
    found: list[str] = []
    for statement in _statements(document):
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


def _as_strings(value: Any) -> list[str]:
    return [v for v in _as_list(value) if isinstance(v, str)]


def _is_admin_statement(statement: dict[str, Any]) -> bool:
    if not _allows(statement):
        return False
    resources = _as_strings(statement.get("Resource"))
    if "NotAction" in statement:
        return "*" in resources
    actions = {a.strip().lower() for a in _as_strings(statement.get("Action"))}
    return bool(actions & {"*", "*:*", "iam:*"}) and "*" in resources


def _walk(value: Any) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Every dict inside a JSON value with its ancestors (nearest last), depth- and size-bounded."""
    stack: list[tuple[Any, list[dict[str, Any]]]] = [(value, [])]
    visited = 0
    while stack and visited < _WALK_NODES:
        node, ancestors = stack.pop()
        visited += 1
        if len(ancestors) > _WALK_DEPTH:
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


def _port(value: Any) -> int | None:
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


_CIDR_KEYS = frozenset({"cidrip", "cidripv4", "cidripv6", "cidrblock", "ipv6cidrblock"})


def _open_ingress(params: Any) -> list[tuple[str, int | None, int | None, str]]:
    """(cidr, fromPort, toPort, protocol) of every rule in the request open to the whole internet (/0).

    Handles the flat shape (``cidrIp`` next to the ports) and ``ipPermissions.items[].ipRanges.items[]``:
    ports and protocol come from the nearest dict that has them.
    """
    found = []
    for node, ancestors in _walk(params):
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
                    _port(ports.get("fromport")),
                    _port(ports.get("toport")),
                    protocol if isinstance(protocol, str) else str(_port(protocol) or ""),
                )
            )
    return found


_ADMIN_PORTS = (22, 3389)


def _exposes_admin_port(rule: tuple[str, int | None, int | None, str]) -> bool:
    _, low, high, protocol = rule
    if protocol.lower() in ("-1", "all") or (low is None and high is None):
        return True
    if protocol.lower() not in ("tcp", "6", ""):
        return False
    low = low if low is not None else high
    high = high if high is not None else low
    return any(low is not None and high is not None and low <= port <= high for port in _ADMIN_PORTS)


def _describe_port(rule: tuple[str, int | None, int | None, str]) -> str:
    cidr, low, high, protocol = rule
    if protocol.lower() in ("-1", "all") or (low is None and high is None):
        return f"all ports from {cidr}"
    span = str(low) if low == high or high is None else f"{low}-{high}"
    return f"port {span} from {cidr}"


def _share_targets(event: Event) -> tuple[bool, list[str], str]:
    """(made public, foreign accounts added, resource id) for snapshot and image permission changes."""
    own = event.account
    accounts: set[str] = set()
    public = False
    if event.name in ("ModifyDBSnapshotAttribute", "ModifyDBClusterSnapshotAttribute"):
        if event.text("requestParameters.attributeName").lower() != "restore":
            return False, [], ""
        for value in _as_strings(event.params("valuesToAdd")):
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
    for item in _as_list(items):
        if not isinstance(item, dict):
            continue
        group, user = item.get("group"), item.get("userId")
        if isinstance(group, str) and group.strip().lower() == "all":
            public = True
        if isinstance(user, str) and _ACCOUNT_ID.match(user) and user != own:
            accounts.add(user)
    resource = event.text("requestParameters.imageId") or event.text("requestParameters.snapshotId")
    return public, sorted(accounts), resource


def _accounts_text(accounts: list[str]) -> str:
    shown = ", ".join(accounts[:3])
    return shown + (f" and {len(accounts) - 3} more" if len(accounts) > 3 else "")


def _human_session(event: Event) -> bool:
    """A person rather than a pipeline: IAM user keys, root, a federated user or an SSO session."""
    kind = event.identity_type
    return kind in ("IAMUser", "Root", "FederatedUser") or (
        kind == "AssumedRole" and "AWSReservedSSO" in event.text("userIdentity.arn")[:400]
    )


# --- identity and sign-in -------------------------------------------------------------------------

_READ_PREFIXES = ("Get", "List", "Describe", "Head", "Lookup", "Search", "Check", "View")
_ROOT_HYGIENE = frozenset({"EnableMFADevice", "CreateVirtualMFADevice", "ResyncMFADevice", "CheckMfa"})


def _root_call(event: Event) -> bool:
    """Root credentials were accepted for this call (sign-in failures and AWS-internal calls excluded)."""
    if event.name in ("", "ConsoleLogin") or event.text("eventType") == "AwsServiceEvent":
        return False
    invoked_by = event.text("userIdentity.invokedBy")
    if invoked_by and invoked_by != "signin.amazonaws.com":
        return False
    return event.text(f"responseElements.{event.name[:100]}").lower() != "failure"


def _read_only(event: Event) -> bool:
    flag = event.get("readOnly")
    if isinstance(flag, (bool, np.bool_)):
        return bool(flag)
    return event.name.startswith(_READ_PREFIXES)


def _failure_note(event: Event) -> str:
    code = event.text("errorCode")
    return f" (failed: {_short(code, 40)})" if code else ""


@_rule(
    "root_console_login", "T1078.004", 85, "Root user console login",
    "Confirm with the account owner; if unexpected reset the root password, check root MFA and review the session.",
    events=["ConsoleLogin"], identity_types=["Root"],
)  # fmt: skip
def root_console_login(event: Event) -> str | None:
    if event.failed:
        return None
    mfa = _short(event.text("additionalEventData.MFAUsed") or "unknown", 10)
    return f"Root console login from {event.ip()} (MFA: {mfa})"


@_rule(
    "root_activity", "T1078.004", 75, "Root credentials used for a change",
    "Root should never be used day to day: confirm with the owner, review the change, rotate root credentials.",
    identity_types=["Root"],
)  # fmt: skip
def root_activity(event: Event) -> str | None:
    if not _root_call(event) or _read_only(event) or event.name in _ROOT_HYGIENE:
        return None
    return f"Root user called {_short(event.name)} from {event.ip()}{_failure_note(event)}"


@_rule(
    "root_read_activity", "T1078.004", 55, "Root credentials used to read or set up MFA",
    "Confirm who holds the root credentials and why they were used; reads often precede a change.",
    identity_types=["Root"],
)  # fmt: skip
def root_read_activity(event: Event) -> str | None:
    if not _root_call(event) or not (_read_only(event) or event.name in _ROOT_HYGIENE):
        return None
    return f"Root user called {_short(event.name)} from {event.ip()}{_failure_note(event)}"


@_rule(
    "root_access_key_created", "T1098.001", 90, "Access key created for the root user",
    "Delete the root access key now unless a documented break-glass procedure created it; rotate root password.",
    events=["CreateAccessKey"], identity_types=["Root"], sources=["iam"],
)  # fmt: skip
def root_access_key_created(event: Event) -> str | None:
    if event.failed or event.text("requestParameters.userName"):
        return None
    return f"Access key created for the root user from {event.ip()}"


@_rule(
    "console_login_without_mfa", "T1078.004", 70, "IAM user console login without MFA",
    "Ask the user whether they signed in; enforce MFA on the user; if unknown, reset the password and keys.",
    events=["ConsoleLogin"], identity_types=["IAMUser"], sources=["signin"],
)  # fmt: skip
def console_login_without_mfa(event: Event) -> str | None:
    if event.failed or event.text("additionalEventData.MFAUsed").strip().lower() != "no":
        return None
    if event.get("additionalEventData.SamlProviderArn") is not None:
        return None  # the identity provider did the authentication
    return f"IAM user {_short(event.caller_name())} signed in to the console without MFA from {event.ip()}"


@_rule(
    "console_login_failure", "T1110.001", 40, "Failed console login",
    "Check for repeated failures for this user or from this IP; lock or reset the account if guessing continues.",
    events=["ConsoleLogin"], sources=["signin"],
)  # fmt: skip
def console_login_failure(event: Event) -> str | None:
    if event.identity_type == "Root" or not event.failed:
        return None
    return f"Failed console login for {_short(event.text('userIdentity.userName') or event.actor())} from {event.ip()}"


@_rule(
    "root_console_login_failure", "T1110.001", 60, "Failed root console login",
    "Someone knows the root e-mail address: confirm root MFA is on and watch for further attempts from this IP.",
    events=["ConsoleLogin"], identity_types=["Root"], sources=["signin"],
)  # fmt: skip
def root_console_login_failure(event: Event) -> str | None:
    return f"Failed root console login from {event.ip()}" if event.failed else None


@_rule(
    "signin_token_from_api_credentials", "T1550.001", 45, "Console sign-in token minted from API credentials",
    "Check whether the role's owner turns CLI credentials into console sessions; stolen keys are often used so.",
    events=["GetSigninToken"], sources=["signin"],
)  # fmt: skip
def signin_token_from_api_credentials(event: Event) -> str | None:
    if event.failed or "AWSReservedSSO" in event.text("userIdentity.arn")[:400]:
        return None  # the SSO portal mints these for every console session
    return f"Console sign-in token minted for {event.actor()} from {event.ip()}"


@_rule(
    "sts_federation_token", "T1098.001", 70, "Federation token minted",
    "Federation tokens outlive the deletion of the key that minted them: confirm the use, else revoke sessions.",
    events=["GetFederationToken"], sources=["sts"],
)  # fmt: skip
def sts_federation_token(event: Event) -> str | None:
    if event.failed:
        return None
    broad = any(_is_admin_statement(s) for s in _statements(event.params("policy")))
    name = _short(event.text("requestParameters.name"), 40)
    return f"Federation token '{name}' minted by {event.actor()}" + (
        " with a policy allowing every action" if broad else ""
    )


@_rule(
    "sts_session_token_iam_user", "T1550.001", 25, "Session token minted by an IAM user",
    "Usually MFA for the CLI; unexpected when the user never uses MFA or the IP is new.",
    events=["GetSessionToken"], identity_types=["IAMUser"], sources=["sts"],
)  # fmt: skip
def sts_session_token_iam_user(event: Event) -> str | None:
    return None if event.failed else f"Session token minted by IAM user {_short(event.caller_name())}"


# --- logging and security tooling -----------------------------------------------------------------


@_rule(
    "cloudtrail_stopped", "T1562.008", 90, "CloudTrail logging stopped",
    "Restart logging (StartLogging) at once, then review what this principal did while the trail was off.",
    events=["StopLogging"], sources=["cloudtrail"],
)  # fmt: skip
def cloudtrail_stopped(event: Event) -> str | None:
    if event.failed:
        return None
    return f"CloudTrail logging stopped on trail {_short(event.text('requestParameters.name'))} by {event.actor()}"


@_rule(
    "cloudtrail_deleted", "T1562.008", 90, "CloudTrail trail or event data store deleted",
    "Recreate the trail or data store, then review this principal's activity from other log sources.",
    events=["DeleteTrail", "DeleteEventDataStore", "StopEventDataStoreIngestion"], sources=["cloudtrail"],
)  # fmt: skip
def cloudtrail_deleted(event: Event) -> str | None:
    if event.failed:
        return None
    target = event.text("requestParameters.name") or event.text("requestParameters.eventDataStore")
    what = "trail" if event.name == "DeleteTrail" else "event data store"
    verb = "ingestion stopped on" if event.name == "StopEventDataStoreIngestion" else "deleted:"
    return f"CloudTrail {what} {verb} {_short(target)} by {event.actor()}"


@_rule(
    "cloudtrail_trail_weakened", "T1562.008", 75, "CloudTrail trail scope reduced",
    "Restore multi-region, global-service and log-file-validation settings on the trail.",
    events=["UpdateTrail"], sources=["cloudtrail"],
)  # fmt: skip
def cloudtrail_trail_weakened(event: Event) -> str | None:
    if event.failed:
        return None
    dropped = [
        label
        for key, label in (
            ("isMultiRegionTrail", "other regions"),
            ("includeGlobalServiceEvents", "global service events"),
            ("enableLogFileValidation", "log file validation"),
        )
        if _false(event.params(key))
    ]
    if not dropped:
        return None
    trail = _short(event.text("requestParameters.name"))
    return f"CloudTrail trail {trail} updated to drop {', '.join(dropped)} by {event.actor()}"


@_rule(
    "cloudtrail_event_selectors_reduced", "T1562.008", 80, "CloudTrail event selectors reduce logging",
    "Restore management-event logging (read and write) on the trail; review activity since the change.",
    events=["PutEventSelectors"], sources=["cloudtrail"],
)  # fmt: skip
def cloudtrail_event_selectors_reduced(event: Event) -> str | None:
    if event.failed:
        return None
    selectors = [s for s in _as_list(event.params("eventSelectors")) if isinstance(s, dict)]
    dropped = []
    if selectors and all(_false(s.get("includeManagementEvents")) for s in selectors):
        dropped.append("management events")
    if any(str(s.get("readWriteType", "")).lower() == "readonly" for s in selectors):
        dropped.append("write events")
    if any(s.get("excludeManagementEventSources") for s in selectors):
        dropped.append("some management event sources")
    advanced = event.params("advancedEventSelectors")
    if (
        isinstance(advanced, list)
        and advanced
        and '"management"' not in event.json_text("requestParameters").lower().replace(" ", "")
    ):
        dropped.append("management events (advanced selectors)")
    if not dropped:
        return None
    trail = _short(event.text("requestParameters.trailName"))
    return f"CloudTrail trail {trail} event selectors now skip {', '.join(dropped)}; set by {event.actor()}"


@_rule(
    "vpc_flow_logs_deleted", "T1562.008", 80, "VPC flow logs deleted",
    "Recreate the flow logs; network evidence since the deletion is lost, use other sources for the gap.",
    events=["DeleteFlowLogs"], sources=["ec2"],
)  # fmt: skip
def vpc_flow_logs_deleted(event: Event) -> str | None:
    if event.failed:
        return None
    found = re.search(r"fl-[0-9a-zA-Z]+", event.json_text("requestParameters")[:4096])
    return f"VPC flow logs {found.group(0) if found else '?'} deleted by {event.actor()}"


@_rule(
    "dns_query_logs_deleted", "T1562.008", 80, "Route 53 resolver query logging deleted",
    "Recreate DNS query logging for the VPCs; DNS is how exfiltration and C2 are usually spotted.",
    events=["DeleteResolverQueryLogConfig", "DisassociateResolverQueryLogConfig"], sources=["route53resolver"],
)  # fmt: skip
def dns_query_logs_deleted(event: Event) -> str | None:
    if event.failed:
        return None
    config = _short(event.text("requestParameters.resolverQueryLogConfigId"))
    return f"DNS query logging {config} removed ({_short(event.name)}) by {event.actor()}"


@_rule(
    "logs_deleted_or_disabled", "T1562.008", 60, "Log group deleted or service logging disabled",
    "Check the log source is expected to go away; restore logging and review what the gap hides.",
    events=["DeleteLogGroup", "DeleteModelInvocationLoggingConfiguration", "PutBucketLogging"],
    sources=["logs", "bedrock", "s3"],
)  # fmt: skip
def logs_deleted_or_disabled(event: Event) -> str | None:
    if event.failed:
        return None
    if event.name == "DeleteLogGroup":
        return f"CloudWatch log group {_short(event.text('requestParameters.logGroupName'))} deleted by {event.actor()}"
    if event.name == "DeleteModelInvocationLoggingConfiguration":
        return f"Bedrock model invocation logging deleted by {event.actor()}"
    status = event.params("BucketLoggingStatus")
    if not isinstance(status, dict) or "LoggingEnabled" in status:
        return None
    return f"S3 access logging disabled on bucket {_short(event.text('requestParameters.bucketName'))} by {event.actor()}"


_GUARDDUTY_OFF = frozenset(
    {
        "DeleteDetector", "UpdateDetector", "DisassociateFromMasterAccount",
        "DisassociateFromAdministratorAccount", "DeleteMembers", "DisassociateMembers", "StopMonitoringMembers",
    }
)  # fmt: skip


@_rule(
    "guardduty_disabled", "T1562.001", 85, "GuardDuty detector deleted, disabled or detached",
    "Re-enable the detector / membership; threat findings during the gap are missing.",
    events=_GUARDDUTY_OFF, sources=["guardduty"],
)  # fmt: skip
def guardduty_disabled(event: Event) -> str | None:
    if event.failed or (event.name == "UpdateDetector" and not _false(event.params("enable"))):
        return None
    detector = _short(event.text("requestParameters.detectorId"))
    return f"GuardDuty {_short(event.name)} on detector {detector} by {event.actor()}"


@_rule(
    "guardduty_findings_suppressed", "T1562.001", 65, "GuardDuty findings suppressed or IPs trusted",
    "Review the filter / trusted IP list: an archive rule or trusted IP hides an attacker's findings.",
    events=["CreateFilter", "UpdateFilter", "CreateIPSet", "UpdateIPSet"], sources=["guardduty"],
)  # fmt: skip
def guardduty_findings_suppressed(event: Event) -> str | None:
    if event.failed:
        return None
    if event.name.endswith("Filter"):
        if event.text("requestParameters.action").upper() != "ARCHIVE":
            return None
        return f"GuardDuty auto-archive filter {_short(event.text('requestParameters.name'))} set by {event.actor()}"
    if _false(event.params("activate")):
        return None
    return f"GuardDuty trusted IP list {_short(event.text('requestParameters.name'))} set by {event.actor()}"


@_rule(
    "config_recording_stopped", "T1562.001", 80, "AWS Config recorder stopped or deleted",
    "Restart the configuration recorder and delivery channel; configuration history has a gap.",
    events=["StopConfigurationRecorder", "DeleteConfigurationRecorder", "DeleteDeliveryChannel"],
    sources=["config"],
)  # fmt: skip
def config_recording_stopped(event: Event) -> str | None:
    if event.failed:
        return None
    target = event.text("requestParameters.configurationRecorderName") or event.text(
        "requestParameters.deliveryChannelName"
    )
    return f"AWS Config {_short(event.name)} ({_short(target)}) by {event.actor()}"


_SECURITY_SERVICE_OFF: dict[str, frozenset[str]] = {
    "DisableSecurityHub": frozenset({"securityhub.amazonaws.com"}),
    "BatchDisableStandards": frozenset({"securityhub.amazonaws.com"}),
    "DisableMacie": frozenset({"macie2.amazonaws.com", "macie.amazonaws.com"}),
    "UpdateMacieSession": frozenset({"macie2.amazonaws.com", "macie.amazonaws.com"}),
    "DisassociateFromAdministratorAccount": frozenset({"securityhub.amazonaws.com", "macie2.amazonaws.com"}),
    "DeleteAnalyzer": frozenset({"access-analyzer.amazonaws.com"}),
    "DeleteGraph": frozenset({"detective.amazonaws.com"}),
    "Disable": frozenset({"inspector2.amazonaws.com"}),
}


@_rule(
    "security_service_disabled", "T1562.001", 75, "Security Hub, Macie, Inspector, Detective or Access Analyzer off",
    "Re-enable the service; find who turned it off and why.",
    events=_SECURITY_SERVICE_OFF,
)  # fmt: skip
def security_service_disabled(event: Event) -> str | None:
    if event.failed or event.source not in _SECURITY_SERVICE_OFF.get(event.name, ()):
        return None
    if event.name == "UpdateMacieSession" and event.text("requestParameters.status").upper() != "PAUSED":
        return None
    return f"{_short(event.source.split('.')[0], 20)} {_short(event.name)} by {event.actor()}"


@_rule(
    "cloudwatch_alarms_disabled", "T1562.001", 55, "CloudWatch alarms disabled or deleted",
    "Check which alarms went silent and restore them; alarms often guard security metrics.",
    events=["DisableAlarmActions", "DeleteAlarms"], sources=["monitoring"],
)  # fmt: skip
def cloudwatch_alarms_disabled(event: Event) -> str | None:
    if event.failed:
        return None
    alarms = _as_strings(event.params("alarmNames"))
    shown = _short(", ".join(alarms[:3])) + (f" and {len(alarms) - 3} more" if len(alarms) > 3 else "")
    return f"CloudWatch {_short(event.name)} on {shown} by {event.actor()}"


@_rule(
    "ebs_default_encryption_disabled", "T1562.001", 50, "EBS encryption by default disabled",
    "Re-enable default EBS encryption for the region.",
    events=["DisableEbsEncryptionByDefault"], sources=["ec2"],
)  # fmt: skip
def ebs_default_encryption_disabled(event: Event) -> str | None:
    return None if event.failed else f"EBS default encryption disabled by {event.actor()}"


@_rule(
    "organizations_leave", "T1666", 85, "Account left its AWS Organization",
    "The account escaped organisation guardrails (SCPs, central logging): contact the owner immediately.",
    events=["LeaveOrganization"], sources=["organizations"],
)  # fmt: skip
def organizations_leave(event: Event) -> str | None:
    return None if event.failed else f"Account left its AWS Organization; called by {event.actor()}"


@_rule(
    "organizations_leave_attempt", "T1666", 70, "Attempt to leave the AWS Organization",
    "Nobody leaves an organisation by accident: treat the caller's credentials as compromised until explained.",
    events=["LeaveOrganization"], sources=["organizations"],
)  # fmt: skip
def organizations_leave_attempt(event: Event) -> str | None:
    if not event.failed:
        return None
    return f"Attempt to leave the AWS Organization by {event.actor()}{_failure_note(event)}"


# --- IAM privilege and persistence ----------------------------------------------------------------


def _admin_policy_arn(arn: str) -> bool:
    name = arn.rpartition("/")[2].lower()
    return "administratoraccess" in name or name == "iamfullaccess"


@_rule(
    "iam_admin_policy_attached", "T1098.003", 85, "Administrator policy attached",
    "Confirm the grant through change management; otherwise detach it and review the principal's actions.",
    events=["AttachUserPolicy", "AttachRolePolicy", "AttachGroupPolicy"], sources=["iam"],
)  # fmt: skip
def iam_admin_policy_attached(event: Event) -> str | None:
    arn = event.text("requestParameters.policyArn")
    if event.failed or not _admin_policy_arn(arn):
        return None
    kind = event.name.removeprefix("Attach").removesuffix("Policy").lower()
    target = event.text(f"requestParameters.{kind}Name")
    return f"{_short(arn.rpartition('/')[2])} attached to {kind} {_short(target)} by {event.actor()}"


@_rule(
    "iam_compromised_key_quarantine", "T1552.001", 80, "AWS quarantined a leaked access key",
    "AWS found the user's key exposed in public (e.g. a code repository): rotate the key, review its recent use.",
    events=["AttachUserPolicy"], sources=["iam"],
)  # fmt: skip
def iam_compromised_key_quarantine(event: Event) -> str | None:
    arn = event.text("requestParameters.policyArn")
    if event.failed or not arn.rpartition("/")[2].startswith("AWSCompromisedKeyQuarantine"):
        return None
    return f"Leaked-key quarantine policy attached to user {_short(event.text('requestParameters.userName'))}"


@_rule(
    "iam_admin_inline_policy", "T1098.003", 85, "Inline or new policy version grants every action",
    "Read the policy document; remove the wildcard grant unless it is an approved break-glass role.",
    events=["PutUserPolicy", "PutRolePolicy", "PutGroupPolicy", "CreatePolicyVersion"], sources=["iam"],
)  # fmt: skip
def iam_admin_inline_policy(event: Event) -> str | None:
    if event.failed or not any(_is_admin_statement(s) for s in _statements(event.params("policyDocument"))):
        return None
    target = (
        event.text("requestParameters.userName")
        or event.text("requestParameters.roleName")
        or event.text("requestParameters.groupName")
        or event.text("requestParameters.policyArn")
    )
    return (
        f"{_short(event.name)} grants every action on every resource to {_short(target)}; by {event.actor()}"
    )


@_rule(
    "iam_admin_group_membership", "T1098.003", 75, "User added to an admin group",
    "Confirm the membership was requested; otherwise remove the user and review its recent activity.",
    events=["AddUserToGroup"], sources=["iam"],
)  # fmt: skip
def iam_admin_group_membership(event: Event) -> str | None:
    group = event.text("requestParameters.groupName")
    if event.failed or "admin" not in group.lower():
        return None
    user = _short(event.text("requestParameters.userName"))
    return f"User {user} added to group {_short(group)} by {event.actor()}"


@_rule(
    "iam_access_key_for_other_user", "T1098.001", 80, "Access key created for another user",
    "Ask the key's user whether they wanted it; a key made by someone else is a classic backdoor. Delete if not.",
    events=["CreateAccessKey"], sources=["iam"],
)  # fmt: skip
def iam_access_key_for_other_user(event: Event) -> str | None:
    target = event.text("requestParameters.userName")
    if event.failed or not target or target == event.caller_name():
        return None
    return f"Access key created for user {_short(target)} by {event.actor()}"


@_rule(
    "iam_login_profile_for_other_user", "T1098.001", 75, "Console password set for another user",
    "Ask the user; a password set by someone else (without forced reset) lets that person sign in as them.",
    events=["CreateLoginProfile", "UpdateLoginProfile"], sources=["iam"],
)  # fmt: skip
def iam_login_profile_for_other_user(event: Event) -> str | None:
    target = event.text("requestParameters.userName")
    if event.failed or not target or target == event.caller_name():
        return None
    if event.name == "UpdateLoginProfile" and _true(event.params("passwordResetRequired")):
        return None  # an administrator's password reset: the user must choose a new one
    verb = "created" if event.name == "CreateLoginProfile" else "changed"
    return f"Console password {verb} for user {_short(target)} by {event.actor()}"


@_rule(
    "iam_user_created", "T1136.003", 45, "IAM user created",
    "New IAM users should come from provisioning: check the creator and whether keys or admin rights follow.",
    events=["CreateUser"], sources=["iam"],
)  # fmt: skip
def iam_user_created(event: Event) -> str | None:
    if event.failed:
        return None
    return f"IAM user {_short(event.text('requestParameters.userName'))} created by {event.actor()}"


@_rule(
    "iam_role_trust_backdoor", "T1098.003", 85, "Role trust policy opened to another account or anyone",
    "Compare with the previous trust policy; remove unknown principals and review who assumed the role since.",
    events=["UpdateAssumeRolePolicy"], sources=["iam"],
)  # fmt: skip
def iam_role_trust_backdoor(event: Event) -> str | None:
    exposed = [] if event.failed else _trust_exposure(event.params("policyDocument"), event.account)
    if not exposed:
        return None
    role = _short(event.text("requestParameters.roleName"))
    return f"Role {role} now trusts {_accounts_text(exposed)}; changed by {event.actor()}"


@_rule(
    "iam_role_created_external_trust", "T1098.003", 70, "Role created that another account can assume",
    "Vendor integrations do this, attackers too: confirm the trusted account belongs to a known vendor.",
    events=["CreateRole"], sources=["iam"],
)  # fmt: skip
def iam_role_created_external_trust(event: Event) -> str | None:
    exposed = [] if event.failed else _trust_exposure(event.params("assumeRolePolicyDocument"), event.account)
    if not exposed:
        return None
    role = _short(event.text("requestParameters.roleName"))
    return f"Role {role} created trusting {_accounts_text(exposed)} by {event.actor()}"


@_rule(
    "iam_mfa_removed", "T1556.006", 55, "MFA device deactivated or deleted",
    "Confirm the user replaced the device; otherwise re-enrol MFA and check recent sign-ins.",
    events=["DeactivateMFADevice", "DeleteVirtualMFADevice"], sources=["iam"],
)  # fmt: skip
def iam_mfa_removed(event: Event) -> str | None:
    if event.failed:
        return None
    target = event.text("requestParameters.userName") or event.text("requestParameters.serialNumber")
    return f"MFA removed ({_short(event.name)}) for {_short(target)} by {event.actor()}"


@_rule(
    "iam_identity_provider_changed", "T1484.002", 70, "SAML / OIDC identity provider created or changed",
    "A new or changed identity provider can mint sessions for any role trusting it: verify with the IdP owners.",
    events=[
        "CreateSAMLProvider", "UpdateSAMLProvider", "CreateOpenIDConnectProvider",
        "UpdateOpenIDConnectProviderThumbprint", "AddClientIDToOpenIDConnectProvider",
    ],
    sources=["iam"],
)  # fmt: skip
def iam_identity_provider_changed(event: Event) -> str | None:
    if event.failed or "AWSServiceRoleForSSO" in event.text("userIdentity.arn")[:400]:
        return None  # IAM Identity Center manages its own provider
    target = (
        event.text("requestParameters.name")
        or event.text("requestParameters.sAMLProviderArn")
        or event.text("requestParameters.url")
        or event.text("requestParameters.openIDConnectProviderArn")
    )
    return f"Identity provider {_short(target)} changed ({_short(event.name)}) by {event.actor()}"


@_rule(
    "rolesanywhere_trust_anchor", "T1098.001", 75, "IAM Roles Anywhere trust anchor created or changed",
    "A trust anchor lets holders of certificates from that CA get role credentials: confirm the CA is yours.",
    events=["CreateTrustAnchor", "UpdateTrustAnchor"], sources=["rolesanywhere"],
)  # fmt: skip
def rolesanywhere_trust_anchor(event: Event) -> str | None:
    if event.failed:
        return None
    return (
        f"Roles Anywhere trust anchor {_short(event.text('requestParameters.name'))} set by {event.actor()}"
    )


# --- public exposure and sharing ------------------------------------------------------------------

_PUBLIC_GRANTEES = (
    "acs.amazonaws.com/groups/global/allusers",
    "acs.amazonaws.com/groups/global/authenticatedusers",
)
_PUBLIC_CANNED_ACLS = frozenset({"public-read", "public-read-write", "authenticated-read"})


@_rule(
    "s3_bucket_acl_public", "T1530", 80, "S3 bucket ACL grants public access",
    "Remove the AllUsers / AuthenticatedUsers grant and turn on Block Public Access for the bucket.",
    events=["PutBucketAcl"], sources=["s3"],
)  # fmt: skip
def s3_bucket_acl_public(event: Event) -> str | None:
    if event.failed:
        return None
    text = event.json_text("requestParameters").lower()
    canned = {a.strip().lower() for a in _as_strings(event.params("x-amz-acl"))}
    if not (any(g in text for g in _PUBLIC_GRANTEES) or canned & _PUBLIC_CANNED_ACLS):
        return None
    return (
        f"S3 bucket {_short(event.text('requestParameters.bucketName'))} ACL made public by {event.actor()}"
    )


@_rule(
    "s3_bucket_policy_public", "T1530", 80, "S3 bucket policy allows anyone",
    "Remove the Principal * statement (or add an org / VPC condition) and check what was read meanwhile.",
    events=["PutBucketPolicy"], sources=["s3"],
)  # fmt: skip
def s3_bucket_policy_public(event: Event) -> str | None:
    if event.failed or not _public_statements(event.params("bucketPolicy")):
        return None
    return f"S3 bucket {_short(event.text('requestParameters.bucketName'))} policy opened to anyone by {event.actor()}"


_PUBLIC_ACCESS_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


@_rule(
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
        "bucket " + _short(event.text("requestParameters.bucketName"))
        if "Bucket" in event.name
        else "account"
    )
    if event.name.startswith("Delete"):
        return f"S3 Block Public Access removed for {scope} by {event.actor()}"
    loosened = sorted(
        {
            key
            for node, _ in _walk(event.parsed("requestParameters"))
            for key, value in node.items()
            if key in _PUBLIC_ACCESS_FLAGS and _false(value)
        }
    )
    if not loosened:
        return None
    return f"S3 Block Public Access loosened for {scope} ({', '.join(loosened)} off) by {event.actor()}"


@_rule(
    "rds_made_public", "T1562.007", 65, "RDS database made publicly accessible",
    "Turn public accessibility off unless the database must be reachable from the internet; check its SG.",
    events=["ModifyDBInstance", "ModifyDBCluster", "RestoreDBInstanceFromDBSnapshot", "RestoreDBClusterFromSnapshot"],
    sources=["rds"],
)  # fmt: skip
def rds_made_public(event: Event) -> str | None:
    if event.failed or not _true(event.params("publiclyAccessible")):
        return None
    target = event.text("requestParameters.dBInstanceIdentifier") or event.text(
        "requestParameters.dBClusterIdentifier"
    )
    return f"RDS database {_short(target)} made publicly accessible ({_short(event.name)}) by {event.actor()}"


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


@_rule(
    "snapshot_or_image_public", "T1537", 85, "Snapshot or AMI made public",
    "Remove the public permission now; assume the data was copied and assess what the snapshot/AMI holds.",
    events=_SHARE_EVENTS, sources=["ec2", "rds"],
)  # fmt: skip
def snapshot_or_image_public(event: Event) -> str | None:
    public, _, resource = (False, [], "") if event.failed else _share_targets(event)
    if not public:
        return None
    return f"{_shared_kind(event)} {_short(resource)} made public by {event.actor()}"


@_rule(
    "snapshot_or_image_shared", "T1537", 70, "Snapshot or AMI shared with another account",
    "Check the account belongs to your organisation or a known partner; otherwise revoke the share.",
    events=_SHARE_EVENTS, sources=["ec2", "rds"],
)  # fmt: skip
def snapshot_or_image_shared(event: Event) -> str | None:
    _, accounts, resource = (False, [], "") if event.failed else _share_targets(event)
    if not accounts:
        return None
    return f"{_shared_kind(event)} {_short(resource)} shared with account {_accounts_text(accounts)} by {event.actor()}"


_RESOURCE_POLICY_KEYS = (
    "policy",
    "policyText",
    "resourcePolicy",
    "policyDocument",
    "accessPolicies",
    "attributes.Policy",
)


@_rule(
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
    if not any(_public_statements(doc) for doc in documents if doc is not None):
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
    return f"{_short(event.name)} on {_short(target)} allows anyone; by {event.actor()}"


@_rule(
    "security_group_admin_port_open", "T1562.007", 80, "Security group opens SSH/RDP (or all ports) to the internet",
    "Revoke the 0.0.0.0/0 rule; use SSM Session Manager or a bastion with a narrow CIDR instead.",
    events=["AuthorizeSecurityGroupIngress"], sources=["ec2"],
)  # fmt: skip
def security_group_admin_port_open(event: Event) -> str | None:
    exposed = (
        []
        if event.failed
        else [r for r in _open_ingress(event.parsed("requestParameters")) if _exposes_admin_port(r)]
    )
    if not exposed:
        return None
    group = _short(event.text("requestParameters.groupId") or event.text("requestParameters.groupName"))
    return f"Security group {group} opened {_describe_port(exposed[0])} by {event.actor()}"


@_rule(
    "security_group_open_world", "T1562.007", 50, "Security group opens a port to the internet",
    "Check the port should be public (a web front end); otherwise narrow the CIDR.",
    events=["AuthorizeSecurityGroupIngress"], sources=["ec2"],
)  # fmt: skip
def security_group_open_world(event: Event) -> str | None:
    exposed = [] if event.failed else _open_ingress(event.parsed("requestParameters"))
    if not exposed or any(_exposes_admin_port(r) for r in exposed):
        return None  # the admin-port rule scores those
    group = _short(event.text("requestParameters.groupId") or event.text("requestParameters.groupName"))
    return f"Security group {group} opened {_describe_port(exposed[0])} by {event.actor()}"


@_rule(
    "nacl_open_world", "T1562.007", 55, "Network ACL allows inbound traffic from the internet",
    "Check the subnet should accept internet traffic on these ports; narrow the entry otherwise.",
    events=["CreateNetworkAclEntry", "ReplaceNetworkAclEntry"], sources=["ec2"],
)  # fmt: skip
def nacl_open_world(event: Event) -> str | None:
    if (
        event.failed
        or _true(event.params("egress"))
        or event.text("requestParameters.ruleAction").lower() != "allow"
    ):
        return None
    cidr = event.text("requestParameters.cidrBlock") or event.text("requestParameters.ipv6CidrBlock")
    if not cidr.strip().endswith("/0"):
        return None
    acl = _short(event.text("requestParameters.networkAclId"))
    return f"Network ACL {acl} allows inbound from {_short(cidr, 45)} by {event.actor()}"


@_rule(
    "vpc_network_change", "T1562.007", 25, "VPC routing or gateway changed",
    "Routine for network admins; check it matches a change request when the caller is unusual.",
    events=[
        "CreateRoute", "ReplaceRoute", "AttachInternetGateway", "CreateVpcPeeringConnection",
        "AcceptVpcPeeringConnection", "DeleteNetworkAcl", "DeleteNetworkAclEntry", "ReplaceNetworkAclAssociation",
    ],
    sources=["ec2"],
)  # fmt: skip
def vpc_network_change(event: Event) -> str | None:
    return None if event.failed else f"{_short(event.name)} by {event.actor()}"


@_rule(
    "traffic_mirroring", "T1040", 60, "VPC traffic mirroring set up",
    "Mirroring copies packets out of instances: confirm the target belongs to a sanctioned monitoring tool.",
    events=[
        "CreateTrafficMirrorSession", "CreateTrafficMirrorTarget", "CreateTrafficMirrorFilter",
        "CreateTrafficMirrorFilterRule", "ModifyTrafficMirrorSession",
    ],
    sources=["ec2"],
)  # fmt: skip
def traffic_mirroring(event: Event) -> str | None:
    return None if event.failed else f"Traffic mirroring {_short(event.name)} by {event.actor()}"


_LAMBDA_PERMISSION_EVENTS = ("AddPermission", "AddPermission20150331", "AddPermission20150331v2")
_LAMBDA_URL_EVENTS = (
    "CreateFunctionUrlConfig", "UpdateFunctionUrlConfig",
    "CreateFunctionUrlConfig20211031", "UpdateFunctionUrlConfig20211031",
)  # fmt: skip


@_rule(
    "lambda_public_permission", "T1546", 80, "Lambda function invocable by anyone",
    "Remove the public permission / NONE-auth URL; review invocations and the function's code and role.",
    events=[*_LAMBDA_PERMISSION_EVENTS, *_LAMBDA_URL_EVENTS], sources=["lambda"],
)  # fmt: skip
def lambda_public_permission(event: Event) -> str | None:
    if event.failed:
        return None
    function = _short(event.text("requestParameters.functionName").rpartition(":")[2])
    if event.name in _LAMBDA_URL_EVENTS:
        if event.text("requestParameters.authType").upper() != "NONE":
            return None
        return f"Lambda function {function} given a public URL (no auth) by {event.actor()}"
    principal = event.text("requestParameters.principal").strip()
    if principal != "*" and event.text("requestParameters.functionUrlAuthType").upper() != "NONE":
        return None
    return f"Lambda function {function} made invocable by anyone by {event.actor()}"


# --- credential access ----------------------------------------------------------------------------


@_rule(
    "secret_value_read", "T1555.006", 35, "Secrets Manager secret read",
    "Normal for applications; check when the reader is a person or the secret is not the reader's own.",
    events=["GetSecretValue"], sources=["secretsmanager"],
)  # fmt: skip
def secret_value_read(event: Event) -> str | None:
    if event.failed:
        return None
    return f"Secret {_short(event.text('requestParameters.secretId').rpartition(':')[2])} read by {event.actor()}"


@_rule(
    "secrets_batch_read", "T1555.006", 70, "Secrets read in bulk (BatchGetSecretValue)",
    "Bulk reads are rare in applications: confirm the caller, rotate the secrets if not explained.",
    events=["BatchGetSecretValue"], sources=["secretsmanager"],
)  # fmt: skip
def secrets_batch_read(event: Event) -> str | None:
    if event.failed:
        return None
    ids = _as_list(event.params("secretIdList"))
    what = f"{len(ids)} secrets" if ids else "secrets matching a filter"
    return f"BatchGetSecretValue read {what} by {event.actor()}"


def _decrypted_parameter_names(event: Event) -> list[Any] | None:
    if event.failed or not _true(event.params("withDecryption")):
        return None
    if event.name == "GetParameter":
        return [event.params("name")]
    return _as_list(event.params("names"))


@_rule(
    "ssm_parameter_decrypted", "T1555.006", 35, "SSM SecureString parameter decrypted",
    "Normal for applications; check when the reader is a person or reads parameters of other services.",
    events=["GetParameter", "GetParameters"], sources=["ssm"],
)  # fmt: skip
def ssm_parameter_decrypted(event: Event) -> str | None:
    names = _decrypted_parameter_names(event)
    if names is None or len(names) >= 5:
        return None
    return f"SSM parameter {_short(names[0] if names else '?')} decrypted by {event.actor()}"


@_rule(
    "ssm_parameters_bulk_decrypted", "T1555.006", 70, "Many SSM SecureString parameters decrypted at once",
    "Harvesting parameters is a credential-access step: confirm the caller and rotate what it read.",
    events=["GetParameters", "GetParametersByPath"], sources=["ssm"],
)  # fmt: skip
def ssm_parameters_bulk_decrypted(event: Event) -> str | None:
    if event.name == "GetParametersByPath":
        if event.failed or not _true(event.params("withDecryption")):
            return None
        return f"SSM parameters under {_short(event.text('requestParameters.path'))} decrypted by {event.actor()}"
    names = _decrypted_parameter_names(event)
    if names is None or len(names) < 5:
        return None
    return f"{len(names)} SSM SecureString parameters decrypted in one call by {event.actor()}"


@_rule(
    "ec2_password_data_read", "T1552", 70, "EC2 Windows password data retrieved",
    "Confirm an administrator needed the instance's password; rotate the local Administrator password if not.",
    events=["GetPasswordData"], sources=["ec2"],
)  # fmt: skip
def ec2_password_data_read(event: Event) -> str | None:
    if event.failed:
        return None
    return f"Windows password data of {_short(event.text('requestParameters.instanceId'))} read by {event.actor()}"


@_rule(
    "ec2_user_data_read", "T1580", 45, "EC2 instance user data downloaded",
    "User data often carries bootstrap secrets: check the caller is a scanner or the instance's owner.",
    events=["DescribeInstanceAttribute"], sources=["ec2"],
)  # fmt: skip
def ec2_user_data_read(event: Event) -> str | None:
    if event.failed or event.text("requestParameters.attribute") != "userData":
        return None
    return f"User data of {_short(event.text('requestParameters.instanceId'))} downloaded by {event.actor()}"


# --- execution and lateral movement ---------------------------------------------------------------


@_rule(
    "ec2_user_data_modified", "T1059", 70, "EC2 instance user data modified",
    "User data runs as root at the next boot: read the new script and compare with the launch template.",
    events=["ModifyInstanceAttribute"], sources=["ec2"],
)  # fmt: skip
def ec2_user_data_modified(event: Event) -> str | None:
    if event.failed or event.params("userData") is None:
        return None
    return f"User data of instance {_short(event.text('requestParameters.instanceId'))} changed by {event.actor()}"


_SHELL_DOCUMENTS = frozenset({"AWS-RunShellScript", "AWS-RunPowerShellScript", "AWS-RunRemoteScript"})


def _shell_command_targets(event: Event) -> list[Any] | None:
    """Instances a successful SSM shell command went to; None when the event is not one."""
    if event.failed or event.text("requestParameters.documentName") not in _SHELL_DOCUMENTS:
        return None
    return _as_list(event.params("instanceIds"))


@_rule(
    "ssm_command_fleet", "T1651", 70, "Shell command sent to many instances via SSM",
    "Read the command (SSM command history); a fleet-wide script from an unusual caller is an incident.",
    events=["SendCommand"], sources=["ssm"],
)  # fmt: skip
def ssm_command_fleet(event: Event) -> str | None:
    instances = _shell_command_targets(event)
    tag_targets = event.params("targets")
    if instances is None or (len(instances) < 2 and not tag_targets):
        return None
    scope = f"{len(instances)} instances" if len(instances) >= 2 else "instances selected by tag"
    return f"{_short(event.text('requestParameters.documentName'))} sent to {scope} by {event.actor()}"


@_rule(
    "ssm_command", "T1651", 55, "Shell command sent to an instance via SSM",
    "Read the command in SSM history; check the caller administers that instance.",
    events=["SendCommand"], sources=["ssm"],
)  # fmt: skip
def ssm_command(event: Event) -> str | None:
    instances = _shell_command_targets(event)
    if instances is None or len(instances) != 1 or event.params("targets"):
        return None
    return f"{_short(event.text('requestParameters.documentName'))} sent to {_short(instances[0])} by {event.actor()}"


@_rule(
    "ssm_session_started", "T1021.008", 40, "SSM shell session started",
    "Check the caller administers the target instance.",
    events=["StartSession"], sources=["ssm"],
)  # fmt: skip
def ssm_session_started(event: Event) -> str | None:
    if event.failed:
        return None
    return f"SSM session to {_short(event.text('requestParameters.target'))} started by {event.actor()}"


@_rule(
    "ec2_instance_connect_key", "T1021.008", 45, "SSH key pushed with EC2 Instance Connect",
    "Check the caller administers the instance; repeated pushes to many instances suggest lateral movement.",
    events=["SendSSHPublicKey"], sources=["ec2-instance-connect"],
)  # fmt: skip
def ec2_instance_connect_key(event: Event) -> str | None:
    if event.failed:
        return None
    instance = _short(event.text("requestParameters.instanceId"))
    return f"SSH key pushed to {instance} as {_short(event.text('requestParameters.instanceOSUser'), 32)} by {event.actor()}"


@_rule(
    "ec2_serial_console_access", "T1021.008", 70, "EC2 serial console enabled or used",
    "The serial console bypasses network controls and is rarely needed: confirm an outage required it.",
    events=["EnableSerialConsoleAccess", "SendSerialConsoleSSHPublicKey"], sources=["ec2", "ec2-instance-connect"],
)  # fmt: skip
def ec2_serial_console_access(event: Event) -> str | None:
    if event.failed:
        return None
    if event.name == "EnableSerialConsoleAccess":
        return f"EC2 serial console access enabled for the account by {event.actor()}"
    return f"SSH key pushed to the serial console of {_short(event.text('requestParameters.instanceId'))} by {event.actor()}"


_ACCELERATED_FAMILY = re.compile(r"^(?:p\d|g\d|gr\d|inf\d|trn\d|dl\d|f\d|vt\d)")


@_rule(
    "ec2_gpu_instances", "T1496.001", 60, "GPU / accelerated EC2 instances launched",
    "Cryptomining starts like this: check the caller runs ML or GPU workloads; terminate unknown instances.",
    events=["RunInstances"], sources=["ec2"],
)  # fmt: skip
def ec2_gpu_instances(event: Event) -> str | None:
    if event.text("errorCode").endswith("DryRunOperation"):
        return None
    kind = event.params("instanceType")
    if isinstance(kind, dict):
        kind = kind.get("value")
    if not isinstance(kind, str) or not _ACCELERATED_FAMILY.match(kind.strip().lower()):
        return None
    counts = [
        _port(i.get("maxCount")) for i in _as_list(event.params("instancesSet.items")) if isinstance(i, dict)
    ]
    count = sum(c for c in counts if c) or 1
    return f"{count} x {_short(kind, 24)} instances launched by {event.actor()}{_failure_note(event)}"


@_rule(
    "lambda_code_updated_by_human", "T1648", 55, "Lambda code updated by a person",
    "Deployments should come from CI/CD roles: diff the new code against the pipeline's last release.",
    events=["UpdateFunctionCode", "UpdateFunctionCode20150331", "UpdateFunctionCode20150331v2"], sources=["lambda"],
)  # fmt: skip
def lambda_code_updated_by_human(event: Event) -> str | None:
    if event.failed or not _human_session(event):
        return None
    function = _short(event.text("requestParameters.functionName").rpartition(":")[2])
    return f"Code of Lambda function {function} replaced by {event.actor()}"


@_rule(
    "lambda_layer_added", "T1546", 50, "Lambda layer attached to a function",
    "Layers (and extensions in them) run with the function: check the layer's origin and content.",
    events=[
        "UpdateFunctionConfiguration", "UpdateFunctionConfiguration20150331",
        "UpdateFunctionConfiguration20150331v2",
    ],
    sources=["lambda"],
)  # fmt: skip
def lambda_layer_added(event: Event) -> str | None:
    layers = [] if event.failed else _as_strings(event.params("layers"))
    if not layers:
        return None
    function = _short(event.text("requestParameters.functionName").rpartition(":")[2])
    layer = _short(layers[0].split(":layer:")[-1], 48)
    return f"Layer {layer} attached to Lambda function {function} by {event.actor()}"


# --- impact ---------------------------------------------------------------------------------------


@_rule(
    "kms_key_deletion_scheduled", "T1485", 75, "KMS key scheduled for deletion",
    "Cancel the deletion (CancelKeyDeletion) unless approved: data encrypted with the key becomes unreadable.",
    events=["ScheduleKeyDeletion"], sources=["kms"],
)  # fmt: skip
def kms_key_deletion_scheduled(event: Event) -> str | None:
    if event.failed:
        return None
    days = _short(event.text("requestParameters.pendingWindowInDays") or "30", 4)
    return f"KMS key {_short(event.text('requestParameters.keyId'))} scheduled for deletion in {days} days by {event.actor()}"


@_rule(
    "kms_key_disabled", "T1485", 55, "KMS key disabled",
    "Re-enable the key unless the change is approved; data under it cannot be decrypted meanwhile.",
    events=["DisableKey"], sources=["kms"],
)  # fmt: skip
def kms_key_disabled(event: Event) -> str | None:
    return (
        None
        if event.failed
        else f"KMS key {_short(event.text('requestParameters.keyId'))} disabled by {event.actor()}"
    )


@_rule(
    "s3_bucket_deleted", "T1485", 55, "S3 bucket deleted",
    "Confirm the bucket was meant to go; bucket names can be re-registered by others (takeover).",
    events=["DeleteBucket"], sources=["s3"],
)  # fmt: skip
def s3_bucket_deleted(event: Event) -> str | None:
    if event.failed:
        return None
    return f"S3 bucket {_short(event.text('requestParameters.bucketName'))} deleted by {event.actor()}"


@_rule(
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
    bucket = _short(event.text("requestParameters.bucketName"))
    return f"S3 bucket {bucket}: {' and '.join(changes)} by {event.actor()}"


@_rule(
    "rds_deleted_without_snapshot", "T1485", 60, "RDS database deleted without a final snapshot",
    "Restore from automated backups if any remain; confirm the deletion was approved.",
    events=["DeleteDBInstance", "DeleteDBCluster"], sources=["rds"],
)  # fmt: skip
def rds_deleted_without_snapshot(event: Event) -> str | None:
    if event.failed or not _true(event.params("skipFinalSnapshot")):
        return None
    target = event.text("requestParameters.dBInstanceIdentifier") or event.text(
        "requestParameters.dBClusterIdentifier"
    )
    return f"RDS database {_short(target)} deleted without a final snapshot by {event.actor()}"


@_rule(
    "bedrock_model_access_enabled", "T1496.004", 70, "Bedrock model access enabled",
    "LLM-jacking starts by enabling models: confirm a team asked for the model, else revoke and rotate keys.",
    events=["PutFoundationModelEntitlement", "PutUseCaseForModelAccess", "CreateFoundationModelAgreement"],
    sources=["bedrock"],
)  # fmt: skip
def bedrock_model_access_enabled(event: Event) -> str | None:
    if event.failed:
        return None
    model = _short(event.text("requestParameters.modelId") or "models", 48)
    return f"Bedrock access to {model} enabled ({_short(event.name)}) by {event.actor()}"


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


@_rule(
    "ses_sns_sending_setup", "T1496.004", 50, "Email / SMS sending set up or enabled",
    "Spammers enable SES/SNS sending in stolen accounts: confirm a product team owns this identity.",
    events=_SENDING_SETUP, sources=["ses", "sns"],
)  # fmt: skip
def ses_sns_sending_setup(event: Event) -> str | None:
    if event.failed or event.source not in _SENDING_SETUP.get(event.name, ()):
        return None
    if event.name == "UpdateAccountSendingEnabled" and not _true(event.params("enabled")):
        return None
    identity = (
        event.text("requestParameters.emailAddress")
        or event.text("requestParameters.domain")
        or event.text("requestParameters.emailIdentity")
    )
    suffix = f" for {_short(identity)}" if identity else ""
    return f"{_short(event.name)}{suffix} by {event.actor()}"


@_rule(
    "ses_quota_recon", "T1526", 25, "SES sending quota / identities checked",
    "The first calls of SES-abuse kits; harmless alone, notable from a principal that never sends mail.",
    events=["GetSendQuota", "GetAccountSendingEnabled", "ListIdentities", "GetIdentityVerificationAttributes", "GetAccount"],
    sources=["ses"],
)  # fmt: skip
def ses_quota_recon(event: Event) -> str | None:
    return None if event.failed else f"SES {_short(event.name)} by {event.actor()}"


@_rule(
    "region_enabled", "T1535", 45, "Opt-in AWS region enabled",
    "Attackers enable unused regions to hide resources: confirm the business needs the region.",
    events=["EnableRegion"],
)  # fmt: skip
def region_enabled(event: Event) -> str | None:
    if event.failed:
        return None
    region = event.text("requestParameters.RegionName") or event.text("requestParameters.regionName")
    return f"Region {_short(region, 32)} enabled by {event.actor()}"


RULES: tuple[Rule, ...] = tuple(_RULES)
if len({r.detection.rule_id for r in RULES}) != len(RULES):
    raise RuntimeError("duplicate rule ids in trailguard.detections")

_RULES_BY_NAME: dict[str, tuple[Rule, ...]] = {}
_RULES_BY_TYPE: dict[str, tuple[Rule, ...]] = {}
for _r in RULES:
    if _r.event_names:
        for _name in _r.event_names:
            _RULES_BY_NAME[_name] = (*_RULES_BY_NAME.get(_name, ()), _r)
    else:
        for _type in _r.identity_types:
            _RULES_BY_TYPE[_type] = (*_RULES_BY_TYPE.get(_type, ()), _r)
del _r


_KNOWN_TYPES = frozenset(t for r in RULES for t in r.identity_types)
_KNOWN_SOURCES = frozenset(s for r in RULES for s in r.event_sources)


@functools.cache
def _rules_for(name: str, identity_type: str, source: str) -> tuple[Rule, ...]:
    return tuple(
        rule
        for rule in (*_RULES_BY_NAME.get(name, ()), *_RULES_BY_TYPE.get(identity_type, ()))
        if rule.applies(name, identity_type, source)
    )


def _candidate_rules(event: Event) -> tuple[Rule, ...]:
    # values no rule names are replaced by placeholders, so the cache stays as small as the rule set
    name = event.name if event.name in _RULES_BY_NAME else ""
    identity_type = event.identity_type if event.identity_type in _KNOWN_TYPES else ""
    if not name and identity_type not in _RULES_BY_TYPE:
        return ()
    source = event.source if event.source in _KNOWN_SOURCES or not event.source else "other"
    return _rules_for(name, identity_type, source)


def _fire(event: Event) -> list[tuple[Detection, str]]:
    hits = []
    for rule in _candidate_rules(event):
        try:
            reason = rule.check(event)
        except Exception:  # a bug in one rule must not stop a day's labelling; it is logged loudly
            event.unique = True  # and logged for every event it fails on
            log.exception(
                "rule %s raised on event %s; the rule is skipped for this event",
                rule.detection.rule_id,
                _short(event.text("eventID")),
            )
            continue
        if reason:
            hits.append((rule.detection, reason))
    return hits


def _by_score(hits: list[tuple[Detection, str]]) -> list[tuple[Detection, str]]:
    return sorted(hits, key=lambda hit: (-hit[0].score, hit[0].rule_id))


def evaluate_event(row: Mapping[str, Any]) -> list[tuple[Detection, str]]:
    """The per-event rules that fire on one normalised row, with their reasons, highest score first.

    Window rules need the whole frame and are only applied by :func:`label_events`.
    """
    return _by_score(_fire(Event(row)))


# --- window rules ---------------------------------------------------------------------------------


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series(None, index=df.index, dtype=object)


def _isin(series: pd.Series, values: Iterable[str]) -> np.ndarray:
    """Vectorised membership that survives unhashable junk in an object column."""
    values = list(values)
    try:
        return np.array(series.isin(values), dtype=bool)
    except TypeError:
        return np.array(series.map(lambda v: v if isinstance(v, str) else None).isin(values), dtype=bool)


def _contains(series: pd.Series, pattern: str) -> np.ndarray:
    """Case-insensitive regex search on a text column; non-text values never match."""
    try:
        found = series.str.contains(pattern, case=False, regex=True, na=False)
    except (AttributeError, TypeError):  # no text at all in an object column
        regex = re.compile(pattern, re.IGNORECASE)
        found = series.map(lambda v: isinstance(v, str) and regex.search(v) is not None)
    return np.array(found.fillna(False), dtype=bool)


@dataclass(frozen=True)
class WindowRule:
    """A rule over the whole frame: >= threshold selected events of one key within any 10-minute window."""

    detections: tuple[Detection, ...]  # [0] unless `classify` picks another per event
    select: Callable[[pd.DataFrame], np.ndarray]
    key: str
    threshold: int
    noun: str
    key_label: str = "by"
    classify: Callable[[pd.DataFrame], np.ndarray] | None = None


_DENIED_PATTERN = r"AccessDenied|Unauthorized|Forbidden"
_IDENTITY_SOURCES = frozenset(
    f"{s}.amazonaws.com"
    for s in ("iam", "sts", "organizations", "sso", "identitystore", "account", "access-analyzer")
)
_CREDENTIAL_EVENTS = frozenset(
    {
        "GetPasswordData",
        "GetSecretValue",
        "BatchGetSecretValue",
        "GetParameter",
        "GetParameters",
        "GetParametersByPath",
    }
)


def _select_denied(df: pd.DataFrame) -> np.ndarray:
    codes = _column(df, "errorCode")
    present = codes.notna().to_numpy(dtype=bool)
    mask = np.zeros(len(df), dtype=bool)
    if present.any():
        mask[present] = _contains(codes[present], _DENIED_PATTERN)
    return mask


def _classify_denied(sub: pd.DataFrame) -> np.ndarray:
    credential = _isin(_column(sub, "eventName"), _CREDENTIAL_EVENTS)
    identity = _isin(_column(sub, "eventSource"), _IDENTITY_SOURCES)
    return np.where(credential, 2, np.where(identity, 1, 0))


def _succeeded(df: pd.DataFrame) -> np.ndarray:
    return np.array(_column(df, "errorCode").isna(), dtype=bool)


def _select_secret_reads(df: pd.DataFrame) -> np.ndarray:
    """Successful secret reads, each distinct request counted once (apps re-reading one secret are not a burst)."""
    names = _column(df, "eventName")
    mask = _isin(names, ("GetSecretValue", "BatchGetSecretValue")) & _succeeded(df)
    parameters = _isin(names, ("GetParameter", "GetParameters")) & _succeeded(df)
    if parameters.any():
        request = _column(df, "requestParameters")[parameters]
        mask[parameters] = _contains(request, r'"withDecryption"\s*:\s*true')
    if mask.any():
        picked = pd.DataFrame(
            {
                "key": _column(df, "userIdentity.arn")[mask].astype(str),
                "request": _column(df, "requestParameters")[mask].astype(str),
            }
        )
        mask[np.flatnonzero(mask)[picked.duplicated().to_numpy()]] = False
    return mask


def _select_failed_logins(df: pd.DataFrame) -> np.ndarray:
    mask = _isin(_column(df, "eventName"), ("ConsoleLogin",))
    if mask.any():
        failure = _column(df, "responseElements.ConsoleLogin")[mask].astype(str).str.lower().eq("failure")
        message = _contains(_column(df, "errorMessage")[mask].astype(str), "failed authentication")
        mask[mask] = failure.to_numpy(dtype=bool) | message
    return mask


def _select_object_deletions(df: pd.DataFrame) -> np.ndarray:
    return _isin(_column(df, "eventName"), ("DeleteObject", "DeleteObjects")) & _succeeded(df)


_BURST_RUNBOOK = (
    "Find what the principal was looking for; a compromised key enumerating permissions shows this pattern."
)

WINDOW_RULES: tuple[WindowRule, ...] = (
    WindowRule(
        detections=(
            Detection("access_denied_burst", "T1580", 70, "Burst of access-denied calls (infrastructure discovery)", _BURST_RUNBOOK),
            Detection("access_denied_burst_identity", "T1087.004", 70, "Burst of access-denied calls (account discovery)", _BURST_RUNBOOK),
            Detection("access_denied_burst_credentials", "T1552", 70, "Burst of access-denied credential reads", _BURST_RUNBOOK),
        ),
        select=_select_denied,
        key="userIdentity.arn",
        threshold=10,
        noun="access-denied calls",
        classify=_classify_denied,
    ),
    WindowRule(
        detections=(
            Detection(
                "secrets_harvest", "T1555.006", 75, "Many distinct secrets read in a short time",
                "Confirm the caller (deploy job, rotation) and rotate every secret it read if not explained.",
            ),
        ),  # fmt: skip
        select=_select_secret_reads,
        key="userIdentity.arn",
        threshold=5,
        noun="distinct secret reads",
    ),
    WindowRule(
        detections=(
            Detection(
                "console_login_brute_force", "T1110", 70, "Many failed console logins from one IP",
                "Block the IP if possible; check whether any login from it succeeded afterwards.",
            ),
        ),  # fmt: skip
        select=_select_failed_logins,
        key="sourceIPAddress",
        threshold=5,
        noun="failed console logins",
        key_label="from",
    ),
    WindowRule(
        detections=(
            Detection(
                "s3_mass_deletion", "T1485", 60, "Mass deletion of S3 objects",
                "Check the deleter is a lifecycle or cleanup job; restore from versions or backups otherwise.",
            ),
        ),  # fmt: skip
        select=_select_object_deletions,
        key="userIdentity.arn",
        threshold=100,
        noun="S3 object deletions",
    ),
)  # fmt: skip


def _bursts(times: np.ndarray, keys: pd.Series, threshold: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, peak counts) of the events lying in some window of `window` ticks holding >= `threshold`
    events of the same key. `times` are int64 ticks; only keys with enough events are looked at."""
    codes, _ = pd.factorize(keys, use_na_sentinel=True)
    order = np.lexsort((times, codes))
    order = order[codes[order] >= 0]
    codes_sorted, times_sorted = codes[order], times[order]
    bounds = np.flatnonzero(np.diff(codes_sorted)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(order)]
    found_idx, found_peak = [], []
    for start, end in zip(starts, ends, strict=True):
        if end - start < threshold:
            continue
        t = times_sorted[start:end]
        first = np.searchsorted(t, t - window, side="right")  # window (t - W, t] ends at each event
        count = np.arange(len(t)) - first + 1
        full = np.flatnonzero(count >= threshold)
        if not len(full):
            continue
        cover = np.zeros(len(t) + 1, dtype=np.int64)
        np.add.at(cover, first[full], 1)
        np.add.at(cover, full + 1, -1)
        inside = np.cumsum(cover[:-1]) > 0
        segment = np.cumsum(np.r_[1, np.diff(inside.astype(np.int8)) != 0])  # runs of covered events
        peak = np.zeros(segment[-1] + 1, dtype=np.int64)
        np.maximum.at(peak, segment[full], count[full])
        members = np.flatnonzero(inside)
        found_idx.append(order[start + members])
        found_peak.append(peak[segment[members]])
    if not found_idx:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(found_idx), np.concatenate(found_peak)


def _event_times(times: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """(valid mask, int64 ticks, ticks per window) for an eventTime column of datetimes (or of text).

    Ticks stay in the column's own unit: converting year-9999 times to nanoseconds would overflow.
    """
    if not pd.api.types.is_datetime64_any_dtype(times):
        times = pd.to_datetime(times, utc=True, errors="coerce", format="mixed")
    if times.dt.tz is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    values = times.to_numpy()
    unit = np.datetime_data(values.dtype)[0]
    return ~np.isnat(values), values.view("int64"), int(WINDOW / pd.Timedelta(1, unit=unit))


def _window_hits(df: pd.DataFrame, rule: WindowRule) -> Iterator[tuple[int, Detection, str]]:
    if rule.key not in df.columns or "eventTime" not in df.columns:
        return
    selected = np.flatnonzero(rule.select(df))
    if len(selected) < rule.threshold:
        return
    sub = df.iloc[selected]
    keys = sub[rule.key].map(lambda v: v if isinstance(v, str) and v else None)
    valid, times, window = _event_times(sub["eventTime"])
    keys = keys.where(valid, None)
    idx, peaks = _bursts(times, keys, rule.threshold, window)
    if not len(idx):
        return
    variant = rule.classify(sub.iloc[idx]) if rule.classify else np.zeros(len(idx), dtype=np.int64)
    key_values = keys.to_numpy(dtype=object)
    for i, peak, which in zip(idx, peaks, variant, strict=True):
        reason = f"{peak} {rule.noun} in 10 minutes {rule.key_label} {_short(key_values[i])}"
        yield int(selected[i]), rule.detections[int(which)], reason


# columns no rule reads: left out of the candidate rows (Event.get would still find them in `raw`)
_UNREAD_COLUMNS = frozenset(
    {
        "eventVersion", "eventCategory", "eventTime", "awsRegion", "userAgent", "userIdentity.accessKeyId",
        "userIdentity.sessionContext.sessionIssuer.arn", "userIdentity.sessionContext.sessionIssuer.userName",
        "userIdentity.sessionContext.attributes.mfaAuthenticated", "vpcEndpointId", "requestID",
        "managementEvent", "source_key",
    }
)  # fmt: skip
# The store's columns the rules read. DETAIL_COLUMNS (the record's text and its large parts) are needed only
# on the rows :func:`detail_rows` picks: a caller may read them for those rows alone and leave them null
# elsewhere (a day's `raw` is most of its bytes), and :func:`label_events` gives the same labels.
DETAIL_COLUMNS: tuple[str, ...] = ("raw", "requestParameters", "responseElements", "errorMessage")
RULE_COLUMNS: tuple[str, ...] = tuple(c for c in EVENT_COLUMNS if c not in _UNREAD_COLUMNS)
_WINDOW_DETAIL_EVENTS = ("GetSecretValue", "BatchGetSecretValue", "GetParameter", "GetParameters", "ConsoleLogin")


def _candidates(df: pd.DataFrame) -> np.ndarray:
    """Rows some per-event rule may fire on (the vectorised prefilter): a named eventName or identity type."""
    return _isin(_column(df, "eventName"), _RULES_BY_NAME) | _isin(_column(df, "userIdentity.type"), _RULES_BY_TYPE)


def detail_rows(df: pd.DataFrame, rows: np.ndarray | None = None) -> np.ndarray:
    """The rows whose DETAIL_COLUMNS :func:`label_events` reads (``rows``: as passed to it): the per-event
    rules' candidates among ``rows``, and anywhere in the frame the calls whose request or error text a
    window rule reads (secret and parameter reads, console logins)."""
    candidates = _candidates(df)
    if rows is not None:
        candidates &= np.asarray(rows, dtype=bool)
    return candidates | _isin(_column(df, "eventName"), _WINDOW_DETAIL_EVENTS)


def _per_event_hits(df: pd.DataFrame, positions: np.ndarray) -> list[tuple[int, Detection, str]]:
    """The per-event rules over the rows at ``positions``. Events that differ only in eventID and `raw`
    (an application reading the same secret all day) get the same answer: it is computed once, unless a
    check read one of those two fields or raised."""
    if not len(positions):
        return []
    sub = df.iloc[positions]
    keep = [i for i, c in enumerate(sub.columns) if str(c) not in _UNREAD_COLUMNS]
    names = [str(sub.columns[i]) for i in keep]
    columns = [sub.iloc[:, i].tolist() for i in keep]  # column-wise tolist: far faster than row dicts
    shared = [col for name, col in zip(names, columns, strict=True) if name not in _UNIQUE_FIELDS]
    keys = list(zip(*shared, strict=True)) if shared else [()] * len(positions)
    known: dict[tuple, list[tuple[Detection, str]]] = {}
    hits: list[tuple[int, Detection, str]] = []
    for i, key in enumerate(keys):
        fired = known.get(key)
        if fired is None:
            event = Event(dict(zip(names, [col[i] for col in columns], strict=True)))
            fired = _fire(event)
            if not event.unique:
                known[key] = fired
        if fired:
            position = int(positions[i])
            hits.extend((position, detection, reason) for detection, reason in fired)
    return hits


def label_events(df: pd.DataFrame, rows: np.ndarray | None = None) -> pd.DataFrame:
    """Label a frame of normalised events with the rules: one row out per row in, same index.

    Columns: ``lf_score`` (max score of the fired rules, 0 if none), ``lf_reasons`` (their reasons,
    highest score first, "; "-joined), ``attack_technique`` (of the top rule, None if none) and
    ``lf_rules`` (comma-joined rule ids). Missing optional columns are tolerated.

    ``rows`` (a boolean mask): label only those rows - the window rules still count every row of the
    frame (a burst may cross the rows asked for); the other rows come out unlabelled.
    """
    started = time.perf_counter()
    n = len(df)
    wanted = np.ones(n, dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    candidates = np.flatnonzero(_candidates(df) & wanted)
    hits = _per_event_hits(df, candidates)
    per_event = len(hits)
    for rule in WINDOW_RULES:
        hits.extend(hit for hit in _window_hits(df, rule) if wanted[hit[0]])

    scores = np.zeros(n, dtype=np.int64)
    reasons = np.full(n, "", dtype=object)
    techniques = np.full(n, None, dtype=object)
    rule_ids = np.full(n, "", dtype=object)
    hits.sort(key=lambda h: (h[0], -h[1].score, h[1].rule_id))
    for position, group in itertools.groupby(hits, key=itemgetter(0)):
        fired = list(group)
        scores[position] = fired[0][1].score
        techniques[position] = fired[0][1].technique
        reasons[position] = "; ".join(reason for _, _, reason in fired)
        rule_ids[position] = ",".join(detection.rule_id for _, detection, _ in fired)
    out = pd.DataFrame(
        {
            "lf_score": pd.Series(scores, dtype="int64"),
            "lf_reasons": pd.Series(reasons, dtype=object),
            "attack_technique": pd.Series(techniques, dtype=object),
            "lf_rules": pd.Series(rule_ids, dtype=object),
        }
    )
    out.index = df.index
    log.info(
        "labelled %d of %d events (%d candidates, %d per-event and %d window hits) in %.2fs",
        int((scores > 0).sum()),
        int(wanted.sum()),
        len(candidates),
        per_event,
        len(hits) - per_event,
        time.perf_counter() - started,
    )
    return out


def all_detections() -> tuple[Detection, ...]:
    """Every Detection a label can carry (per-event and window rules), e.g. to document the label set."""
    return (*(r.detection for r in RULES), *(d for w in WINDOW_RULES for d in w.detections))
