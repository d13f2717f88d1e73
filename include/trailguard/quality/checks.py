"""The three suites on one day: the frame each is checked on, its parameters, and how its results read.

* ``schema`` (critical): the part files' own column names and types, read from their parquet footers,
  because reading with EVENT_SCHEMA would silently fill a missing column with nulls or cast ints to text;
* ``incoming`` (critical, row level) on every row that came in for the day: the partition plus rows an
  earlier run moved to quarantine, so a rerun sees the same rows and gives the same result;
* ``partition`` (mostly warnings) on the rows that stay: values, volume against history, freshness, errors.

The IP-address check classifies each distinct value once and GX checks the derived category column,
because a regex or a Python call per row would be slow at a million rows.
"""

from __future__ import annotations

import ipaddress
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trailguard.quality.expectations import (
    AWS_NAME_REGEX,
    BY_NAME,
    FUTURE_TOLERANCE,
    INCOMING,
    IPV4_REGEX,
    MISSING,
    SCHEMA,
    VALID_SOURCE_KINDS,
    VALUE_CHECKS,
    WARNING,
    _np,
    unexpected_rows,
)
from trailguard.quality.results import (
    SAMPLE_VALUES,
    ExpectationOutcome,
    _clip_all,
    _distinct_sample,
    replaced,
)
from trailguard.quality.suites import outcome, run_suite
from trailguard.store.fs import DataPath, parquet_schema, read_parquet
from trailguard.store.schema import EVENT_SCHEMA


@dataclass(frozen=True)
class DayBounds:
    """The instants a day is judged against; ``now`` is injectable so a rerun can judge as before."""

    day: str
    start: datetime
    end: datetime
    now: datetime

    @property
    def latest_allowed(self) -> datetime:
        return self.now + FUTURE_TOLERANCE

    def parameters(self) -> dict[str, datetime]:
        """The incoming suite's expectation parameters."""
        return {"day_start": self.start, "day_end": self.end, "latest_allowed": self.latest_allowed}


# -- schema ----------------------------------------------------------------------------------------------


def check_schema(files: list[DataPath]) -> tuple[list[ExpectationOutcome], bool]:
    """Required columns and their types as the part files store them (a read with a schema would hide both:
    it fills a missing column with nulls and casts numbers to text).

    GX checks a small frame with one row per required column: its expected and observed type kind."""
    if not files:
        return [], True
    expected_kinds = {f.name: _type_kind(f.type) for f in EVENT_SCHEMA}
    observed: dict[str, str | None] = dict(expected_kinds)  # None once a part file lacks the column
    extra: set[str] = set()
    for path in files:
        schema = parquet_schema(path)
        extra |= set(schema.names) - set(EVENT_SCHEMA.names)
        for name, expected in expected_kinds.items():
            if name not in schema.names:
                observed[name] = None
            elif (
                observed[name] == expected and _type_kind(schema.field(name).type) != "null"
            ):  # null fits any
                observed[name] = _type_kind(schema.field(name).type)
    frame = _pandas().DataFrame(
        {
            "column": list(EVENT_SCHEMA.names),
            "expected_type": list(expected_kinds.values()),
            "observed_type": [observed[name] for name in EVENT_SCHEMA.names],
        }
    )
    results = run_suite("schema", frame)
    missing = [name for name, kind in observed.items() if kind is None]
    wrong = [
        f"{row.column}: {row.observed_type} (expected {row.expected_type})"
        for row in frame.itertuples()
        if row.observed_type is not None and row.observed_type != row.expected_type
    ]
    detail = (
        f"missing in {len(files)} part file(s): {', '.join(missing)}"
        if missing
        else f"all {len(EVENT_SCHEMA)} required columns present"
    ) + (f"; extra columns ignored: {', '.join(sorted(extra))}" if extra else "")
    columns, types = (e.name for e in SCHEMA)
    outcomes = [
        outcome(results[columns], sample=_clip_all(missing), detail=detail),
        outcome(
            results[types],
            sample=_clip_all(wrong),
            detail=f"{len(EVENT_SCHEMA) - len(missing) - len(wrong)} of {len(EVENT_SCHEMA) - len(missing)} "
            "present columns have the expected type",
        ),
    ]
    ok = all(o.success for o in outcomes)
    if ok:
        try:  # a type of the right kind may still not convert (e.g. nanosecond timestamps)
            for path in files:
                read_parquet(path, columns=["eventTime"], schema=EVENT_SCHEMA)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            ok = False
            outcomes[1] = replaced(
                outcomes[1],
                success=False,
                unexpected_count=1,
                detail=f"eventTime cannot be read as {EVENT_SCHEMA.field('eventTime').type}: {exc}",
            )
    return outcomes, ok


