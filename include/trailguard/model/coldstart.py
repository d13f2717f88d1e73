"""The cold-start scorer: what scores a use case that has no champion model yet.

Why: a new deployment's first days, an organisation that never signs in to the console, or the folder of
logs an incident responder brings have no trained model, and a security tool that says nothing then has
failed its user. So every use case without a champion (and every event that is neither a console sign-in
nor an API call, for which no model is trained) is scored by:

* the labelling functions (:mod:`trailguard.detect`): their score is the base of the risk, their
  reasons the first reasons;
* an IsolationForest fitted on the events that exist: those of up to ``fit_days`` days before the day,
  the day itself too when they are fewer than ``min_events`` (no history: the day is its own reference);
* organisation-wide rarity in place of per-principal history: how rare the principal, source IP, client,
  service, API, region, identity type and error are among all the organisation's events in that
  reference. Without history, per-principal "first seen" features say only "first today" and are left out.

Its risk::

    a       = share of reference events less anomalous than this one (0..1)
    rules'  = rules x 0.7 when the event is routine for its principal (days of history, nothing new in it:
              principal, IP, network, client, API), else rules
    raw     = rules' + 30 x offensive tool in the user agent + 10 x root
              + SPREAD x a + BONUS x max(0, a - Q) / (1 - Q)                  SPREAD 20, BONUS 25, Q 0.95
    risk    = raw up to 90, then 90 + 10 x (1 - exp(-(raw - 90) / 20)): never a tie at 100

so a rule hit keeps its place (35-95), a rule that fires on what a principal always does sinks below one
that fires on something new, and among events no rule knows the oddest come first, the rarest 5% up to 45.
Fewer than ``min_events`` events in all: no detector, the rules and rarity rank alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from trailguard.model.features import (
    API_CALL,
    CONSOLE_LOGIN,
    DEFAULT_HISTORY_DAYS,
    FEATURE_SETS,
    OTHER,
    RULE_SCORE,
    load_day_features,
)
from trailguard.store.events import EventStore

log = logging.getLogger(__name__)

COLD_START = "cold-start"
SPREAD = 20.0
BONUS = 25.0
ROUTINE_FACTOR = 0.7
OFFENSIVE_UA = 30.0
ROOT = 10.0
SOFT_CAP = 90.0
NOVELTY = ("new_principal", "novel_ip", "novel_asn", "novel_ua", "novel_event_name")
QUANTILE = 0.95
MAX_FIT_ROWS = 20_000
RANDOM_STATE = 42

# text columns whose organisation-wide rarity stands in for per-principal history
ORG_RARITY_COLUMNS: tuple[str, ...] = (
    "principal",
    "sourceIPAddress",
    "ua_family",
    "eventSource",
    "eventName",
    "awsRegion",
    "userIdentity.type",
    "errorCode",
    "asn",
    "country",
)
# per-principal features that need days of history to mean anything ("first today" is not "first ever")
HISTORY_FEATURES = ("first_", "novel_", "new_principal", "log_prior_events")
USE_CASE_LABELS = {CONSOLE_LOGIN: "console sign-ins", API_CALL: "API calls", OTHER: "other events"}


def feature_set_of(use_case: str):  # noqa: ANN201 - a FeatureSet
    """The feature set a use case's rows are read with (other events: the API calls' one)."""
    return FEATURE_SETS.get(use_case, FEATURE_SETS[API_CALL])


def org_column(name: str) -> str:
    return f"org_rare_{name}"


@dataclass
class ColdStartScorer:
    """A fitted cold-start scorer of one use case (see the module docstring); ``note`` says in a line
    which scorer ran and why, for the scores, the report and the email."""

    use_case: str
    columns: tuple[str, ...]
    reference: dict[str, dict[str, int]]
    reference_total: int
    history_days: int
    fit_events: int
    fit_days: list[str] = field(default_factory=list)
    from_history: bool = False  # the detector learnt from the days before (else the day itself too)
    detector: IsolationForest | None = None
    anomaly_levels_: np.ndarray | None = None
    note: str = ""
    quantile: float = QUANTILE
    supervised: None = None  # what :func:`trailguard.model.scoring.explain` asks of a model
    model_name: str = COLD_START

    def inputs(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The detector's numeric inputs: behaviour features plus organisation-wide rarity (0 = common)."""
        data: dict[str, np.ndarray] = {}
        total = float(self.reference_total)
        for col in self.columns:
            if col.startswith("org_rare_"):
                source = col[len("org_rare_") :]
                counts = self.reference.get(source, {})
                values = _text(rows, source)
                codes, distinct = pd.factorize(values)
                per_value = np.array([counts.get(v, 0) for v in distinct], dtype=np.float64)
                seen = per_value[codes] if len(distinct) else np.zeros(len(rows))
                data[col] = np.maximum(-np.log10((seen + 1.0) / (total + 1.0)), 0.0)
            else:
                values = rows[col] if col in rows else pd.Series(0.0, index=rows.index)
                data[col] = pd.to_numeric(values, errors="coerce").astype(np.float64).fillna(0.0).to_numpy()
        return pd.DataFrame(data, index=rows.index)

    def anomaly(self, rows: pd.DataFrame) -> np.ndarray:
        if self.detector is None or self.anomaly_levels_ is None:
            return np.zeros(len(rows))
        raw = -self.detector.score_samples(self.inputs(rows))
        return np.interp(raw, self.anomaly_levels_, np.linspace(0.0, 1.0, len(self.anomaly_levels_)))

    def predict_components(self, rows: pd.DataFrame) -> pd.DataFrame:
        """risk_score (0-100), supervised_score (the rules' score here) and anomaly_score per row."""
        rules = (
            pd.to_numeric(rows[RULE_SCORE], errors="coerce").fillna(0.0).to_numpy(np.float64)
            if RULE_SCORE in rows
            else np.zeros(len(rows))
        )
        a = self.anomaly(rows)
        bonus = BONUS * np.clip((a - self.quantile) / (1.0 - self.quantile), 0.0, 1.0)
        if self.history_days > 1:  # with days before, a rule hit on what the principal always does is routine
            novel = np.zeros(len(rows), dtype=bool)
            for col in NOVELTY:
                if col in rows:
                    novel |= _number(rows, col) > 0
            rules = np.where(novel, rules, rules * ROUTINE_FACTOR)
        raw = (
            rules
            + OFFENSIVE_UA * _number(rows, "ua_offensive")
            + ROOT * _number(rows, "is_root")
            + SPREAD * a
            + bonus
        )
        risk = np.where(
            raw <= SOFT_CAP, raw, SOFT_CAP + (100.0 - SOFT_CAP) * (1.0 - np.exp(-(raw - SOFT_CAP) / 20.0))
        )
        risk = np.clip(risk, 0.0, 100.0)
        return pd.DataFrame(
            {"risk_score": risk, "supervised_score": rules, "anomaly_score": a}, index=rows.index
        )


