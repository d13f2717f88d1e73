"""Initial access (TA0001): root and IAM-user console sign-ins, root credentials in use."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from trailguard.detect.event import Event, short
from trailguard.detect.policy import ROOT_HYGIENE, failure_note, is_read_only, is_root_call
from trailguard.detect.registry import fires, frame_rule, near_miss, rule
from trailguard.detect.samples import ACCOUNT, ALICE, DENIED, ROOT, call, login
from trailguard.intel.networks import TOR, VPN, origin_of, parse_ip, snapshot_date
from trailguard.intel.reputation import configured_lists, matches


@rule(
    "root_console_login",
    title="Root user console login",
    technique="T1078.004",
    score=85,
    reason="Root console login from {ip} (MFA: {mfa used})",
    runbook="Confirm with the account owner; if unexpected reset the root password, check root MFA and review the session.",
    events=["ConsoleLogin"],
    identity_types=["Root"],
    tests=[
        fires("root signs in to the console", login(ROOT, "Success")),
        near_miss("root sign-in fails", login(ROOT, "Failure")),
    ],
)
def root_console_login(event: Event) -> str | None:
    if event.failed:
        return None
    mfa = short(event.text("additionalEventData.MFAUsed") or "unknown", 10)
    return f"Root console login from {event.ip()} (MFA: {mfa})"


@rule(
    "root_activity",
    title="Root credentials used for a change",
    technique="T1078.004",
    score=75,
    reason="Root user called {eventName} from {ip}{failure}",
    runbook="Root should never be used day to day: confirm with the owner, review the change, rotate root credentials.",
    identity_types=["Root"],
    tests=[
        fires(
            "root changes bucket versioning",
            call("PutBucketVersioning", "s3", {"bucketName": "b"}, userIdentity=ROOT, readOnly=False),
        ),
        near_miss("root lists buckets (a read)", call("ListBuckets", "s3", userIdentity=ROOT, readOnly=True)),
        fires(
            "root change without a readOnly flag, denied",
            call("PutBucketPolicy", "s3", userIdentity=ROOT, **DENIED),
        ),
    ],
)
def root_activity(event: Event) -> str | None:
    if not is_root_call(event) or is_read_only(event) or event.name in ROOT_HYGIENE:
        return None
    return f"Root user called {short(event.name)} from {event.ip()}{failure_note(event)}"


@rule(
    "root_read_activity",
    title="Root credentials used to read or set up MFA",
    technique="T1078.004",
    score=55,
    reason="Root user called {eventName} from {ip}{failure}",
    runbook="Confirm who holds the root credentials and why they were used; reads often precede a change.",
    identity_types=["Root"],
    tests=[
        fires("root lists its access keys", call("ListAccessKeys", "iam", userIdentity=ROOT, readOnly=True)),
        near_miss(
            "an AWS service reads on root's behalf",
            call(
                "GetAccountSummary",
                "iam",
                userIdentity={**ROOT, "invokedBy": "config.amazonaws.com"},
                readOnly=True,
            ),
        ),
    ],
)
def root_read_activity(event: Event) -> str | None:
    if not is_root_call(event) or not (is_read_only(event) or event.name in ROOT_HYGIENE):
        return None
    return f"Root user called {short(event.name)} from {event.ip()}{failure_note(event)}"


@rule(
    "console_login_without_mfa",
    title="IAM user console login without MFA",
    technique="T1078.004",
    score=70,
    reason="IAM user {user} signed in to the console without MFA from {ip}",
    runbook="Ask the user whether they signed in; enforce MFA on the user; if unknown, reset the password and keys.",
    events=["ConsoleLogin"],
    identity_types=["IAMUser"],
    sources=["signin"],
    tests=[
        fires("IAM user signs in without MFA", login(ALICE, "Success", "No")),
        near_miss("IAM user signs in with MFA", login(ALICE, "Success", "Yes")),
        near_miss(
            "SAML sign-in (the IdP did the MFA)",
            login(ALICE, "Success", "No", SamlProviderArn=f"arn:aws:iam::{ACCOUNT}:saml-provider/Okta"),
        ),
    ],
)
def console_login_without_mfa(event: Event) -> str | None:
    if event.failed or event.text("additionalEventData.MFAUsed").strip().lower() != "no":
        return None
    if event.get("additionalEventData.SamlProviderArn") is not None:
        return None  # the identity provider did the authentication
    return f"IAM user {short(event.caller_name())} signed in to the console without MFA from {event.ip()}"


# --- callers' networks (frame rules: one look-up per distinct address), added for GuardDuty parity --------

LISTED_SAMPLE_IP = "203.0.113.66"  # a documentation address the catalogue's test lists as a threat
_TOR_SAMPLE_IP = "185.220.101.1"  # in the shipped Tor exit ranges


def _by_address(df: pd.DataFrame, decide: Callable[[str], str | None]) -> list[tuple[int, str]]:
    """(row, reason) where ``decide`` gives a reason for the row's sourceIPAddress; each address once."""
    if "sourceIPAddress" not in df:
        return []
    codes, uniques = pd.factorize(df["sourceIPAddress"], use_na_sentinel=True)
    reasons = [decide(u) if isinstance(u, str) else None for u in uniques]
    if not any(reasons):
        return []
    per_row = np.array([*reasons, None], dtype=object)[codes]  # code -1 (missing) takes the trailing None
    return [(int(i), str(per_row[i])) for i in np.flatnonzero(pd.notna(per_row))]


