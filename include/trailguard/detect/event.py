"""The Event wrapper: one normalised CloudTrail row read defensively, and the small value helpers rules share.

Every field is attacker-controlled: any may be missing, of the wrong type or huge. Rules read events only
through :class:`Event`, which never raises on content.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import orjson
import pandas as pd

from trailguard.store.text import sanitise

log = logging.getLogger(__name__)

REASON_VALUE_CHARS = 64  # interpolated event values are cut to this many characters
WALK_DEPTH = 24  # JSON nesting followed when searching request parameters
WALK_NODES = 20_000  # JSON nodes visited at most per search: a 1 MB list must not stall a run


_MISSING: Any = object()
# fields different in every event: a check that reads them may answer differently for events otherwise alike
UNIQUE_FIELDS = frozenset({"eventID", "raw"})


def is_missing(value: Any) -> bool:
    """None, pandas' NA / NaT or a float NaN: what a missing column value looks like in a frame."""
    return (
        value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))
    )


def parse_json(value: Any) -> Any:
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


def short(value: Any, limit: int = REASON_VALUE_CHARS) -> str:
    """An event value fit for a one-line reason: text, no control characters, at most `limit` chars
    ("?" when missing). Rules interpolate only values passed through this (or :meth:`Event.actor`)."""
    if is_missing(value) or value == "":
        return "?"
    text = value if isinstance(value, str) else str(value)
    return sanitise(
        text, limit, unsafe="remove_controls", marker="…", marker_within_limit=True, scan=limit + 1
    )


def is_true(value: Any) -> bool:
    """A JSON true or the text "true" (any case): CloudTrail writes some flags as strings."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def is_false(value: Any) -> bool:
    """A JSON false or the text "false": only an explicit false, never a missing value."""
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def as_list(value: Any) -> list[Any]:
    """A list as it is, one value as a one-item list, missing as []: CloudTrail writes lists of one as the item."""
    if is_missing(value):
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
        self.unique = (
            False  # set when something read eventID or `raw`: what fired then belongs to this event only
        )
        self.name = self.text("eventName")  # read by nearly every check: resolved once
        self.source = self.text("eventSource")
        self.identity_type = self.text("userIdentity.type")

    def get(self, key: str, default: Any = None) -> Any:
        """A field by dotted name ("requestParameters.bucketName"), or ``default`` when it is missing or unreadable."""
        if not isinstance(key, str):
            return default
        if key in UNIQUE_FIELDS:
            self.unique = True
        value = self._row.get(key, _MISSING)
        if value is _MISSING:  # not a column: look into the JSON of its root column, or into `raw`
            root, _, rest = key.partition(".")
            value = self._doc(root)
            if rest:
                value = _dig(value, rest.split("."))
        return default if is_missing(value) else value

    def _doc(self, root: str) -> Any:
        if root in UNIQUE_FIELDS:
            self.unique = True
        if root not in self._docs:
            value = self._row.get(root, _MISSING)
            if value is _MISSING:
                raw = self._doc("raw") if root != "raw" else None
                self._docs[root] = raw.get(root) if isinstance(raw, dict) else None  # already decoded
            else:
                self._docs[root] = None if is_missing(value) else parse_json(value)
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
        """The caller's account id (else the account the event was recorded in)."""
        return self.text("userIdentity.accountId") or self.text("recipientAccountId")

    def actor(self) -> str:
        """The caller for a reason: ARN, else user name, else principal id, cut to a reason's length."""
        return short(
            self.text("userIdentity.arn")
            or self.text("userIdentity.userName")
            or self.text("userIdentity.principalId")
            or "unknown principal"
        )

    def ip(self) -> str:
        """The source IP address (or AWS service name) for a reason."""
        return short(self.text("sourceIPAddress"), 40)

    def caller_name(self) -> str:
        """The caller's own user name (IAM user, root or the session name of a role): "for oneself" checks."""
        kind = self.identity_type
        if kind == "Root":
            return "root"
        if kind == "IAMUser":
            return self.text("userIdentity.userName") or self.text("userIdentity.arn").rpartition("/")[2]
        return self.text("userIdentity.arn").rpartition("/")[2]

    def params(self, key: str) -> Any:
        """A request parameter by dotted name, decoded (dict, list or scalar), None when missing."""
        return self.get(f"requestParameters.{key}")