def _number(rows: pd.DataFrame, name: str) -> np.ndarray:
    if name not in rows:
        return np.zeros(len(rows))
    return pd.to_numeric(rows[name], errors="coerce").fillna(0.0).to_numpy(np.float64)


def _text(rows: pd.DataFrame, name: str) -> np.ndarray:
    if name not in rows:
        return np.full(len(rows), "", dtype=object)
    return rows[name].astype("str").fillna("").to_numpy(dtype=object)


def detector_columns(use_case: str, with_history: bool) -> tuple[str, ...]:
    """The behaviour features of the use case (per-principal history ones only ``with_history``) and the
    organisation-wide rarity of :data:`ORG_RARITY_COLUMNS`."""
    behaviour = [
        c for c in feature_set_of(use_case).behaviour if with_history or not c.startswith(HISTORY_FEATURES)
    ]
    extra = ["access_denied", "is_root", "cross_account", "ua_offensive", "is_aws_service"]
    return tuple(dict.fromkeys((*behaviour, *extra, *(org_column(c) for c in ORG_RARITY_COLUMNS))))


def fit_cold_start(
    use_case: str,
    history_rows: pd.DataFrame,
    day_rows: pd.DataFrame,
    *,
    history_days: int,
    min_events: int = 10,
    history_dates: list[str] | None = None,
    day: str = "",
) -> ColdStartScorer:
    """Fit the scorer of one use case: its reference is ``history_rows`` (feature rows of the days before)
    and ``day_rows`` (the whole day's rows of this use case); the detector learns from the history, the
    day included when the history holds fewer than ``min_events`` events."""
    with_history = len(history_rows) >= min_events
    fit = history_rows if with_history else pd.concat([history_rows, day_rows], ignore_index=True)
    reference = pd.concat([history_rows, day_rows], ignore_index=True)
    counts = {col: pd.Series(_text(reference, col)).value_counts().to_dict() for col in ORG_RARITY_COLUMNS}
    scorer = ColdStartScorer(
        use_case=use_case,
        columns=detector_columns(use_case, with_history),
        reference=counts,
        reference_total=len(reference),
        history_days=history_days,
        fit_events=len(fit),
        fit_days=sorted(set(history_dates or [])) + ([] if with_history else [day]),
        from_history=with_history,
    )
    if len(fit) >= min_events:
        sample = (
            fit.sample(n=min(len(fit), MAX_FIT_ROWS), random_state=RANDOM_STATE)
            if len(fit) > MAX_FIT_ROWS
            else fit
        )
        X = scorer.inputs(sample)
        forest = IsolationForest(n_estimators=100, max_samples="auto", random_state=RANDOM_STATE, n_jobs=1)
        forest.fit(X)
        raw = -forest.score_samples(X)
        scorer.detector = forest
        scorer.anomaly_levels_ = np.maximum.accumulate(np.quantile(raw, np.linspace(0.0, 1.0, 1001)))
    scorer.note = cold_start_note(use_case, history_days, scorer)
    return scorer


