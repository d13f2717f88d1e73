"""The data-quality gate for one day's events partition.

Great Expectations (1.x, an in-memory context, a pandas dataframe per batch) evaluates and records every
expectation. Three suites run per partition:

* ``schema`` (critical): the part files' own column names and types, read from their parquet footers,
  because reading with EVENT_SCHEMA would silently fill a missing column with nulls or cast ints to text;
* ``incoming`` (critical, row level) on every row that came in for the day: the partition plus rows an
  earlier run moved to quarantine, so a rerun sees the same rows and gives the same result;
* ``partition`` (mostly warnings) on the rows that stay: values, volume against history, freshness, errors.

Rows breaking a critical row-level expectation are moved to ``quarantine/date=D/rows-<run>.parquet`` with
the reason and the partition is rewritten without them; a schema failure or a day without events fails
the whole partition and nothing is rewritten. Each run writes ``quality/date=D/result-<run>.json``,
``result.json`` (latest) and ``index.html`` (latest, every value escaped: the data is attacker-controlled).

The row masks used for quarantine are computed with vectorised Arrow (GX reports the same counts); the
IP-address check classifies each distinct value once and GX checks the derived category column, because
a regex or a Python call per row would be slow at a million rows.
"""

from __future__ import annotations

import functools
import html
import ipaddress
import json
import logging
import math
import statistics
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trailguard.store.events import EventStore, new_run_id, write_bytes_atomic, write_parquet_atomic
from trailguard.store.events import day_text as _day_text
from trailguard.store.fs import DataPath, parquet_file, parquet_schema, read_parquet
from trailguard.store.schema import EVENT_SCHEMA
from trailguard.store.text import sanitise

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

CRITICAL = "critical"
WARNING = "warning"
PASSED, WARNED, FAILED = "passed", "warning", "failed"

FUTURE_TOLERANCE = timedelta(minutes=5)  # clock skew between AWS and us
VOLUME_BAND = (0.5, 2.0)  # row count allowed between these multiples of the history's median
ERROR_SHARE_BOUNDS = (0.0, 0.5)  # share of rows with an errorCode
SAMPLE_VALUES = 5
SAMPLE_CHARS = 80
MISSING = "<missing>"  # stands in for null where a missing value must count as unexpected

KNOWN_IDENTITY_TYPES = (
    "Root", "IAMUser", "AssumedRole", "Role", "FederatedUser", "AWSAccount", "AWSService",
    "IdentityCenterUser", "Directory", "Unknown", "SAMLUser", "WebIdentityUser",
)  # fmt: skip
KNOWN_EVENT_TYPES = (
    "AwsApiCall", "AwsServiceEvent", "AwsConsoleAction", "AwsConsoleSignIn", "AwsCloudTrailInsight", "AwsVpceEvent",
)  # fmt: skip
AWS_NAME_REGEX = r"^[a-z0-9][a-z0-9.-]*\.amazonaws\.com$"
IPV4_REGEX = (
    r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$"
)
VALID_SOURCE_KINDS = ("ipv4", "ipv6", "aws-service")

# critical row-level expectations, in the order their names are joined into quarantine_reason
ROW_LEVEL = (
    "eventID_not_null",
    "eventID_unique",
    "eventTime_not_null",
    "eventTime_in_day",
    "eventTime_not_future",
)
# expectations on the whole partition: no per-row counts, the detail says what was observed
TABLE_LEVEL = ("events_present", "rows_remaining", "errorCode_share", "row_count_vs_history", "freshness")
_READ_COLUMNS = (
    "eventID", "eventTime", "eventSource", "awsRegion", "sourceIPAddress", "userIdentity.type", "eventType",
    "errorCode",
)  # fmt: skip
_FINGERPRINT = ("eventID", "eventTime", "source_key", "raw")  # recognises a row already in quarantine

