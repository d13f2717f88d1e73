"""Normal traffic: one day of the organisation's CloudTrail records (people, CI, Lambda, instances, AWS services).

Everything comes from ``random.Random`` seeded by the caller (one stream per day), never the clock.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import cache
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson
from trailguard.demo.organisation import (
    ACCOUNT,
    ACCOUNTS,
    BROWSERS,
    CALLS,
    CONSOLE_AGENT,
    CONSOLE_AGENTS,
    DENIED_CODES,
    ERROR_MESSAGES,
    ERROR_RATES,
    GITHUB_RUNNER_IPS,
    GROUP_SHARES,
    HOME_REGION,
    INSTANCE_GROUPS,
    LAMBDA_IPS,
    LAMBDAS,
    PROFILES,
    REGIONS,
    REPOS,
    SECRET_NAMES,
    SERVICE_USER,
    THROTTLE_CODES,
    TOOLS,
    USERS,
    VPCE_SERVICES,
    Account,
    Call,
    Profile,
    User,
)

if TYPE_CHECKING:
    from trailguard.demo.attacks import Scenario



# -- identities and sessions ----------------------------------------------------------------------------
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _stable_id(prefix: str, *parts: str, length: int = 17) -> str:
    """An AWS-looking id that depends only on the name (so principals keep their ids across seeds)."""
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return prefix + "".join(_B32[b & 31] for b in digest[:length])


def stable_hex(*parts: str, length: int = 17) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:length]


def _iso(day: date, sec: int) -> str:
    return f"{day.isoformat()}T{_hms()[sec % 86400]}"


@cache
def _hms() -> tuple[str, ...]:
    """``HH:MM:SSZ`` for every second of a day, built once: formatting times was the hot spot."""
    return tuple(f"{h:02d}:{m:02d}:{s:02d}Z" for h in range(24) for m in range(60) for s in range(60))


def user_identity(
    user: str, account: Account, key: str | None, *, console_created: str | None = None, mfa: bool = False
) -> dict:
    identity: dict[str, Any] = {
        "type": "IAMUser",
        "principalId": _stable_id("AIDA", account.id, user),
        "arn": f"arn:aws:iam::{account.id}:user/{user}",
        "accountId": account.id,
    }
    if key is not None:
        identity["accessKeyId"] = key
    identity["userName"] = user
    if console_created is not None:
        identity["sessionContext"] = {
            "sessionIssuer": {},
            "webIdFederationData": {},
            "attributes": {"creationDate": console_created, "mfaAuthenticated": "true" if mfa else "false"},
        }
    return identity


def role_identity(
    role: str,
    session: str,
    account: Account,
    key: str,
    created: str,
    *,
    path: str = "",
    web_identity: str | None = None,
    mfa: bool = False,
) -> dict:
    role_id = _stable_id("AROA", account.id, role)
    return {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{session}",
        "arn": f"arn:aws:sts::{account.id}:assumed-role/{role}/{session}",
        "accountId": account.id,
        "accessKeyId": key,
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role_id,
                "arn": f"arn:aws:iam::{account.id}:role/{path}{role}",
                "accountId": account.id,
                "userName": role,
            },
            "webIdFederationData": {}
            if web_identity is None
            else {"federatedProvider": web_identity, "attributes": {}},
            "attributes": {"creationDate": created, "mfaAuthenticated": "true" if mfa else "false"},
        },
    }


def root_identity(account: Account, created: str | None = None) -> dict:
    identity: dict[str, Any] = {
        "type": "Root",
        "principalId": account.id,
        "arn": f"arn:aws:iam::{account.id}:root",
        "accountId": account.id,
        "accessKeyId": "",
    }
    if created is not None:
        identity["accessKeyId"] = "ASIA" + _stable_id("", account.id, created, length=16)
        identity["sessionContext"] = {
            "sessionIssuer": {},
            "webIdFederationData": {},
            "attributes": {"creationDate": created, "mfaAuthenticated": "false"},
        }
    return identity


@dataclass
class Actor:
    """A principal in one session: who calls, from where, with what, and in which regions."""

    key: str
    account: Account
    identity: dict[str, Any]
    ips: tuple[str, ...]
    agent: str  # user agent; "<cmd>"/"<svc>" are filled per call
    region_cum: tuple[float, ...]  # cumulative weights over REGIONS
    console: bool = False  # console session: per-service console agents
    service: str | None = None  # a service-linked role: every call made by this AWS service
    vpce: str | None = None  # calls to VPCE_SERVICES go through this endpoint from ``private_ip``
    private_ip: str = ""
    tls: tuple[str, str] = ("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    subs: dict[str, str] = field(default_factory=dict)
    _via: dict[str, dict] = field(default_factory=dict)

    def identity_via(self, service: str) -> dict:
        """The identity with ``invokedBy``, as CloudTrail shows calls a service makes for the caller."""
        if service not in self._via:
            self._via[service] = {**self.identity, "invokedBy": service}
        return self._via[service]


def _cum(weights: Iterable[float]) -> tuple[float, ...]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return tuple(out)


@cache
def _single_region(cum_weights: tuple[float, ...]) -> str | None:
    """The only region with weight, if there is just one (the hot loop then skips the draw)."""
    regions = [
        r for r, c, before in zip(REGIONS, cum_weights, (0.0, *cum_weights)[:-1], strict=True) if c > before
    ]
    return regions[0] if len(regions) == 1 else None


def only_region(region: str) -> tuple[float, ...]:
    return _cum(1.0 if r == region else 0.0 for r in REGIONS)


EVEN_REGIONS = _cum(1.0 for _ in REGIONS)


# -- one day of events ----------------------------------------------------------------------------------
class DayTraffic:
    """Generates one day's records into per-(account, region) buckets, from a stream seeded by the day."""

    def __init__(self, seed: int, day: date, templates: dict[tuple, tuple]) -> None:
        self.rng = random.Random(f"trailguard-demo:{seed}:{day.isoformat()}")
        self.day = day
        self.prefix = day.isoformat() + "T"
        self.weekend = day.weekday() >= 5
        self.buckets: dict[tuple[str, str], list[tuple[int, dict]]] = defaultdict(list)
        # ground truth rows: (eventTime, eventID, scenario, technique, risk)
        self.truth: list[tuple[str, str, str, str, int]] = []
        self.count = 0
        self.scenario: Scenario | None = None
        self.occurrence = 0
        self._templates = templates

    # random pieces
    def key(self, prefix: str = "ASIA") -> str:
        return prefix + "".join(self.rng.choices(_B32, k=16))

    def region(self, actor: Actor) -> str:
        return self.rng.choices(REGIONS, cum_weights=actor.region_cum)[0]

    def iso(self, sec: int) -> str:
        return self.prefix + _hms()[sec]

    # records
    def emit(self, sec: int, record: dict) -> dict:
        """Stamp a record with its time and ids and file it under its account and region."""
        record["eventTime"] = self.prefix + _hms()[sec]
        if "requestID" in record:
            record["requestID"] = _request_id(self.rng, record["eventSource"] == "s3.amazonaws.com")
        record["eventID"] = _uuid4(self.rng)
        self.buckets[(record["recipientAccountId"], record["awsRegion"])].append((sec, record))
        self.count += 1
        return record

    def traffic(self, actor: Actor, profile: Profile, secs: list[int], error_rate: float) -> None:
        """Normal calls of ``actor`` at ``secs``: the hot loop, so records are copies of cached templates.

        Templates are keyed by the principal (``actor.key``), not the session: every session of a Lambda
        function shares them and gets its own userIdentity per record."""
        if not secs:
            return
        rng, templates, hms, prefix, buckets = self.rng, self._templates, _hms(), self.prefix, self.buckets
        rand, ips, cum = rng.random, actor.ips, actor.region_cum
        fixed_region, total = _single_region(cum), cum[-1]
        calls = rng.choices(profile.calls, cum_weights=profile.cum_weights, k=len(secs))
        for sec, call in zip(secs, calls, strict=True):
            region = (
                HOME_REGION if call.global_ else fixed_region or REGIONS[bisect.bisect(cum, rand() * total)]
            )
            variant = int(rand() * len(call.params)) if len(call.params) > 1 else 0
            ip = ips[int(rand() * len(ips))] if len(ips) > 1 else ips[0]
            error = rng.choice(call.errors) if rand() < error_rate else None
            tkey = (actor.key, call.key, region, variant, ip, error)
            entry = templates.get(tkey)
            if entry is None:
                template = _call_record(actor, call, region, variant, ip, error)
                entry = templates[tkey] = (template, actor.service or call.via, _dated_fields(template))
            template, via, dated = entry
            record = template.copy()
            record["userIdentity"] = actor.identity_via(via) if via else actor.identity
            if dated:
                self.fill_dates(record, dated, sec)
            record["eventTime"] = prefix + hms[sec]
            record["requestID"] = _request_id(rng, call.service == "s3")
            record["eventID"] = _uuid4(rng)
            buckets[(actor.account.id, region)].append((sec, record))
        self.count += len(secs)

    def call(
        self,
        actor: Actor,
        key: str,
        sec: int,
        *,
        region: str | None = None,
        params: Any = None,
        response: Any = None,
        error: str | None = None,
        technique: str | None = None,
        risk: int | None = None,
    ) -> dict:
        """One call outside the hot loop (scenarios, session starts); labelled when a scenario is running
        and ``risk`` is given."""
        call = CALLS[key]
        if region is None:
            region = HOME_REGION if call.global_ else self.region(actor)
        record = _call_record(actor, call, region, 0, actor.ips[0], error, params=params, response=response)
        self.fill_dates(record, _dated_fields(record), sec)
        self.emit(sec, record)
        if risk is not None:
            self.label(record, technique, risk)
        return record

    def fill_dates(self, record: dict, fields: tuple[str, ...], sec: int) -> None:
        """Fill ``<date>`` (the only day-dependent placeholder, e.g. a new key's createDate) in ``fields``."""
        if fields:
            subs = {
                "<date>": _aws_create_date(
                    datetime.combine(self.day, time(), timezone.utc) + timedelta(seconds=sec)
                )
            }
            for name in fields:
                record[name] = _replace(record[name], subs)

    def label(self, record: dict, technique: str | None, risk: int) -> None:
        assert self.scenario is not None
        self.truth.append(
            (
                record["eventTime"],
                record["eventID"],
                self.scenario.name,
                technique or self.scenario.technique,
                risk,
            )
        )

    def attack_start(self, scenario: Scenario) -> int:
        """Seconds into the day when this occurrence starts: the scenario's hour, give or take 40 minutes."""
        return int(min(max(scenario.hour * 3600 + self.rng.randint(-2400, 2400), 600), 84_600))