@frame_rule(
    "ip_on_threat_list",
    title="Call from an address on a threat list",
    technique="T1078.004",
    score=85,
    reason="source {ip} is on threat list {list names}",
    runbook="The address is on one of your threat lists (TRAILGUARD_THREAT_LISTS; the reason names it): confirm "
    "who made the call, revoke the credential's sessions and rotate its keys if it was not your own.",
    tests=[
        fires("a call from a listed address", call("ListUsers", "iam", sourceIPAddress=LISTED_SAMPLE_IP)),
        near_miss("a call from an unlisted address", call("ListUsers", "iam")),
    ],
)
def ip_on_threat_list(df: pd.DataFrame) -> list[tuple[int, str]]:
    lists = configured_lists()
    if not lists:
        return []

    def decide(ip: str) -> str | None:
        found = matches(ip, lists)
        if not found:
            return None
        names = ", ".join(f"'{short(n)}'" + (f" ({short(label)})" if label else "") for n, label in found)
        return f"source {short(ip)} is on threat list {names}"

    return _by_address(df, decide)


@frame_rule(
    "tor_exit_caller",
    title="Call from a Tor exit node",
    technique="T1078.004",
    score=75,
    reason="source {ip} is a Tor exit node (network data of {date})",
    runbook="AWS work never needs Tor: treat the credential as stolen unless its owner confirms; revoke its sessions.",
    tests=[
        fires("a call from a Tor exit", call("ListBuckets", "s3", sourceIPAddress=_TOR_SAMPLE_IP)),
        near_miss("a call from a home address", call("ListBuckets", "s3", sourceIPAddress="24.6.171.20")),
    ],
)
def tor_exit_caller(df: pd.DataFrame) -> list[tuple[int, str]]:
    def decide(ip: str) -> str | None:
        if origin_of(ip).kind != TOR:
            return None
        return f"source {short(ip)} is a Tor exit node (network data of {snapshot_date()})"

    return _by_address(df, decide)


@frame_rule(
    "vpn_anonymiser_caller",
    title="Call through a consumer VPN or private relay",
    technique="T1078.004",
    score=35,
    reason="source {ip} is a {provider} exit (network data of {date})",
    runbook="Usual for some people and unusual for most: compare with the principal's usual networks in the finding.",
    tests=[
        fires("a call from a ProtonVPN exit", call("ListBuckets", "s3", sourceIPAddress="2.58.241.66")),
        near_miss("a call from a home address", call("ListBuckets", "s3", sourceIPAddress="24.6.171.20")),
    ],
)
def vpn_anonymiser_caller(df: pd.DataFrame) -> list[tuple[int, str]]:
    def decide(ip: str) -> str | None:
        origin = origin_of(ip)
        if origin.kind != VPN:
            return None
        return f"source {short(ip)} is a {short(origin.provider) or 'VPN'} exit (network data of {snapshot_date()})"

    return _by_address(df, decide)


_TWO_PLACES_WINDOW_S = 3600
_ALICE_HOME = {**login(ALICE, "Success", "Yes"), "sourceIPAddress": "24.6.171.20", "eventID": "home",
               "eventTime": "2026-11-20T09:00:00Z"}  # fmt: skip


