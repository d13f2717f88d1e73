"""Where an address is: a hosting provider, a VPN or Tor exit, AWS itself; offline, from dated data.

Why: EC2 instance credentials are only ever used from inside AWS; a call from a Tor exit or a VPN is worth
a second look; the reasons must say how old the data behind them is. The shipped data is the ``iporigin``
package's table (providers' own published feeds, AWS's ``ip-ranges.json`` among them; its build date is
:func:`snapshot_date`), pinned in the lock, so nothing is fetched at run time. AWS's ranges can be
refreshed from an ``ip-ranges.json`` the user downloads (``trailguard ip-ranges --from FILE``): it is
copied to ``<data root>/intel/aws-ip-ranges.json`` and wins over the shipped snapshot from then on.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

AWS_RANGES_FILE = "aws-ip-ranges.json"
HOSTING, VPN, TOR, CDN, BOT, RESERVED, UNKNOWN = "hosting", "vpn", "tor", "cdn", "bot", "reserved", "unknown"
ANONYMISERS = frozenset({VPN, TOR})


@dataclass(frozen=True)
class Origin:
    kind: str  # hosting, cdn, vpn, tor, bot, reserved, unknown; "" when not an IP address
    provider: str


def parse_ip(text: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from CloudTrail's sourceIPAddress, None for a service name ("ec2.amazonaws.com") or junk."""
    if not isinstance(text, str) or not text or len(text) > 64:
        return None
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


@functools.lru_cache(maxsize=1)
def _iporigin() -> Any:
    import iporigin

    return iporigin


@functools.lru_cache(maxsize=65536)
def origin_of(ip: str) -> Origin:
    """The kind of network an address belongs to, from the shipped table (no network call)."""
    address = parse_ip(ip)
    if address is None:
        return Origin("", "")
    if not address.is_global:
        return Origin(RESERVED, "")
    found = _iporigin().classify(str(address))
    return Origin(str(found.kind), str(found.provider or ""))


@functools.lru_cache(maxsize=1)
def snapshot_date() -> str:
    """The build date of the shipped network table (UTC, YYYY-MM-DD)."""
    built = _iporigin().dataset_info().get("built_at")
    return datetime.fromtimestamp(int(built), tz=timezone.utc).strftime("%Y-%m-%d") if built else "unknown"


class AwsRanges:
    """AWS's address ranges as sorted intervals: a lookup is a binary search."""

    def __init__(self, spans: dict[int, list[tuple[int, int]]], date: str, source: str):
        self.date = date
        self.source = source
        self.count = sum(len(v) for v in spans.values())
        self._spans: dict[int, tuple[list[int], list[int]]] = {}
        for version in (4, 6):
            merged: list[list[int]] = []
            for start, end in sorted(spans.get(version, [])):
                if merged and start <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            self._spans[version] = ([s for s, _ in merged], [e for _, e in merged])

    @classmethod
    def of(cls, networks: list[Any], date: str, source: str) -> AwsRanges:
        spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for n in networks:
            spans[n.version].append((int(n.network_address), int(n.broadcast_address)))
        return cls(spans, date, source)

    def __contains__(self, ip: Any) -> bool:
        address = parse_ip(ip) if not isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else ip
        if address is None:
            return False
        starts, ends = self._spans[address.version]
        i = bisect.bisect_right(starts, int(address)) - 1
        return i >= 0 and int(address) <= ends[i]

    @property
    def label(self) -> str:
        """``AWS IP ranges of 2026-10-06 (shipped)`` for the reasons."""
        return f"AWS IP ranges of {self.date} ({self.source})"


def parse_aws_ranges(data: bytes | str, source: str = "file") -> AwsRanges:
    """An AWS ``ip-ranges.json`` document (``createDate``, ``prefixes[].ip_prefix``,
    ``ipv6_prefixes[].ipv6_prefix``); a wrong document is a ValueError that says what is missing."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not an AWS ip-ranges.json document: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("prefixes"), list):
        raise ValueError("not an AWS ip-ranges.json document: no 'prefixes' list")
    networks = []
    for item in document.get("prefixes", []) + list(document.get("ipv6_prefixes") or []):
        text = item.get("ip_prefix") or item.get("ipv6_prefix") if isinstance(item, dict) else None
        try:
            networks.append(ipaddress.ip_network(str(text), strict=False))
        except ValueError:
            log.warning("ip-ranges.json: skipped an entry that is not a network: %.80r", text)
    if not networks:
        raise ValueError("not an AWS ip-ranges.json document: no network in 'prefixes'")
    created = str(document.get("createDate") or "")
    date = created[:10] if len(created) >= 10 else "unknown"
    return AwsRanges.of(networks, date, source)


def _shipped_aws_ranges() -> AwsRanges:
    """AWS's ranges as the shipped table holds them (provider ``Amazon AWS``)."""
    data = _iporigin()._data.dataset()
    spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for version, starts, ends, labels in (
        (4, data.v4_starts, data.v4_ends, data.v4_labels),
        (6, data.v6_starts, data.v6_ends, data.v6_labels),
    ):
        spans[version] = [
            (int(start), int(end))
            for start, end, label in zip(starts, ends, labels, strict=True)
            if data.labels[label][0] == "Amazon AWS"
        ]
    return AwsRanges(spans, snapshot_date(), "shipped")


def aws_ranges_path(data_root: Any) -> Any:
    from trailguard.store.fs import as_path

    return as_path(data_root) / "intel" / AWS_RANGES_FILE


@functools.lru_cache(maxsize=4)
def aws_ranges(data_root: str | None = None) -> AwsRanges:
    """AWS's ranges: the refreshed file in the data root when there is one, else the shipped snapshot."""
    if data_root is None:
        from trailguard.store.settings import load_settings

        data_root = load_settings().data_root
    try:
        path = aws_ranges_path(data_root)
        if path.exists():
            return parse_aws_ranges(path.read_bytes(), source=f"refreshed, {AWS_RANGES_FILE}")
    except (OSError, ValueError) as exc:
        log.warning("the refreshed AWS IP ranges are unusable (%s): the shipped snapshot is used", exc)
    return _shipped_aws_ranges()


def refresh_aws_ranges(source: str | Path, data_root: Any) -> AwsRanges:
    """Check an ``ip-ranges.json`` and make it the data root's AWS ranges (atomic replace)."""
    from trailguard.store.events import write_bytes_atomic
    from trailguard.store.fs import as_path

    data = as_path(source).read_bytes()
    ranges = parse_aws_ranges(data, source=f"refreshed, {AWS_RANGES_FILE}")
    write_bytes_atomic(data, aws_ranges_path(data_root))
    aws_ranges.cache_clear()
    return ranges
