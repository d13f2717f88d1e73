"""Every data-quality expectation, defined once.

An :class:`Expectation` is the single place where a check is written: its name, severity, the Great
Expectations class and arguments, and a line that says what is expected. The per-day bounds (the day's
start and end, "now", the volume band, the freshness limit) are GX expectation parameters
(``{"$PARAMETER": name}``) filled in at each run, so the suites are built once (``suites``).

The same definition decides quarantine: :meth:`Expectation.unexpected_rows` reads the definition's own
GX class and arguments, resolved with the same parameter values GX gets, and evaluates them in Arrow over
the very frame GX validates (vectorised: a million rows take milliseconds, GX's pandas row lists would
not). So what the quality page reports and what is moved to quarantine cannot drift apart.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CRITICAL = "critical"
WARNING = "warning"

FUTURE_TOLERANCE = timedelta(minutes=5)  # clock skew between AWS and us
VOLUME_BAND = (0.5, 2.0)  # row count allowed between these multiples of the history's median
ERROR_SHARE_BOUNDS = (0.0, 0.5)  # share of rows with an errorCode
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

# GX classes that judge the table or a column as a whole: no per-row counts, the detail says what was seen
_AGGREGATES = frozenset(
    {"ExpectTableRowCountToBeBetween", "ExpectColumnMeanToBeBetween", "ExpectColumnMaxToBeBetween"}
)


@functools.cache
def known_regions() -> frozenset[str]:
    """Every real AWS region code, from the data file shipped with the package."""
    text = resources.files("trailguard.quality").joinpath("data/aws_regions.json").read_text(encoding="utf-8")
    partitions = json.loads(text)["partitions"]
    return frozenset(region for regions in partitions.values() for region in regions)


def parameter(name: str) -> dict[str, str]:
    """A GX expectation parameter: the value is given at each run (``expectation_parameters``)."""
    return {"$PARAMETER": name}


@dataclass(frozen=True)
class Expectation:
    """One expectation: what GX validates, what the page shows, and (``quarantine``) what moves rows."""

    name: str
    gx_type: str  # the Great Expectations 1.x class in great_expectations.expectations
    severity: str
    column: str | None  # the event column the verdict is about; None for the table or the schema
    expects: str = ""  # the detail line; ``{placeholders}`` are filled from the run's description values
    arguments: Mapping[str, Any] = field(default_factory=dict)  # GX arguments besides the column
    frame_column: str | None = None  # the checked frame's column when it is derived from ``column``
    quarantine: bool = False  # critical and row level: rows breaking it leave the partition

    @property
    def checked_column(self) -> str | None:
        return self.frame_column or self.column

    @property
    def table_level(self) -> bool:
        """A verdict on the whole partition: no per-row counts or samples."""
        return self.gx_type in _AGGREGATES

    def gx_expectation(self) -> Any:
        """The GX expectation, parameters left as ``$PARAMETER`` references (filled at each run)."""
        import great_expectations.expectations as gxe

        column = {"column": self.checked_column} if self.checked_column else {}
        return getattr(gxe, self.gx_type)(
            severity=self.severity, meta={"name": self.name}, **column, **dict(self.arguments)
        )

    def unexpected_rows(self, frame: pa.Table, parameters: Mapping[str, Any]) -> np.ndarray:
        """Which rows of ``frame`` break this expectation, from its own GX class and arguments.

        Null values pass the range check, as in GX; uniqueness flags the later copies of a value (the first
        one stays), where GX counts every copy."""
        values = frame.column(self.checked_column)
        args = {k: _resolve(v, parameters) for k, v in self.arguments.items()}
        if self.gx_type == "ExpectColumnValuesToNotBeNull":
            return _np(pc.is_null(values))
        if self.gx_type == "ExpectColumnValuesToBeUnique":
            return _later_copies(values)
        if self.gx_type == "ExpectColumnValuesToBeBetween":
            outside = np.zeros(frame.num_rows, bool)
            low, high = args.get("min_value"), args.get("max_value")
            if low is not None:
                below = pc.less_equal if args.get("strict_min") else pc.less
                outside |= _np(below(values, pa.scalar(low, values.type)))
            if high is not None:
                above = pc.greater_equal if args.get("strict_max") else pc.greater
                outside |= _np(above(values, pa.scalar(high, values.type)))
            return outside
        if self.gx_type == "ExpectColumnValuesToBeInSet":  # null passes, as in GX
            allowed = pa.array(list(args["value_set"]), values.type)
            return ~_np(pc.is_in(values, value_set=allowed)) & _np(pc.is_valid(values))
        raise ValueError(f"{self.name}: rows breaking a {self.gx_type} cannot be picked out for quarantine")


def _resolve(value: Any, parameters: Mapping[str, Any]) -> Any:
    if isinstance(value, Mapping) and "$PARAMETER" in value:
        return parameters[value["$PARAMETER"]]
    return value


def _later_copies(values: pa.ChunkedArray) -> np.ndarray:
    """Non-null values already seen earlier in the column."""
    n = len(values)
    first = np.zeros(n, bool)
    if n:
        index = pa.table({"value": values, "i": pa.array(np.arange(n))})
        firsts = index.group_by("value", use_threads=False).aggregate([("i", "min")]).column("i_min")
        first[firsts.to_numpy()] = True
    return ~first & ~_np(pc.is_null(values))


def _np(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array as numpy, null counting as False."""
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


