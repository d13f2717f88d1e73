"""VPC Flow Log files as AWS delivers them to S3, read into typed columns with pyarrow's CSV reader.

A file is gzipped text, fields separated by one space, a header line naming the fields (the default
version 2 format or any custom list up to version 5), ``-`` for a field with no value. ``NODATA`` and
``SKIPDATA`` records (no traffic, or records AWS could not capture) are kept with their ``log_status``.
Text without a header (CloudWatch Logs messages, exports) is read in the configured field list
(:class:`FlowLimits` ``log_format``). AWS's Parquet delivery (``.log.parquet``, columns named with
underscores: ``account_id``, ``log_status``...) is read by :func:`read_flow_parquet` into the same columns
with the same checks.

Two paths: an ordinary file is parsed straight into typed columns (multi-threaded, no Python per row); a
file with anything odd (a line with the wrong field count, a value that is not a number, an over-long
line) is read again line by line into text columns, each bad line rejected with its number and reason and
the rest converted. Field names and values are attacker-controlled: unknown fields are ignored (noted),
values are bounded and checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

# AWS field name -> (stored column, type). Versions 2 (default format), 3, 4 and 5.
FIELDS: dict[str, tuple[str, pa.DataType]] = {
    "version": ("version", pa.int16()),
    "account-id": ("account_id", pa.string()),
    "interface-id": ("interface_id", pa.string()),
    "srcaddr": ("srcaddr", pa.string()),
    "dstaddr": ("dstaddr", pa.string()),
    "srcport": ("srcport", pa.int32()),
    "dstport": ("dstport", pa.int32()),
    "protocol": ("protocol", pa.int16()),
    "packets": ("packets", pa.int64()),
    "bytes": ("bytes", pa.int64()),
    "start": ("start", pa.int64()),
    "end": ("end", pa.int64()),
    "action": ("action", pa.string()),
    "log-status": ("log_status", pa.string()),
    "vpc-id": ("vpc_id", pa.string()),
    "subnet-id": ("subnet_id", pa.string()),
    "instance-id": ("instance_id", pa.string()),
    "tcp-flags": ("tcp_flags", pa.int32()),
    "type": ("type", pa.string()),
    "pkt-srcaddr": ("pkt_srcaddr", pa.string()),
    "pkt-dstaddr": ("pkt_dstaddr", pa.string()),
    "region": ("region", pa.string()),
    "az-id": ("az_id", pa.string()),
    "sublocation-type": ("sublocation_type", pa.string()),
    "sublocation-id": ("sublocation_id", pa.string()),
    "pkt-src-aws-service": ("pkt_src_aws_service", pa.string()),
    "pkt-dst-aws-service": ("pkt_dst_aws_service", pa.string()),
    "flow-direction": ("flow_direction", pa.string()),
    "traffic-path": ("traffic_path", pa.int16()),
}
DEFAULT_FORMAT = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status"
REQUIRED_FIELDS = ("start", "log-status")  # the day of a record, and whether it holds traffic at all
_TIME = pa.timestamp("s", tz="UTC")
_STORED_TYPE = {name: (_TIME if name in ("start", "end") else kind) for name, kind in FIELDS.values()}

#: A day of flows as stored: every known field (null where the file's format lacks it) and the source key.
FLOW_SCHEMA = pa.schema(
    [pa.field(name, kind) for name, kind in _STORED_TYPE.items()]
    + [pa.field("source_key", pa.dictionary(pa.int32(), pa.string()))]
)
# value bounds beyond the type: (low, high) inclusive
_BOUNDS: dict[str, tuple[int, int]] = {
    "srcport": (0, 65535),
    "dstport": (0, 65535),
    "protocol": (0, 255),
    "packets": (0, 2**62),
    "bytes": (0, 2**62),
    "start": (946684800, 4102444800),  # 2000 .. 2100: a partition per plausible day, not per year 36000
    "end": (946684800, 4102444800),
    "tcp_flags": (0, 65535),
    "version": (2, 99),
    "traffic_path": (0, 99),
}
MAX_LINE_BYTES = 4096  # a flow record is about 100-300 bytes; a longer line is rejected, not parsed
MAX_RAW_CHARS = 1000  # of a rejected line kept in quarantine
# the longest text field AWS writes (an IPv6 address, an id, a service name) is far shorter
MAX_FIELD_CHARS = 256
_INTEGER = re.compile(rb"^-?[0-9]{1,18}$")
_FLOW_KEY = re.compile(r"(?:^|/)vpcflowlogs/|_vpcflowlogs_")
_SUFFIXES = (".log.gz", ".log", ".log.parquet", ".parquet")
PARQUET_MAGIC = b"PAR1"
# a Parquet column's name as AWS writes it (underscores) -> the text format's field name
_PARQUET_NAMES = {name.replace("-", "_"): name for name in FIELDS}


@dataclass(frozen=True)
class FlowLimits:
    """What reading one flow log file may take (settings ``TRAILGUARD_FLOW_*``, documented in .env.example).

    ``block_bytes`` is pyarrow's CSV block: each parsing thread holds about one block of text and its
    columns. ``max_file_bytes`` bounds a file once gunzipped (decompression stops one byte past it) and a
    Parquet file's uncompressed column data (read from its footer before any page is), ``max_records`` the
    rows of a Parquet file. ``log_format`` is the field list of text without a header line (CloudWatch Logs
    messages): the default version 2 format unless the flow log was created with a custom one.
    """

    block_bytes: int = 1 << 20
    max_file_bytes: int = 512 << 20
    max_records: int = 10_000_000
    log_format: str = DEFAULT_FORMAT

    @classmethod
    def from_settings(cls, settings: Any) -> FlowLimits:
        return cls(
            block_bytes=settings.flow_block_bytes,
            max_file_bytes=settings.flow_max_file_bytes,
            max_records=settings.flow_max_records_per_file,
            log_format=settings.flow_log_format or DEFAULT_FORMAT,
        )


class FlowFileError(ValueError):
    """A file that cannot be read as a flow log at all; the message is the reason (it goes to quarantine)."""


@dataclass
class DecodedFlows:
    """What one file gave: its records, the lines rejected (with reasons) and a note for the manifest."""

    table: pa.Table
    rejected: list[dict[str, Any]]
    lines_read: int
    note: str | None = None


def is_flow_log_key(key: str) -> bool:
    """Whether a key looks like a VPC Flow Log file in AWS's layout (``.../vpcflowlogs/...*.log.gz``)."""
    normalised = key.replace("\\", "/")
    if normalised.startswith("cloudwatch://"):  # a flow log group's hour (trailguard.flows.sources)
        return True
    return bool(_FLOW_KEY.search(normalised)) and normalised.lower().endswith(_SUFFIXES)


