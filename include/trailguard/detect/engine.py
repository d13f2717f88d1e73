"""Labelling a day with the rules: the vectorised prefilter, the per-event rules, the window rules.

:func:`label_events` runs them over a whole day: a vectorised prefilter (``isin`` on eventName and
userIdentity.type) picks the few candidate rows, only those reach the Python functions, and the window
rules (bursts of access-denied calls, secret reads, failed logins, deletions) are computed over the frame.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Mapping
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

import trailguard.detect.rules  # noqa: F401  (registers every rule)
from trailguard.detect.event import UNIQUE_FIELDS, Event, short
from trailguard.detect.registry import FRAME_REGISTERED, REGISTERED, Detection, FrameRule, Rule
from trailguard.detect.window import WINDOW_RULES, column_of, isin, window_hits
from trailguard.store.schema import EVENT_COLUMNS

log = logging.getLogger(__name__)

OUTPUT_COLUMNS: tuple[str, ...] = ("lf_score", "lf_reasons", "attack_technique", "lf_rules")

RULES: tuple[Rule, ...] = tuple(REGISTERED)
FRAME_RULES: tuple[FrameRule, ...] = tuple(FRAME_REGISTERED)
if len({r.detection.rule_id for r in RULES}) != len(RULES):
    raise RuntimeError("duplicate rule ids in trailguard.detections")

_RULES_BY_NAME: dict[str, tuple[Rule, ...]] = {}
_RULES_BY_TYPE: dict[str, tuple[Rule, ...]] = {}
for _r in RULES:
    if _r.event_names:
        for _name in _r.event_names:
            _RULES_BY_NAME[_name] = (*_RULES_BY_NAME.get(_name, ()), _r)
    else:
        for _type in _r.identity_types:
            _RULES_BY_TYPE[_type] = (*_RULES_BY_TYPE.get(_type, ()), _r)
del _r


_KNOWN_TYPES = frozenset(t for r in RULES for t in r.identity_types)
_KNOWN_SOURCES = frozenset(s for r in RULES for s in r.event_sources)


@functools.cache
def _rules_for(name: str, identity_type: str, source: str) -> tuple[Rule, ...]:
    return tuple(
        rule
        for rule in (*_RULES_BY_NAME.get(name, ()), *_RULES_BY_TYPE.get(identity_type, ()))
        if rule.applies(name, identity_type, source)
    )


def _candidate_rules(event: Event) -> tuple[Rule, ...]:
    # values no rule names are replaced by placeholders, so the cache stays as small as the rule set
    name = event.name if event.name in _RULES_BY_NAME else ""
    identity_type = event.identity_type if event.identity_type in _KNOWN_TYPES else ""
    if not name and identity_type not in _RULES_BY_TYPE:
        return ()
    source = event.source if event.source in _KNOWN_SOURCES or not event.source else "other"
    return _rules_for(name, identity_type, source)


def _fire(event: Event) -> list[tuple[Detection, str]]:
    hits = []
    for rule in _candidate_rules(event):
        try:
            reason = rule.check(event)
        except Exception:  # a bug in one rule must not stop a day's labelling; it is logged loudly
            event.unique = True  # and logged for every event it fails on
            log.exception(
                "rule %s raised on event %s; the rule is skipped for this event",
                rule.detection.rule_id,
                short(event.text("eventID")),
            )
            continue
        if reason:
            hits.append((rule.detection, reason))
    return hits


def _by_score(hits: list[tuple[Detection, str]]) -> list[tuple[Detection, str]]:
    return sorted(hits, key=lambda hit: (-hit[0].score, hit[0].rule_id))


def evaluate_event(row: Mapping[str, Any]) -> list[tuple[Detection, str]]:
    """The per-event rules that fire on one normalised row, with their reasons, highest score first.

    Window rules need the whole frame and are only applied by :func:`label_events`.
    """
    return _by_score(_fire(Event(row)))


# columns no rule reads: left out of the candidate rows (Event.get would still find them in `raw`)
_UNREAD_COLUMNS = frozenset(
    {
        "eventVersion", "eventCategory", "eventTime", "awsRegion", "userAgent", "userIdentity.accessKeyId",
        "userIdentity.sessionContext.sessionIssuer.arn", "userIdentity.sessionContext.sessionIssuer.userName",
        "userIdentity.sessionContext.attributes.mfaAuthenticated", "vpcEndpointId", "requestID",
        "managementEvent", "source_key",
    }
)  # fmt: skip
# The store's columns the rules read. DETAIL_COLUMNS (the record's text and its large parts) are needed only
# on the rows :func:`detail_rows` picks: a caller may read them for those rows alone and leave them null
# elsewhere (a day's `raw` is most of its bytes), and :func:`label_events` gives the same labels.
DETAIL_COLUMNS: tuple[str, ...] = ("raw", "requestParameters", "responseElements", "errorMessage")
RULE_COLUMNS: tuple[str, ...] = tuple(c for c in EVENT_COLUMNS if c not in _UNREAD_COLUMNS)
_WINDOW_DETAIL_EVENTS = (
    "GetSecretValue",
    "BatchGetSecretValue",
    "GetParameter",
    "GetParameters",
    "ConsoleLogin",
)


def _candidates(df: pd.DataFrame) -> np.ndarray:
    """Rows some per-event rule may fire on (the vectorised prefilter): a named eventName or identity type."""
    return isin(column_of(df, "eventName"), _RULES_BY_NAME) | isin(
        column_of(df, "userIdentity.type"), _RULES_BY_TYPE
    )


def detail_rows(df: pd.DataFrame, rows: np.ndarray | None = None) -> np.ndarray:
    """The rows whose DETAIL_COLUMNS :func:`label_events` reads (``rows``: as passed to it): the per-event
    rules' candidates among ``rows``, and anywhere in the frame the calls whose request or error text a
    window rule reads (secret and parameter reads, console logins)."""
    candidates = _candidates(df)
    if rows is not None:
        candidates &= np.asarray(rows, dtype=bool)
    return candidates | isin(column_of(df, "eventName"), _WINDOW_DETAIL_EVENTS)


def _per_event_hits(df: pd.DataFrame, positions: np.ndarray) -> list[tuple[int, Detection, str]]:
    """The per-event rules over the rows at ``positions``. Events that differ only in eventID and `raw`
    (an application reading the same secret all day) get the same answer: it is computed once, unless a
    check read one of those two fields or raised."""
    if not len(positions):
        return []
    sub = df.iloc[positions]
    keep = [i for i, c in enumerate(sub.columns) if str(c) not in _UNREAD_COLUMNS]
    names = [str(sub.columns[i]) for i in keep]
    columns = [sub.iloc[:, i].tolist() for i in keep]  # column-wise tolist: far faster than row dicts
    shared = [col for name, col in zip(names, columns, strict=True) if name not in UNIQUE_FIELDS]
    keys = list(zip(*shared, strict=True)) if shared else [()] * len(positions)
    known: dict[tuple, list[tuple[Detection, str]]] = {}
    hits: list[tuple[int, Detection, str]] = []
    for i, key in enumerate(keys):
        fired = known.get(key)
        if fired is None:
            event = Event(dict(zip(names, [col[i] for col in columns], strict=True)))
            fired = _fire(event)
            if not event.unique:
                known[key] = fired
        if fired:
            position = int(positions[i])
            hits.extend((position, detection, reason) for detection, reason in fired)
    return hits


def label_events(df: pd.DataFrame, rows: np.ndarray | None = None) -> pd.DataFrame:
    """Label a frame of normalised events with the rules: one row out per row in, same index.

    Columns: ``lf_score`` (max score of the fired rules, 0 if none), ``lf_reasons`` (their reasons,
    highest score first, "; "-joined), ``attack_technique`` (of the top rule, None if none) and
    ``lf_rules`` (comma-joined rule ids). Missing optional columns are tolerated.

    ``rows`` (a boolean mask): label only those rows - the window rules still count every row of the
    frame (a burst may cross the rows asked for); the other rows come out unlabelled.
    """
    started = time.perf_counter()
    n = len(df)
    wanted = np.ones(n, dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    candidates = np.flatnonzero(_candidates(df) & wanted)
    hits = _per_event_hits(df, candidates)
    per_event = len(hits)
    for rule in WINDOW_RULES:
        hits.extend(hit for hit in window_hits(df, rule) if wanted[hit[0]])
    hits.extend(hit for hit in frame_hits(df) if wanted[hit[0]])

    scores = np.zeros(n, dtype=np.int64)
    reasons = np.full(n, "", dtype=object)
    techniques = np.full(n, None, dtype=object)
    rule_ids = np.full(n, "", dtype=object)
    hits.sort(key=lambda h: (h[0], -h[1].score, h[1].rule_id))
    for position, group in itertools.groupby(hits, key=itemgetter(0)):
        fired = list(group)
        scores[position] = fired[0][1].score
        techniques[position] = fired[0][1].technique
        reasons[position] = "; ".join(reason for _, _, reason in fired)
        rule_ids[position] = ",".join(detection.rule_id for _, detection, _ in fired)
    out = pd.DataFrame(
        {
            "lf_score": pd.Series(scores, dtype="int64"),
            "lf_reasons": pd.Series(reasons, dtype=object),
            "attack_technique": pd.Series(techniques, dtype=object),
            "lf_rules": pd.Series(rule_ids, dtype=object),
        }
    )
    out.index = df.index
    log.info(
        "labelled %d of %d events (%d candidates, %d per-event and %d window hits) in %.2fs",
        int((scores > 0).sum()),
        int(wanted.sum()),
        len(candidates),
        per_event,
        len(hits) - per_event,
        time.perf_counter() - started,
    )
    return out


def frame_hits(
    df: pd.DataFrame, rules: tuple[FrameRule, ...] | None = None
) -> list[tuple[int, Detection, str]]:
    """The frame rules' hits; a rule that raises is logged and skipped, as a per-event rule is."""
    hits: list[tuple[int, Detection, str]] = []
    if not len(df):
        return hits
    for rule in FRAME_RULES if rules is None else rules:
        try:
            hits.extend((int(position), rule.detection, reason) for position, reason in rule.check(df))
        except Exception:
            log.exception("frame rule %s raised; it is skipped for this frame", rule.detection.rule_id)
    return hits


def all_detections() -> tuple[Detection, ...]:
    """Every Detection a label can carry (per-event, window and frame rules), e.g. to document the label set."""
    return (
        *(r.detection for r in RULES),
        *(d for w in WINDOW_RULES for d in w.detections),
        *(r.detection for r in FRAME_RULES),
    )