def _type_kind(arrow_type: pa.DataType) -> str:
    """The kind of an Arrow type as far as reading it into EVENT_SCHEMA goes (string and large_string alike)."""
    if (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
    ):
        return "string"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_timestamp(arrow_type):
        return (
            "timestamp[UTC]"
            if arrow_type.tz in ("UTC", "utc", "Etc/UTC", "+00:00", "Z")
            else f"timestamp[tz={arrow_type.tz}]"
        )
    if pa.types.is_null(arrow_type):
        return "null"
    return str(arrow_type)


# -- incoming rows ---------------------------------------------------------------------------------------


def incoming_frame(union: pa.Table) -> pa.Table:
    """The frame the incoming suite checks (and quarantine is decided on): an empty eventID counts as none."""
    ids = union.column("eventID")
    return pa.table(
        {
            "eventID": pc.if_else(pc.equal(ids, ""), pa.scalar(None, pa.string()), ids),
            "eventTime": union.column("eventTime"),
        }
    )


def row_masks(union: pa.Table, bounds: DayBounds) -> dict[str, np.ndarray]:
    """Which rows break each critical row-level expectation, from the definitions GX reports on."""
    return unexpected_rows(incoming_frame(union), bounds.parameters())


def check_incoming(
    union: pa.Table, masks: Mapping[str, np.ndarray], bounds: DayBounds
) -> list[ExpectationOutcome]:
    """Critical expectations on every row that came in for the day (partition + quarantined before)."""
    results = run_suite("incoming", incoming_frame(union).to_pandas(), bounds.parameters())
    present = results["events_present"]
    detail = (
        f"{union.num_rows} rows came in" if present.success else f"no events for {bounds.day}: ingest first"
    )
    outcomes = [outcome(present, detail=detail)]
    if not union.num_rows:
        return outcomes
    described = {
        "day": bounds.day,
        "tolerance_minutes": int(FUTURE_TOLERANCE.total_seconds() // 60),
        "latest_allowed": bounds.latest_allowed.isoformat(timespec="seconds"),
    }
    for expectation in INCOMING:
        if not expectation.quarantine:
            continue
        moved = int(masks[expectation.name].sum())
        detail = expectation.expects.format(**described) + (
            f"; {moved} row(s) quarantined, the partition goes on without them" if moved else ""
        )
        outcomes.append(outcome(results[expectation.name], detail=detail))
    return outcomes


# -- the rows that stay ----------------------------------------------------------------------------------


def check_partition(
    kept: pa.Table,
    bounds: DayBounds,
    history: list[int],
    volume_band: tuple[float, float],
    lateness: timedelta,
    error_share_bounds: tuple[float, float],
) -> list[ExpectationOutcome]:
    """Expectations on the rows that stay in the partition: value sets, volume, freshness, error share.

    The suite is always run whole; a check without anything to compare with (no history, a day that has
    not started) is recorded as not checked."""
    kinds = _source_kinds(kept.column("sourceIPAddress"))
    errors = pc.and_(pc.is_valid(kept.column("errorCode")), pc.not_equal(kept.column("errorCode"), ""))
    frame = pa.table(
        {
            "eventSource": pc.fill_null(kept.column("eventSource"), MISSING),
            "awsRegion": pc.fill_null(kept.column("awsRegion"), MISSING),
            "sourceIPAddress.kind": kinds,
            "userIdentity.type": kept.column("userIdentity.type"),  # Insights events have none: nulls pass
            "eventType": pc.fill_null(kept.column("eventType"), MISSING),
            "eventTime": kept.column("eventTime"),
            "errorCode.present": pc.cast(pc.fill_null(errors, False), pa.float64()),
        }
    ).to_pandas()
    reference = min(bounds.now, bounds.end)  # "now" for today, the end of the day for a finished day
    median = statistics.median(history) if history else 0
    elapsed = (reference - bounds.start) / timedelta(days=1)
    fraction = min(1.0, max(elapsed, 0.0))  # expect less of a partial day
    low, high = math.floor(volume_band[0] * median * fraction), math.ceil(volume_band[1] * median)
    low_share, high_share = error_share_bounds
    oldest_allowed = reference - lateness
    parameters = {
        "min_error_share": low_share,
        "max_error_share": high_share,
        "min_rows": low,
        "max_rows": high,
        "oldest_allowed": oldest_allowed,
    }
    results = run_suite("partition", frame, parameters)
    if not kept.num_rows:
        detail = "every row was quarantined: nothing to score"
        return [outcome(results["rows_remaining"], detail=detail)]

    outcomes = [outcome(results["rows_remaining"], detail=f"{kept.num_rows} rows stay")]
    for expectation in VALUE_CHECKS:
        sample = _invalid_sources(kept, kinds) if expectation.name == "sourceIPAddress_valid" else None
        outcomes.append(outcome(results[expectation.name], sample=sample, detail=expectation.expects))
    share = (results["errorCode_share"].result or {}).get("observed_value")
    share_text = "n/a" if share is None else f"{share:.1%}"
    detail = BY_NAME["errorCode_share"].expects.format(
        share=share_text, low_share=f"{low_share:.0%}", high_share=f"{high_share:.0%}"
    )
    outcomes.append(outcome(results["errorCode_share"], sample=[share_text], detail=detail))
    if median > 0:
        detail = BY_NAME["row_count_vs_history"].expects.format(
            rows=kept.num_rows, history_days=len(history), median=f"{median:g}", min_rows=low, max_rows=high
        )
        partial = f" ({fraction:.0%} of the day elapsed)" if fraction < 1 else ""
        outcomes.append(
            outcome(results["row_count_vs_history"], sample=[str(kept.num_rows)], detail=detail + partial)
        )
    else:
        reason = "no earlier partitions in the store" if not history else "earlier partitions are empty"
        outcomes.append(_not_checked("row_count_vs_history", reason))
    if reference > bounds.start:
        newest = (results["freshness"].result or {}).get("observed_value")
        newest_text = newest.isoformat() if isinstance(newest, datetime) else "none"
        detail = BY_NAME["freshness"].expects.format(
            newest=newest_text, oldest_allowed=oldest_allowed.isoformat(timespec="seconds")
        )
        outcomes.append(outcome(results["freshness"], sample=[newest_text], detail=detail))
    else:
        outcomes.append(_not_checked("freshness", f"{bounds.day} has not started yet"))
    return outcomes


def _not_checked(name: str, reason: str) -> ExpectationOutcome:
    """A warning-level check that had nothing to compare with; recorded so the page says so."""
    return ExpectationOutcome(name, BY_NAME[name].column, WARNING, True, 0, 0.0, [], f"not checked: {reason}")


def _source_kinds(column: pa.ChunkedArray) -> pa.Array:
    """ipv4 | ipv6 | aws-service | invalid | missing per row, deciding once per distinct value."""
    values = pc.fill_null(column, "").combine_chunks() if column.num_chunks else pa.array([], pa.string())
    distinct = pc.unique(values)
    kinds = np.full(len(distinct), "invalid", dtype=object)
    kinds[_np(pc.match_substring_regex(distinct, IPV4_REGEX))] = "ipv4"
    kinds[
        _np(pc.or_(pc.match_substring_regex(distinct, AWS_NAME_REGEX), pc.equal(distinct, "AWS Internal")))
    ] = "aws-service"
    kinds[_np(pc.equal(distinct, ""))] = "missing"
    for i in np.flatnonzero(_np(pc.match_substring(distinct, ":"))):
        try:
            if ipaddress.ip_address(distinct[i].as_py()).version == 6:
                kinds[i] = "ipv6"
        except ValueError:
            pass
    return pa.array(kinds, pa.string()).take(pc.index_in(values, distinct))


def _invalid_sources(kept: pa.Table, kinds: pa.Array) -> list[str]:
    bad = pc.invert(pc.is_in(kinds, pa.array(VALID_SOURCE_KINDS)))
    values = pc.fill_null(kept.column("sourceIPAddress").filter(bad), MISSING)
    return _distinct_sample(pc.unique(values).slice(0, SAMPLE_VALUES).to_pylist())


def _pandas() -> Any:
    import pandas

    return pandas