_UUID_CLEAR = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID_SET = (0x4 << 76) | (0x2 << 62)  # version 4, RFC 4122 variant


def _uuid4(rng: random.Random) -> str:
    """A uuid4-shaped id from the seeded stream (``uuid.uuid4`` would use the OS's randomness)."""
    h = f"{(rng.getrandbits(128) & _UUID_CLEAR) | _UUID_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _request_id(rng: random.Random, s3: bool) -> str:
    """S3's request ids are 16 hex digits; every other service uses a uuid."""
    return f"{rng.getrandbits(64):016X}" if s3 else _uuid4(rng)


def _replace(value: Any, subs: dict[str, str]) -> Any:
    """``value`` with ``<placeholders>`` replaced in its strings (a copy: catalogue values stay intact)."""
    if isinstance(value, str):
        if "<" in value:
            for k, v in subs.items():
                value = value.replace(k, v)
        return value
    if isinstance(value, dict):
        return {k: _replace(v, subs) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, subs) for v in value]
    return value


def _dated_fields(record: dict) -> tuple[str, ...]:
    return tuple(
        k
        for k in ("requestParameters", "responseElements")
        if record.get(k) is not None and b"<date>" in orjson.dumps(record[k])
    )


def _aws_create_date(moment: datetime) -> str:
    """IAM's createDate format, e.g. ``Nov 20, 2026 5:06:35 AM``."""
    return _aws_time(moment).replace(f"{moment.year},", str(moment.year), 1)