# -- the suites: each checks its own frame (trailguard.quality.checks) ----------------------------------

# Required columns and their types as the part files store them; checked on a frame with one row per
# required column: its expected and its observed type kind (None when a part file lacks the column).
SCHEMA = (
    Expectation("schema_columns", "ExpectColumnValuesToNotBeNull", CRITICAL, None,
                frame_column="observed_type"),
    Expectation("schema_types", "ExpectColumnPairValuesToBeEqual", CRITICAL, None,
                arguments={"column_A": "observed_type", "column_B": "expected_type",
                           "ignore_row_if": "either_value_is_missing"}),
)  # fmt: skip

# Critical, on every row that came in for the day (the partition plus rows earlier runs quarantined).
# The row-level ones move the rows breaking them to quarantine, named in this order in quarantine_reason.
INCOMING = (
    Expectation("events_present", "ExpectTableRowCountToBeBetween", CRITICAL, None,
                arguments={"min_value": 1}),
    Expectation("eventID_not_null", "ExpectColumnValuesToNotBeNull", CRITICAL, "eventID",
                "eventID present (not null, not empty)", quarantine=True),
    Expectation("eventID_unique", "ExpectColumnValuesToBeUnique", CRITICAL, "eventID",
                "eventID unique (the first copy stays, later copies are quarantined)", quarantine=True),
    Expectation("eventTime_not_null", "ExpectColumnValuesToNotBeNull", CRITICAL, "eventTime",
                "eventTime present", quarantine=True),
    Expectation("eventTime_in_day", "ExpectColumnValuesToBeBetween", CRITICAL, "eventTime",
                "eventTime within {day} UTC",
                arguments={"min_value": parameter("day_start"), "max_value": parameter("day_end"),
                           "strict_max": True}, quarantine=True),
    Expectation("eventTime_not_future", "ExpectColumnValuesToBeBetween", CRITICAL, "eventTime",
                "eventTime not after now + {tolerance_minutes} min ({latest_allowed})",
                arguments={"max_value": parameter("latest_allowed")}, quarantine=True),
)  # fmt: skip

# On the rows that stay in the partition: one critical (something is left), warnings otherwise.
PARTITION = (
    Expectation("rows_remaining", "ExpectTableRowCountToBeBetween", CRITICAL, None,
                arguments={"min_value": 1}),
    Expectation("eventSource_amazonaws", "ExpectColumnValuesToMatchRegex", WARNING, "eventSource",
                "must match *.amazonaws.com", arguments={"regex": AWS_NAME_REGEX}),
    Expectation("awsRegion_known", "ExpectColumnValuesToBeInSet", WARNING, "awsRegion",
                "must be a real AWS region (rows are kept)", arguments={"value_set": sorted(known_regions())}),
    Expectation("sourceIPAddress_valid", "ExpectColumnValuesToBeInSet", WARNING, "sourceIPAddress",
                "must be IPv4, IPv6, *.amazonaws.com or 'AWS Internal'",
                arguments={"value_set": list(VALID_SOURCE_KINDS)}, frame_column="sourceIPAddress.kind"),
    Expectation("userIdentity.type_known", "ExpectColumnValuesToBeInSet", WARNING,
                "userIdentity.type", "must be a documented identity type (absent is allowed)",
                arguments={"value_set": list(KNOWN_IDENTITY_TYPES)}),
    Expectation("eventType_known", "ExpectColumnValuesToBeInSet", WARNING, "eventType",
                "must be a documented CloudTrail event type", arguments={"value_set": list(KNOWN_EVENT_TYPES)}),
    Expectation("errorCode_share", "ExpectColumnMeanToBeBetween", WARNING, "errorCode",
                "{share} of rows have an errorCode; allowed {low_share}..{high_share}",
                arguments={"min_value": parameter("min_error_share"), "max_value": parameter("max_error_share")},
                frame_column="errorCode.present"),
    Expectation("row_count_vs_history", "ExpectTableRowCountToBeBetween", WARNING, None,
                "{rows} rows; median of {history_days} earlier partitions {median}, allowed {min_rows}..{max_rows}",
                arguments={"min_value": parameter("min_rows"), "max_value": parameter("max_rows")}),
    Expectation("freshness", "ExpectColumnMaxToBeBetween", WARNING, "eventTime",
                "newest event {newest}; must be at or after {oldest_allowed}",
                arguments={"min_value": parameter("oldest_allowed")}),
)  # fmt: skip

