"""Context an analyst adds to a CloudTrail event by eye: where the address is, whose network, which tool.

The paper this project follows expects GeoIP (MaxMind) and VPC context to improve its risk model; this
module adds them, plus the Splunk App for AWS event categories and a user-agent family. Every function is
vectorised over the *unique* values of a column (a day has millions of events but only thousands of
addresses or agents), then mapped back to the rows with integer codes.

GeoIP: MaxMind ``.mmdb`` files through ``geoip2`` when ``TRAILGUARD_GEOIP_MMDB`` /
``TRAILGUARD_GEOIP_ASN_MMDB`` name them, else geoip2fast's bundled country + ASN database (offline, loaded
once per process). Addresses that are not on the internet get a pseudo-country: ``private`` (RFC 1918,
fc00::/7, loopback, link-local, or a call through a VPC endpoint), ``AWS`` (an AWS service calling on the
principal's behalf: ``*.amazonaws.com`` or ``AWS Internal``) and ``unknown``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from trailguard.detect.policy import READ_ONLY_PREFIXES

log = logging.getLogger(__name__)

PRIVATE = "private"
AWS = "AWS"
UNKNOWN = "unknown"

_PRIVATE_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "100.64.0.0/10",  # carrier-grade NAT, also what some AWS-internal paths show
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
)

# network_zone values: where the call came from, as far as the address tells
ZONE_PUBLIC = "public"
ZONE_PRIVATE = "private"
ZONE_VPC_ENDPOINT = "vpc_endpoint"
ZONE_AWS_SERVICE = "aws_service"
ZONE_UNKNOWN = "unknown"

GEO_COLUMNS = ("country", "asn", "ip_network", "network_zone")


@dataclass(frozen=True)
class IpInfo:
    """What one address resolves to; ``network`` is its /24 (IPv4) or /48 (IPv6), the unit of
    "same place" for first-seen checks."""

    country: str
    asn: str
    network: str
    zone: str


def _is_aws_service_name(value: str) -> bool:
    return value == "AWS Internal" or value.endswith(".amazonaws.com") or value.endswith(".amazonaws.com.cn")


def _network_of(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


class GeoLookup:
    """Country and ASN of public addresses; one backend per process (see :func:`default_enricher`)."""

    name = "none"

    def lookup(self, ip: str) -> tuple[str, str]:  # pragma: no cover - interface
        """(ISO country code or "", ASN text or "") of a public address."""
        raise NotImplementedError


class Geoip2FastLookup(GeoLookup):
    """The offline default: geoip2fast's bundled country + ASN data (IPv4 and IPv6)."""

    name = "geoip2fast"
    DATA_FILE = "geoip2fast-asn-ipv6.dat.gz"

    def __init__(self) -> None:
        import geoip2fast
        from geoip2fast import GeoIP2Fast

        started = time.perf_counter()
        path = Path(geoip2fast.__file__).with_name(self.DATA_FILE)
        self._db = GeoIP2Fast(geoip2fast_data_file=str(path), verbose=False)
        log.info("geoip2fast %s loaded in %.2fs", self.DATA_FILE, time.perf_counter() - started)

    def lookup(self, ip: str) -> tuple[str, str]:
        result = self._db.lookup(ip)
        country = result.country_code or ""
        if country == "--":  # geoip2fast's code for reserved / unassigned ranges
            country = ""
        return country, result.asn_name or ""