@cache
def _amz_id(*parts: str) -> str:
    return stable_hex(*parts, length=56)


@cache
def detector_id(account: str, region: str) -> str:
    """The account's GuardDuty detector id in a region."""
    return stable_hex(account, region, "detector", length=32)


def _api_name(call: Call) -> str:
    """The API behind an eventName: Lambda's carry a version (``GetFunction20150331v2``)."""
    return _API_VERSION.sub("", call.name)


def _cli_command(call: Call) -> str:
    """``ec2.describe-instances``, as aws-cli v2 reports the command in its user agent."""
    return f"{call.service}.{_CAMEL.sub('-', _api_name(call)).lower()}"


_API_VERSION = re.compile(r"\d{8}(v\d)?$")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _error(code: str, actor: Actor, call: Call, region: str) -> tuple[str, str]:
    if code == "<denied>":
        code = DENIED_CODES.get(call.service, "AccessDenied")
        arn = actor.identity.get("arn") or f"arn:aws:iam::{actor.account.id}:root"
        action = f"{call.service}:{_api_name(call)}"
        if call.service == "s3":
            return code, "Access Denied"
        resource = f"arn:aws:{call.service}:{'' if call.global_ else region}:{actor.account.id}:*"
        return code, (
            f"User: {arn} is not authorized to perform: {action} on resource: {resource} "
            f"because no identity-based policy allows the {action} action"
        )
    if code == "<throttle>":
        code = THROTTLE_CODES.get(call.service, "ThrottlingException")
    return code, ERROR_MESSAGES.get(code, "").replace("<self>", actor.subs.get("<self>", "unknown")).replace(
        "<env>", actor.account.env
    )


def _call_record(
    actor: Actor,
    call: Call,
    region: str,
    variant: int,
    ip: str,
    error: str | None,
    *,
    params: Any = None,
    response: Any = None,
) -> dict:
    """A complete CloudTrail record for one API call, in AWS's key order, with empty time and ids."""
    subs = {
        "<env>": actor.account.env,
        "<acct>": actor.account.id,
        "<region>": region,
        "<vpc>": actor.account.vpc,
        "<detector>": detector_id(actor.account.id, region),
        **actor.subs,
    }
    via = actor.service or call.via
    if via:
        identity, source_ip, agent, tls, vpce = actor.identity_via(via), via, via, None, None
    else:
        identity, agent = actor.identity, actor.agent
        if actor.console:
            agent = CONSOLE_AGENTS.get(call.service, CONSOLE_AGENT)
        elif "<" in agent:
            agent = agent.replace("<cmd>", _cli_command(call)).replace("<svc>", call.service)
        vpce = actor.vpce if actor.vpce and call.service in VPCE_SERVICES else None
        source_ip = actor.private_ip if vpce else ip
        host = (
            f"{call.service}.amazonaws.com"
            if call.global_ and call.service != "s3"
            else "s3.amazonaws.com"
            if call.service == "s3"
            else f"{call.service}.{region}.amazonaws.com"
        )
        tls = {"tlsVersion": actor.tls[0], "cipherSuite": actor.tls[1], "clientProvidedHostHeader": host}
    record: dict[str, Any] = {
        "eventVersion": "1.08" if call.service == "sts" else "1.10" if call.service == "s3" else "1.11",
        "userIdentity": identity,
        "eventTime": "",
        "eventSource": call.source,
        "eventName": call.name,
        "awsRegion": region,
        "sourceIPAddress": source_ip,
        "userAgent": agent,
    }
    if error:
        record["errorCode"], record["errorMessage"] = _error(error, actor, call, region)
    # catalogue values without placeholders are shared by all records (nothing ever mutates them)
    if params is None:
        params = _replace(call.params[variant], subs) if call.templated[variant] else call.params[variant]
    else:
        params = _replace(params, subs)
    record["requestParameters"] = params
    if error or call.read_only:
        response = None
    elif response is None:
        response = _replace(call.response, subs) if call.templated[-1] else call.response
    else:
        response = _replace(response, subs)
    record["responseElements"] = response
    if call.service == "s3":
        record["additionalEventData"] = {
            "SignatureVersion": "SigV4",
            "CipherSuite": actor.tls[1],
            "bytesTransferredIn": 0,
            "AuthenticationMethod": "AuthHeader",
            "x-amz-id-2": _amz_id(actor.key, call.name),
            "bytesTransferredOut": 0 if not call.read_only else 512,
        }
    record["requestID"] = ""
    record["eventID"] = ""
    record["readOnly"] = call.read_only
    if call.service == "kms":
        record["resources"] = [
            {
                "accountId": actor.account.id,
                "type": "AWS::KMS::Key",
                "ARN": f"arn:aws:kms:{region}:{actor.account.id}:key/6f1c9a3e-2b4d-4e8f-9a1b-3c5d7e9f1a2b",
            }
        ]
    record["eventType"] = "AwsApiCall"
    record["managementEvent"] = True
    record["recipientAccountId"] = actor.account.id
    if not via and vpce:
        record["vpcEndpointId"] = f"vpce-{stable_hex(actor.account.id, region, call.service)}"
        record["vpcEndpointAccountId"] = actor.account.id
    record["eventCategory"] = "Management"
    if not via:
        record["tlsDetails"] = tls
    if actor.console and not via:
        record["sessionCredentialFromConsole"] = "true"
    return record