def read_flow_text(key: str, text: bytes, limits: FlowLimits | None = None) -> DecodedFlows:
    """Read one file's text (already gunzipped). Raises FlowFileError when there is no usable header (and
    the first line is not a record in the configured format either)."""
    limits = limits or FlowLimits()
    header, notes, body_start = _header_or_format(text, limits.log_format)
    if not text[body_start : body_start + 4096].strip() and not text[body_start:].strip():
        return DecodedFlows(_finish(_empty(), key), [], 0, _join(notes + ["no records after the header"]))
    first = 2 if body_start else 1  # the number of the body's first line (line 1 is the header, if any)
    table = _fast(pa.py_buffer(text).slice(body_start), header, limits.block_bytes)  # no copy of the body
    if table is not None:
        checked, rejected = _checked(table, header, key, None)
        if not rejected:
            return DecodedFlows(_finish(checked, key), [], table.num_rows, _join(notes))
        # a value out of its bounds: read again line by line, so that each rejection names its line
    table, rejected, lines = _careful(key, text[body_start:], header, first, limits.block_bytes)
    checked, more = _checked(table, header, key, _LINE_NUMBERS)
    rejected = sorted(rejected + more, key=lambda r: r["record_index"])
    return DecodedFlows(_finish(checked, key), rejected, lines, _join(notes))