class MaxMindLookup(GeoLookup):
    """MaxMind GeoIP2/GeoLite2 ``.mmdb`` files (Country or City, and ASN) through ``geoip2``."""

    name = "maxmind"

    def __init__(self, country_mmdb: str | None, asn_mmdb: str | None) -> None:
        import geoip2.database

        self._country = geoip2.database.Reader(country_mmdb) if country_mmdb else None
        self._asn = geoip2.database.Reader(asn_mmdb) if asn_mmdb else None
        kind = self._country.metadata().database_type if self._country else ""
        self._country_method = (
            self._country.city
            if (self._country and "City" in kind)
            else (self._country.country if self._country else None)
        )
        self._fallback = Geoip2FastLookup() if not (self._country and self._asn) else None

    def lookup(self, ip: str) -> tuple[str, str]:
        import geoip2.errors

        country = asn = ""
        if self._country_method is not None:
            try:
                country = self._country_method(ip).country.iso_code or ""
            except (geoip2.errors.AddressNotFoundError, ValueError):
                pass
        if self._asn is not None:
            try:
                found = self._asn.asn(ip)
                number = found.autonomous_system_number
                org = found.autonomous_system_organization or ""
                asn = f"AS{number} {org}".strip() if number else org
            except (geoip2.errors.AddressNotFoundError, ValueError):
                pass
        if self._fallback is not None and (not country or not asn):
            fb_country, fb_asn = self._fallback.lookup(ip)
            country, asn = country or fb_country, asn or fb_asn
        return country, asn


class Enricher:
    """Resolves addresses to :class:`IpInfo`, remembering every address it has seen (they repeat)."""

    def __init__(self, geo: GeoLookup, cache_limit: int = 2_000_000) -> None:
        self.geo = geo
        self._cache: dict[str, IpInfo] = {}
        self._cache_limit = cache_limit
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        return self.geo.name

    def info(self, value: str | None) -> IpInfo:
        """One sourceIPAddress (any text CloudTrail puts there) as :class:`IpInfo`."""
        if value is None or value == "":
            return IpInfo(UNKNOWN, UNKNOWN, UNKNOWN, ZONE_UNKNOWN)
        cached = self._cache.get(value)
        if cached is not None:
            return cached
        found = self._resolve(value)
        with self._lock:
            if len(self._cache) >= self._cache_limit:
                self._cache.clear()
            self._cache[value] = found
        return found

    def _resolve(self, value: str) -> IpInfo:
        text = value.strip()
        if _is_aws_service_name(text):
            return IpInfo(AWS, AWS, text, ZONE_AWS_SERVICE)
        try:
            addr = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return IpInfo(UNKNOWN, UNKNOWN, text[:64], ZONE_UNKNOWN)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        network = _network_of(addr)
        if any(addr in net for net in _PRIVATE_NETS if net.version == addr.version):
            return IpInfo(PRIVATE, PRIVATE, network, ZONE_PRIVATE)
        country, asn = self.geo.lookup(str(addr))
        return IpInfo(country or UNKNOWN, asn or UNKNOWN, network, ZONE_PUBLIC)

    def enrich(self, ips: pd.Series, vpc_endpoint: pd.Series | None = None) -> pd.DataFrame:
        """``country``, ``asn``, ``ip_network``, ``network_zone`` for each row of ``ips`` (same index).

        A call through a VPC endpoint comes from inside the VPC whatever address it shows: such rows
        get country/asn ``private`` and zone ``vpc_endpoint``.
        """
        codes, uniques = pd.factorize(ips, use_na_sentinel=True)
        infos = [self.info(v if isinstance(v, str) else None) for v in uniques]
        missing = len(infos)
        infos.append(IpInfo(UNKNOWN, UNKNOWN, UNKNOWN, ZONE_UNKNOWN))
        infos.append(IpInfo(PRIVATE, PRIVATE, UNKNOWN, ZONE_VPC_ENDPOINT))
        codes = np.where(codes < 0, missing, codes)
        geo_codes = codes
        if vpc_endpoint is not None:
            geo_codes = np.where(present(vpc_endpoint), missing + 1, codes)
        return pd.DataFrame(
            {
                "country": take_text([i.country for i in infos], geo_codes, ips.index),
                "asn": take_text([i.asn for i in infos], geo_codes, ips.index),
                "ip_network": take_text([i.network for i in infos], codes, ips.index),
                "network_zone": take_text([i.zone for i in infos], geo_codes, ips.index),
            },
            index=ips.index,
        )


