"""The normalised event row: one CloudTrail record flattened into the columns detections need.

Columns keep CloudTrail's own names, flattened with dots. Every field is attacker-controlled and may be
missing or of the wrong type: normalisation never raises on a field, it stores null or the field's text.

Two ways in, same rows: :func:`normalise` takes one decoded record at a time and copes with anything;
:func:`file_to_table` turns a whole file of ordinary records into columns at once (about ten times
faster) and hands back None for a file that needs :func:`normalise`'s care.
"""

from __future__ import annotations

import gc
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from itertools import chain
from typing import Any

import msgspec
import numpy as np
import orjson
import pyarrow as pa
from msgspec.structs import astuple

from trailguard.store.schema import (
    BOOL_FIELDS,
    EVENT_COLUMNS,
    EVENT_SCHEMA,
    EVENT_TIME_TYPE,
    JSON_FIELDS,
    STRING_FIELDS,
)

MAX_FIELD_CHARS = 8192  # longer flat values are cut (the full text stays in `raw`)
TRUNCATION_MARK = "…[truncated]"

_FRACTION = re.compile(r"\.(\d+)")


# Event times TrailGuard stores: a day outside these years cannot be a partition every stage can handle
# (date arithmetic past year 9999 overflows) and is no CloudTrail event; such records are quarantined.
FIRST_YEAR, LAST_YEAR = 1970, 2100
_EARLIEST = datetime(FIRST_YEAR, 1, 1, tzinfo=timezone.utc)
_LATEST = datetime(LAST_YEAR + 1, 1, 1, tzinfo=timezone.utc)


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
            moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError) as exc:
            raise RecordError(f"eventTime out of range: {value!r}") from exc
        return _in_range(moment, value)
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
    try:
        return _in_range(parsed.astimezone(timezone.utc), value)
    except OverflowError as exc:
        raise RecordError(f"eventTime out of range: {_preview(value)}") from exc


def _in_range(moment: datetime, value: Any) -> datetime:
    if not _EARLIEST <= moment < _LATEST:
        raise RecordError(f"eventTime {_preview(value)} is outside {FIRST_YEAR}-{LAST_YEAR}")
    return moment


def exact_id(text: str) -> str:
    """An eventID as valid text that still tells its bytes apart: bytes that are not UTF-8 (read as
    surrogate escapes) become ``\\xNN``, and a backslash becomes two, so that no two ids meet."""
    if text.isascii() or not any("\ud800" <= c <= "\udfff" for c in text):
        return text
    escaped = text.replace("\\", "\\\\")
    return "".join(
        f"\\x{ord(c) - 0xDC00:02x}"
        if "\udc80" <= c <= "\udcff"
        else f"\\u{ord(c):04x}"
        if "\ud800" <= c <= "\udfff"
        else c
        for c in escaped
    )


