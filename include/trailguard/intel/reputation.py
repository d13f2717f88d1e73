"""Threat lists the user supplies: addresses and networks known to be bad, each list with its name.

Why: GuardDuty's MaliciousIPCaller(.Custom) and TorIPCaller compare callers with threat intelligence; a
team has its own (a vendor feed, a STIX export, the Tor project's exit list). ``TRAILGUARD_THREAT_LISTS``
names them, comma-separated, each ``path`` or ``name=path``, a local file or ``s3://bucket/key``; the
name (else the file's stem) is what a reason cites. With none set nothing is loaded: offline by default.

Formats, told apart by content: a STIX 2.1 bundle (JSON; ``indicator`` objects whose ``pattern`` compares
``ipv4-addr:value`` or ``ipv6-addr:value``, the indicator's name kept), the Tor project's
``exit-addresses`` (``ExitAddress 1.2.3.4 ...`` lines), CSV with a header (the column named ``ip``,
``ip_address``, ``address``, ``indicator``, ``cidr``, ``network`` or ``value``, else the first column
holding addresses) and plain text (one address or CIDR per line; ``#`` comments). Every entry that is not
an address or network is counted as rejected and logged, never silently dropped.
"""

from __future__ import annotations

import bisect
import csv
import functools
import io
import ipaddress
import itertools
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from trailguard.intel.networks import parse_ip

log = logging.getLogger(__name__)

MAX_LIST_BYTES = 256 * 1024 * 1024  # a threat list larger than this is refused, not read into memory
_CSV_COLUMNS = ("ip", "ip_address", "ipaddress", "address", "indicator", "cidr", "network", "value", "src_ip")
_STIX_VALUE = re.compile(r"(ipv4-addr|ipv6-addr):value\s*(?:=|ISSUBSET)\s*'([^']{1,64})'", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z0-9._ -]{1,64}")


class ThreatListError(ValueError):
    """A threat list could not be read: the message names the list and what is wrong."""


@dataclass
class ThreatList:
    """One named list as sorted address intervals, with a label (e.g. the STIX indicator) per interval."""

    name: str
    source: str
    entries: int = 0
    rejected: int = 0
    updated: str = ""  # the list's date (YYYY-MM-DD: its file's last change), "" when not known
    _starts: dict[int, list[int]] = field(default_factory=dict)
    _ends: dict[int, list[int]] = field(default_factory=dict)
    _labels: dict[int, list[str]] = field(default_factory=dict)
    _reach: dict[int, list[int]] = field(default_factory=dict)  # the largest end up to each entry

    @classmethod
    def build(
        cls, name: str, source: str, items: list[tuple[str, str]], rejected: int, updated: str = ""
    ) -> ThreatList:
        spans: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
        for text, label in items:
            try:
                network = ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                rejected += 1
                log.warning("threat list %s: not an address or network, skipped: %.80r", name, text)
                continue
            spans[network.version].append(
                (int(network.network_address), int(network.broadcast_address), label)
            )
        out = cls(
            name=name,
            source=source,
            entries=len(spans[4]) + len(spans[6]),
            rejected=rejected,
            updated=updated,
        )
        for version, values in spans.items():
            values.sort()
            out._starts[version] = [s for s, _, _ in values]
            out._ends[version] = [e for _, e, _ in values]
            out._labels[version] = [label for _, _, label in values]
            out._reach[version] = list(itertools.accumulate(out._ends[version], max))
        return out

    def match(self, ip: Any) -> str | None:
        """The entry's label ("" when the list gives none) when the address is on the list, else None."""
        address = parse_ip(ip)
        if address is None:
            return None
        starts, ends = self._starts.get(address.version, []), self._ends.get(address.version, [])
        value = int(address)
        i = bisect.bisect_right(starts, value) - 1
        # entries may nest (a /24 and an address in it): walk back while an earlier entry can still cover it
        reach = self._reach.get(address.version, [])
        while i >= 0 and reach[i] >= value:
            if ends[i] >= value:
                return self._labels[address.version][i]
            i -= 1
        return None


def parse_list(name: str, data: bytes, source: str = "", updated: str = "") -> ThreatList:
    """A list from its bytes; the format is recognised from the content (module docstring)."""
    text = data.decode("utf-8-sig", errors="replace")
    head = text.lstrip()[:1]
    if head in ("{", "["):
        items, rejected = _stix(name, text)
    elif re.search(r"^ExitAddress\s", text, flags=re.MULTILINE):
        items = [
            (m.group(1), "Tor exit") for m in re.finditer(r"^ExitAddress\s+(\S+)", text, flags=re.MULTILINE)
        ]
        rejected = 0
    elif _looks_like_csv(text):
        items, rejected = _csv(text)
    else:
        items = [(line.split("#", 1)[0].strip().split()[0], "") for line in text.splitlines()
                 if line.split("#", 1)[0].strip()]  # fmt: skip
        rejected = 0
    if not items:
        raise ThreatListError(f"threat list {name} ({source or 'bytes'}): no address or network found")
    return ThreatList.build(name, source, items, rejected, updated)


