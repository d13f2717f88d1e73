"""Window rules: detections over the whole frame (bursts of one key's events within 10 minutes).

Each detection keeps its catalogue record next to the rule, as the per-event rules do: reason template,
triage line, tactic and named cases (bursts it must fire on, near misses it must not).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trailguard.detect.event import short
from trailguard.detect.registry import Detection, fires, near_miss
from trailguard.detect.samples import ALICE, ROLE, burst, call, login

# --- window rules ---------------------------------------------------------------------------------

WINDOW = pd.Timedelta(minutes=10)


def column_of(df: pd.DataFrame, name: str) -> pd.Series:
    """A column of the frame, or an all-null one when the frame lacks it (optional columns are tolerated)."""
    if name in df.columns:
        return df[name]
    return pd.Series(None, index=df.index, dtype=object)


def isin(series: pd.Series, values: Iterable[str]) -> np.ndarray:
    """Vectorised membership that survives unhashable junk in an object column."""
    values = list(values)
    try:
        return np.array(series.isin(values), dtype=bool)
    except TypeError:
        return np.array(series.map(lambda v: v if isinstance(v, str) else None).isin(values), dtype=bool)


def _contains(series: pd.Series, pattern: str) -> np.ndarray:
    """Case-insensitive regex search on a text column; non-text values never match."""
    try:
        found = series.str.contains(pattern, case=False, regex=True, na=False)
    except (AttributeError, TypeError):  # no text at all in an object column
        regex = re.compile(pattern, re.IGNORECASE)
        found = series.map(lambda v: isinstance(v, str) and regex.search(v) is not None)
    return np.array(found.fillna(False), dtype=bool)


@dataclass(frozen=True)
class WindowRule:
    """A rule over the whole frame: >= threshold selected events of one key within any 10-minute window."""

    detections: tuple[Detection, ...]  # [0] unless `classify` picks another per event
    select: Callable[[pd.DataFrame], np.ndarray]
    key: str
    threshold: int
    noun: str
    key_label: str = "by"
    classify: Callable[[pd.DataFrame], np.ndarray] | None = None


_DENIED_PATTERN = r"AccessDenied|Unauthorized|Forbidden"
_IDENTITY_SOURCES = frozenset(
    f"{s}.amazonaws.com"
    for s in ("iam", "sts", "organizations", "sso", "identitystore", "account", "access-analyzer")
)
_CREDENTIAL_EVENTS = frozenset(
    {
        "GetPasswordData",
        "GetSecretValue",
        "BatchGetSecretValue",
        "GetParameter",
        "GetParameters",
        "GetParametersByPath",
    }
)


def _select_denied(df: pd.DataFrame) -> np.ndarray:
    codes = column_of(df, "errorCode")
    present = codes.notna().to_numpy(dtype=bool)
    mask = np.zeros(len(df), dtype=bool)
    if present.any():
        mask[present] = _contains(codes[present], _DENIED_PATTERN)
    return mask


def _classify_denied(sub: pd.DataFrame) -> np.ndarray:
    credential = isin(column_of(sub, "eventName"), _CREDENTIAL_EVENTS)
    identity = isin(column_of(sub, "eventSource"), _IDENTITY_SOURCES)
    return np.where(credential, 2, np.where(identity, 1, 0))


def _succeeded(df: pd.DataFrame) -> np.ndarray:
    return np.array(column_of(df, "errorCode").isna(), dtype=bool)


def _select_secret_reads(df: pd.DataFrame) -> np.ndarray:
    """Successful secret reads, each distinct request counted once (apps re-reading one secret are not a burst)."""
    names = column_of(df, "eventName")
    mask = isin(names, ("GetSecretValue", "BatchGetSecretValue")) & _succeeded(df)
    parameters = isin(names, ("GetParameter", "GetParameters")) & _succeeded(df)
    if parameters.any():
        request = column_of(df, "requestParameters")[parameters]
        mask[parameters] = _contains(request, r'"withDecryption"\s*:\s*true')
    if mask.any():
        picked = pd.DataFrame(
            {
                "key": column_of(df, "userIdentity.arn")[mask].astype(str),
                "request": column_of(df, "requestParameters")[mask].astype(str),
            }
        )
        mask[np.flatnonzero(mask)[picked.duplicated().to_numpy()]] = False
    return mask


def _select_failed_logins(df: pd.DataFrame) -> np.ndarray:
    mask = isin(column_of(df, "eventName"), ("ConsoleLogin",))
    if mask.any():
        failure = column_of(df, "responseElements.ConsoleLogin")[mask].astype(str).str.lower().eq("failure")
        message = _contains(column_of(df, "errorMessage")[mask].astype(str), "failed authentication")
        mask[mask] = failure.to_numpy(dtype=bool) | message
    return mask


def _select_object_deletions(df: pd.DataFrame) -> np.ndarray:
    return isin(column_of(df, "eventName"), ("DeleteObject", "DeleteObjects")) & _succeeded(df)


_BURST_RUNBOOK = (
    "Find what the principal was looking for; a compromised key enumerating permissions shows this pattern."
)
_BURST_REASON = "{count} access-denied calls in 10 minutes by {principal}"


def _denied(name: str, source: str, params: Any = None, **fields: Any) -> dict[str, Any]:
    return call(name, source, params, **{"errorCode": "AccessDenied", **fields})


WINDOW_RULES: tuple[WindowRule, ...] = (
    WindowRule(
        detections=(
            Detection(
                "access_denied_burst",
                "T1580",
                70,
                "Burst of access-denied calls (infrastructure discovery)",
                _BURST_RUNBOOK,
                reason=_BURST_REASON,
                tactic="discovery",
                cases=(
                    fires(
                        "10 denied DescribeInstances in 5 minutes",
                        *burst(
                            10,
                            30,
                            _denied("DescribeInstances", "ec2", errorCode="Client.UnauthorizedOperation"),
                        ),
                    ),
                    near_miss("9 denied calls", *burst(9, 10, _denied("DescribeInstances", "ec2"))),
                    near_miss(
                        "10 denied calls over 18 minutes",
                        *burst(10, 120, _denied("DescribeInstances", "ec2")),
                    ),
                    near_miss(
                        "10 throttled calls",
                        *burst(10, 10, call("DescribeInstances", "ec2", errorCode="ThrottlingException")),
                    ),
                ),
            ),
            Detection(
                "access_denied_burst_identity",
                "T1087.004",
                70,
                "Burst of access-denied calls (account discovery)",
                _BURST_RUNBOOK,
                reason=_BURST_REASON,
                tactic="discovery",
                cases=(
                    fires("10 denied IAM GetRole in a minute", *burst(10, 5, _denied("GetRole", "iam"))),
                    near_miss("the same burst on EC2", *burst(10, 5, _denied("DescribeInstances", "ec2"))),
                ),
            ),
            Detection(
                "access_denied_burst_credentials",
                "T1552",
                70,
                "Burst of access-denied credential reads",
                _BURST_RUNBOOK,
                reason=_BURST_REASON,
                tactic="credential_access",
                cases=(
                    fires(
                        "10 denied GetPasswordData in a minute",
                        *burst(10, 5, _denied("GetPasswordData", "ec2", {"instanceId": "i-1"})),
                    ),
                    near_miss(
                        "10 denied reads shared by two principals",
                        *burst(
                            10,
                            5,
                            lambda i: _denied(
                                "GetPasswordData", "ec2", userIdentity=ROLE if i % 2 else ALICE
                            ),
                        ),
                    ),
                ),
            ),
        ),
        select=_select_denied,
        key="userIdentity.arn",
        threshold=10,
        noun="access-denied calls",
        classify=_classify_denied,
    ),
    WindowRule(
        detections=(
            Detection(
                "secrets_harvest",
                "T1555.006",
                75,
                "Many distinct secrets read in a short time",
                "Confirm the caller (deploy job, rotation) and rotate every secret it read if not explained.",
                reason="{count} distinct secret reads in 10 minutes by {principal}",
                tactic="credential_access",
                cases=(
                    fires(
                        "5 secrets read in 4 minutes",
                        *burst(
                            5, 60, lambda i: call("GetSecretValue", "secretsmanager", {"secretId": f"s{i}"})
                        ),
                    ),
                    near_miss(
                        "one secret read 5 times (an application)",
                        *burst(5, 60, call("GetSecretValue", "secretsmanager", {"secretId": "s0"})),
                    ),
                ),
            ),
        ),
        select=_select_secret_reads,
        key="userIdentity.arn",
        threshold=5,
        noun="distinct secret reads",
    ),
    WindowRule(
        detections=(
            Detection(
                "console_login_brute_force",
                "T1110",
                70,
                "Many failed console logins from one IP",
                "Block the IP if possible; check whether any login from it succeeded afterwards.",
                reason="{count} failed console logins in 10 minutes from {ip}",
                tactic="credential_access",
                cases=(
                    fires("5 failed logins in 5 seconds", *burst(5, 1, login(ALICE, "Failure"))),
                    near_miss(
                        "5 failed logins from 5 addresses",
                        *burst(
                            5, 1, lambda i: {**login(ALICE, "Failure"), "sourceIPAddress": f"198.51.100.{i}"}
                        ),
                    ),
                ),
            ),
        ),
        select=_select_failed_logins,
        key="sourceIPAddress",
        threshold=5,
        noun="failed console logins",
        key_label="from",
    ),
    WindowRule(
        detections=(
            Detection(
                "s3_mass_deletion",
                "T1485",
                60,
                "Mass deletion of S3 objects",
                "Check the deleter is a lifecycle or cleanup job; restore from versions or backups otherwise.",
                reason="{count} S3 object deletions in 10 minutes by {principal}",
                tactic="impact",
                cases=(
                    fires("100 objects deleted in 100 seconds", *burst(100, 1, call("DeleteObject", "s3"))),
                    near_miss("99 objects deleted", *burst(99, 1, call("DeleteObject", "s3"))),
                ),
            ),
        ),
        select=_select_object_deletions,
        key="userIdentity.arn",
        threshold=100,
        noun="S3 object deletions",
    ),
)


def _bursts(times: np.ndarray, keys: pd.Series, threshold: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, peak counts) of the events lying in some window of `window` ticks holding >= `threshold`
    events of the same key. `times` are int64 ticks; only keys with enough events are looked at."""
    codes, _ = pd.factorize(keys, use_na_sentinel=True)
    order = np.lexsort((times, codes))
    order = order[codes[order] >= 0]
    codes_sorted, times_sorted = codes[order], times[order]
    bounds = np.flatnonzero(np.diff(codes_sorted)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(order)]
    found_idx, found_peak = [], []
    for start, end in zip(starts, ends, strict=True):
        if end - start < threshold:
            continue
        t = times_sorted[start:end]
        first = np.searchsorted(t, t - window, side="right")  # window (t - W, t] ends at each event
        count = np.arange(len(t)) - first + 1
        full = np.flatnonzero(count >= threshold)
        if not len(full):
            continue
        cover = np.zeros(len(t) + 1, dtype=np.int64)
        np.add.at(cover, first[full], 1)
        np.add.at(cover, full + 1, -1)
        inside = np.cumsum(cover[:-1]) > 0
        segment = np.cumsum(np.r_[1, np.diff(inside.astype(np.int8)) != 0])  # runs of covered events
        peak = np.zeros(segment[-1] + 1, dtype=np.int64)
        np.maximum.at(peak, segment[full], count[full])
        members = np.flatnonzero(inside)
        found_idx.append(order[start + members])
        found_peak.append(peak[segment[members]])
    if not found_idx:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(found_idx), np.concatenate(found_peak)