def _special(
    actor: Actor,
    *,
    source: str,
    name: str,
    region: str,
    params: Any,
    response: Any,
    read_only: bool,
    event_type: str = "AwsApiCall",
    extra: Any = None,
    resources: list | None = None,
    error: tuple[str | None, str] | None = None,
    identity: dict | None = None,
    version: str = "1.08",
    request_id: bool = True,
    service_details: dict | None = None,
    host: str | None = None,
) -> dict:
    """A record that is not a plain API call of the catalogue: sign-ins, role assumptions, service events."""
    record: dict[str, Any] = {
        "eventVersion": version,
        "userIdentity": actor.identity if identity is None else identity,
        "eventTime": "",
        "eventSource": source,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": actor.ips[0],
        "userAgent": actor.agent,
    }
    if error:
        if error[0]:
            record["errorCode"] = error[0]
        record["errorMessage"] = error[1]
    record["requestParameters"] = params
    record["responseElements"] = response
    if extra is not None:
        record["additionalEventData"] = extra
    if request_id:
        record["requestID"] = ""
    record["eventID"] = ""
    record["readOnly"] = read_only
    if resources:
        record["resources"] = resources
    record["eventType"] = event_type
    if service_details is not None:
        record["serviceEventDetails"] = service_details
    record["managementEvent"] = True
    record["recipientAccountId"] = actor.account.id
    record["eventCategory"] = "Management"
    if host:
        record["tlsDetails"] = {
            "tlsVersion": actor.tls[0],
            "cipherSuite": actor.tls[1],
            "clientProvidedHostHeader": host,
        }
    return record


def console_login(
    gen: DayTraffic,
    sec: int,
    account: Account,
    identity: dict,
    ip: str,
    browser: str,
    *,
    mfa: bool,
    success: bool,
    mfa_identifier: str | None = None,
) -> dict:
    """A ConsoleLogin event as AWS writes it: a failure has an errorMessage but no errorCode, and its
    identity no ARN and an empty access key."""
    actor = Actor("signin", account, identity, (ip,), browser, EVEN_REGIONS)
    if not success:
        identity = _signin_identity(identity)
    extra: dict[str, Any] = {
        "LoginTo": "https://console.aws.amazon.com/console/home?hashArgs=%23&isauthcode=true&state=hashArgsFromTB_us-east-1_c6b7c9e9c1a3f2d4",
        "MobileVersion": "No",
    }
    if mfa and mfa_identifier:
        extra["MFAIdentifier"] = mfa_identifier
    extra["MFAUsed"] = "Yes" if mfa else "No"
    record = _special(
        actor,
        source="signin.amazonaws.com",
        name="ConsoleLogin",
        region=HOME_REGION,
        params=None,
        response={"ConsoleLogin": "Success" if success else "Failure"},
        read_only=False,
        event_type="AwsConsoleSignIn",
        extra=extra,
        error=None if success else (None, "Failed authentication"),
        identity=identity,
        version="1.09",
        request_id=False,
        host="signin.aws.amazon.com",
    )
    return gen.emit(sec, record)


def _signin_identity(identity: dict) -> dict:
    """The identity of a failed sign-in or an MFA check: no ARN, an empty access key."""
    if identity.get("type") != "IAMUser":
        return identity
    return {
        "type": "IAMUser",
        "principalId": identity["principalId"],
        "accountId": identity["accountId"],
        "accessKeyId": "",
        "userName": identity["userName"],
    }