def _place(ip: str) -> str | None:
    """A coarse "place" of an address: its /16 (IPv4) or /32 (IPv6); None for private or non-addresses."""
    address = parse_ip(ip)
    if address is None or not address.is_global:
        return None
    return str(ipaddress.ip_network(f"{address}/{16 if address.version == 4 else 32}", strict=False))


@frame_rule(
    "console_login_two_places",
    title="Console sign-ins of one user from two places at once",
    technique="T1078.004",
    score=70,
    reason="{actor} signed in to the console from {ip} {count} min after a sign-in from {other ip}, another network",
    runbook="One person cannot be in two networks within the hour: one of the sessions is probably someone "
    "else's. Ask the user which one is theirs, then end the other session and reset the password.",
    tests=[
        fires("two networks 20 minutes apart", _ALICE_HOME,
              {**_ALICE_HOME, "sourceIPAddress": "8.210.12.33", "eventID": "away", "eventTime": "2026-11-20T09:20:00Z"}),
        near_miss("the same network", _ALICE_HOME,
                  {**_ALICE_HOME, "sourceIPAddress": "24.6.10.1", "eventID": "away", "eventTime": "2026-11-20T09:20:00Z"}),
        near_miss("hours apart", _ALICE_HOME,
                  {**_ALICE_HOME, "sourceIPAddress": "8.210.12.33", "eventID": "away", "eventTime": "2026-11-20T11:30:00Z"}),
    ],
)  # fmt: skip
def console_login_two_places(df: pd.DataFrame) -> list[tuple[int, str]]:
    if any(c not in df for c in ("eventName", "sourceIPAddress", "eventTime")):
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
    for i in np.argsort(times.to_numpy(), kind="stable"):
        if outcome is not None and outcome.iloc[i] != "Success":
            continue
        user, ip, moment = who.iloc[i], sub["sourceIPAddress"].iloc[i], times.iloc[i]
        place = _place(ip) if isinstance(ip, str) else None
        if not isinstance(user, str) or place is None or pd.isna(moment):
            continue
        now = moment.timestamp()
        earlier = [
            (t, p, a) for t, p, a in seen.get(user, []) if now - t <= _TWO_PLACES_WINDOW_S and p != place
        ]
        if earlier:
            t, _, other = earlier[-1]
            hits.append((int(logins[i]), f"{short(user)} signed in to the console from {short(ip)} "
                         f"{int((now - t) // 60)} min after a sign-in from {short(other)}, another network"))  # fmt: skip
        seen.setdefault(user, []).append((now, place, ip))
    return hits


_PENTEST_AGENT = re.compile(r"kali|parrot|pentoo", re.IGNORECASE)


@frame_rule(
    "pentest_distribution_user_agent",
    title="Call from a penetration-testing distribution",
    technique="T1078.004",
    score=75,
    reason="user agent names {Kali|Parrot|Pentoo} Linux: {userAgent}",
    runbook="Kali, Parrot and Pentoo are attack toolkits (GuardDuty PenTest:IAMUser/*): unless a sanctioned test "
    "runs today, treat the credential as stolen.",
    tests=[
        fires("a Kali user agent", call("ListBuckets", "s3", userAgent="aws-cli/1.22.34 Python/3.9.10 Linux/5.15.0-kali3-amd64")),
        near_miss("an Ubuntu user agent", call("ListBuckets", "s3", userAgent="aws-cli/2.15.30 Linux/6.5.0-21-generic ubuntu.22")),
    ],
)  # fmt: skip
def pentest_distribution_user_agent(df: pd.DataFrame) -> list[tuple[int, str]]:
    if "userAgent" not in df:
        return []
    codes, agents = pd.factorize(df["userAgent"])
    names = [(_PENTEST_AGENT.search(a[:1000]) if isinstance(a, str) else None) for a in agents]
    if not any(names):
        return []
    per_row = np.array([m.group(0).capitalize() if m else None for m in names] + [None], dtype=object)[codes]
    return [(int(i), f"user agent names {per_row[i]} Linux: {short(str(df['userAgent'].iloc[i]))}")
            for i in np.flatnonzero(pd.notna(per_row))]  # fmt: skip
