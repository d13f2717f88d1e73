"""The normalised event row: one CloudTrail record flattened into the columns detections need.

Columns keep CloudTrail's own names, flattened with dots. Every field is attacker-controlled and may be
missing or of the wrong type: normalisation never raises on a field, it stores null or the field's text.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Any

import orjson
import pyarrow as pa

# (column, path into the record) for the flat string columns
STRING_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("eventVersion", ("eventVersion",)),
    ("eventSource", ("eventSource",)),
    ("eventName", ("eventName",)),
    ("eventType", ("eventType",)),
    ("eventCategory", ("eventCategory",)),
    ("awsRegion", ("awsRegion",)),
    ("sourceIPAddress", ("sourceIPAddress",)),
    ("userAgent", ("userAgent",)),
    ("userIdentity.type", ("userIdentity", "type")),
    ("userIdentity.arn", ("userIdentity", "arn")),
    ("userIdentity.accountId", ("userIdentity", "accountId")),
    ("userIdentity.principalId", ("userIdentity", "principalId")),
    ("userIdentity.userName", ("userIdentity", "userName")),
    ("userIdentity.invokedBy", ("userIdentity", "invokedBy")),
    ("userIdentity.accessKeyId", ("userIdentity", "accessKeyId")),
    ("userIdentity.sessionContext.sessionIssuer.arn", ("userIdentity", "sessionContext", "sessionIssuer", "arn")),
    (
        "userIdentity.sessionContext.sessionIssuer.userName",
        ("userIdentity", "sessionContext", "sessionIssuer", "userName"),
    ),
    (
        "userIdentity.sessionContext.attributes.mfaAuthenticated",
        ("userIdentity", "sessionContext", "attributes", "mfaAuthenticated"),
    ),
    ("errorCode", ("errorCode",)),
    ("errorMessage", ("errorMessage",)),
    ("recipientAccountId", ("recipientAccountId",)),
    ("vpcEndpointId", ("vpcEndpointId",)),
    ("requestID", ("requestID",)),
    ("responseElements.ConsoleLogin", ("responseElements", "ConsoleLogin")),
    ("additionalEventData.MFAUsed", ("additionalEventData", "MFAUsed")),
)
BOOL_FIELDS: tuple[str, ...] = ("readOnly", "managementEvent")
JSON_FIELDS: tuple[str, ...] = ("requestParameters", "responseElements")

EVENT_SCHEMA = pa.schema(
    [
        pa.field("eventID", pa.string(), nullable=False),
        pa.field("eventTime", pa.timestamp("us", tz="UTC"), nullable=False),
        *[pa.field(name, pa.string()) for name, _ in STRING_FIELDS],
        *[pa.field(name, pa.bool_()) for name in BOOL_FIELDS],
        *[pa.field(name, pa.string()) for name in JSON_FIELDS],
        pa.field("raw", pa.string()),
        pa.field("source_key", pa.string()),
    ]
)
EVENT_COLUMNS: tuple[str, ...] = tuple(EVENT_SCHEMA.names)

MAX_FIELD_CHARS = 8192  # longer flat values are cut (the full text stays in `raw`)
TRUNCATION_MARK = "…[truncated]"

_FRACTION = re.compile(r"\.(\d+)")


class RecordError(ValueError):
    """A record that cannot be stored as an event; the message is the reason kept in quarantine."""


def parse_event_time(value: Any) -> datetime:
    """Parse CloudTrail's eventTime in the shapes seen in the wild; always returns an aware UTC datetime.

    Accepted: ``2024-07-30T21:31:21Z``, with fractional seconds (nanoseconds are cut to microseconds),
    with a ``+hh:mm`` offset, with a space instead of ``T``, with or without ``Z``, and epoch seconds or
    milliseconds as a number.
    """
    if value is None:
        raise RecordError("eventTime is missing")
    if isinstance(value, bool):
        raise RecordError(f"eventTime is not a time: {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise RecordError(f"eventTime is not a time: {value!r}")
        seconds = value / 1000 if abs(value) > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError) as exc:
            raise RecordError(f"eventTime out of range: {value!r}") from exc
    if not isinstance(value, str):
        raise RecordError(f"eventTime is not a string: {type(value).__name__}")
    text = value.strip()
    if not text or len(text) > 64:
        raise RecordError(f"eventTime is not a time: {_preview(text)}")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python's fromisoformat takes at most 6 fractional digits
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise RecordError(f"eventTime is not a time: {_preview(value)}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _preview(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _text(value: Any) -> str | None:
    """A flat field as text: strings as they are (cut if huge), scalars as JSON, containers as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = dumps(value)
    if len(text) > MAX_FIELD_CHARS:
        text = text[:MAX_FIELD_CHARS] + TRUNCATION_MARK
    return text


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
    return None


def dumps(value: Any) -> str:
    """JSON text of a decoded value. orjson first (it writes NaN as null); the stdlib for what orjson
    refuses (nesting deeper than 254, integers beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        try:
            return json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
        except ValueError:  # NaN beside a huge integer: Python's own JSON dialect keeps both
            return json.dumps(value, ensure_ascii=False, default=str)


def _dig(record: dict, path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def normalise(record: Any, source_key: str) -> dict[str, Any]:
    """One CloudTrail record as a row of EVENT_COLUMNS; raises RecordError with the reason if it cannot
    be an event (not an object, no usable eventID or eventTime)."""
    if not isinstance(record, dict):
        raise RecordError(f"record is not a JSON object but {type(record).__name__}")
    event_id = record.get("eventID")
    if event_id is None or event_id == "":
        raise RecordError("eventID is missing")
    if not isinstance(event_id, str):
        raise RecordError(f"eventID is not a string: {_preview(event_id)}")
    if len(event_id) > 256:
        raise RecordError(f"eventID is longer than 256 characters: {_preview(event_id)}")
    row: dict[str, Any] = {
        "eventID": event_id,
        "eventTime": parse_event_time(record.get("eventTime")),
    }
    for name, path in STRING_FIELDS:
        row[name] = _text(_dig(record, path) if len(path) > 1 else record.get(path[0]))
    for name in BOOL_FIELDS:
        row[name] = _bool(record.get(name))
    for name in JSON_FIELDS:
        value = record.get(name)
        row[name] = None if value is None else dumps(value)
    row["raw"] = dumps(record)
    row["source_key"] = source_key
    return row


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows from :func:`normalise` as an Arrow table in EVENT_SCHEMA."""
    columns = {name: [row[name] for row in rows] for name in EVENT_COLUMNS}
    return pa.Table.from_pydict(columns, schema=EVENT_SCHEMA)
