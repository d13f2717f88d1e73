"""Initial access and credential use (TA0001): root and console sign-ins, sign-in tokens, STS tokens.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from trailguard.detect.event import Event, short
from trailguard.detect.policy import (
    ROOT_HYGIENE,
    failure_note,
    is_admin_statement,
    is_read_only,
    is_root_call,
    statements,
)
from trailguard.detect.registry import frame_rule, rule
from trailguard.intel.networks import TOR, VPN, origin_of, parse_ip, snapshot_date
from trailguard.intel.reputation import configured_lists, matches


@rule(
    "root_console_login", "T1078.004", 85, "Root user console login",
    "Confirm with the account owner; if unexpected reset the root password, check root MFA and review the session.",
    events=["ConsoleLogin"], identity_types=["Root"],
)  # fmt: skip
def root_console_login(event: Event) -> str | None:
    if event.failed:
        return None
    mfa = short(event.text("additionalEventData.MFAUsed") or "unknown", 10)
    return f"Root console login from {event.ip()} (MFA: {mfa})"


@rule(
    "root_activity", "T1078.004", 75, "Root credentials used for a change",
    "Root should never be used day to day: confirm with the owner, review the change, rotate root credentials.",
    identity_types=["Root"],
)  # fmt: skip
def root_activity(event: Event) -> str | None:
    if not is_root_call(event) or is_read_only(event) or event.name in ROOT_HYGIENE:
        return None
    return f"Root user called {short(event.name)} from {event.ip()}{failure_note(event)}"


@rule(
    "root_read_activity", "T1078.004", 55, "Root credentials used to read or set up MFA",
    "Confirm who holds the root credentials and why they were used; reads often precede a change.",
    identity_types=["Root"],
)  # fmt: skip
def root_read_activity(event: Event) -> str | None:
    if not is_root_call(event) or not (is_read_only(event) or event.name in ROOT_HYGIENE):
        return None
    return f"Root user called {short(event.name)} from {event.ip()}{failure_note(event)}"


@rule(
    "root_access_key_created", "T1098.001", 90, "Access key created for the root user",
    "Delete the root access key now unless a documented break-glass procedure created it; rotate root password.",
    events=["CreateAccessKey"], identity_types=["Root"], sources=["iam"],
)  # fmt: skip
def root_access_key_created(event: Event) -> str | None:
    if event.failed or event.text("requestParameters.userName"):
        return None
    return f"Access key created for the root user from {event.ip()}"


@rule(
    "console_login_without_mfa", "T1078.004", 70, "IAM user console login without MFA",
    "Ask the user whether they signed in; enforce MFA on the user; if unknown, reset the password and keys.",
    events=["ConsoleLogin"], identity_types=["IAMUser"], sources=["signin"],
)  # fmt: skip
def console_login_without_mfa(event: Event) -> str | None:
    if event.failed or event.text("additionalEventData.MFAUsed").strip().lower() != "no":
        return None
    if event.get("additionalEventData.SamlProviderArn") is not None:
        return None  # the identity provider did the authentication
    return f"IAM user {short(event.caller_name())} signed in to the console without MFA from {event.ip()}"


@rule(
    "console_login_failure", "T1110.001", 40, "Failed console login",
    "Check for repeated failures for this user or from this IP; lock or reset the account if guessing continues.",
    events=["ConsoleLogin"], sources=["signin"],
)  # fmt: skip
def console_login_failure(event: Event) -> str | None:
    if event.identity_type == "Root" or not event.failed:
        return None
    return f"Failed console login for {short(event.text('userIdentity.userName') or event.actor())} from {event.ip()}"


@rule(
    "root_console_login_failure", "T1110.001", 60, "Failed root console login",
    "Someone knows the root e-mail address: confirm root MFA is on and watch for further attempts from this IP.",
    events=["ConsoleLogin"], identity_types=["Root"], sources=["signin"],
)  # fmt: skip
def root_console_login_failure(event: Event) -> str | None:
    return f"Failed root console login from {event.ip()}" if event.failed else None


@rule(
    "signin_token_from_api_credentials", "T1550.001", 45, "Console sign-in token minted from API credentials",
    "Check whether the role's owner turns CLI credentials into console sessions; stolen keys are often used so.",
    events=["GetSigninToken"], sources=["signin"],
)  # fmt: skip
def signin_token_from_api_credentials(event: Event) -> str | None:
    if event.failed or "AWSReservedSSO" in event.text("userIdentity.arn")[:400]:
        return None  # the SSO portal mints these for every console session
    return f"Console sign-in token minted for {event.actor()} from {event.ip()}"


@rule(
    "sts_federation_token", "T1098.001", 70, "Federation token minted",
    "Federation tokens outlive the deletion of the key that minted them: confirm the use, else revoke sessions.",
    events=["GetFederationToken"], sources=["sts"],
)  # fmt: skip
def sts_federation_token(event: Event) -> str | None:
    if event.failed:
        return None
    broad = any(is_admin_statement(s) for s in statements(event.params("policy")))
    name = short(event.text("requestParameters.name"), 40)
    return f"Federation token '{name}' minted by {event.actor()}" + (
        " with a policy allowing every action" if broad else ""
    )


@rule(
    "sts_session_token_iam_user", "T1550.001", 25, "Session token minted by an IAM user",
    "Usually MFA for the CLI; unexpected when the user never uses MFA or the IP is new.",
    events=["GetSessionToken"], identity_types=["IAMUser"], sources=["sts"],
)  # fmt: skip
def sts_session_token_iam_user(event: Event) -> str | None:
    return None if event.failed else f"Session token minted by IAM user {short(event.caller_name())}"




# --- callers' networks: threat lists, Tor (frame rules: one look-up per distinct address) -----------------


def _by_address(df: pd.DataFrame, decide: Callable[[str], str | None]) -> Iterable[tuple[int, str]]:
    """(row, reason) where ``decide`` gives a reason for the row's sourceIPAddress; each address once."""
    if "sourceIPAddress" not in df:
        return []
    codes, uniques = pd.factorize(df["sourceIPAddress"], use_na_sentinel=True)
    reasons = [decide(u) if isinstance(u, str) else None for u in uniques]
    if not any(reasons):
        return []
    table = np.array([*reasons, None], dtype=object)
    per_row = table[codes]  # code -1 (missing) takes the trailing None
    return [(int(i), str(per_row[i])) for i in np.flatnonzero(pd.notna(per_row))]