_DEFAULT: dict[tuple[str | None, str | None], Enricher] = {}
_DEFAULT_LOCK = threading.Lock()


def default_enricher(country_mmdb: str | None = None, asn_mmdb: str | None = None) -> Enricher:
    """The process-wide enricher: MaxMind files when given (or set in the settings), else geoip2fast.

    Loading a GeoIP database takes a fraction of a second and tens of MB, so it is done once per
    process and shared.
    """
    if country_mmdb is None and asn_mmdb is None:
        from trailguard.store.settings import load_settings

        settings = load_settings()
        country_mmdb, asn_mmdb = settings.geoip_mmdb, settings.geoip_asn_mmdb
    key = (country_mmdb, asn_mmdb)
    with _DEFAULT_LOCK:
        if key not in _DEFAULT:
            geo: GeoLookup = (
                MaxMindLookup(country_mmdb, asn_mmdb) if (country_mmdb or asn_mmdb) else Geoip2FastLookup()
            )
            _DEFAULT[key] = Enricher(geo)
        return _DEFAULT[key]


# -- helpers over columns ------------------------------------------------------------------------------
def present(values: pd.Series) -> np.ndarray:
    """True where a text field holds something (not null, not empty)."""
    arr = pa.array(values, from_pandas=True)
    if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        arr = pc.cast(arr, pa.string()) if not pa.types.is_null(arr.type) else pa.nulls(len(arr), pa.string())
    return pc.fill_null(pc.greater(pc.utf8_length(arr), 0), False).to_numpy(zero_copy_only=False)


def take_text(values: list[str | None] | np.ndarray, codes: np.ndarray, index: pd.Index) -> pd.Series:
    """A text column from a small list of values and one code per row, built in Arrow (no Python
    string per row)."""
    taken = pa.array(list(values), type=pa.large_string()).take(pa.array(codes, type=pa.int64()))
    return pd.Series(taken, index=index, dtype="str")