def read_flow_parquet(key: str, data: bytes, limits: FlowLimits | None = None) -> DecodedFlows:
    """Read one Parquet file of AWS's Parquet delivery into the stored columns, with the text reader's
    checks (a value out of bounds or not of its type rejects its row, named by its row number from 1).

    The footer is read first: a file whose rows or uncompressed size are over the limits is refused before
    any column is. A column of an unexpected type is read as text and each value checked, so a writer
    that stored ports as strings loses only the rows that are not numbers.
    """
    limits = limits or FlowLimits()
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        metadata = parquet.metadata
        names = parquet.schema_arrow.names
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FlowFileError(f"not a readable Parquet file: {_one_line(exc)}") from exc
    columns = {}  # Parquet column -> field name (AWS writes underscores; hyphens are accepted too)
    for name in names:
        field = _PARQUET_NAMES.get(name) or (name if name in FIELDS else None)
        if field is not None and field not in columns.values():
            columns[name] = field
    header = list(columns.values())
    missing = [f for f in REQUIRED_FIELDS if f not in header]
    if missing or len(header) < 2:
        shown = " ".join(names[:6])[:120]
        raise FlowFileError(
            f"Parquet columns {shown!r} lack {', '.join(missing) or 'known fields'}: not a flow log file"
        )
    unknown = [n for n in names if n not in columns]
    notes = [f"unknown column(s) ignored: {' '.join(unknown)[:200]}"] if unknown else []
    rows = metadata.num_rows
    size = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if rows > limits.max_records:
        raise FlowFileError(
            f"Parquet file holds {rows:,} rows, over the limit of {limits.max_records:,} "
            "(TRAILGUARD_FLOW_MAX_RECORDS_PER_FILE)"
        )
    if size > limits.max_file_bytes:
        raise FlowFileError(
            f"Parquet data is {size:,} bytes uncompressed, over the {limits.max_file_bytes:,}-byte limit "
            "(TRAILGUARD_FLOW_MAX_FILE_BYTES)"
        )
    try:
        table = parquet.read(columns=list(columns), use_threads=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FlowFileError(f"Parquet file cannot be read: {_one_line(exc)}") from exc
    if table.num_rows != rows:
        raise FlowFileError(f"Parquet file has {table.num_rows} rows, its footer says {rows}")
    arrays = [_parquet_column(table.column(name), columns[name]) for name in columns]
    table = pa.Table.from_arrays(arrays, names=header)
    table = table.append_column(_LINE_NUMBERS, pa.array(np.arange(1, rows + 1), pa.int64()))
    checked, rejected = _checked(table, header, key, _LINE_NUMBERS)
    return DecodedFlows(_finish(checked, key), rejected, rows, _join(notes))


def _parquet_column(column: pa.ChunkedArray, field: str) -> pa.ChunkedArray:
    """A Parquet column as the reader's checks take it: integers as int64 (checked against the field's
    bounds, then narrowed), times as epoch seconds, text as text; any other type as text, checked per value."""
    kind = FIELDS[field][1]
    try:
        if pa.types.is_integer(kind):
            if pa.types.is_integer(column.type):
                return column.cast(pa.int64())
            if pa.types.is_timestamp(column.type):
                return column.cast(pa.timestamp("s"), safe=False).cast(pa.int64())
            return column.cast(pa.string())  # checked value by value (a float, a string of digits...)
        return column if pa.types.is_string(column.type) else column.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise FlowFileError(f"Parquet column {field} of type {column.type} cannot be read as text") from exc


def _header_or_format(text: bytes, log_format: str) -> tuple[list[str], list[str], int]:
    """The field list, notes, and where the records start: after the header line, or at the start when
    the first line is already a record in ``log_format`` (text without a header, as CloudWatch has it)."""
    try:
        header, notes = _header(text)
    except FlowFileError:
        end = text.find(b"\n")
        line = text[: end if end >= 0 else min(len(text), MAX_LINE_BYTES + 1)].rstrip(b"\r")
        fields = log_format.split()
        values = line.split(b" ")
        numbers = any(v.isdigit() for v in values)  # a record, not a header naming other fields
        if len(values) == len(fields) and numbers and len(line) <= MAX_LINE_BYTES:
            missing = [f for f in REQUIRED_FIELDS if f not in fields]
            if missing:
                raise FlowFileError(
                    f"no header line, and the configured format (TRAILGUARD_FLOW_LOG_FORMAT) lacks {', '.join(missing)}"
                ) from None
            return fields, [f"no header line: read as the configured format ({len(fields)} fields)"], 0
        raise
    newline = text.find(b"\n")
    return header, notes, newline + 1 if newline >= 0 else len(text)


def _header(text: bytes) -> tuple[list[str], list[str]]:
    end = text.find(b"\n")
    line = text[: end if end >= 0 else len(text)]
    if len(line) > MAX_LINE_BYTES:
        raise FlowFileError(f"first line is {len(line)} bytes: not a flow log header")
    try:
        fields = line.decode("ascii").split()
    except UnicodeDecodeError as exc:
        raise FlowFileError("first line is not ASCII: not a flow log header") from exc
    if not fields:
        raise FlowFileError("empty first line: a flow log file starts with a header naming its fields")
    if len(set(fields)) != len(fields):
        raise FlowFileError("header names a field twice")
    missing = [f for f in REQUIRED_FIELDS if f not in fields]
    known = [f for f in fields if f in FIELDS]
    if len(known) < 2 or missing:
        shown = " ".join(fields[:6])[:120]
        raise FlowFileError(
            f"header {shown!r} lacks {', '.join(missing) or 'known fields'}: not a flow log file"
        )
    unknown = [f for f in fields if f not in FIELDS]
    notes = [f"unknown field(s) ignored: {' '.join(unknown)[:200]}"] if unknown else []
    return fields, notes


def _options(header: list[str], typed: bool, block_bytes: int) -> tuple[Any, Any, Any]:
    read = pacsv.ReadOptions(column_names=header, block_size=block_bytes, use_threads=True)
    parse = pacsv.ParseOptions(
        delimiter=" ",
        quote_char=False,
        escape_char=False,
        newlines_in_values=False,
    )
    wanted = [f for f in header if f in FIELDS]
    types = {f: (FIELDS[f][1] if typed else pa.string()) for f in wanted}
    convert = pacsv.ConvertOptions(
        column_types=types, null_values=["-"], strings_can_be_null=True, include_columns=wanted
    )
    return read, parse, convert


def _fast(body: pa.Buffer, header: list[str], block_bytes: int) -> pa.Table | None:
    """Typed columns straight from the text, or None when any line needs care (a wrong field count or a
    value that is not of its type makes the reader raise; no per-row handler: it doubled the reading time)."""
    read, parse, convert = _options(header, True, block_bytes)
    try:
        return pacsv.read_csv(body, read_options=read, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


_LINE_NUMBERS = "__line"


def _careful(
    key: str, body: bytes, header: list[str], first: int, block_bytes: int
) -> tuple[pa.Table, list[dict[str, Any]], int]:
    """Line by line, vectorised over blocks of whole lines (about ``block_bytes`` each, so memory stays
    bounded whatever the file holds): over-long lines, non-ASCII lines, a carriage return inside a line and
    wrong field counts are rejected with their number; the rest read as text columns (converted and
    checked by :func:`_checked`). Python touches only the rejected lines."""
    rejected: list[dict[str, Any]] = []
    tables: list[pa.Table] = []
    view = np.frombuffer(body, dtype=np.uint8)
    size, pos, number = len(body), 0, first
    while pos < size:
        end = min(pos + block_bytes, size)
        if end < size:
            cut = body.rfind(b"\n", pos, end)
            if cut < 0:  # one line longer than a whole block (so over MAX_LINE_BYTES): rejected unread
                stop = body.find(b"\n", end)
                stop = size if stop < 0 else stop
                reason = f"line of {stop - pos} bytes is over the {MAX_LINE_BYTES} byte limit"
                rejected.append(_rejection(key, number, reason, body[pos : pos + MAX_RAW_CHARS]))
                pos, number = stop + 1, number + 1
                continue
            end = cut + 1
        table, more, lines = _careful_block(key, body, view, pos, end, header, number, block_bytes)
        rejected += more
        if table is not None:
            tables.append(table)
        pos, number = end, number + lines
    if tables:
        table = pa.concat_tables(tables)
    else:
        table = pa.table({f: pa.array([], pa.string()) for f in header if f in FIELDS})
        table = table.append_column(_LINE_NUMBERS, pa.array([], pa.int64()))
    return table, rejected, number - first


def _careful_block(
    key: str,
    body: bytes,
    view: np.ndarray,
    pos: int,
    end: int,
    header: list[str],
    number: int,
    block_bytes: int,
) -> tuple[pa.Table | None, list[dict[str, Any]], int]:
    """One block of whole lines (``body[pos:end]``): its lines checked with numpy, the good ones parsed."""
    chunk = view[pos:end]
    breaks = np.flatnonzero(chunk == 10)
    starts = np.concatenate(([0], breaks + 1))
    if starts[-1] == len(chunk):  # the block ends with a line break: no line after it
        starts = starts[:-1]
    if not len(starts):
        return None, [], 0
    stops = np.append(starts[1:] - 1, len(chunk) - (1 if chunk[-1] == 10 else 0))  # each line's end, no \n
    cr_end = (stops > starts) & (chunk[np.maximum(stops - 1, 0)] == 13)
    stops = stops - cr_end  # a line ending in \r\n is fine
    lengths = stops - starts
    spaces = np.add.reduceat(chunk == 32, starts, dtype=np.int64)
    odd = np.add.reduceat(chunk >= 128, starts, dtype=np.int64)
    returns = np.add.reduceat(chunk == 13, starts, dtype=np.int64) - cr_end
    width = len(header)
    too_long = lengths > MAX_LINE_BYTES
    not_ascii = ~too_long & (odd > 0)
    carriage = ~too_long & ~not_ascii & (returns > 0)
    wrong = ~too_long & ~not_ascii & ~carriage & (spaces + 1 != width)
    bad = too_long | not_ascii | carriage | wrong
    rejected = []
    for i in np.flatnonzero(bad):
        line = body[pos + int(starts[i]) : pos + int(starts[i]) + min(int(lengths[i]), MAX_RAW_CHARS)]
        if too_long[i]:
            reason = f"line of {int(lengths[i])} bytes is over the {MAX_LINE_BYTES} byte limit"
        elif not_ascii[i]:
            reason = "line is not ASCII"
        elif carriage[i]:
            reason = "a carriage return inside the line (a line break that is not one)"
        else:
            reason = f"{int(spaces[i]) + 1} fields, the header names {width} (a truncated or malformed line)"
        rejected.append(_rejection(key, number + int(i), reason, line))
    keep = ~bad
    if not keep.any():
        return None, rejected, len(starts)
    if bad.any():  # the good lines' bytes, each with its line break
        spans = np.diff(np.append(starts, len(chunk)))
        text = pa.py_buffer(chunk[np.repeat(keep, spans)].tobytes())
    else:
        text = pa.py_buffer(body).slice(pos, end - pos)
    read, parse, convert = _options(header, False, block_bytes)
    numbers = pa.array(number + np.flatnonzero(keep), pa.int64())
    try:
        table = pacsv.read_csv(text, read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as exc:  # not expected after the checks above; the block's lines are kept anyway
        reason = f"the CSV reader refused this block: {_one_line(exc)}"
        for i in np.flatnonzero(keep):
            line = body[pos + int(starts[i]) : pos + int(starts[i]) + min(int(lengths[i]), MAX_RAW_CHARS)]
            rejected.append(_rejection(key, number + int(i), reason, line))
        return None, sorted(rejected, key=lambda r: r["record_index"]), len(starts)
    if table.num_rows != len(numbers):
        raise FlowFileError(f"read {table.num_rows} lines of {len(numbers)} in a block: a reader bug")
    return table.append_column(_LINE_NUMBERS, numbers), rejected, len(starts)


def _checked(
    table: pa.Table, header: list[str], key: str, line_column: str | None
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Columns converted to their types and checked against their bounds; rows that fail are rejected
    with the field and value. Text columns (the careful path) are converted here."""
    n = table.num_rows
    bad = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}
    columns: dict[str, pa.ChunkedArray | pa.Array] = {}
    for field in header:
        if field not in FIELDS:
            continue
        name, kind = FIELDS[field]
        column = table.column(field)
        if pa.types.is_string(column.type) and not pa.types.is_string(kind):
            text = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
            ok = pc.fill_null(pc.match_substring_regex(text, _INTEGER.pattern.decode()), True)
            ok = np.asarray(ok.to_numpy(zero_copy_only=False))
            _mark(bad, reasons, ~ok, text, f"{field} is not a whole number (at most 18 digits)")
            values = pc.if_else(pa.array(ok), text, pa.scalar(None, pa.string())).cast(pa.int64())
            low, high = _BOUNDS.get(name, (-(2**62), 2**62))
            out = pc.fill_null(pc.or_(pc.less(values, low), pc.greater(values, high)), False)
            out = np.asarray(out.to_numpy(zero_copy_only=False))
            _mark(bad, reasons, out, text, f"{field} out of range {low}..{high}")
            column = pc.if_else(pa.array(out), pa.scalar(None, pa.int64()), values)
            column = column.cast(pa.int64() if name in ("start", "end") else kind)
        elif name in _BOUNDS:
            low, high = _BOUNDS[name]
            extremes = pc.min_max(column)  # one pass; the row masks only when a value is out of bounds
            smallest, largest = extremes["min"].as_py(), extremes["max"].as_py()
            if smallest is not None and (smallest < low or largest > high):
                out = pc.fill_null(pc.or_(pc.less(column, low), pc.greater(column, high)), False)
                mask = np.asarray(out.to_numpy(zero_copy_only=False))
                _mark(bad, reasons, mask, column.cast(pa.string()), f"{field} out of range {low}..{high}")
        elif pa.types.is_string(kind) and len(column):
            lengths = pc.binary_length(column)  # a line under the line limit can still hold one giant field
            if (pc.max(lengths).as_py() or 0) > MAX_FIELD_CHARS:
                mask = np.asarray(
                    pc.fill_null(pc.greater(lengths, MAX_FIELD_CHARS), False).to_numpy(zero_copy_only=False)
                )
                _mark(bad, reasons, mask, None, f"{field} is over {MAX_FIELD_CHARS} characters long")
        columns[name] = column
    if "start" in columns and columns["start"].null_count:
        missing = np.asarray(pc.is_null(columns["start"]).to_numpy(zero_copy_only=False))
        _mark(bad, reasons, missing & ~bad, None, "start is missing (a record needs its time)")
    if not bad.any():
        return _typed(columns, n), []
    rows = np.flatnonzero(bad)
    lines = table.column(line_column).to_numpy() if line_column else None
    texts = _row_texts(table.take(pa.array(rows)), header)
    rejected = [
        _rejection(key, int(lines[r]) if lines is not None else -1, reasons[int(r)], texts[i])
        for i, r in enumerate(rows)
    ]
    keep = pa.array(~bad)
    return _typed({k: v.filter(keep) for k, v in columns.items()}, int((~bad).sum())), rejected


def _mark(bad: np.ndarray, reasons: dict[int, str], mask: np.ndarray, values: Any, reason: str) -> None:
    for row in np.flatnonzero(mask & ~bad):
        shown = "" if values is None else f": {str(values[int(row)].as_py())[:40]!r}"
        reasons[int(row)] = reason + shown
    bad |= mask


def _typed(columns: dict[str, Any], n: int) -> pa.Table:
    """The stored columns in FLOW_SCHEMA order (a field the format lacks is null), times as timestamps."""
    arrays = []
    for field in FLOW_SCHEMA:
        if field.name == "source_key":
            continue
        column = columns.get(field.name)
        if column is None:
            arrays.append(pa.nulls(n, field.type))
        elif field.name in ("start", "end"):
            arrays.append(column.cast(pa.int64()).cast(_TIME))
        else:
            arrays.append(column.cast(field.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema([f for f in FLOW_SCHEMA if f.name != "source_key"]))


def _finish(table: pa.Table, key: str) -> pa.Table:
    source = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(table.num_rows, dtype=np.int32)), pa.array([key])
    )
    return table.append_column(FLOW_SCHEMA.field("source_key"), source)


def _empty() -> pa.Table:
    return pa.schema([f for f in FLOW_SCHEMA if f.name != "source_key"]).empty_table()


def _row_texts(rows: pa.Table, header: list[str]) -> list[str]:
    """The rejected rows as text again (for quarantine), fields in the header's order."""
    present = [f for f in header if f in rows.column_names]
    values = [rows.column(f).cast(pa.string()).to_pylist() for f in present]
    return (
        [" ".join("-" if v is None else v for v in row) for row in zip(*values, strict=True)]
        if values
        else []
    )


def _rejection(key: str, line: int, reason: str, raw: bytes | str) -> dict[str, Any]:
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return {
        "source_key": key,
        "record_index": line,
        "reason": reason,
        "eventID": None,
        "raw": text[:MAX_RAW_CHARS],
    }


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _join(notes: list[str]) -> str | None:
    return "; ".join(notes) or None


def flow_log_key(account: str, region: str, day: date, flow_log_id: str, stamp: datetime, digest: str) -> str:
    """The key AWS gives a delivered file (``AWSLogs/<acct>/vpcflowlogs/<region>/YYYY/MM/DD/...log.gz``)."""
    return (
        f"AWSLogs/{account}/vpcflowlogs/{region}/{day:%Y/%m/%d}/"
        f"{account}_vpcflowlogs_{region}_{flow_log_id}_{stamp:%Y%m%dT%H%MZ}_{digest}.log.gz"
    )


def format_flow_file(fields: list[str], rows: list[tuple[Any, ...]]) -> bytes:
    """A flow log file's text as AWS writes it: the header, then one line per record, ``-`` for None."""
    lines = [" ".join(fields)]
    lines += [" ".join("-" if v is None else str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()