@frame_rule(
    "ip_on_threat_list", "T1078.004", 85, "Call from an address on a threat list",
    "The address is on one of your threat lists (the reason names it): confirm who made the call, revoke the "
    "credential's sessions and rotate its keys if it was not your own.",
)  # fmt: skip
def ip_on_threat_list(df: pd.DataFrame) -> Iterable[tuple[int, str]]:
    lists = configured_lists()
    if not lists:
        return []

    def decide(ip: str) -> str | None:
        found = matches(ip, lists)
        if not found:
            return None
        names = ", ".join(f"'{short(n, 40)}'" + (f" ({short(label, 60)})" if label else "") for n, label in found)
        return f"source {short(ip, 40)} is on threat list {names}"

    return _by_address(df, decide)


@frame_rule(
    "tor_exit_caller", "T1090.003", 75, "Call from a Tor exit node",
    "AWS work never needs Tor: treat the credential as stolen unless its owner confirms; revoke its sessions.",
)  # fmt: skip
def tor_exit_caller(df: pd.DataFrame) -> Iterable[tuple[int, str]]:
    def decide(ip: str) -> str | None:
        origin = origin_of(ip)
        if origin.kind != TOR:
            return None
        return f"source {short(ip, 40)} is a Tor exit node (network data of {snapshot_date()})"

    return _by_address(df, decide)