def _assume_role_by_service(
    gen: DayTraffic,
    sec: int,
    account: Account,
    region: str,
    service: str,
    role: str,
    session: str,
    key: str,
    path: str = "",
) -> None:
    """The sts:AssumeRole an AWS service (Lambda, EC2, Config) makes to get a role's credentials."""
    role_arn = f"arn:aws:iam::{account.id}:role/{path}{role}"
    identity = {"type": "AWSService", "invokedBy": service}
    actor = Actor("svc", account, identity, (service,), service, only_region(region))
    expires = datetime.combine(gen.day, time(), timezone.utc) + timedelta(seconds=sec + BLOCK + 3600)
    gen.emit(
        sec,
        _special(
            actor,
            source="sts.amazonaws.com",
            name="AssumeRole",
            region=region,
            read_only=True,
            params={"roleArn": role_arn, "roleSessionName": session},
            response={
                "credentials": {
                    "accessKeyId": key,
                    "sessionToken": _session_token(gen),
                    "expiration": _aws_time(expires),
                }
            },
            resources=[{"accountId": account.id, "type": "AWS::IAM::Role", "ARN": role_arn}],
        ),
    )


def _session_token(gen: DayTraffic) -> str:
    return "IQoJb3JpZ2luX2VjE" + "".join(gen.rng.choices(ALNUM, k=48))


def _aws_time(moment: datetime) -> str:
    """STS's ``expiration`` format, e.g. ``Nov 20, 2026, 3:04:05 PM``."""
    hour = moment.hour % 12 or 12
    return (
        f"{moment:%b} {moment.day}, {moment.year}, {hour}:{moment:%M:%S} {'AM' if moment.hour < 12 else 'PM'}"
    )


# -- normal traffic -------------------------------------------------------------------------------------
def normal_traffic(gen: DayTraffic, target: int) -> None:
    shares = GROUP_SHARES["weekend" if gen.weekend else "workday"]
    _humans(gen, round(target * shares["humans"]))
    _ci(gen, round(target * shares["ci"]))
    _lambdas(gen, round(target * shares["lambda"]))
    _instances(gen, round(target * shares["instances"]))
    _services(gen, round(target * shares["services"]))
    _scanner(gen, round(target * shares["scanner"]))


def _spread(gen: DayTraffic, n: int, start: int, length: int) -> list[int]:
    """``n`` seconds of the day, uniform in ``[start, start + length)``, wrapping at midnight."""
    rand = gen.rng.random
    return [(start + int(rand() * length)) % 86400 for _ in range(n)]


def _humans(gen: DayTraffic, budget: int) -> None:
    """People: a console sign-in or two in their working hours, then console and CLI calls."""
    rng = gen.rng
    plans = []
    for user in USERS:
        active = (user.profile == "ops" and rng.random() < 0.2) if gen.weekend else rng.random() < 0.93
        if active:
            start_local = 7.5 + rng.random() * 2.5
            plans.append(
                (
                    user,
                    int(((start_local - user.utc_offset) % 24) * 3600),
                    int((7.5 + rng.random() * 2.5) * 3600),
                )
            )
    if not gen.weekend:
        plans.append((SERVICE_USER, 5 * 3600 + rng.randrange(1800), 3600))
    weight = sum(p[0].weight for p in plans) or 1.0
    for user, start, length in plans:
        profile, rate = PROFILES[user.profile], ERROR_RATES["human"]
        n = round(budget * user.weight / weight)
        sessions = _console_sessions(gen, user, start, length) if user.console > 0 else []
        n_console = round(n * user.console) if sessions else 0
        console_time = sum(end - begin for begin, end, _, _ in sessions)
        for begin, end, today, yesterday in sessions:
            times = [
                begin + 20 + int(rng.random() * (end - begin - 20))
                for _ in range(round(n_console * (end - begin) / console_time))
            ]
            gen.traffic(today, profile, [t for t in times if t < 86400], rate)
            gen.traffic(yesterday, profile, [t - 86400 for t in times if t >= 86400], rate)
        n_cli = max(0, n - n_console - 2 * len(sessions))
        for i, env in enumerate(user.envs):
            part = (
                n_cli
                if len(user.envs) == 1
                else round(n_cli * (0.7 if i == 0 else 0.3 / (len(user.envs) - 1)))
            )
            gen.traffic(cli_actor(user, ACCOUNT[env]), profile, _spread(gen, part, start, length), rate)


def access_key_id(user: str, account: Account) -> str:
    """The user's long-lived access key id: the same every day (and when it leaks)."""
    return _stable_id("AKIA", account.id, user, "key1", length=16)


def cli_actor(user: User, account: Account) -> Actor:
    return Actor(
        f"cli:{user.name}:{account.env}",
        account,
        user_identity(user.name, account, access_key_id(user.name, account)),
        user.ips,
        TOOLS[user.tool],
        _cum(account.region_weights),
        subs={"<self>": user.name},
    )