# VPC Flow Logs (trailguard.flows.quality builds their frames): the same severities and quarantine.
FLOW_LOG_STATUSES = ("OK", "NODATA", "SKIPDATA")
FLOW_ACTIONS = ("ACCEPT", "REJECT")
FLOWS_INCOMING = (
    Expectation("flows_present", "ExpectTableRowCountToBeBetween", CRITICAL, None, arguments={"min_value": 1}),
    Expectation("flow_start_not_null", "ExpectColumnValuesToNotBeNull", CRITICAL, "start",
                "start present", quarantine=True),
    Expectation("flow_start_in_day", "ExpectColumnValuesToBeBetween", CRITICAL, "start", "start within {day} UTC",
                arguments={"min_value": parameter("day_start"), "max_value": parameter("day_end"),
                           "strict_max": True}, quarantine=True),
    Expectation("flow_start_not_future", "ExpectColumnValuesToBeBetween", CRITICAL, "start",
                "start not after now + {tolerance_minutes} min ({latest_allowed})",
                arguments={"max_value": parameter("latest_allowed")}, quarantine=True),
    Expectation("flow_log_status_known", "ExpectColumnValuesToBeInSet", CRITICAL, "log_status",
                "log-status OK, NODATA or SKIPDATA", arguments={"value_set": list(FLOW_LOG_STATUSES)},
                quarantine=True),
)  # fmt: skip
FLOWS_PARTITION = (
    Expectation("flow_rows_remaining", "ExpectTableRowCountToBeBetween", CRITICAL, None, arguments={"min_value": 1}),
    Expectation("flow_action_known", "ExpectColumnValuesToBeInSet", WARNING, "action",
                "ACCEPT or REJECT on traffic records", arguments={"value_set": list(FLOW_ACTIONS)}),
    Expectation("flow_srcaddr_ip", "ExpectColumnValuesToBeInSet", WARNING, "srcaddr",
                "an IPv4 or IPv6 address on traffic records", arguments={"value_set": ["ipv4", "ipv6"]},
                frame_column="srcaddr.kind"),
    Expectation("flow_dstaddr_ip", "ExpectColumnValuesToBeInSet", WARNING, "dstaddr",
                "an IPv4 or IPv6 address on traffic records", arguments={"value_set": ["ipv4", "ipv6"]},
                frame_column="dstaddr.kind"),
    Expectation("flow_end_after_start", "ExpectColumnValuesToBeBetween", WARNING, "end", "end at or after start",
                arguments={"min_value": 0}, frame_column="duration"),
    Expectation("flow_nodata_share", "ExpectColumnMeanToBeBetween", WARNING, "log_status",
                "{share} of records are NODATA/SKIPDATA; allowed up to {max_share}",
                arguments={"max_value": parameter("max_nodata_share")}, frame_column="nodata"),
    Expectation("flow_row_count_vs_history", "ExpectTableRowCountToBeBetween", WARNING, None,
                "{rows} records; median of {history_days} earlier days {median}, allowed {min_rows}..{max_rows}",
                arguments={"min_value": parameter("min_rows"), "max_value": parameter("max_rows")}),
)  # fmt: skip

SUITES: dict[str, tuple[Expectation, ...]] = {
    "schema": SCHEMA, "incoming": INCOMING, "partition": PARTITION,
    "flows_incoming": FLOWS_INCOMING, "flows_partition": FLOWS_PARTITION,
}  # fmt: skip
BY_NAME: dict[str, Expectation] = {e.name: e for suite in SUITES.values() for e in suite}
ROW_LEVEL = tuple(e.name for e in INCOMING if e.quarantine)  # the order of names in quarantine_reason
FLOWS_ROW_LEVEL = tuple(e.name for e in FLOWS_INCOMING if e.quarantine)
QUARANTINING = ROW_LEVEL + FLOWS_ROW_LEVEL  # a failure of these is repaired by the quarantine
TABLE_LEVEL = tuple(e.name for suite in SUITES.values() for e in suite if e.table_level)
VALUE_CHECKS = tuple(e for e in PARTITION if e.severity == WARNING and not e.table_level)


def unexpected_rows(frame: pa.Table, parameters: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per quarantining expectation, the rows of the incoming frame that break it."""
    return {e.name: e.unexpected_rows(frame, parameters) for e in INCOMING if e.quarantine}