QUARANTINE_SCHEMA = pa.schema(
    [field_.with_nullable(True) for field_ in EVENT_SCHEMA]
    + [pa.field("quarantine_reason", pa.string()), pa.field("run_id", pa.string())]
)
_NULLABLE_EVENTS = pa.schema([field_.with_nullable(True) for field_ in EVENT_SCHEMA])


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict on one partition, as stored in result.json and shown in the page."""

    name: str
    column: str | None
    severity: str
    success: bool
    unexpected_count: int
    unexpected_percent: float
    sample: list[str]
    detail: str

    def summary_line(self) -> str:
        verdict = _verdict(self.name, self.success, self.severity).upper()
        column = f" [{self.column}]" if self.column else ""
        counts = (
            ""
            if self.name in TABLE_LEVEL
            else f" {self.unexpected_count} unexpected ({self.unexpected_percent:.2f}%)"
        )
        sample = f" sample={self.sample!r}" if self.sample and self.name not in TABLE_LEVEL else ""
        return f"{verdict} {self.severity:<8} {self.name}{column}:{counts}{sample} {_printable(self.detail)}"


@dataclass(frozen=True)
class QualityResult:
    """The outcome of validating one day; ``status`` is authoritative (``passed`` | ``warning`` | ``failed``)."""

    date: str
    status: str
    rows_in: int
    rows_passed: int
    rows_quarantined: int
    outcomes: list[ExpectationOutcome]
    result_path: DataPath
    html_path: DataPath
    seconds: float
    run_id: str = ""
    quarantine_path: DataPath | None = None  # the file this run wrote, if it moved any row

    @property
    def critical_failed(self) -> bool:
        """True when scoring must not use this day (schema broken, no events, nothing left)."""
        return self.status == FAILED

    def headline(self) -> str:
        return (
            f"data quality {self.date}: {self.status.upper()} rows_in={self.rows_in} passed={self.rows_passed} "
            f"quarantined={self.rows_quarantined} ({self.seconds:.2f}s) page={self.html_path}"
        )

    def summary_lines(self) -> list[str]:
        """The headline, then one line per expectation (values repr'd: they may hold control characters)."""
        return [self.headline(), *(o.summary_line() for o in self.outcomes)]


# -- public API ---------------------------------------------------------------------------------------


def validate_partition(
    store: EventStore,
    day: date | str,
    *,
    now: datetime | None = None,
    history_days: int = 7,
    allowed_lateness_hours: float = 2.0,
    volume_band: tuple[float, float] = VOLUME_BAND,
    error_share_bounds: tuple[float, float] = ERROR_SHARE_BOUNDS,
) -> QualityResult:
    """Validate a day's partition, quarantine rows that break critical row-level expectations, save and
    return the result. Never raises on bad data: a broken partition comes back with status ``failed``."""
    started = time.perf_counter()
    day_text = _day_text(day)
    now = _utc(now) if now is not None else datetime.now(timezone.utc)
    day_start = datetime.fromisoformat(day_text).replace(tzinfo=timezone.utc)
    day_end = day_start + timedelta(days=1)
    run_id = new_run_id()
    files = store.partition_files(day_text)  # pinned: every read below uses exactly these files
    earlier = _read_quarantined_rows(store, day_text)

    outcomes, schema_ok = _check_schema(files)
    quarantine_path: DataPath | None = None
    rows_moved = 0
    if not schema_ok:  # nothing is read with a broken schema, nothing rewritten
        rows_passed = sum(parquet_file(f).metadata.num_rows for f in files)
        rows_quarantined = earlier.num_rows
    else:
        bounds = (day_start, day_end, now)
        rows = _find_rows(_read_files(files, _READ_COLUMNS), earlier, bounds)
        if rows.move.any():
            rows, quarantine_path = _move_rows(store, day_text, files, earlier, bounds, rows, run_id)
            rows_moved = int(rows.move.sum())
        union = rows.union
        outcomes += _check_incoming(union, rows.masks, day_text, day_start, day_end, now)
        kept = rows.part.filter(~rows.move)
        rows_passed = kept.num_rows
        rows_quarantined = union.num_rows - rows_passed
        if union.num_rows:
            history = _history_counts(store, day_text, history_days)
            outcomes += _check_partition(
                kept,
                day_text,
                day_start,
                day_end,
                now,
                history,
                volume_band,
                timedelta(hours=allowed_lateness_hours),
                error_share_bounds,
            )
    rows_in = rows_passed + rows_quarantined
    status = _status(outcomes, rows_quarantined)
    seconds = time.perf_counter() - started
    result_path, html_path = (
        _quality_dir(store, day_text) / "result.json",
        _quality_dir(store, day_text) / "index.html",
    )
    result = QualityResult(
        date=day_text,
        status=status,
        rows_in=rows_in,
        rows_passed=rows_passed,
        rows_quarantined=rows_quarantined,
        outcomes=outcomes,
        result_path=result_path,
        html_path=html_path,
        seconds=seconds,
        run_id=run_id,
        quarantine_path=quarantine_path,
    )
    document = _result_document(
        result, store, now, history_days, allowed_lateness_hours, volume_band, error_share_bounds, rows_moved
    )
    _save(store, result, document)
    _log(result)
    return result


def read_quality_status(store: EventStore, day: date | str) -> dict | None:
    """The latest saved result of a day (result.json as a dict), or None when it was never validated."""
    path = _quality_dir(store, _day_text(day)) / "result.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: unreadable data-quality result ({exc}); validate the day again") from exc