@frame_rule(
    "vpn_anonymiser_caller", "T1090.002", 35, "Call through a consumer VPN or private relay",
    "Usual for some people and unusual for most: compare with the principal's usual networks in the finding.",
)  # fmt: skip
def vpn_anonymiser_caller(df: pd.DataFrame) -> Iterable[tuple[int, str]]:
    def decide(ip: str) -> str | None:
        origin = origin_of(ip)
        if origin.kind != VPN:
            return None
        return f"source {short(ip, 40)} is a {short(origin.provider, 40) or 'VPN'} exit (network data of {snapshot_date()})"

    return _by_address(df, decide)


_TWO_PLACES_WINDOW_S = 3600


def _place(ip: str) -> str | None:
    """A coarse "place" of an address: its /16 (IPv4) or /32 (IPv6); None for private or non-addresses."""
    address = parse_ip(ip)
    if address is None or not address.is_global:
        return None
    prefix = 16 if address.version == 4 else 32
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


@frame_rule(
    "console_login_two_places", "T1078.004", 70, "Console sign-ins of one user from two places at once",
    "One person cannot be in two networks within the hour: one of the sessions is probably someone else's. "
    "Ask the user which one is theirs, then end the other session and reset the password.",
)  # fmt: skip
def console_login_two_places(df: pd.DataFrame) -> list[tuple[int, str]]:
    needed = ("eventName", "sourceIPAddress", "eventTime")
    if any(c not in df for c in needed):
        return []
    logins = np.flatnonzero((df["eventName"] == "ConsoleLogin").to_numpy(dtype=bool))
    if len(logins) < 2:
        return []
    sub = df.iloc[logins]
    outcome = sub["responseElements.ConsoleLogin"] if "responseElements.ConsoleLogin" in sub else None
    who = sub["userIdentity.arn"] if "userIdentity.arn" in sub else pd.Series(None, index=sub.index)
    times = pd.to_datetime(sub["eventTime"], utc=True, errors="coerce")
    seen: dict[str, list[tuple[float, str, str]]] = {}
    hits = []
    order = np.argsort(times.to_numpy(), kind="stable")
    for i in order:
        if outcome is not None and outcome.iloc[i] != "Success":
            continue
        user, ip, moment = who.iloc[i], sub["sourceIPAddress"].iloc[i], times.iloc[i]
        place = _place(ip) if isinstance(ip, str) else None
        if not isinstance(user, str) or place is None or pd.isna(moment):
            continue
        now = moment.timestamp()
        earlier = [(t, p, a) for t, p, a in seen.get(user, []) if now - t <= _TWO_PLACES_WINDOW_S and p != place]
        if earlier:
            t, _, other = earlier[-1]
            hits.append((int(logins[i]), f"{short(user)} signed in to the console from {short(ip, 40)} "
                         f"{int((now - t) // 60)} min after a sign-in from {short(other, 40)}, another network"))  # fmt: skip
        seen.setdefault(user, []).append((now, place, ip))
    return hits


_PENTEST_AGENT = re.compile(r"kali|parrot|pentoo", re.IGNORECASE)


@frame_rule(
    "pentest_distribution_user_agent", "T1595", 75, "Call from a penetration-testing distribution",
    "Kali, Parrot and Pentoo are attack toolkits (GuardDuty PenTest:IAMUser/*): unless a sanctioned test runs "
    "today, treat the credential as stolen.",
)  # fmt: skip
def pentest_distribution_user_agent(df: pd.DataFrame) -> list[tuple[int, str]]:
    if "userAgent" not in df:
        return []
    codes, agents = pd.factorize(df["userAgent"])
    names = [(_PENTEST_AGENT.search(a[:1000]) if isinstance(a, str) else None) for a in agents]
    if not any(names):
        return []
    table = np.array([m.group(0).capitalize() if m else None for m in names] + [None], dtype=object)
    per_row = table[codes]
    return [(int(i), f"user agent names {per_row[i]} Linux: {short(str(df['userAgent'].iloc[i]), 100)}")
            for i in np.flatnonzero(pd.notna(per_row))]  # fmt: skip
