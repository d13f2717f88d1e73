"""Model features for one day's events: the paper's fields, context, and behaviour against the
principal's own past.

Why behaviour: the paper's fields (IP, user agent, ARN, time) only say *who* and *where*; a risk model
needs to know whether that is *usual for this principal*. Each event is compared with the principal's
trailing history (default 30 days before the day) and with its own earlier events that day, so every
feature is causal: an event never sees what happened after it.

Principal = ``userIdentity.arn``, else ``principalId``, else ``accountId``.

Scale: history is summarised per day into a small *profile* - counts per (dimension, principal, value) -
cached under ``<data root>/profiles/date=YYYY-MM-DD/profile.parquet`` and rebuilt when the day's partition
files change. A day's features then need only the day's events, 30 small profiles and the last hour of
the previous day; every lookup is a factorize, an Arrow hash lookup of the day's distinct pairs or a
sorted-array search, never a Python loop over rows (a million events take a few seconds).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from trailguard.model import enrich
from trailguard.model.enrich import Enricher
from trailguard.store.events import EventStore, id_keys, write_parquet_atomic
from trailguard.store.fs import DataPath, parquet_file, parquet_schema, read_parquet
from trailguard.store.schema import EVENT_SCHEMA

log = logging.getLogger(__name__)

CONSOLE_LOGIN = "console_login"
API_CALL = "api_call"
USE_CASES = (CONSOLE_LOGIN, API_CALL)
EVENT_TYPE_USE_CASE = {"AwsConsoleSignIn": CONSOLE_LOGIN, "AwsApiCall": API_CALL}
OTHER = "other"

WINDOW = pd.Timedelta(hours=1)
DEFAULT_HISTORY_DAYS = 30
PROFILE_VERSION = 3  # bump when a dimension's definition changes: cached profiles are then rebuilt

# columns read from the store: the day needs everything features use, history only what profiles and
# the last-hour window need
HISTORY_COLUMNS: tuple[str, ...] = (
    "eventTime",
    "eventName",
    "eventSource",
    "awsRegion",
    "sourceIPAddress",
    "userAgent",
    "userIdentity.arn",
    "userIdentity.principalId",
    "userIdentity.accountId",
    "vpcEndpointId",
    "errorCode",
    "responseElements.ConsoleLogin",
)
DAY_COLUMNS: tuple[str, ...] = (
    "eventID",
    "eventType",
    *HISTORY_COLUMNS,
    "userIdentity.type",
    "userIdentity.userName",
    "userIdentity.invokedBy",
    "userIdentity.sessionContext.attributes.mfaAuthenticated",
    "recipientAccountId",
    "readOnly",
    "additionalEventData.MFAUsed",
)

# behaviour dimensions: what is compared with the principal's past (network = the /24 or /48,
# ua = the user-agent family)
DIMENSION_NAMES = ("ip", "network", "asn", "country", "ua", "region", "event_name", "event_source", "hour")
ORG_DIMENSIONS = ("event_name", "country", "asn")  # also counted across all principals ("*")
# "novel" = not seen for the principal before today: unlike first_*, it stays set for every event of the
# day (an intruder's tenth call from a new country is as suspicious as the first)
NOVEL_DIMENSIONS = ("ip", "asn", "country", "ua", "event_name")
EVENTS_DIM = "_events"  # per-principal (and org) event totals
ORG = "*"

# display columns kept beside the features (report, reasons, scores file)
DISPLAY_COLUMNS: tuple[str, ...] = (
    "eventID",
    "eventTime",
    "use_case",
    "eventType",
    "principal",
    "principal_short",
    "eventName",
    "eventSource",
    "awsRegion",
    "account",
    "sourceIPAddress",
    "userAgent",
    "errorCode",
    "country",
    "asn",
    "ip_network",
    "network_zone",
    "category",
    "ua_family",
    "userIdentity.arn",
    "userIdentity.type",
    "responseElements.ConsoleLogin",
)


@dataclass(frozen=True)
class FeatureSet:
    """The named column lists of one use case: the paper's fields, the full set, the behaviour subset."""

    use_case: str
    paper_categorical: tuple[str, ...]
    paper_numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    behaviour: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column any model of this use case reads (the model input signature)."""
        seen: dict[str, None] = {}
        for col in (
            *self.paper_categorical,
            *self.categorical,
            *self.paper_numeric,
            *self.numeric,
            *self.behaviour,
        ):
            seen.setdefault(col, None)
        return tuple(seen)

    @property
    def categorical_columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.paper_categorical, *self.categorical)))


# The labelling functions' score (trailguard.detections) as one model input: the rules encode analysts'
# knowledge of what is dangerous, the models learn how much to trust them next to behaviour, and analysts'
# own scores correct both. Not built here (the rules need the raw records): training and scoring add it.
RULE_SCORE = "rule_score"

_WINDOW_FEATURES = (
    "last_hour_events",
    "last_hour_failures",
    "last_hour_failure_rate",
    "last_hour_distinct_names",
)
COUNT_FEATURES = ("last_hour_events", "last_hour_failures", "last_hour_distinct_names")  # models take log1p
_COMMON_BEHAVIOUR = (
    "first_ip",
    "first_network",
    "first_asn",
    "first_country",
    "first_ua",
    "first_hour",
    "novel_ip",
    "novel_asn",
    "novel_country",
    "novel_ua",
    "new_principal",
    "log_prior_events",
    "rarity_ip",
    "rarity_asn",
    "rarity_country",
    "rarity_ua",
    "rarity_hour",
    "org_rarity_country",
    "org_rarity_asn",
    *_WINDOW_FEATURES,
    "failed",
)

FEATURE_SETS: dict[str, FeatureSet] = {
    CONSOLE_LOGIN: FeatureSet(
        use_case=CONSOLE_LOGIN,
        paper_categorical=(
            "sourceIPAddress",
            "userAgent",
            "userIdentity.arn",
            "responseElements.ConsoleLogin",
        ),
        paper_numeric=("hour", "weekday"),
        categorical=(
            "eventName",
            "userIdentity.type",
            "ua_family",
            "login_outcome",
            "mfa",
            "country",
            "asn",
            "network_zone",
        ),
        numeric=(
            "hour",
            "weekday",
            *_COMMON_BEHAVIOUR,
            "is_root",
            "cross_account",
            "ua_offensive",
            RULE_SCORE,
        ),
        behaviour=_COMMON_BEHAVIOUR,
    ),
    API_CALL: FeatureSet(
        use_case=API_CALL,
        paper_categorical=(
            "sourceIPAddress",
            "userAgent",
            "userIdentity.arn",
            "eventSource",
            "eventName",
            "userIdentity.type",
        ),
        paper_numeric=("hour", "weekday"),
        categorical=(
            "eventSource",
            "eventName",
            "category",
            "userIdentity.type",
            "ua_family",
            "mfa",
            "country",
            "asn",
            "network_zone",
            "awsRegion",
        ),
        numeric=(
            "hour",
            "weekday",
            *_COMMON_BEHAVIOUR,
            "first_region",
            "first_event_name",
            "first_event_source",
            "novel_event_name",
            "rarity_event_name",
            "org_rarity_event_name",
            "access_denied",
            "read_only",
            "is_aws_service",
            "is_automation",
            "is_root",
            "cross_account",
            "ua_offensive",
            RULE_SCORE,
        ),
        behaviour=(
            *_COMMON_BEHAVIOUR,
            "first_region",
            "first_event_name",
            "first_event_source",
            "novel_event_name",
            "rarity_event_name",
            "org_rarity_event_name",
            "access_denied",
        ),
    ),
}


def add_rule_score(features: pd.DataFrame, rule_labels: pd.DataFrame) -> pd.DataFrame:
    """Put the labelling functions' score (``detections.label_events`` of the same events) beside the
    features, as training and scoring both need it."""
    features[RULE_SCORE] = rule_labels["lf_score"].loc[features.index].to_numpy(np.float64)
    return features


# -- history --------------------------------------------------------------------------------------------
_PROFILE_SCHEMA = pa.schema(
    [
        ("dim", pa.large_string()),
        ("principal", pa.large_string()),
        ("value", pa.large_string()),
        ("count", pa.int64()),
    ]
)


@dataclass
class History:
    """What a day's features need from the days before it: the days' profiles (Arrow table ``dim``,
    ``principal``, ``value``, ``count``; a pair may appear once per day, lookups sum them) and the raw
    events of the last hour before the day (for the sliding window)."""

    profile: pa.Table
    tail: pd.DataFrame
    days: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls) -> History:
        return cls(profile=_empty_profile(), tail=pd.DataFrame(columns=list(HISTORY_COLUMNS)))

    def by_dim(self) -> dict[str, pa.Table]:
        """The profile split by dimension, as zero-copy slices (a profile is written dimension by
        dimension, so each dimension is a few contiguous runs)."""
        if self.profile.num_rows == 0:
            return {}
        encoded = pc.dictionary_encode(self.profile.column("dim").combine_chunks())
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        starts = np.concatenate(([0], np.flatnonzero(np.diff(codes)) + 1))
        ends = np.append(starts[1:], len(codes))
        runs: dict[str, list[pa.Table]] = {}
        names = encoded.dictionary.to_pylist()
        for start, end in zip(starts, ends, strict=True):
            runs.setdefault(names[codes[start]], []).append(self.profile.slice(start, end - start))
        return {dim: pa.concat_tables(parts) for dim, parts in runs.items()}


def _empty_profile() -> pa.Table:
    return _PROFILE_SCHEMA.empty_table()


def history_from_events(history: pd.DataFrame, before: pd.Timestamp, enricher: Enricher) -> History:
    """A :class:`History` from raw events (what tests and small callers pass): only rows before
    ``before`` count; the last hour of them also feeds the sliding window."""
    if history is None or len(history) == 0:
        return History.empty()
    times = _event_times(history)
    past = history[(times < before).to_numpy()]
    if len(past) == 0:
        return History.empty()
    profile = _profile(_dimensions(past, enricher))
    tail_mask = (_event_times(past) >= before - WINDOW).to_numpy()
    return History(profile=profile, tail=past[tail_mask])


# -- building blocks --------------------------------------------------------------------------------------
def _col(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df:
        return df[name]
    return pd.Series(None, index=df.index, dtype="str")


def _arrow_text(values: pd.Series) -> pa.Array:
    """A text column as an Arrow string array with "" as null (zero-copy for the store's columns)."""
    arr = pa.array(values, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.large_string())
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.large_string())
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, arr.type), arr)