def factorize_text(values: pd.Series) -> tuple[np.ndarray, list[str | None]]:
    """Factorize codes (missing values get the last code) and the distinct values (None last)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    distinct: list[str | None] = [v if isinstance(v, str) else None for v in uniques]
    codes = np.where(codes < 0, len(distinct), codes)
    distinct.append(None)
    return codes, distinct


def map_unique(values: pd.Series, classify: Callable[[str | None], object], dtype: str = "str") -> pd.Series:
    """``classify`` applied once per distinct value, broadcast back to the rows."""
    codes, distinct = factorize_text(values)
    mapped = [classify(v) for v in distinct]
    if dtype == "str":
        return take_text(mapped, codes, values.index)  # type: ignore[arg-type]
    return pd.Series(np.asarray(mapped, dtype=dtype)[codes], index=values.index)


def _map_pairs(a: pd.Series, b: pd.Series, classify: Callable[[str | None, str | None], int]) -> np.ndarray:
    """``classify(a, b)`` once per distinct pair, broadcast back as an int array."""
    a_codes, a_distinct = factorize_text(a)
    b_codes, b_distinct = factorize_text(b)
    key = a_codes.astype(np.int64) * (len(b_distinct) + 1) + b_codes
    pair_codes, pairs = pd.factorize(key)
    width = len(b_distinct) + 1
    mapped = np.array(
        [classify(a_distinct[k // width], b_distinct[k % width]) for k in pairs], dtype=np.int64
    )
    return mapped[pair_codes]


# -- user agent ------------------------------------------------------------------------------------------
UA_FAMILIES = (
    "console",
    "browser",
    "aws-cli",
    "boto3",
    "aws-sdk-go",
    "aws-sdk-java",
    "aws-sdk-js",
    "aws-sdk-other",
    "terraform",
    "cloudformation",
    "aws-service",
    "other",
    "none",
)
_UA_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (family, re.compile(pattern, re.IGNORECASE))
    for family, pattern in (
        ("terraform", r"terraform|hashicorp"),
        ("cloudformation", r"cloudformation"),
        (
            "console",
            r"^(\[?s3console|console\.[\w.-]*amazonaws\.com|signin\.amazonaws\.com|aws-console|\[?aws-internal/)",
        ),
        ("aws-service", r"^(aws internal|[\w.-]+\.amazonaws\.com(\.cn)?)$|^aws-internal"),
        ("aws-cli", r"^aws-cli/"),
        ("boto3", r"boto3/|botocore/|^boto/"),
        ("aws-sdk-go", r"aws-sdk-go"),
        ("aws-sdk-java", r"aws-sdk-java|aws-java-sdk"),
        ("aws-sdk-js", r"aws-sdk-js|aws-sdk-nodejs"),
        ("aws-sdk-other", r"aws-sdk-|aws-powershell|awspowershell|aws-toolkit"),
        ("browser", r"^mozilla/|chrome/|safari/|firefox/|edge/|opera/"),
    )
)
# offensive tooling and distributions GuardDuty calls out (PenTest:IAMUser/KaliLinux and friends)
_UA_OFFENSIVE = re.compile(
    r"kali|parrot|pentoo|pacu|stratus-red-team|cloudfox|scoutsuite|weirdaal|cloudgoat|endgame|\bnuclei\b|"
    r"python-requests/|curl/|go-http-client",
    re.IGNORECASE,
)


def ua_family_of(agent: str | None) -> str:
    """The tool family of one userAgent string (see UA_FAMILIES)."""
    if not agent:
        return "none"
    for family, pattern in _UA_RULES:
        if pattern.search(agent):
            return family
    return "other"


def ua_family(agents: pd.Series) -> pd.Series:
    """User-agent family per row: console/browser, aws-cli, boto3, the SDKs, terraform, cloudformation,
    an AWS service, other, none."""
    return map_unique(agents, ua_family_of)


def ua_offensive(agents: pd.Series) -> pd.Series:
    """True where the agent names an offensive tool or a penetration-testing distribution (Kali...)."""
    return map_unique(agents, lambda a: bool(a) and bool(_UA_OFFENSIVE.search(a)), dtype="bool")


# -- event category (Splunk App for AWS event types) ----------------------------------------------------
CATEGORIES = (
    "error",
    "auth",
    "iam_change",
    "notable_network",
    "network",
    "delete",
    "sns",
    "ec2",
    "change",
    "read",
)
_AUTH_NAMES = frozenset(
    {
        "ConsoleLogin",
        "CheckMfa",
        "SwitchRole",
        "ExitRole",
        "RenewRole",
        "GetSigninToken",
        "AssumeRole",
        "AssumeRoleWithSAML",
        "AssumeRoleWithWebIdentity",
        "GetSessionToken",
        "GetFederationToken",
        "AssumeRoot",
        "PasswordRecoveryRequested",
        "PasswordRecoveryCompleted",
        "CredentialVerification",
        "CredentialChallenge",
        "UserAuthentication",
        "Federate",
        "Authenticate",
    }
)
_NOTABLE_NETWORK = frozenset(
    {
        "AuthorizeSecurityGroupIngress",
        "AuthorizeSecurityGroupEgress",
        "RevokeSecurityGroupIngress",
        "RevokeSecurityGroupEgress",
        "CreateSecurityGroup",
        "DeleteSecurityGroup",
        "ModifySecurityGroupRules",
        "CreateNetworkAcl",
        "CreateNetworkAclEntry",
        "DeleteNetworkAcl",
        "DeleteNetworkAclEntry",
        "ReplaceNetworkAclEntry",
        "ReplaceNetworkAclAssociation",
        "AttachInternetGateway",
        "CreateInternetGateway",
        "DetachInternetGateway",
        "DeleteInternetGateway",
        "CreateVpcPeeringConnection",
        "AcceptVpcPeeringConnection",
        "CreateRoute",
        "ReplaceRoute",
        "DeleteRoute",
        "CreateCustomerGateway",
        "CreateVpnConnection",
        "DeleteFlowLogs",
        "ModifyVpcEndpoint",
        "ModifyInstanceAttribute",
    }
)
_NETWORK_WORDS = re.compile(
    r"SecurityGroup|NetworkAcl|Vpc|Route|Subnet|InternetGateway|NatGateway|TransitGateway|VpnGateway|"
    r"NetworkInterface|Address|FlowLogs|Dhcp|PrefixList|VpnConnection|CustomerGateway"
)
_DELETE_PREFIXES = (
    "Delete",
    "Remove",
    "Terminate",
    "Detach",
    "Disassociate",
    "Deregister",
    "Purge",
    "Destroy",
)


def _read_name(name: str) -> bool:
    return name.startswith(READ_ONLY_PREFIXES)


def _name_category(source: str | None, name: str | None) -> str:
    """The category an error-free call gets from its eventSource and eventName alone."""
    source, name = source or "", name or ""
    if name in _AUTH_NAMES or source in ("signin.amazonaws.com", "sts.amazonaws.com", "sso.amazonaws.com"):
        return "auth"
    read = _read_name(name)
    if source == "iam.amazonaws.com" and not read:
        return "iam_change"
    if name in _NOTABLE_NETWORK:
        return "notable_network"
    if not read and source == "ec2.amazonaws.com" and _NETWORK_WORDS.search(name):
        return "network"
    if name.startswith(_DELETE_PREFIXES):
        return "delete"
    if source == "sns.amazonaws.com":
        return "sns"
    if read:
        return "read"
    if source == "ec2.amazonaws.com":
        return "ec2"
    return "change"


_CATEGORY_CODE = {c: i for i, c in enumerate(CATEGORIES)}
_READ_OVERRIDABLE = np.array([c in ("change", "ec2", "delete", "sns") for c in CATEGORIES])


def event_category(df: pd.DataFrame) -> pd.Series:
    """One category per event, like the Splunk App for AWS event types, first match wins: ``error``
    (errorCode set, or a failed console sign-in), auth (sign-in / STS), iam_change, notable_network
    (security-group / NACL / gateway / route changes), network (other VPC changes), delete, sns, read
    (Get/List/Describe... or readOnly), ec2 (other EC2 changes), change."""
    empty = pd.Series(None, index=df.index, dtype="str")
    codes = _map_pairs(
        df["eventSource"] if "eventSource" in df else empty,
        df["eventName"] if "eventName" in df else empty,
        lambda source, name: _CATEGORY_CODE[_name_category(source, name)],
    )
    if "readOnly" in df:
        # readOnly=true overrides the name heuristic for changes (not for auth / errors)
        read_only = df["readOnly"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        codes = np.where(read_only & _READ_OVERRIDABLE[codes], _CATEGORY_CODE["read"], codes)
    codes = np.where(event_failed(df), _CATEGORY_CODE["error"], codes)
    return take_text(list(CATEGORIES), codes, df.index)


def event_failed(df: pd.DataFrame) -> np.ndarray:
    """True for calls that failed: an errorCode, or a console sign-in whose response says Failure."""
    failed = present(df["errorCode"]) if "errorCode" in df else np.zeros(len(df), dtype=bool)
    if "responseElements.ConsoleLogin" in df:
        login = map_unique(
            df["responseElements.ConsoleLogin"], lambda v: (v or "").lower() == "failure", dtype="bool"
        )
        failed = failed | login.to_numpy(dtype=bool)
    return np.asarray(failed, dtype=bool)


def access_denied(codes: pd.Series) -> pd.Series:
    """True for the error codes that mean "not allowed" (the signature of a stolen key probing)."""
    return map_unique(
        codes,
        lambda c: (
            bool(c) and any(w in c for w in ("AccessDenied", "Unauthorized", "Forbidden", "NotAuthorized"))
        ),
        dtype="bool",
    )