def is_scorable(store: EventStore, day: date | str) -> bool:
    """True when the day was validated, did not fail critically, and has not changed since (an ingest that
    appended rows after the validation makes the verdict stale: validate again)."""
    day_text = _day_text(day)
    status = read_quality_status(store, day_text)
    if status is None:
        log.info("%s: not validated yet, not scorable", day_text)
        return False
    if status.get("status") == FAILED:
        log.info("%s: data quality failed, not scorable", day_text)
        return False
    rows_now = store.count_rows(day_text)
    if rows_now != status.get("rows_passed"):
        log.warning(
            "%s: partition has %d rows, validation saw %s: validate again before scoring",
            day_text,
            rows_now,
            status.get("rows_passed"),
        )
        return False
    return True


@functools.cache
def known_regions() -> frozenset[str]:
    """Every real AWS region code, from the data file shipped with the package."""
    text = resources.files("trailguard.quality").joinpath("data/aws_regions.json").read_text(encoding="utf-8")
    partitions = json.loads(text)["partitions"]
    return frozenset(region for regions in partitions.values() for region in regions)


# -- Great Expectations ----------------------------------------------------------------------------------

_GX_LOCK = threading.Lock()


@functools.cache
def _batch_definition() -> Any:
    """One in-memory GX context per process, reused: importing GX and building the context is the slow part."""
    gx_log = logging.getLogger("great_expectations")
    if gx_log.level == logging.NOTSET:  # its INFO chatter (registries, temp dirs) drowns a task log
        gx_log.setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.enable_analytics(False)
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = context.data_sources.add_pandas("trailguard").add_dataframe_asset("events_partition")
    return asset.add_batch_definition_whole_dataframe("whole_partition")


def _expect(kind: str, name: str, severity: str, **kwargs: Any) -> Any:
    import great_expectations.expectations as gxe

    return getattr(gxe, kind)(severity=severity, meta={"name": name}, **kwargs)


def _run_suite(suite_name: str, frame: pd.DataFrame, expectations: list[Any]) -> dict[str, Any]:
    """Validate ``frame`` against the expectations; results keyed by our expectation name."""
    import great_expectations as gx

    suite = gx.ExpectationSuite(name=suite_name, expectations=expectations)
    with _GX_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(
            suite, result_format={"result_format": "BASIC", "partial_unexpected_count": 20}
        )
    return {r.expectation_config.meta["name"]: r for r in result.results}


def _outcome(
    res: Any,
    column: str | None,
    *,
    sample: list[str] | None = None,
    detail: str = "",
    table_level: bool = False,
) -> ExpectationOutcome:
    """Turn one GX result into our record; samples are distinct values, clipped (they are attacker data)."""
    config = res.expectation_config
    result = res.result or {}
    info = res.exception_info or {}
    success = bool(res.success)
    if info.get("raised_exception"):
        success = False
        detail = f"{detail}; GX error: {info.get('exception_message')}".lstrip("; ")
    if table_level:
        count, percent = 0, 0.0
    else:
        count = int(result.get("unexpected_count") or 0)
        percent = float(result.get("unexpected_percent") or 0.0)
    if sample is None:
        sample = [] if table_level else _distinct_sample(result.get("partial_unexpected_list") or [])
    return ExpectationOutcome(
        name=config.meta["name"],
        column=column,
        severity=str(getattr(config.severity, "value", config.severity)),
        success=success,
        unexpected_count=count,
        unexpected_percent=round(percent, 4),
        sample=sample if not success else [],
        detail=detail,
    )


# -- suites ----------------------------------------------------------------------------------------------