def _console_sessions(gen: DayTraffic, user: User, start: int, length: int) -> list[tuple[int, int, Actor, Actor]]:
    """One or two console sign-ins (now and then after a mistyped password) and the sessions they open.

    Times run past 86400 when the working day crosses midnight UTC; calls after midnight belong to the
    same session begun the evening before, so they get a second actor whose creationDate is yesterday's."""
    rng = gen.rng
    logins = [start + rng.randrange(1800)]
    if rng.random() < 0.3:
        logins.append(start + length // 2 + rng.randrange(1800))
    sessions = []
    for i, login in enumerate(logins):
        end = logins[i + 1] if i + 1 < len(logins) else start + length
        if login >= 86400:
            login, end = login - 86400, end - 86400
        account = ACCOUNT[user.envs[0] if i == 0 or len(user.envs) == 1 else rng.choice(user.envs[1:])]
        ip = rng.choice(user.ips)
        browser = BROWSERS[user.browser]
        identity = user_identity(user.name, account, None)
        if rng.random() < 0.06:
            console_login(
                gen,
                max(0, login - rng.randint(15, 90)),
                account,
                identity,
                ip,
                browser,
                mfa=user.mfa,
                success=False,
            )
        if user.mfa:
            gen.emit(
                login,
                _special(
                    Actor("signin", account, _signin_identity(identity), (ip,), browser, EVEN_REGIONS),
                    source="signin.amazonaws.com",
                    name="CheckMfa",
                    region=HOME_REGION,
                    params=None,
                    response={"CheckMfa": "Success"},
                    read_only=False,
                    event_type="AwsConsoleSignIn",
                    extra={"MfaType": "Virtual MFA"},
                    version="1.09",
                    request_id=False,
                    host="signin.aws.amazon.com",
                ),
            )
        console_login(
            gen,
            login,
            account,
            identity,
            ip,
            browser,
            mfa=user.mfa,
            success=True,
            mfa_identifier=f"arn:aws:iam::{account.id}:mfa/{user.name}-phone",
        )
        if end - login < 120:
            continue
        today, yesterday = (
            Actor(
                f"console:{user.name}:{account.env}",
                account,
                user_identity(user.name, account, gen.key(), console_created=created, mfa=user.mfa),
                (ip,),
                browser,
                _cum(account.region_weights),
                console=True,
                subs={"<self>": user.name},
            )
            for created in (gen.iso(login), _iso(gen.day - timedelta(days=1), login))
        )
        sessions.append((login, end, today, yesterday))
    return sessions


def _ci(gen: DayTraffic, budget: int) -> None:
    """GitHub Actions deploys: AssumeRoleWithWebIdentity, then a Terraform burst as the deploy role."""
    rng = gen.rng
    runs = []
    for env, workday, weekend in (("prod", (3, 6), (0, 1)), ("dev", (5, 10), (0, 2))):
        lo, hi = weekend if gen.weekend else workday
        for _ in range(rng.randint(lo, hi)):
            runs.append((ACCOUNT[env], int((13 + rng.random() * 10) * 3600), rng.randint(90, 480)))
    if not runs:
        return
    per_run = max(0, budget - len(runs)) / len(runs)
    for account, t0, duration in sorted(runs, key=itemgetter(1)):
        repo = rng.choice(REPOS)
        subject = f"repo:{repo}:ref:refs/heads/main"
        provider = f"arn:aws:iam::{account.id}:oidc-provider/token.actions.githubusercontent.com"
        role = "github-actions-deploy"
        role_arn = f"arn:aws:iam::{account.id}:role/{role}"
        key, ip = gen.key(), rng.choice(GITHUB_RUNNER_IPS)
        web = Actor(
            "gha",
            account,
            {
                "type": "WebIdentityUser",
                "principalId": f"{provider}:sts.amazonaws.com:{subject}",
                "userName": subject,
                "identityProvider": provider,
            },
            (ip,),
            TOOLS["gha_credentials"],
            only_region(HOME_REGION),
        )
        expires = datetime.combine(gen.day, time(), timezone.utc) + timedelta(seconds=t0 + 3600)
        role_id = _stable_id("AROA", account.id, role)
        gen.emit(
            t0,
            _special(
                web,
                source="sts.amazonaws.com",
                name="AssumeRoleWithWebIdentity",
                region=HOME_REGION,
                read_only=True,
                params={"roleArn": role_arn, "roleSessionName": "GitHubActions", "durationSeconds": 3600},
                response={
                    "credentials": {
                        "accessKeyId": key,
                        "sessionToken": _session_token(gen),
                        "expiration": _aws_time(expires),
                    },
                    "subjectFromWebIdentityToken": subject,
                    "assumedRoleUser": {
                        "assumedRoleId": f"{role_id}:GitHubActions",
                        "arn": f"arn:aws:sts::{account.id}:assumed-role/{role}/GitHubActions",
                    },
                    "provider": provider,
                    "audience": "sts.amazonaws.com",
                },
                extra={
                    "identityProviderConnectionVerificationMethod": "IAMTrustStore",
                    "RoleSessionName": "GitHubActions",
                },
                resources=[
                    {"accountId": account.id, "type": "AWS::IAM::Role", "ARN": role_arn},
                    {"accountId": account.id, "type": "AWS::IAM::OIDCProvider", "ARN": provider},
                ],
                host=f"sts.{HOME_REGION}.amazonaws.com",
            ),
        )
        actor = Actor(
            f"ci:{account.env}",
            account,
            role_identity(role, "GitHubActions", account, key, gen.iso(t0), web_identity=provider),
            (ip,),
            TOOLS["terraform_ci"],
            _cum(account.region_weights),
            subs={"<self>": "deploy"},
        )
        gen.traffic(actor, PROFILES["ci"], _spread(gen, round(per_run), t0 + 4, duration), ERROR_RATES["ci"])


BLOCK = 4 * 3600  # Lambda and instance credentials are refreshed about this often


def _sessions(gen: DayTraffic, n: int, block: int) -> list[tuple[int, list[int]]]:
    """Spread ``n`` calls over the day and group them by credential block: (session start, call times)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for sec in _spread(gen, n, 0, 86400):
        groups[sec // block].append(sec)
    out = []
    for b, secs in sorted(groups.items()):
        first = min(secs)
        out.append((max(b * block, first - gen.rng.randint(1, 120)), secs))
    return out


def _lambdas(gen: DayTraffic, budget: int) -> None:
    """Lambda functions: the service assumes the execution role, the function calls KMS, Secrets Manager, SSM."""
    units = [(f, region) for f in LAMBDAS for region in f.regions]
    weight = sum(f.weight for f, _ in units)
    for f, region in units:
        account = ACCOUNT[f.env]
        n = max(0, round(budget * f.weight / weight) - 6)
        role = f"{f.name}-role"
        for created, secs in _sessions(gen, n, BLOCK):
            key = gen.key()
            _assume_role_by_service(gen, created, account, region, "lambda.amazonaws.com", role, f.name, key)
            ri = REGIONS.index(region)
            actor = Actor(
                f"lambda:{f.env}:{f.name}:{region}",
                account,
                role_identity(role, f.name, account, key, gen.iso(created)),
                (account.nat_ips[ri],) if f.vpc else LAMBDA_IPS[region],
                TOOLS[f.runtime],
                only_region(region),
                vpce="on" if f.vpc else None,
                private_ip=_private_ip(account, ri, 3, 40 + LAMBDAS.index(f)),
            )
            gen.traffic(actor, PROFILES[f.profile], secs, ERROR_RATES["lambda"])


def _instances(gen: DayTraffic, budget: int) -> None:
    """EC2 instance profiles: EC2 assumes the role, the SSM agent and kubelet call through VPC endpoints."""
    units = [(g, i) for g in INSTANCE_GROUPS for i in range(g.count)]
    weight = sum(g.weight / g.count for g, _ in units)
    for g, i in units:
        account = ACCOUNT[g.env]
        ri = REGIONS.index(g.region)
        instance = "i-0" + stable_hex(account.id, g.role, g.region, str(i), length=16)
        private_ip = _private_ip(account, ri, i % 8, 11 + (i * 37) % 240)
        n = max(0, round(budget * (g.weight / g.count) / weight) - 6)
        for created, secs in _sessions(gen, n, BLOCK):
            key = gen.key()
            _assume_role_by_service(
                gen, created, account, g.region, "ec2.amazonaws.com", g.role, instance, key
            )
            actor = Actor(
                f"ec2:{instance}",
                account,
                role_identity(g.role, instance, account, key, gen.iso(created)),
                (account.nat_ips[ri],),
                TOOLS[g.agent],
                only_region(g.region),
                vpce="on",
                private_ip=private_ip,
                subs={"<instance>": instance, "<ip>": private_ip, "<self>": instance},
            )
            gen.traffic(actor, PROFILES[g.profile], secs, ERROR_RATES["instance"])


def _private_ip(account: Account, region_index: int, subnet: int, host: int) -> str:
    """An address in the account's VPC for the region: 10.<account>.<region subnet>.<host>."""
    return f"{account.vpc}.{16 * region_index + subnet}.{host}"


def _services(gen: DayTraffic, budget: int) -> None:
    """AWS services at work: AWS Config's recorder, Auto Scaling, key rotation and secret rotation events."""
    rng = gen.rng
    recorders = [(a, r) for a in ACCOUNTS for r in REGIONS]
    config_n = round(budget * 0.78 / len(recorders))
    for account, region in recorders:
        role, session = "AWSServiceRoleForConfig", "AWSConfig-Describe"
        for created, secs in _sessions(gen, max(0, config_n - 6), BLOCK):
            key = gen.key()
            _assume_role_by_service(
                gen,
                created,
                account,
                region,
                "config.amazonaws.com",
                role,
                session,
                key,
                path="aws-service-role/config.amazonaws.com/",
            )
            actor = Actor(
                f"config:{account.env}:{region}",
                account,
                role_identity(
                    role,
                    session,
                    account,
                    key,
                    gen.iso(created),
                    path="aws-service-role/config.amazonaws.com/",
                ),
                ("config.amazonaws.com",),
                "config.amazonaws.com",
                only_region(region),
                service="config.amazonaws.com",
                subs={"<token>": stable_hex(account.id, region, "config", length=40)},
            )
            gen.traffic(actor, PROFILES["config_recorder"], secs, ERROR_RATES["service"])
    groups = [(ACCOUNT["prod"], "us-east-1"), (ACCOUNT["prod"], "eu-west-1"), (ACCOUNT["dev"], "us-east-1")]
    for account, region in groups:
        role = "AWSServiceRoleForAutoScaling"
        actor = Actor(
            f"autoscaling:{account.env}:{region}",
            account,
            role_identity(
                role,
                "AutoScaling",
                account,
                gen.key(),
                gen.iso(0),
                path="aws-service-role/autoscaling.amazonaws.com/",
            ),
            ("autoscaling.amazonaws.com",),
            "autoscaling.amazonaws.com",
            only_region(region),
            service="autoscaling.amazonaws.com",
        )
        gen.traffic(
            actor,
            PROFILES["autoscaling"],
            _spread(gen, round(budget * 0.2 / len(groups)), 0, 86400),
            ERROR_RATES["service"],
        )
    for account in ACCOUNTS:
        internal = Actor(
            "aws-internal",
            account,
            {"accountId": account.id, "invokedBy": "AWS Internal"},
            ("AWS Internal",),
            "AWS Internal",
            EVEN_REGIONS,
        )
        if rng.random() < 0.3:
            key_id = _uuid_from(account.id, gen.day.isoformat())
            region = rng.choices(REGIONS, cum_weights=_cum(account.region_weights))[0]
            gen.emit(
                rng.randrange(86400),
                _special(
                    internal,
                    source="kms.amazonaws.com",
                    name="RotateKey",
                    region=region,
                    params=None,
                    response=None,
                    read_only=False,
                    event_type="AwsServiceEvent",
                    resources=[
                        {
                            "accountId": account.id,
                            "type": "AWS::KMS::Key",
                            "ARN": f"arn:aws:kms:{region}:{account.id}:key/{key_id}",
                        }
                    ],
                    service_details={"keyId": key_id},
                    request_id=False,
                    version="1.11",
                ),
            )
        if account.env != "security" and rng.random() < 0.5:
            secret = f"arn:aws:secretsmanager:{HOME_REGION}:{account.id}:secret:{SECRET_NAMES[0].replace('<env>', account.env)}-Qx3rTb"
            sec = rng.randrange(86400 - 600)
            for offset, name in ((0, "RotationStarted"), (rng.randint(20, 300), "RotationSucceeded")):
                gen.emit(
                    sec + offset,
                    _special(
                        Actor(
                            "sm",
                            account,
                            {"accountId": account.id, "invokedBy": "secretsmanager.amazonaws.com"},
                            ("secretsmanager.amazonaws.com",),
                            "secretsmanager.amazonaws.com",
                            EVEN_REGIONS,
                        ),
                        source="secretsmanager.amazonaws.com",
                        name=name,
                        region=HOME_REGION,
                        params=None,
                        response=None,
                        read_only=False,
                        event_type="AwsServiceEvent",
                        service_details={"secretId": secret},
                        request_id=False,
                        version="1.11",
                    ),
                )


def _uuid_from(*parts: str) -> str:
    h = stable_hex(*parts, length=32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def _scanner(gen: DayTraffic, budget: int) -> None:
    """The nightly posture scan: the security account's task assumes an audit role in every account and
    reads everything in every region (many List/Describe calls, some AccessDenied: the near miss of recon)."""
    if budget <= 0:
        return
    rng = gen.rng
    security = ACCOUNT["security"]
    task_role_id = _stable_id("AROA", security.id, "prowler-task-role")
    start = int(1.5 * 3600) + rng.randrange(1200)
    for account in ACCOUNTS:
        t0 = start + rng.randrange(300)
        key = gen.key()
        session = f"prowler-{gen.day:%Y%m%d}"
        role = "security-audit"
        role_arn = f"arn:aws:iam::{account.id}:role/{role}"
        if account is security:
            caller = role_identity("prowler-task-role", "ecs-task", security, gen.key(), gen.iso(t0 - 60))
        else:
            caller = {
                "type": "AWSAccount",
                "principalId": f"{task_role_id}:ecs-task",
                "accountId": security.id,
            }
        nat = (security.nat_ips[0],)
        expires = datetime.combine(gen.day, time(), timezone.utc) + timedelta(seconds=t0 + 3600)
        gen.emit(
            t0,
            _special(
                Actor("scanner", account, caller, nat, TOOLS["scanner"], only_region(HOME_REGION)),
                source="sts.amazonaws.com",
                name="AssumeRole",
                region=HOME_REGION,
                read_only=True,
                params={
                    "roleArn": role_arn,
                    "roleSessionName": session,
                    "externalId": "HIDDEN_DUE_TO_SECURITY_REASONS",
                    "durationSeconds": 3600,
                },
                response={
                    "credentials": {
                        "accessKeyId": key,
                        "sessionToken": _session_token(gen),
                        "expiration": _aws_time(expires),
                    },
                    "assumedRoleUser": {
                        "assumedRoleId": f"{_stable_id('AROA', account.id, role)}:{session}",
                        "arn": f"arn:aws:sts::{account.id}:assumed-role/{role}/{session}",
                    },
                },
                resources=[{"accountId": account.id, "type": "AWS::IAM::Role", "ARN": role_arn}],
                host=f"sts.{HOME_REGION}.amazonaws.com",
            ),
        )
        actor = Actor(
            f"scanner:{account.env}",
            account,
            role_identity(role, session, account, key, gen.iso(t0)),
            nat,
            TOOLS["scanner"],
            EVEN_REGIONS,
            subs={"<self>": SERVICE_USER.name},
        )
        duration = rng.randint(1200, 2400)
        gen.traffic(
            actor,
            PROFILES["scanner"],
            _spread(gen, max(0, budget // len(ACCOUNTS) - 1), t0 + 2, duration),
            ERROR_RATES["scanner"],
        )