def _series(arr: pa.Array, index: pd.Index) -> pd.Series:
    return pd.Series(arr, index=index, dtype="str")


def principal_of(df: pd.DataFrame) -> pd.Series:
    """userIdentity.arn, else principalId, else accountId, else "unknown"."""
    parts = [
        _arrow_text(_col(df, c))
        for c in ("userIdentity.arn", "userIdentity.principalId", "userIdentity.accountId")
    ]
    parts = [p.cast(pa.large_string()) for p in parts]
    return _series(pc.coalesce(*parts, pa.scalar("unknown", pa.large_string())), df.index)


def _short_principal(arn: str | None) -> str:
    """``arn:aws:iam::1:user/alice`` -> alice, ``...:assumed-role/Role/session`` -> Role/session, root -> root."""
    if not arn:
        return ""
    resource = arn.split(":", 5)[-1]
    if resource == "root":
        return "root"
    for prefix in ("user/", "assumed-role/", "role/", "federated-user/", "group/"):
        if resource.startswith(prefix):
            rest = resource[len(prefix) :]
            return rest.rsplit("/", 1)[-1] if prefix == "user/" else rest
    return resource


def _principal_short(day: pd.DataFrame) -> pd.Series:
    """A readable name for the principal: user name, Role/session, root, else the service or id."""
    short = _arrow_text(enrich.map_unique(_col(day, "userIdentity.arn"), _short_principal)).cast(
        pa.large_string()
    )
    fallbacks = [
        _arrow_text(_col(day, c)).cast(pa.large_string())
        for c in (
            "userIdentity.userName",
            "userIdentity.invokedBy",
            "userIdentity.principalId",
            "userIdentity.type",
        )
    ]
    return _series(pc.coalesce(short, *fallbacks, pa.scalar("", pa.large_string())), day.index)