def _stix(name: str, text: str) -> tuple[list[tuple[str, str]], int]:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ThreatListError(f"threat list {name}: not valid JSON ({exc})") from exc
    objects = document.get("objects", []) if isinstance(document, dict) else document
    if not isinstance(objects, list):
        raise ThreatListError(f"threat list {name}: a JSON list must be a STIX 2.1 bundle with 'objects'")
    items: list[tuple[str, str]] = []
    rejected = 0
    for obj in objects:
        if not isinstance(obj, dict) or obj.get("type") != "indicator":
            continue
        if obj.get("revoked") is True:
            continue
        values = _STIX_VALUE.findall(str(obj.get("pattern", ""))[:10_000])
        if not values:
            rejected += 1
            continue
        label = str(obj.get("name") or obj.get("id") or "")[:120]
        items.extend((value, label) for _, value in values)
    return items, rejected


def _looks_like_csv(text: str) -> bool:
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    return (
        "," in first and parse_ip(first.split(",", 1)[0].strip().strip('"')) is None and "/" not in first[:20]
    )


def _csv(text: str) -> tuple[list[tuple[str, str]], int]:
    rows = list(csv.reader(io.StringIO(text)))
    header = [h.strip().lower() for h in rows[0]]
    column = next((header.index(c) for c in _CSV_COLUMNS if c in header), None)
    body = rows[1:]
    if column is None:  # the first column whose values are addresses
        column = next(
            (i for i in range(len(header)) if any(_is_network(r[i]) for r in body[:50] if len(r) > i)), 0
        )
    labels = next(
        (header.index(c) for c in ("name", "description", "threat", "tag", "label") if c in header), None
    )
    items, rejected = [], 0
    for row in body:
        if len(row) <= column or not row[column].strip():
            rejected += bool(row)
            continue
        label = row[labels].strip()[:120] if labels is not None and len(row) > labels else ""
        items.append((row[column].strip(), label))
    return items, rejected


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text.strip(), strict=False)
        return True
    except ValueError:
        return False


def _spec(spec: str) -> tuple[str, str]:
    """``name=path`` or ``path`` -> (name, path)."""
    name, sep, path = spec.partition("=")
    if sep and _NAME.fullmatch(name.strip()) and not name.startswith(("s3:", "/")):
        return name.strip(), path.strip()
    path = spec.strip()
    stem = path.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0] or "threat-list"
    return stem, path


def load_list(spec: str) -> ThreatList:
    """One list from ``name=path`` / ``path`` (local or ``s3://``); a missing or oversized file is an error."""
    from trailguard.store.fs import as_path

    name, location = _spec(spec)
    try:
        path = as_path(location)
        stat = path.stat()
        size = stat.st_size
        if size > MAX_LIST_BYTES:
            raise ThreatListError(
                f"threat list {name} ({location}): {size:,} bytes, more than {MAX_LIST_BYTES:,}"
            )
        data = path.read_bytes()
    except ThreatListError:
        raise
    except (OSError, ValueError) as exc:
        raise ThreatListError(f"threat list {name} ({location}) cannot be read: {exc}") from exc
    threat = parse_list(name, data, location, _changed(stat))
    log.info(
        "threat list %s: %d entries (%d rejected) from %s", name, threat.entries, threat.rejected, location
    )
    return threat


def _changed(stat: Any) -> str:
    """The day a list's file last changed (local mtime, S3 LastModified), "" when the store does not say."""
    try:
        moment = getattr(stat, "st_mtime", None)
        if moment:
            return datetime.fromtimestamp(float(moment), tz=timezone.utc).date().isoformat()
    except (TypeError, ValueError, OSError, OverflowError):
        pass
    return ""


@functools.lru_cache(maxsize=8)
def load_lists(specs: tuple[str, ...]) -> tuple[ThreatList, ...]:
    """Every configured list, loaded once per process."""
    return tuple(load_list(spec) for spec in specs if spec.strip())


def configured_lists() -> tuple[ThreatList, ...]:
    """The lists ``TRAILGUARD_THREAT_LISTS`` names (none by default)."""
    from trailguard.store.settings import load_settings

    return load_lists(load_settings().threat_lists)


def matches(ip: Any, lists: tuple[ThreatList, ...]) -> list[tuple[str, str]]:
    """(list name, entry label) of every list the address is on."""
    found = []
    for threat in lists:
        label = threat.match(ip)
        if label is not None:
            found.append((threat.name, label))
    return found