def _event_times(times: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """(valid mask, int64 ticks, ticks per window) for an eventTime column of datetimes (or of text).

    Ticks stay in the column's own unit: converting year-9999 times to nanoseconds would overflow.
    """
    if not pd.api.types.is_datetime64_any_dtype(times):
        times = pd.to_datetime(times, utc=True, errors="coerce", format="mixed")
    if times.dt.tz is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    values = times.to_numpy()
    unit = np.datetime_data(values.dtype)[0]
    return ~np.isnat(values), values.view("int64"), int(WINDOW / pd.Timedelta(1, unit=unit))


def window_hits(df: pd.DataFrame, rule: WindowRule) -> Iterator[tuple[int, Detection, str]]:
    """(row position, detection, reason) for every event inside a burst the rule finds in the frame."""
    if rule.key not in df.columns or "eventTime" not in df.columns:
        return
    selected = np.flatnonzero(rule.select(df))
    if len(selected) < rule.threshold:
        return
    sub = df.iloc[selected]
    keys = sub[rule.key].map(lambda v: v if isinstance(v, str) and v else None)
    valid, times, window = _event_times(sub["eventTime"])
    keys = keys.where(valid, None)
    idx, peaks = _bursts(times, keys, rule.threshold, window)
    if not len(idx):
        return
    variant = rule.classify(sub.iloc[idx]) if rule.classify else np.zeros(len(idx), dtype=np.int64)
    key_values = keys.to_numpy(dtype=object)
    for i, peak, which in zip(idx, peaks, variant, strict=True):
        reason = f"{peak} {rule.noun} in 10 minutes {rule.key_label} {short(key_values[i])}"
        yield int(selected[i]), rule.detections[int(which)], reason