def _event_times(df: pd.DataFrame) -> pd.Series:
    """eventTime as UTC microseconds (the store's type; strings as in tests are parsed as ISO 8601)."""
    if "eventTime" not in df or len(df) == 0:
        return pd.Series(pd.DatetimeIndex([], tz="UTC"), dtype="datetime64[us, UTC]", index=df.index[:0])
    times = df["eventTime"]
    if not isinstance(times.dtype, pd.DatetimeTZDtype):
        times = pd.to_datetime(times, utc=True, format="ISO8601")
    return times.dt.tz_convert("UTC").dt.as_unit("us")


def _micros(times: pd.Series) -> np.ndarray:
    return times.astype("int64").to_numpy(np.int64)


def _dimensions(events: pd.DataFrame, enricher: Enricher) -> pd.DataFrame:
    """Principal plus the value of every behaviour dimension per event (text, hour as int)."""
    geo = enricher.enrich(_col(events, "sourceIPAddress"), _col(events, "vpcEndpointId"))
    return pd.DataFrame(
        {
            "principal": principal_of(events),
            "ip": _col(events, "sourceIPAddress"),
            "network": geo["ip_network"],
            "asn": geo["asn"],
            "country": geo["country"],
            "ua": enrich.ua_family(_col(events, "userAgent")),
            "region": _col(events, "awsRegion"),
            "event_name": _col(events, "eventName"),
            "event_source": _col(events, "eventSource"),
            "hour": _event_times(events).dt.hour.astype(np.int64),
            "_zone": geo["network_zone"],
        },
        index=events.index,
    )


def _value_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Factorize codes of a column and its distinct values as text ("" for missing): the profile's
    ``value`` is always text, whatever the column's type."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    text = np.array(
        ["" if (u is None or (isinstance(u, float) and np.isnan(u))) else str(u) for u in uniques],
        dtype=object,
    )
    return codes.astype(np.int64), text