def cold_start_note(use_case: str, history_days: int, scorer: ColdStartScorer) -> str:
    """One line for the report: which scorer ran and why."""
    days = f"{history_days} day{'s' if history_days != 1 else ''} of history"
    if scorer.detector is None:
        how = f"rules and rarity only ({scorer.fit_events} events: too few for an anomaly detector)"
    elif scorer.from_history:
        how = (
            f"rules and rarity only (anomaly detector fitted on {scorer.fit_events} events of "
            f"{len(scorer.fit_days)} day(s) before)"
        )
    else:
        how = f"rules and rarity only (anomaly detector fitted on {scorer.fit_events} events, the day's own included)"
    if use_case == OTHER:
        return f"no model for events other than sign-ins and API calls: {days}; {how}"
    return f"no model yet: {days}; {how}"


def _bounded(frame: pd.DataFrame) -> pd.DataFrame:
    """At most MAX_FIT_ROWS rows of each use case (a uniform sample): what a scorer learns from a day
    before, so memory stays bounded by the setting, not by the organisation's size."""
    if len(frame) <= MAX_FIT_ROWS:
        return frame
    parts = [
        rows.sample(n=min(len(rows), MAX_FIT_ROWS), random_state=RANDOM_STATE).sort_index()
        for _, rows in frame.groupby("use_case", sort=True)
    ]
    return pd.concat(parts)


def build_cold_start(
    store: EventStore,
    day: str,
    use_case: str,
    day_features: pd.DataFrame,
    *,
    history_days: int = DEFAULT_HISTORY_DAYS,
    fit_days: int = 7,
    min_events: int = 10,
    cache: dict[Any, Any] | None = None,
) -> ColdStartScorer:
    """The cold-start scorer of ``use_case`` for ``day``: the feature rows of up to ``fit_days`` days
    before it (within ``history_days``), and the day's own (``day_features``: the whole day's feature rows). ``cache``: a dict
    that keeps each day's feature rows for the next days' scorers (a run over many days)."""
    first = (date.fromisoformat(day) - timedelta(days=history_days)).isoformat()
    before = [d for d in store.dates() if first <= d < day]
    parts: list[pd.DataFrame] = []
    used: list[str] = []
    rows = 0
    for d in reversed(before[-fit_days:] if fit_days else []):
        frame = cache.get(("features", d)) if cache is not None else None
        if frame is None:
            frame = _bounded(load_day_features(store, d, history_days))
            if cache is not None:
                cache[("features", d)] = frame
        frame = frame[frame["use_case"].eq(use_case).to_numpy()] if len(frame) else frame
        if len(frame):
            parts.append(frame)
            used.append(d)
            rows += len(frame)
        if rows >= MAX_FIT_ROWS:
            break
    history_rows = pd.concat(parts, ignore_index=True) if parts else day_features.iloc[0:0]
    day_rows = day_features[day_features["use_case"].to_numpy() == use_case]
    scorer = fit_cold_start(
        use_case,
        history_rows,
        day_rows,
        history_days=len(before) + 1,
        min_events=min_events,
        history_dates=used,
        day=day,
    )
    log.info("%s %s: cold-start scorer, %s", day, use_case, scorer.note)
    return scorer