def _check_schema(files: list[DataPath]) -> tuple[list[ExpectationOutcome], bool]:
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
    results = _run_suite(
        "schema",
        frame,
        [
            _expect("ExpectColumnValuesToNotBeNull", "schema_columns", CRITICAL, column="observed_type"),
            _expect(
                "ExpectColumnPairValuesToBeEqual",
                "schema_types",
                CRITICAL,
                column_A="observed_type",
                column_B="expected_type",
                ignore_row_if="either_value_is_missing",
            ),
        ],
    )
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
    outcomes = [
        _outcome(results["schema_columns"], None, sample=_clip_all(missing), detail=detail),
        _outcome(
            results["schema_types"],
            None,
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
            outcomes[1] = _replace(
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


def _row_masks(
    union: pa.Table, day_start: datetime, day_end: datetime, now: datetime
) -> dict[str, np.ndarray]:
    """Which rows break each critical row-level expectation; computed in Arrow so 1M rows take milliseconds."""
    ids = union.column("eventID")
    times = union.column("eventTime")
    id_missing = _np(pc.or_kleene(pc.is_null(ids), pc.equal(ids, "")))
    n = union.num_rows
    first = np.zeros(n, bool)
    if n:
        index = pa.table({"id": ids, "i": pa.array(np.arange(n))})
        firsts = index.group_by("id", use_threads=False).aggregate([("i", "min")]).column("i_min")
        first[firsts.to_numpy()] = True
    time_missing = _np(pc.is_null(times))
    limit = now + FUTURE_TOLERANCE
    return {
        "eventID_not_null": id_missing,
        "eventID_unique": ~first & ~id_missing,
        "eventTime_not_null": time_missing,
        "eventTime_in_day": ~time_missing
        & _np(
            pc.or_(
                pc.less(times, pa.scalar(day_start, times.type)),
                pc.greater_equal(times, pa.scalar(day_end, times.type)),
            )
        ),
        "eventTime_not_future": ~time_missing & _np(pc.greater(times, pa.scalar(limit, times.type))),
    }


def _check_incoming(
    union: pa.Table,
    masks: dict[str, np.ndarray],
    day_text: str,
    day_start: datetime,
    day_end: datetime,
    now: datetime,
) -> list[ExpectationOutcome]:
    """Critical expectations on every row that came in for the day (partition + quarantined before)."""
    ids = union.column("eventID")
    frame = pa.table(
        {
            "eventID": pc.if_else(pc.equal(ids, ""), pa.scalar(None, pa.string()), ids),
            "eventTime": union.column("eventTime"),
        }
    ).to_pandas()
    limit = now + FUTURE_TOLERANCE
    expectations = [
        _expect("ExpectTableRowCountToBeBetween", "events_present", CRITICAL, min_value=1),
        _expect("ExpectColumnValuesToNotBeNull", "eventID_not_null", CRITICAL, column="eventID"),
        _expect("ExpectColumnValuesToBeUnique", "eventID_unique", CRITICAL, column="eventID"),
        _expect("ExpectColumnValuesToNotBeNull", "eventTime_not_null", CRITICAL, column="eventTime"),
        _expect(
            "ExpectColumnValuesToBeBetween",
            "eventTime_in_day",
            CRITICAL,
            column="eventTime",
            min_value=day_start,
            max_value=day_end,
            strict_max=True,
        ),
        _expect(
            "ExpectColumnValuesToBeBetween",
            "eventTime_not_future",
            CRITICAL,
            column="eventTime",
            max_value=limit,
        ),
    ]
    results = _run_suite("incoming", frame, expectations)
    present = results["events_present"]
    detail = (
        f"{union.num_rows} rows came in" if present.success else f"no events for {day_text}: ingest first"
    )
    outcomes = [_outcome(present, None, table_level=True, detail=detail)]
    if not union.num_rows:
        return outcomes
    expected = {
        "eventID_not_null": "eventID present (not null, not empty)",
        "eventID_unique": "eventID unique (the first copy stays, later copies are quarantined)",
        "eventTime_not_null": "eventTime present",
        "eventTime_in_day": f"eventTime within {day_text} UTC",
        "eventTime_not_future": f"eventTime not after now + {int(FUTURE_TOLERANCE.total_seconds() // 60)} min "
        f"({limit.isoformat(timespec='seconds')})",
    }
    for name in ROW_LEVEL:
        moved = int(masks[name].sum())
        detail = expected[name] + (
            f"; {moved} row(s) quarantined, the partition goes on without them" if moved else ""
        )
        column = "eventID" if name.startswith("eventID") else "eventTime"
        outcomes.append(_outcome(results[name], column, detail=detail))
    return outcomes


def _value_checks() -> tuple[tuple[str, str, str, dict[str, Any], str], ...]:
    """Per-value warnings on the rows that stay: (name, GX expectation, frame column, arguments, what is expected)."""
    return (
        ("eventSource_amazonaws", "ExpectColumnValuesToMatchRegex", "eventSource", {"regex": AWS_NAME_REGEX},
         "must match *.amazonaws.com"),
        ("awsRegion_known", "ExpectColumnValuesToBeInSet", "awsRegion", {"value_set": sorted(known_regions())},
         "must be a real AWS region (rows are kept)"),
        ("sourceIPAddress_valid", "ExpectColumnValuesToBeInSet", "sourceIPAddress.kind",
         {"value_set": list(VALID_SOURCE_KINDS)}, "must be IPv4, IPv6, *.amazonaws.com or 'AWS Internal'"),
        ("userIdentity.type_known", "ExpectColumnValuesToBeInSet", "userIdentity.type",
         {"value_set": list(KNOWN_IDENTITY_TYPES)}, "must be a documented identity type (absent is allowed)"),
        ("eventType_known", "ExpectColumnValuesToBeInSet", "eventType", {"value_set": list(KNOWN_EVENT_TYPES)},
         "must be a documented CloudTrail event type"),
    )  # fmt: skip


def _check_partition(
    kept: pa.Table,
    day_text: str,
    day_start: datetime,
    day_end: datetime,
    now: datetime,
    history: list[int],
    volume_band: tuple[float, float],
    lateness: timedelta,
    error_share_bounds: tuple[float, float],
) -> list[ExpectationOutcome]:
    """Expectations on the rows that stay in the partition: value sets, volume, freshness, error share."""
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
    expectations = [_expect("ExpectTableRowCountToBeBetween", "rows_remaining", CRITICAL, min_value=1)]
    if not kept.num_rows:
        result = _run_suite("partition", frame, expectations)["rows_remaining"]
        return [
            _outcome(result, None, table_level=True, detail="every row was quarantined: nothing to score")
        ]

    value_checks = _value_checks()
    for name, kind, column, kwargs, _ in value_checks:
        expectations.append(_expect(kind, name, WARNING, column=column, **kwargs))
    low_share, high_share = error_share_bounds
    expectations.append(
        _expect("ExpectColumnMeanToBeBetween", "errorCode_share", WARNING, column="errorCode.present",
                min_value=low_share, max_value=high_share)
    )  # fmt: skip
    reference = min(now, day_end)  # "now" for today, the end of the day for a finished day
    median = statistics.median(history) if history else 0
    fraction = min(1.0, max((reference - day_start) / timedelta(days=1), 0.0))  # expect less of a partial day
    low, high = math.floor(volume_band[0] * median * fraction), math.ceil(volume_band[1] * median)
    if median > 0:
        expectations.append(
            _expect(
                "ExpectTableRowCountToBeBetween",
                "row_count_vs_history",
                WARNING,
                min_value=low,
                max_value=high,
            )
        )
    oldest_allowed = reference - lateness
    if reference > day_start:
        expectations.append(
            _expect(
                "ExpectColumnMaxToBeBetween",
                "freshness",
                WARNING,
                column="eventTime",
                min_value=oldest_allowed,
            )
        )
    results = _run_suite("partition", frame, expectations)

    outcomes = [
        _outcome(results["rows_remaining"], None, table_level=True, detail=f"{kept.num_rows} rows stay")
    ]
    for name, _, column, _, what in value_checks:
        event_column = column.removesuffix(".kind")
        sample = _invalid_sources(kept, kinds) if name == "sourceIPAddress_valid" else None
        outcomes.append(_outcome(results[name], event_column, sample=sample, detail=what))
    share = (results["errorCode_share"].result or {}).get("observed_value")
    share_text = "n/a" if share is None else f"{share:.1%}"
    outcomes.append(
        _outcome(results["errorCode_share"], "errorCode", table_level=True, sample=[share_text],
                 detail=f"{share_text} of rows have an errorCode; allowed {low_share:.0%}..{high_share:.0%}")
    )  # fmt: skip
    if median > 0:
        partial = f" ({fraction:.0%} of the day elapsed)" if fraction < 1 else ""
        detail = f"{kept.num_rows} rows; median of {len(history)} earlier partitions {median:g}, allowed {low}..{high}"
        outcomes.append(
            _outcome(results["row_count_vs_history"], None, table_level=True, sample=[str(kept.num_rows)],
                     detail=detail + partial)
        )  # fmt: skip
    else:
        reason = "no earlier partitions in the store" if not history else "earlier partitions are empty"
        outcomes.append(_not_checked("row_count_vs_history", None, reason))
    if reference > day_start:
        newest = (results["freshness"].result or {}).get("observed_value")
        newest_text = newest.isoformat() if isinstance(newest, datetime) else "none"
        detail = (
            f"newest event {newest_text}; must be at or after {oldest_allowed.isoformat(timespec='seconds')}"
        )
        outcomes.append(
            _outcome(results["freshness"], "eventTime", table_level=True, sample=[newest_text], detail=detail)
        )
    else:
        outcomes.append(_not_checked("freshness", "eventTime", f"{day_text} has not started yet"))
    return outcomes


def _not_checked(name: str, column: str | None, reason: str) -> ExpectationOutcome:
    """A warning-level check that had nothing to compare with; recorded so the page says so."""
    return ExpectationOutcome(name, column, WARNING, True, 0, 0.0, [], f"not checked: {reason}")


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


# -- quarantine ----------------------------------------------------------------------------------------


def _read_quarantined_rows(store: EventStore, day_text: str) -> pa.Table:
    folder = store.quarantine_dir / f"date={day_text}"
    files = sorted(folder.glob("rows-*.parquet")) if folder.exists() else []
    if not files:
        return QUARANTINE_SCHEMA.empty_table()
    return pa.concat_tables([read_parquet(f, schema=QUARANTINE_SCHEMA) for f in files])


def _union(part: pa.Table, earlier: pa.Table) -> pa.Table:
    """Every row that came in for the day: the partition first (so its copy of an id counts as the first),
    then rows earlier runs quarantined."""
    columns = list(_READ_COLUMNS)
    schema = pa.schema([_NULLABLE_EVENTS.field(c) for c in columns])
    return pa.concat_tables([part.cast(schema), earlier.select(columns)])


def _any(masks: dict[str, np.ndarray], n: int) -> np.ndarray:
    return np.logical_or.reduce(list(masks.values())) if masks and n else np.zeros(n, bool)


@dataclass
class _Rows:
    """The day's rows as the row-level checks see them."""

    part: pa.Table  # the partition's checked columns
    union: pa.Table  # part, then rows earlier runs quarantined
    masks: dict[str, np.ndarray]  # per critical row-level expectation, over union
    move: np.ndarray  # partition rows to quarantine now


def _find_rows(part: pa.Table, earlier: pa.Table, bounds: tuple[datetime, datetime, datetime]) -> _Rows:
    union = _union(part, earlier)
    masks = _row_masks(union, *bounds)
    return _Rows(part, union, masks, _any(masks, union.num_rows)[: part.num_rows])


def _move_rows(
    store: EventStore,
    day_text: str,
    files: list[DataPath],
    earlier: pa.Table,
    bounds: tuple[datetime, datetime, datetime],
    rows: _Rows,
    run_id: str,
) -> tuple[_Rows, DataPath | None]:
    """Write the bad rows to quarantine, then rewrite the partition without them.

    Rows an earlier run already copied to quarantine (it died before rewriting) are only dropped from the
    partition, not copied again; the checks are then redone without them."""
    kept, moving = _split_files(files, rows.move)
    stale = _in_quarantine(moving, earlier)
    if stale.any():
        log.warning("%s: %d rows already in quarantine were still in the partition", day_text, stale.sum())
        stale_rows = np.zeros(len(rows.move), bool)
        stale_rows[np.flatnonzero(rows.move)[stale]] = True
        rows = _find_rows(rows.part.filter(~stale_rows), earlier, bounds)
        remove = stale_rows.copy()
        remove[~stale_rows] = rows.move
        kept, moving = _split_files(files, remove)
        moving = moving.filter(~stale_rows[remove])
    quarantine_path = None
    if moving.num_rows:
        moved_masks = {name: mask[: rows.part.num_rows][rows.move] for name, mask in rows.masks.items()}
        quarantine_path = _write_quarantine(store, day_text, moving, moved_masks, run_id)
    del moving
    _rewrite_if_unchanged(store, day_text, files, kept)
    return rows, quarantine_path


def _split_files(files: list[DataPath], remove: np.ndarray) -> tuple[pa.Table, pa.Table]:
    """All columns of the partition split into (kept, removed) rows, streamed batch by batch so a day of
    events is held in memory once, not twice."""
    kept: list[pa.RecordBatch] = []
    removed: list[pa.RecordBatch] = []
    offset = 0
    for path in files:
        for batch in parquet_file(path).iter_batches(batch_size=65_536, columns=list(EVENT_SCHEMA.names)):
            batch = batch.cast(_NULLABLE_EVENTS)
            mask = pa.array(remove[offset : offset + batch.num_rows])
            offset += batch.num_rows
            kept.append(batch.filter(pc.invert(mask)))
            removed.append(batch.filter(mask))
    if offset != len(remove):
        raise RuntimeError(
            f"partition changed while it was validated ({offset} rows, expected {len(remove)})"
        )
    return (
        pa.Table.from_batches(kept, schema=_NULLABLE_EVENTS),
        pa.Table.from_batches(removed, schema=_NULLABLE_EVENTS),
    )


def _in_quarantine(moving: pa.Table, earlier: pa.Table) -> np.ndarray:
    """Which rows about to be moved are already in the day's quarantine (same id, time, source and text)."""
    stale = np.zeros(moving.num_rows, bool)
    if not earlier.num_rows or not moving.num_rows:
        return stale
    known = set(zip(*(earlier.column(c).to_pylist() for c in _FINGERPRINT), strict=True))
    keys = zip(*(moving.column(c).to_pylist() for c in _FINGERPRINT), strict=True)
    for i, key in enumerate(keys):
        stale[i] = key in known
    return stale


def _reasons(masks: dict[str, np.ndarray]) -> pa.Array:
    """The names of the failed expectations per row, comma-joined, in ROW_LEVEL order."""
    parts = [pa.array(np.where(masks[name], name, None), pa.string()) for name in ROW_LEVEL]
    return pc.binary_join_element_wise(*parts, ",", null_handling="skip")


def _write_quarantine(
    store: EventStore, day_text: str, rows: pa.Table, masks: dict[str, np.ndarray], run_id: str
) -> DataPath:
    """Keep the moved rows with the expectations they broke; written before the partition is rewritten, so
    a crash in between leaves a copy in both places (recognised next run), never a lost row."""
    table = rows.cast(_NULLABLE_EVENTS).append_column("quarantine_reason", _reasons(masks))
    table = table.append_column("run_id", pa.array([run_id] * rows.num_rows, pa.string()))
    path = store.quarantine_dir / f"date={day_text}" / f"rows-{run_id}.parquet"
    write_parquet_atomic(table.cast(QUARANTINE_SCHEMA), path)
    log.warning("%s: moved %d rows to %s", day_text, rows.num_rows, path)
    return path


def _rewrite_if_unchanged(store: EventStore, day_text: str, files: list[DataPath], kept: pa.Table) -> None:
    """Rewrite the partition unless another writer added a part since we read it (its rows would be lost)."""
    if store.partition_files(day_text) != files:
        raise RuntimeError(
            f"{store.partition_dir(day_text)} changed while it was validated (a concurrent ingest?); "
            "the quarantined rows are saved, the partition is left as it was: validate the day again"
        )
    store.rewrite_partition(day_text, kept)


# -- results ---------------------------------------------------------------------------------------------


def _status(outcomes: list[ExpectationOutcome], rows_quarantined: int) -> str:
    """Failed when a critical expectation fails that quarantine cannot repair; row-level ones are repaired."""
    if any(o.severity == CRITICAL and not o.success and o.name not in ROW_LEVEL for o in outcomes):
        return FAILED
    if rows_quarantined or any(not o.success for o in outcomes):
        return WARNED
    return PASSED


def _quality_dir(store: EventStore, day_text: str) -> DataPath:
    return store.root / "quality" / f"date={day_text}"


def _result_document(
    result: QualityResult,
    store: EventStore,
    now: datetime,
    history_days: int,
    allowed_lateness_hours: float,
    volume_band: tuple[float, float],
    error_share_bounds: tuple[float, float],
    rows_moved: int,
) -> dict[str, Any]:
    import great_expectations as gx

    quarantine = result.quarantine_path
    return {
        "date": result.date,
        "run_id": result.run_id,
        "status": result.status,
        "critical_failed": result.critical_failed,
        "rows_in": result.rows_in,
        "rows_passed": result.rows_passed,
        "rows_quarantined": result.rows_quarantined,
        "rows_quarantined_this_run": rows_moved,
        "quarantine_file": None if quarantine is None else str(quarantine.relative_to(store.root)),
        "validated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "now": now.isoformat(timespec="seconds"),
        "seconds": round(result.seconds, 3),
        "parameters": {
            "history_days": history_days,
            "allowed_lateness_hours": allowed_lateness_hours,
            "volume_band": list(volume_band),
            "error_share_bounds": list(error_share_bounds),
            "future_tolerance_seconds": FUTURE_TOLERANCE.total_seconds(),
        },
        "engine": f"great_expectations {gx.__version__}",
        "outcomes": [asdict(o) for o in result.outcomes],
        "summary": result.summary_lines(),
    }


def _save(store: EventStore, result: QualityResult, document: dict[str, Any]) -> None:
    """The run's own JSON, then the latest JSON and page: a reader never sees a half-written file."""
    data = json.dumps(document, indent=2, ensure_ascii=False, default=str).encode("utf-8")
    folder = result.result_path.parent
    write_bytes_atomic(data, folder / f"result-{result.run_id}.json")
    write_bytes_atomic(data, result.result_path)
    write_bytes_atomic(render_html(document).encode("utf-8"), result.html_path)


def _log(result: QualityResult) -> None:
    lines = result.summary_lines()
    log.log(logging.ERROR if result.critical_failed else logging.INFO, "%s", lines[0])
    for outcome, line in zip(result.outcomes, lines[1:], strict=True):
        log.log(logging.INFO if outcome.success else logging.WARNING, "%s", line)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;
vertical-align:top}th{background:#f4f4f4}.passed{color:#17692c}.warning{color:#8a5a00}.failed{color:#a61b1b}
code{font-size:90%;word-break:break-all}
"""


def render_html(document: dict[str, Any]) -> str:
    """A small self-contained page of one result; every value is escaped, nothing is loaded or run."""
    e = _escape
    status = document["status"]
    counts = "".join(
        f"<tr><th>{e(label)}</th><td>{e(document.get(key))}</td></tr>"
        for label, key in (
            ("rows in", "rows_in"),
            ("rows passed", "rows_passed"),
            ("rows quarantined", "rows_quarantined"),
            ("quarantined by this run", "rows_quarantined_this_run"),
            ("quarantine file", "quarantine_file"),
            ("run", "run_id"),
            ("validated at", "validated_at"),
            ("now used", "now"),
            ("seconds", "seconds"),
            ("engine", "engine"),
        )
    )
    rows = []
    for o in document["outcomes"]:
        verdict = _verdict(o["name"], o["success"], o["severity"])
        css = {"ok": "passed", "failed": "failed"}.get(verdict, "warning")
        sample = "<br>".join(f"<code>{e(s)}</code>" for s in o["sample"])
        table_level = o["name"] in TABLE_LEVEL
        count = "" if table_level else e(o["unexpected_count"])
        percent = "" if table_level else f"{float(o['unexpected_percent']):.2f}%"
        rows.append(
            f"<tr><td>{e(o['name'])}</td><td>{e(o['column'] or '')}</td><td>{e(o['severity'])}</td>"
            f'<td class="{e(css)}">{e(verdict)}</td><td>{count}</td><td>{percent}</td><td>{sample}</td>'
            f"<td>{e(o['detail'])}</td></tr>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>Data quality {e(document['date'])}: {e(status)}</title><style>{_CSS}</style></head><body>"
        f'<h1>TrailGuard data quality for {e(document["date"])}: <span class="{e(status)}">{e(status)}</span></h1>'
        f"<table>{counts}</table>"
        "<p>A failed <b>critical</b> expectation stops scoring for this day; a <b>warning</b> is reported and "
        "scoring goes on. Rows breaking a critical row-level expectation are moved to the quarantine file with "
        "their reason.</p>"
        "<table><tr><th>expectation</th><th>column</th><th>severity</th><th>result</th><th>unexpected</th>"
        f"<th>%</th><th>sample</th><th>detail</th></tr>{''.join(rows)}</table>"
        "</body></html>\n"
    )


# -- small helpers ----------------------------------------------------------------------------------------


def _verdict(name: str, success: bool, severity: str) -> str:
    """ok | failed | quarantined (a critical row-level failure the quarantine repaired) | warning."""
    if success:
        return "ok"
    if severity == CRITICAL:
        return "quarantined" if name in ROW_LEVEL else "failed"
    return "warning"


def _escape(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _clip(value: Any) -> str:
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return sanitise(text, SAMPLE_CHARS, unsafe="keep", marker="…")


def _clip_all(values: list[Any]) -> list[str]:
    return [_clip(v) for v in values[:SAMPLE_VALUES]]


def _distinct_sample(values: list[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        seen.setdefault(_clip(MISSING if value is None else value), None)
        if len(seen) == SAMPLE_VALUES:
            break
    return list(seen)


def _printable(text: str) -> str:
    return sanitise(text, unsafe="escape")


def _replace(outcome: ExpectationOutcome, **changes: Any) -> ExpectationOutcome:
    return ExpectationOutcome(**{**asdict(outcome), **changes})


def _np(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array as numpy, null counting as False."""
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _read_files(files: list[DataPath], columns: tuple[str, ...] | None) -> pa.Table:
    cols = list(columns) if columns is not None else None
    if not files:
        schema = EVENT_SCHEMA if cols is None else pa.schema([EVENT_SCHEMA.field(c) for c in cols])
        return schema.empty_table()
    return pa.concat_tables([read_parquet(f, columns=cols, schema=EVENT_SCHEMA) for f in files])


def _history_counts(store: EventStore, day_text: str, history_days: int) -> list[int]:
    """Row counts of the latest ``history_days`` partitions before the day, from parquet footers."""
    earlier = [d for d in store.dates() if d < day_text][-history_days:] if history_days > 0 else []
    return [store.count_rows(d) for d in earlier]


def _pandas() -> Any:
    import pandas

    return pandas


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