def _pairs(
    p_codes: np.ndarray, v_codes: np.ndarray, n_values: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (principal, value) pairs: (principal code, value code, pair code per row, rows per pair)."""
    width = n_values + 1
    pair_codes, keys = pd.factorize(p_codes * width + v_codes)
    return (
        keys // width,
        keys % width,
        pair_codes.astype(np.int64),
        np.bincount(pair_codes, minlength=len(keys)),
    )


def _profile(dims: pd.DataFrame) -> pd.DataFrame:
    """Counts per (dimension, principal, value) plus per-principal and org totals, for one set of events."""
    p_codes, p_text = _value_codes(dims["principal"])
    parts = []
    for dim in DIMENSION_NAMES:
        v_codes, v_text = _value_codes(dims[dim])
        pp, vv, _, counts = _pairs(p_codes, v_codes, len(v_text))
        parts.append(
            pd.DataFrame({"dim": dim, "principal": p_text[pp], "value": v_text[vv], "count": counts})
        )
        if dim in ORG_DIMENSIONS:
            org = np.bincount(v_codes, minlength=len(v_text))
            parts.append(pd.DataFrame({"dim": dim, "principal": ORG, "value": v_text, "count": org}))
    parts.append(
        pd.DataFrame(
            {
                "dim": EVENTS_DIM,
                "principal": p_text,
                "value": "",
                "count": np.bincount(p_codes, minlength=len(p_text)),
            }
        )
    )
    parts.append(pd.DataFrame({"dim": [EVENTS_DIM], "principal": [ORG], "value": [""], "count": [len(dims)]}))
    return _profile_table(parts)


def _profile_table(parts: list[pd.DataFrame]) -> pa.Table:
    frame = pd.concat(parts, ignore_index=True)
    return pa.Table.from_pandas(frame[list(_PROFILE_SCHEMA.names)], preserve_index=False).cast(
        _PROFILE_SCHEMA
    )


def merge_profiles(profiles: Iterable[pa.Table]) -> pa.Table:
    """Several days' profiles as one table. Not aggregated: summing a month of pairs costs seconds,
    while :func:`_lookup` sums the few pairs a day asks for."""
    tables = [p for p in profiles if p.num_rows]
    return pa.concat_tables(tables) if tables else _empty_profile()


def _lookup(
    profile: Mapping[str, pa.Table], dim: str, principals: np.ndarray, values: np.ndarray
) -> np.ndarray:
    """History count of each (principal, value) pair of ``dim`` (0 when never seen), summed over days."""
    part = profile.get(dim)
    if part is None or part.num_rows == 0 or len(principals) == 0:
        return np.zeros(len(principals), dtype=np.int64)
    # "principal<US>value" keys; the day's (few) distinct pairs are hashed and the profile (a month can
    # hold millions of pairs) is scanned against them, in Arrow
    wanted_codes, wanted = pd.factorize(pd.Series(_pair_keys(principals, values), dtype="str"))
    known = _pair_keys(part.column("principal"), part.column("value"))
    slot = pc.index_in(known, value_set=pa.array(np.asarray(wanted, dtype=object), type=pa.large_string()))
    slot = pc.fill_null(slot, -1).to_numpy(zero_copy_only=False)
    hit = slot >= 0
    day_counts = part.column("count").to_numpy()[hit]
    counts = np.bincount(slot[hit], weights=day_counts, minlength=len(wanted)).astype(np.int64)
    return counts[wanted_codes]


def _pair_keys(principals: object, values: object) -> pa.Array:
    def text(column: object) -> pa.Array:
        arr = (
            column if isinstance(column, (pa.Array, pa.ChunkedArray)) else pa.array(column, from_pandas=True)
        )
        arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
        return pc.fill_null(arr.cast(pa.large_string()), "")

    return pc.binary_join_element_wise(text(principals), text(values), pa.scalar("\x1f", pa.large_string()))


def _tiebreak(day: pd.DataFrame) -> np.ndarray:
    """Events of the same microsecond in an order of their own (by eventID), not the order they were read
    in: the causal counts then follow the events, never how the store happened to be written."""
    if "eventID" not in day.columns:
        return np.zeros(len(day), dtype=np.uint64)
    return id_keys(pa.array(day["eventID"].to_numpy(dtype=object), pa.string(), from_pandas=True))[:, 0]


def _causal_cumcount(codes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """For each row, how many rows with the same code come before it in ``order`` (time order)."""
    if len(codes) == 0:
        return np.zeros(0, dtype=np.int64)
    in_order = codes[order]
    counts = pd.Series(in_order).groupby(in_order, sort=False).cumcount().to_numpy(np.int64)
    out = np.empty(len(codes), dtype=np.int64)
    out[order] = counts
    return out


def _rarity(pair_prior: np.ndarray, total_prior: np.ndarray) -> np.ndarray:
    """-log10 of the smoothed share of the principal's past events with this value: 0 = always, 3 = 1 in 1000."""
    return np.maximum(-np.log10((pair_prior + 1.0) / (total_prior + 1.0)), 0.0)


def window_stats(
    principal: np.ndarray,
    times_us: np.ndarray,
    names: np.ndarray,
    failed: np.ndarray,
    window_us: int,
    tiebreak: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event, over the same principal's events in ``(t - window, t]`` (itself included, ties in
    ``tiebreak`` order, else in array order): event count, failures, distinct names. ``principal`` and
    ``names`` are any hashable codes. Exact and vectorised.

    Rows are sorted by (principal, time); ``L[i]`` is the first row of i's window, non-decreasing in i.
    A row j counts towards the distinct names of i when L[i] <= j <= i and the previous row with j's
    (principal, name) lies before L[i]; for a fixed j those i form one contiguous range, so a difference
    array and a cumulative sum give all counts at once.
    """
    n = len(principal)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    p_codes = pd.factorize(np.asarray(principal))[0].astype(np.int64)
    t = np.asarray(times_us, dtype=np.int64)
    t = t - t.min()
    stride = int(t.max()) + 2 * window_us + 1
    key = p_codes * stride + t
    order = np.argsort(key, kind="stable") if tiebreak is None else np.lexsort((tiebreak, key))
    k = key[order]
    left = np.searchsorted(k, k - window_us, side="right")
    pos = np.arange(n)
    counts = pos - left + 1
    csum = np.concatenate(([0], np.cumsum(np.asarray(failed)[order].astype(np.int64))))
    fails = csum[pos + 1] - csum[left]
    # previous row (in sorted order) with the same (principal, name)
    n_codes, n_uniques = pd.factorize(np.asarray(names)[order])
    pair = p_codes[order] * (len(n_uniques) + 1) + n_codes
    by_pair = np.argsort(pair, kind="stable")
    prev = np.full(n, -1, dtype=np.int64)
    same = pair[by_pair[1:]] == pair[by_pair[:-1]]
    prev[by_pair[1:][same]] = by_pair[:-1][same]
    first_i = np.searchsorted(left, prev, side="right")
    last_i = np.searchsorted(left, pos, side="right") - 1
    start = np.maximum(pos, first_i)
    ok = start <= last_i
    diff = np.bincount(start[ok], minlength=n + 1) - np.bincount(last_i[ok] + 1, minlength=n + 1)
    distinct = np.cumsum(diff)[:n]
    out = [np.empty(n, dtype=np.int64) for _ in range(3)]
    for target, values in zip(out, (counts, fails, distinct), strict=True):
        target[order] = values
    return out[0], out[1], out[2]


# -- features --------------------------------------------------------------------------------------------
def use_case_of(event_type: pd.Series) -> pd.Series:
    """console_login for AwsConsoleSignIn, api_call for AwsApiCall, other for the rest."""
    codes, distinct = enrich.factorize_text(event_type)
    return enrich.take_text(
        [EVENT_TYPE_USE_CASE.get(v or "", OTHER) for v in distinct], codes, event_type.index
    )


def build_features(
    day_events: pd.DataFrame,
    history: pd.DataFrame | History | None,
    *,
    enricher: Enricher | None = None,
    rows: np.ndarray | None = None,
) -> pd.DataFrame:
    """One feature row per event of ``day_events`` (same index and order), display columns included.

    ``history`` is the events before the day (raw, any subset of the store's columns) or a
    :class:`History` from :func:`load_history`; rows at or after the day's first UTC midnight are ignored.
    ``rows`` (a boolean mask over ``day_events``, which must still be the whole day): only those rows'
    features, the same as in the whole day's.
    """
    features, _ = _build(day_events, history, enricher or enrich.default_enricher(), rows)
    return features


@dataclass
class _DayContext:
    """What every part of a day's features shares, worked out once for the whole day: the history's
    profile by dimension, each event's dimensions and time order, and the organisation-wide counts (every
    event of the day counts in them, whatever rows are asked for)."""

    day: pd.DataFrame
    history: History
    profile: dict[str, pa.Table]
    dims: pd.DataFrame
    times: pd.Series
    t_us: np.ndarray
    tie: np.ndarray
    order: np.ndarray
    day_start: pd.Timestamp
    org_out: dict[str, np.ndarray]
    org_parts: dict[str, pd.DataFrame]

    @cached_property
    def principal_codes(self) -> np.ndarray:
        """Each event's principal as a code: what a part of the day is widened to (whole principals)."""
        return pd.factorize(self.dims["principal"])[0]


def _day_context(
    day: pd.DataFrame, history: pd.DataFrame | History | None, enricher: Enricher
) -> _DayContext:
    times = _event_times(day)
    t_us = _micros(times)
    tie = _tiebreak(day)
    order = np.lexsort((tie, t_us))
    day_start = pd.Timestamp(int(t_us.min()), unit="us", tz="UTC").floor("D")
    if not isinstance(history, History):
        history = (
            history_from_events(history, day_start, enricher) if history is not None else History.empty()
        )
    profile = history.by_dim()
    dims = _dimensions(day, enricher)
    n = len(day)

    # organisation-wide: every event of the day counts
    org_total = _lookup(profile, EVENTS_DIM, np.array([ORG], dtype=object), np.array([""], dtype=object))[0]
    org_prior_events = np.empty(n, dtype=np.int64)
    org_prior_events[order] = org_total + np.arange(n)
    org_out: dict[str, np.ndarray] = {}
    org_parts: dict[str, pd.DataFrame] = {}
    for dim in ORG_DIMENSIONS:
        v_codes, v_text = _value_codes(dims[dim])
        org_hist = _lookup(profile, dim, np.full(len(v_text), ORG, dtype=object), v_text)
        org_prior = org_hist[v_codes] + _causal_cumcount(v_codes, order)
        org_out[f"org_rarity_{dim}"] = _rarity(org_prior, org_prior_events)
        org_parts[dim] = pd.DataFrame(
            {
                "dim": dim,
                "principal": ORG,
                "value": v_text,
                "count": np.bincount(v_codes, minlength=len(v_text)),
            }
        )
    return _DayContext(day, history, profile, dims, times, t_us, tie, order, day_start, org_out, org_parts)


def _build(
    day: pd.DataFrame,
    history: pd.DataFrame | History | None,
    enricher: Enricher,
    rows: np.ndarray | None = None,
    context: _DayContext | None = None,
) -> tuple[pd.DataFrame, pa.Table | None]:
    """Features plus the day's own profile (cached for the days after it; None when ``rows`` picks a
    part of the day). Rows stay in the caller's order; only integer codes are put in time order, for the
    causal counts.

    Every feature belongs to one principal's events, except the organisation-wide counts: with ``rows``
    those still count the whole day, and the rest is worked out on the events of the principals of
    ``rows`` only (a part of a day, account x region, holds a part of the principals). ``context``: the
    day's :class:`_DayContext` when several parts of one day are built (``day`` and ``history`` are then
    its own), so that the whole day's share of the work is done once.
    """
    started = time.perf_counter()
    if len(day) == 0 or (rows is not None and not np.any(rows)):
        return _empty_features(), None if rows is not None else _empty_profile()
    ctx = context if context is not None else _day_context(day, history, enricher)
    history, profile, dims, times = ctx.history, ctx.profile, ctx.dims, ctx.times
    t_us, tie, order, day_start = ctx.t_us, ctx.tie, ctx.order, ctx.day_start
    org_out, org_parts = ctx.org_out, ctx.org_parts
    n = len(day)

    # per principal: the events of the principals asked for
    if rows is not None:
        codes = ctx.principal_codes
        keep = np.isin(codes, np.unique(codes[np.asarray(rows, dtype=bool)]))
        if not keep.all():
            day, dims, times, t_us, tie = day[keep], dims[keep], times[keep], t_us[keep], tie[keep]
            order = np.lexsort((tie, t_us))
            org_out = {name: values[keep] for name, values in org_out.items()}
        rows = np.asarray(rows, dtype=bool)[keep]
    p_codes, p_text = _value_codes(dims["principal"])

    # per-principal totals: history + earlier today
    hist_total = _lookup(profile, EVENTS_DIM, p_text, np.full(len(p_text), "", dtype=object))
    prior_events = hist_total[p_codes] + _causal_cumcount(p_codes, order)

    out: dict[str, np.ndarray] = {}
    day_profile_parts = []
    for dim in DIMENSION_NAMES:
        v_codes, v_text = _value_codes(dims[dim])
        pp, vv, pair_codes, counts = _pairs(p_codes, v_codes, len(v_text))
        principals, values = p_text[pp], v_text[vv]
        before_today = _lookup(profile, dim, principals, values)[pair_codes]
        prior = before_today + _causal_cumcount(pair_codes, order)
        out[f"first_{dim}"] = (prior == 0).astype(np.float64)
        if dim in NOVEL_DIMENSIONS:
            out[f"novel_{dim}"] = (before_today == 0).astype(np.float64)
        out[f"rarity_{dim}"] = _rarity(prior, prior_events)
        day_profile_parts.append(
            pd.DataFrame({"dim": dim, "principal": principals, "value": values, "count": counts})
        )
        if dim in ORG_DIMENSIONS:
            out[f"org_rarity_{dim}"] = org_out[f"org_rarity_{dim}"]
            day_profile_parts.append(org_parts[dim])
    day_profile_parts.append(
        pd.DataFrame(
            {
                "dim": EVENTS_DIM,
                "principal": p_text,
                "value": "",
                "count": np.bincount(p_codes, minlength=len(p_text)),
            }
        )
    )
    day_profile_parts.append(
        pd.DataFrame({"dim": [EVENTS_DIM], "principal": [ORG], "value": [""], "count": [n]})
    )
    out["new_principal"] = (hist_total[p_codes] == 0).astype(np.float64)
    out["log_prior_events"] = np.log1p(prior_events.astype(np.float64))

    # sliding one-hour window over the previous day's last hour and today
    failed = enrich.event_failed(day)
    tail = history.tail
    if len(tail):
        tail = tail[(_event_times(tail) < day_start).to_numpy()]
    k = len(tail)
    if k:
        both_principal = pd.concat([principal_of(tail), dims["principal"]], ignore_index=True)
        both_names = pd.concat([_col(tail, "eventName"), dims["event_name"]], ignore_index=True)
        w_principal = pd.factorize(both_principal)[0]
        w_names = pd.factorize(both_names, use_na_sentinel=False)[0]
        w_times = np.concatenate([_micros(_event_times(tail)), t_us])
        w_failed = np.concatenate([enrich.event_failed(tail), failed])
        w_tie = np.concatenate([np.zeros(k, dtype=np.uint64), tie])  # the tail is all before the day
    else:
        w_principal, w_names, w_times, w_failed = (
            p_codes,
            pd.factorize(dims["event_name"], use_na_sentinel=False)[0],
            t_us,
            failed,
        )
        w_tie = tie
    counts, fails, distinct = window_stats(
        w_principal, w_times, w_names, w_failed, int(WINDOW / pd.Timedelta(microseconds=1)), tiebreak=w_tie
    )
    out["last_hour_events"] = counts[k:].astype(np.float64)
    out["last_hour_failures"] = fails[k:].astype(np.float64)
    out["last_hour_failure_rate"] = fails[k:] / counts[k:]
    out["last_hour_distinct_names"] = distinct[k:].astype(np.float64)

    features = pd.DataFrame(
        {
            "eventID": _col(day, "eventID"),
            "eventTime": times,
            "use_case": use_case_of(_col(day, "eventType")),
            "eventType": _col(day, "eventType"),
            "principal": dims["principal"],
            "principal_short": _principal_short(day),
            "eventName": dims["event_name"],
            "eventSource": dims["event_source"],
            "awsRegion": dims["region"],
            "account": _col(day, "recipientAccountId"),
            "sourceIPAddress": dims["ip"],
            "userAgent": _col(day, "userAgent"),
            "errorCode": _col(day, "errorCode"),
            "country": dims["country"],
            "asn": dims["asn"],
            "ip_network": dims["network"],
            "network_zone": dims["_zone"],
            "category": enrich.event_category(day),
            "ua_family": dims["ua"],
            "userIdentity.arn": _col(day, "userIdentity.arn"),
            "userIdentity.type": _col(day, "userIdentity.type"),
            "responseElements.ConsoleLogin": _col(day, "responseElements.ConsoleLogin"),
            **_context(day, dims),
            "hour": dims["hour"].to_numpy(np.float64),
            "weekday": times.dt.weekday.to_numpy(np.float64),
            **out,
            "failed": failed.astype(np.float64),
        },
        index=day.index,
        copy=False,  # one block per column: consolidating a million rows of 70 columns is a copy for nothing
    )
    if rows is not None:
        features = features[rows] if not rows.all() else features
        day_profile = None
    else:
        day_profile = _profile_table(day_profile_parts)
    log.debug(
        "features for %d events (%d history days) in %.2fs",
        len(features),
        len(history.days),
        time.perf_counter() - started,
    )
    return features, day_profile


def _context(day: pd.DataFrame, dims: pd.DataFrame) -> dict[str, pd.Series | np.ndarray]:
    """What the event says about itself: sign-in outcome, MFA, read-only, AWS service or automation,
    root, cross-account, offensive tooling. Computed per distinct value where it is text."""
    index = day.index
    identity_type = _col(day, "userIdentity.type")
    is_type = {t: _flag(identity_type, lambda v, t=t: v == t) for t in ("AWSService", "Root")}
    service_role = _flag(
        _col(day, "userIdentity.arn"),
        lambda v: bool(v) and ("aws-service-role/" in v or "assumed-role/AWSServiceRole" in v),
    )
    is_service = (
        is_type["AWSService"]
        | enrich.present(_col(day, "userIdentity.invokedBy"))
        | service_role
        | (dims["_zone"] == enrich.ZONE_AWS_SERVICE).to_numpy()
    )
    console_mfa = enrich.factorize_text(_col(day, "additionalEventData.MFAUsed"))
    session_mfa = enrich.factorize_text(_col(day, "userIdentity.sessionContext.attributes.mfaAuthenticated"))
    yes = _of(console_mfa, lambda v: (v or "").lower() == "yes") | _of(
        session_mfa, lambda v: (v or "").lower() == "true"
    )
    no = _of(console_mfa, lambda v: (v or "").lower() == "no") | _of(
        session_mfa, lambda v: (v or "").lower() == "false"
    )
    mfa = enrich.take_text(["unknown", "no", "yes"], np.where(yes, 2, np.where(no, 1, 0)), index)
    login = enrich.map_unique(_col(day, "responseElements.ConsoleLogin"), lambda v: (v or "none").lower())
    name_read = _flag(
        dims["event_name"],
        lambda v: (
            bool(v)
            and v.startswith(
                ("Get", "List", "Describe", "Head", "Lookup", "Search", "Scan", "Query", "BatchGet")
            )
        ),
    )
    read_only = (
        _col(day, "readOnly").astype("boolean").fillna(pd.Series(name_read, index=index)).to_numpy(np.float64)
    )
    account, caller = (
        _arrow_text(_col(day, "recipientAccountId")),
        _arrow_text(_col(day, "userIdentity.accountId")),
    )
    cross = pc.fill_null(pc.not_equal(account.cast(pa.large_string()), caller.cast(pa.large_string())), False)
    ua_family = dims["ua"]
    return {
        "login_outcome": login,
        "mfa": mfa,
        "access_denied": enrich.access_denied(_col(day, "errorCode")).to_numpy(np.float64),
        "read_only": read_only,
        "is_aws_service": is_service.astype(np.float64),
        "is_automation": (is_service | ua_family.isin(("terraform", "cloudformation")).to_numpy()).astype(
            np.float64
        ),
        "is_root": is_type["Root"].astype(np.float64),
        "cross_account": cross.to_numpy(zero_copy_only=False).astype(np.float64),
        "ua_offensive": enrich.ua_offensive(_col(day, "userAgent")).to_numpy(np.float64),
    }


def _flag(values: pd.Series, test: Callable[[str | None], bool]) -> np.ndarray:
    return _of(enrich.factorize_text(values), test)


def _of(coded: tuple[np.ndarray, list[str | None]], test: Callable[[str | None], bool]) -> np.ndarray:
    codes, distinct = coded
    return np.array([test(v) for v in distinct], dtype=bool)[codes]


def _empty_features() -> pd.DataFrame:
    columns = list(DISPLAY_COLUMNS) + [
        c for fs in FEATURE_SETS.values() for c in fs.columns if c not in DISPLAY_COLUMNS
    ]
    return pd.DataFrame({c: pd.Series(dtype="str") for c in dict.fromkeys(columns)})


# -- the store side --------------------------------------------------------------------------------------
def _fingerprint(store: EventStore, day: str, enricher: Enricher) -> str:
    files = []
    for path in store.partition_files(day):
        stat = path.stat()
        files.append([path.name, stat.st_size, stat.st_mtime_ns])
    return json.dumps({"version": PROFILE_VERSION, "geo": enricher.backend, "files": files}, sort_keys=True)


def profile_path(store: EventStore, day: str) -> DataPath:
    return store.root / "profiles" / f"date={day}" / "profile.parquet"


def _read_profile(store: EventStore, day: str, fingerprint: str) -> pa.Table | None:
    if not _profile_fresh(store, day, fingerprint):
        return None
    try:
        return read_parquet(profile_path(store, day)).cast(_PROFILE_SCHEMA)
    except (OSError, pa.ArrowInvalid, ValueError):
        return None


def _profile_fresh(store: EventStore, day: str, fingerprint: str) -> bool:
    path = profile_path(store, day)
    try:
        meta = parquet_schema(path).metadata or {} if path.exists() else {}
    except (OSError, pa.ArrowInvalid):
        return False
    return meta.get(b"trailguard.fingerprint", b"").decode() == fingerprint


def profile_fresh(store: EventStore, day: date | str, enricher: Enricher | None = None) -> bool:
    """Whether ``day``'s stored profile is that of its events now (features of a part of the day need it:
    only a whole day's features write it)."""
    enricher = enricher or enrich.default_enricher()
    key = _as_date(day).isoformat()
    return _profile_fresh(store, key, _fingerprint(store, key, enricher))


def _write_profile(store: EventStore, day: str, profile: pa.Table, fingerprint: str) -> None:
    table = profile.replace_schema_metadata({b"trailguard.fingerprint": fingerprint.encode()})
    write_parquet_atomic(table, profile_path(store, day))


def day_profile(store: EventStore, day: str, enricher: Enricher) -> pa.Table:
    """One day's profile, from the cache when the partition has not changed since it was built."""
    fingerprint = _fingerprint(store, day, enricher)
    cached = _read_profile(store, day, fingerprint)
    if cached is not None:
        return cached
    events = store.read_partition(day, columns=HISTORY_COLUMNS).to_pandas()
    profile = _profile(_dimensions(events, enricher)) if len(events) else _empty_profile()
    _write_profile(store, day, profile, fingerprint)
    return profile


def load_history(
    store: EventStore,
    day: date | str,
    history_days: int = DEFAULT_HISTORY_DAYS,
    *,
    enricher: Enricher | None = None,
) -> History:
    """The trailing ``history_days`` days before ``day`` as a :class:`History` (profiles + last hour)."""
    enricher = enricher or enrich.default_enricher()
    day_d = _as_date(day)
    first = day_d - timedelta(days=history_days)
    days = [d for d in store.dates() if first.isoformat() <= d < day_d.isoformat()]
    profile = merge_profiles(day_profile(store, d, enricher) for d in days)
    tail = pd.DataFrame(columns=list(HISTORY_COLUMNS))
    previous = (day_d - timedelta(days=1)).isoformat()
    if previous in days:
        table = store.read_partition(previous, columns=HISTORY_COLUMNS)
        start = datetime.combine(day_d, datetime.min.time(), tzinfo=timezone.utc) - WINDOW.to_pytimedelta()
        table = table.filter(
            pc.greater_equal(table.column("eventTime"), pa.scalar(start, pa.timestamp("us", tz="UTC")))
        )
        tail = table.to_pandas()
    return History(profile=profile, tail=tail, days=days)


def load_day_events(store: EventStore, day: date | str, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """A day's events as pandas (all columns unless told), the frame detections and features take.

    Columns are made one Arrow chunk each: a partition has a chunk per ingest file, and every row
    selection on a many-chunk column copies the whole column first (seconds on a million events).
    """
    table = store.read_partition(_as_date(day).isoformat(), columns=columns).combine_chunks()
    # the chunked table is gone once combined, and each column's Arrow buffers as soon as it is converted:
    # a day is whole in memory about once, not three times (chunks, combined, pandas)
    return table.to_pandas(split_blocks=True, self_destruct=True)


def read_rows(store: EventStore, day: date | str, columns: Iterable[str], mask: np.ndarray) -> pa.Table:
    """``columns`` of a day's events where ``mask`` holds (over :meth:`EventStore.read_partition`'s rows,
    in its order), read a batch at a time: a large column (``raw`` is most of a day's bytes) is never
    whole in memory, and row groups without a wanted row are not read at all. (A store-side helper, here
    until the store offers it.)"""
    cols = list(columns)
    schema = pa.schema([EVENT_SCHEMA.field(c) for c in cols])
    mask = np.asarray(mask, dtype=bool)
    parts: list[pa.Table] = []
    offset = 0
    for path in store.partition_files(_as_date(day).isoformat()):
        parquet = parquet_file(path)
        present = [c for c in cols if c in parquet.schema_arrow.names]
        for group in range(parquet.metadata.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            wanted = mask[offset : offset + size]
            offset += size
            if not wanted.any():
                continue
            start = 0
            for batch in parquet.iter_batches(batch_size=65_536, row_groups=[group], columns=present):
                keep = wanted[start : start + batch.num_rows]
                start += batch.num_rows
                if keep.any():
                    table = pa.Table.from_batches([batch]).filter(pa.array(keep))
                    for c in cols:
                        if c not in present:
                            table = table.append_column(c, pa.nulls(table.num_rows, schema.field(c).type))
                    parts.append(table.select(cols).cast(schema))
    if offset != len(mask):
        raise ValueError(
            f"the mask has {len(mask)} rows, the partition of {day} {offset}: it changed meanwhile"
        )
    return pa.concat_tables(parts) if parts else schema.empty_table()


def load_rule_events(store: EventStore, day: date | str, extra_columns: Iterable[str] = ()) -> pd.DataFrame:
    """A day's events with every column features and the labelling functions read, except the detail
    columns (``raw``...: most of a day's bytes), which :func:`add_rule_details` adds where needed."""
    from trailguard.detect.engine import DETAIL_COLUMNS, RULE_COLUMNS

    columns = dict.fromkeys((*DAY_COLUMNS, *RULE_COLUMNS, *extra_columns))
    return load_day_events(store, day, columns=[c for c in columns if c not in DETAIL_COLUMNS])


def add_rule_details(
    store: EventStore, day: date | str, events: pd.DataFrame, rows: np.ndarray | None = None
) -> pd.DataFrame:
    """Add the detail columns to the frame of :func:`load_rule_events` on the rows the labelling functions
    read them from (``detections.detail_rows``; ``rows`` as passed to ``label_events``), null elsewhere."""
    from trailguard.detect.engine import DETAIL_COLUMNS, detail_rows

    need = detail_rows(events, rows)
    values = read_rows(store, day, DETAIL_COLUMNS, need)
    where = pa.array(need)
    for name in values.column_names:
        column = values.column(name).combine_chunks()
        full = pc.replace_with_mask(pa.nulls(len(events), column.type), where, column)
        events[name] = pa.table({name: full}).to_pandas()[name].set_axis(events.index)
    return events


def load_day_features(
    store: EventStore,
    day: date | str,
    history_days: int = DEFAULT_HISTORY_DAYS,
    *,
    enricher: Enricher | None = None,
    events: pd.DataFrame | None = None,
    rows: np.ndarray | None = None,
) -> pd.DataFrame:
    """Features of every event of ``day`` against the ``history_days`` before it.

    ``events``: the day's partition when the caller has already read it (it must be the whole day: its
    profile is cached for the following days). ``rows``: a boolean mask over those events; only their
    features, the same as in the whole day's (see :func:`build_features`).
    """
    return next(iter_day_features(store, day, history_days, enricher=enricher, events=events, pieces=[rows]))


def iter_day_features(
    store: EventStore,
    day: date | str,
    history_days: int = DEFAULT_HISTORY_DAYS,
    *,
    enricher: Enricher | None = None,
    events: pd.DataFrame | None = None,
    pieces: Iterable[np.ndarray | None] = (None,),
) -> Iterator[pd.DataFrame]:
    """:func:`load_day_features` for each of ``pieces`` (boolean masks over the whole day's events, None
    for all of them) in turn: the history is read, and the whole day's share of the work done, once for
    all of them. A piece's frame is built when the previous one has been taken."""
    enricher = enricher or enrich.default_enricher()
    key = _as_date(day).isoformat()
    started = time.perf_counter()
    fingerprint = _fingerprint(store, key, enricher)
    history = load_history(store, key, history_days, enricher=enricher)
    loaded = time.perf_counter()
    if events is None:
        events = load_day_events(store, key, columns=DAY_COLUMNS)
    context = _day_context(events, history, enricher) if len(events) else None
    shared = time.perf_counter()
    del history
    for rows in pieces:
        piece_started = time.perf_counter()
        features, profile = _build(events, None, enricher, rows, context)
        if profile is not None and len(events) and not _profile_fresh(store, key, fingerprint):
            _write_profile(store, key, profile, fingerprint)
        log.info(
            "features %s: %d events, %d history days (%.2fs history, %.2fs the whole day's part, %.2fs these)",
            key,
            len(features),
            len(context.history.days) if context else 0,
            loaded - started,
            shared - loaded,
            time.perf_counter() - piece_started,
        )
        yield features
        del features, profile


def _as_date(day: date | str) -> date:
    if isinstance(day, datetime):
        return day.date()
    if isinstance(day, date):
        return day
    return date.fromisoformat(str(day))