def _preview(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _text(value: Any) -> str | None:
    """A flat field as text: strings as they are (cut if huge), scalars as JSON, containers as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value if value.isascii() else _valid_text(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = dumps(value)
    if len(text) > MAX_FIELD_CHARS:
        text = text[:MAX_FIELD_CHARS] + TRUNCATION_MARK
    return text


def _valid_text(text: str) -> str:
    """Text Arrow can store: lone surrogates (a JSON ``\\ud800`` escape) written out as that escape."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
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
            text = json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
        except ValueError:  # NaN beside a huge integer: Python's own JSON dialect keeps both
            text = json.dumps(value, ensure_ascii=False, default=str)
        if text.isascii() or _valid_text(text) is text:
            return text
        return json.dumps(value, default=str)  # lone surrogates: kept as \\u escapes (ASCII JSON)


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
    event_id = exact_id(event_id)
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


# -- whole files at once ------------------------------------------------------------------------------
# msgspec decodes a file straight into typed structs holding only the fields the columns need (the rest
# of each record is skipped, never built as Python objects); each column then becomes one Arrow array.
# The types are strict on purpose: a field of another type, a record that is not an object, NaN, text
# that is not UTF-8, an eventID to reject or an overlong value send the file to normalise(), which
# decides record by record.

_NULL = msgspec.Raw(b"null")
_MAX_EVENT_ID_CHARS = 256
_SLICE_RECORDS = 500
_PLAIN_TIME_CHARS = len("2024-07-30T21:31:21Z")  # eventTime as CloudTrail writes it
_EARLIEST_MICROSECOND = 0  # 1970-01-01 (FIRST_YEAR)
_LATEST_MICROSECOND = int((_LATEST - _EARLIEST).total_seconds()) * 1_000_000  # 2101-01-01, excluded


def _record_struct() -> type[msgspec.Struct]:
    """The struct a record decodes into, derived from STRING_FIELDS so that both paths read the same fields.

    Paths below a JSON field (``responseElements.ConsoleLogin``) are read from that field's text instead.
    Each nested struct's empty instance goes into _EMPTY, to stand in for a missing parent.
    """
    tree: dict[str, Any] = {}
    for _, path in STRING_FIELDS:
        if path[0] in JSON_FIELDS:
            continue
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = None

    def struct(path: tuple[str, ...], node: dict[str, Any], extra: list[tuple[str, Any, Any]]) -> Any:
        fields = [
            (key, str | None if sub is None else struct((*path, key), sub, []) | None, None)
            for key, sub in node.items()
        ]
        fields = sorted([*extra, *fields], key=lambda f: _KEY_ORDER.get(f[0], len(_KEY_ORDER)))
        cls = msgspec.defstruct(path[-1] if path else "Record", fields, gc=False)
        _EMPTY[path] = cls()
        return cls

    extra = [("eventID", str | None, None), ("eventTime", str | None, None)]
    extra += [(name, bool | None, None) for name in BOOL_FIELDS]
    extra += [(name, msgspec.Raw, _NULL) for name in JSON_FIELDS]
    return struct((), tree, extra)


_EMPTY: dict[tuple[str, ...], msgspec.Struct] = {}
# Struct fields in the order CloudTrail writes the keys: msgspec looks for the next field first, so a
# record in that order decodes about 15% faster (any order still decodes, only slower).
_KEY_ORDER = {
    key: i
    for i, key in enumerate(
        (
            "eventVersion",
            "userIdentity",
            "type",
            "principalId",
            "arn",
            "accountId",
            "accessKeyId",
            "userName",
            "sessionContext",
            "attributes",
            "creationDate",
            "mfaAuthenticated",
            "sessionIssuer",
            "invokedBy",
            "eventTime",
            "eventSource",
            "eventName",
            "awsRegion",
            "sourceIPAddress",
            "userAgent",
            "errorCode",
            "errorMessage",
            "requestParameters",
            "responseElements",
            "additionalEventData",
            "requestID",
            "eventID",
            "readOnly",
            "eventType",
            "managementEvent",
            "recipientAccountId",
            "vpcEndpointId",
            "eventCategory",
        )
    )
}
_RECORDS = msgspec.json.Decoder(msgspec.defstruct("File", [("Records", list[_record_struct()])], gc=False))
_RECORD_TEXTS = msgspec.json.Decoder(
    msgspec.defstruct("FileText", [("Records", list[msgspec.Raw])], gc=False)
)


def file_to_table(document: bytes, source_key: str) -> pa.Table | None:
    """A CloudTrail file (``{"Records": [...]}``) as rows of EVENT_SCHEMA, or None when it needs normalise().

    The rows are those normalise() gives, except that ``raw`` and the JSON columns keep the record's
    original text instead of a re-encoding of it.
    """
    with _no_gc():
        decoded = _decode(document)
        return None if decoded is None else _file_table(*decoded, source_key)


def files_to_tables(documents: Sequence[tuple[bytes, str]]) -> list[pa.Table | None]:
    """:func:`file_to_table` of many (document, source_key) pairs: small files are put together into slices
    of about _SLICE_RECORDS records, so that the per-slice cost is paid once for several files (CloudTrail
    writes many files of a few hundred records). The results are those of file_to_table, file by file."""
    results: list[pa.Table | None] = [None] * len(documents)
    group: list[tuple[int, list[Any], list[msgspec.Raw]]] = []
    count = 0
    with _no_gc():
        for index, (document, key) in enumerate(documents):
            decoded = _decode(document)
            if decoded is None:
                continue  # stays None: normalise() decides
            records, texts = decoded
            if len(records) >= _SLICE_RECORDS:
                results[index] = _file_table(records, texts, key)
                continue
            group.append((index, records, texts))
            count += len(records)
            if count >= _SLICE_RECORDS:
                _group_tables(group, documents, results)
                group, count = [], 0
        _group_tables(group, documents, results)
    return results


@contextmanager
def _no_gc() -> Iterator[None]:
    """Decoding makes millions of small objects that hold no cycles (structs without GC, strings, tuples):
    the cyclic garbage collector would walk them over and over for nothing (a fifth of the time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _decode(document: bytes) -> tuple[list[Any], list[msgspec.Raw]] | None:
    """A file's records as structs and as their texts, or None when it needs normalise()."""
    try:
        return _RECORDS.decode(document).Records, _RECORD_TEXTS.decode(document).Records
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # incl. ValidationError
        return None


def _file_table(records: list[Any], texts: list[msgspec.Raw], source_key: str) -> pa.Table | None:
    """One decoded file as a table, or None when it needs normalise()."""
    try:
        # columns are built a slice of records at a time: a slice stays in the processor's cache (twice
        # as fast as a whole big file, or as many files at once)
        slices = range(0, max(len(records), 1), _SLICE_RECORDS)
        return pa.concat_tables(
            [
                _records_table(records[i : i + _SLICE_RECORDS], texts[i : i + _SLICE_RECORDS], source_key)
                for i in slices
            ]
        )
    except (_NeedsNormalise, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


def _group_tables(
    group: list[tuple[int, list[Any], list[msgspec.Raw]]],
    documents: Sequence[tuple[bytes, str]],
    results: list[pa.Table | None],
) -> None:
    """One table for a group of small files, cut back into one per file (slices share the buffers)."""
    if not group:
        return
    lengths = [len(records) for _, records, _ in group]
    keys = pa.array(
        np.repeat(np.array([documents[i][1] for i, _, _ in group], dtype=object), lengths), pa.string()
    )
    try:
        table = _records_table(
            [r for _, records, _ in group for r in records], [t for _, _, texts in group for t in texts], keys
        )
    except (_NeedsNormalise, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        for index, records, texts in group:  # some file of the group needs care: decide file by file
            results[index] = _file_table(records, texts, documents[index][1])
        return
    offset = 0
    for (index, _, _), length in zip(group, lengths, strict=True):
        results[index] = table.slice(offset, length)
        offset += length


class _NeedsNormalise(Exception):
    """A file holds something only the record-by-record path decides on."""


def _records_table(records: list[Any], texts: list[msgspec.Raw], source_key: str | pa.Array) -> pa.Table:
    if not records:
        return EVENT_SCHEMA.empty_table()
    raw = _text_array(texts)
    try:
        raw.validate(full=True)  # UTF-8: msgspec does not check the text of the fields it skips
    except pa.ArrowInvalid as exc:
        raise _NeedsNormalise from exc
    columns = _Columns(records)
    event_ids = columns.at(("eventID",))
    times = columns.at(("eventTime",))
    if not all(event_ids) or not all(times) or max(map(len, event_ids)) > _MAX_EVENT_ID_CHARS:
        raise _NeedsNormalise  # a missing or empty eventID or eventTime: a record to reject
    # no flat value is longer than its record: only long records need the length check
    check_length = max(map(len, texts)) > MAX_FIELD_CHARS
    flat = [event_ids, times]
    for _, path in STRING_FIELDS:
        if path[0] in JSON_FIELDS:
            values = [
                None if text == _NULL else _text(_dig(_json_value(text), path[1:]))
                for text in columns.at(path[:1])
            ]
        else:
            values = columns.at(path)
            if check_length and max((len(v) for v in values if v is not None), default=0) > MAX_FIELD_CHARS:
                raise _NeedsNormalise
        flat.append(values)
    strings = _arrays(flat, pa.string())
    try:
        arrays: list[pa.Array] = [strings[0], _event_times(strings[1], times)]
    except RecordError as exc:
        raise _NeedsNormalise from exc
    arrays += strings[2:]
    arrays += _arrays([columns.at((name,)) for name in BOOL_FIELDS], pa.bool_())
    arrays += [_text_array(columns.at((name,))) for name in JSON_FIELDS]
    if isinstance(source_key, str):
        source_key = pa.repeat(pa.scalar(source_key, pa.string()), len(records))
    arrays += [raw, source_key]
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


def _arrays(columns: list[Sequence[Any]], type_: pa.DataType) -> list[pa.Array]:
    """Equally long columns of Python values as Arrow arrays, converted in one call: each pyarrow conversion
    has a fixed cost larger than converting a slice's column (measured: half the time of one call each)."""
    length = len(columns[0])
    whole = pa.array(list(chain.from_iterable(columns)), type_)
    return [whole.slice(i * length, length) for i in range(len(columns))]


def _json_value(text: msgspec.Raw) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:  # a number beyond a float's range, say
        raise _NeedsNormalise from exc


class _Columns:
    """The values at a path through the records, one per record (None where a parent is missing)."""

    def __init__(self, records: list[Any]) -> None:
        self._levels: dict[tuple[str, ...], dict[str, tuple[Any, ...]]] = {(): _fields(records, ())}

    def at(self, path: tuple[str, ...]) -> tuple[Any, ...]:
        parent = path[:-1]
        if parent not in self._levels:
            self._levels[parent] = _fields(self.at(parent), parent)
        return self._levels[parent][path[-1]]


def _fields(structs: Iterable[Any], path: tuple[str, ...]) -> dict[str, tuple[Any, ...]]:
    """The fields of the structs at ``path`` column by column (a missing struct reads as an empty one)."""
    empty = _EMPTY[path]
    if not all(structs):  # structs are always true: only None is false
        structs = [empty if struct is None else struct for struct in structs]
    return dict(zip(empty.__struct_fields__, zip(*map(astuple, structs), strict=True), strict=True))


def _text_array(texts: Sequence[msgspec.Raw]) -> pa.StringArray:
    """JSON texts as a string array (JSON null as null), built from one joined buffer, not value by value."""
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    valid = np.fromiter(map(_NULL.__ne__, texts), dtype=bool, count=len(texts))
    if valid.all():
        bitmap, data = None, b"".join(texts)
    else:
        lengths[~valid] = 0
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
        data = b"".join(text for text, keep in zip(texts, valid, strict=True) if keep)
    offsets = np.zeros(len(texts) + 1, dtype=np.int32)  # a file is well under 2 GiB (ingest's limit)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(texts), [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)])


def _event_times(text: pa.StringArray, times: Sequence[str]) -> pa.Array:
    """eventTime strings (as an array, and as the values) as UTC timestamps: Arrow parses the plain
    CloudTrail shape (and refuses 30 February or a leap second, as Python does); anything else goes
    through parse_event_time, record by record. The shape is checked on the array's buffers (a compute
    call per check would cost more than the checks)."""
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset : text.offset + len(text) + 1]
    if not text.null_count and (np.diff(offsets) == _PLAIN_TIME_CHARS).all():
        data = np.frombuffer(text.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        if (data.reshape(-1, _PLAIN_TIME_CHARS)[:, -1] == ord("Z")).all():
            try:
                parsed = text.cast(EVENT_TIME_TYPE)
            except pa.ArrowInvalid:
                pass
            else:
                micros = np.frombuffer(parsed.buffers()[1], dtype=np.int64)[
                    parsed.offset : parsed.offset + len(parsed)
                ]
                if micros.min() >= _EARLIEST_MICROSECOND and micros.max() < _LATEST_MICROSECOND:
                    return parsed
    return pa.array([parse_event_time(time) for time in times], EVENT_TIME_TYPE)
