"""Train the risk models: the paper's LinearRegression as the baseline, stronger models beside it, an
unsupervised detector for what nobody labelled, and a champion that only changes when it is beaten.

Per use case (``console_login``, ``api_call``) every candidate is ONE sklearn
``Pipeline(ColumnTransformer -> estimator)`` over named column lists (:data:`trailguard.features.FEATURE_SETS`):

* ``paper_linear_regression`` - the paper's Splunk MLTK ``fit LinearRegression fit_intercept=true`` on
  only its fields (source IP, user agent, ARN, eventTime as hour + weekday, ConsoleLogin outcome for
  sign-ins; eventSource, eventName, identity type for API calls), one-hot encoded with MLTK's cap of 100
  distinct values per field, unseen values ignored.
* ``ridge`` - Ridge on the full features (one-hot, infrequent values pooled, numbers standardised).
* ``hist_gradient_boosting`` - HistGradientBoostingRegressor on the full features (native categories).
* ``isolation_forest`` - unsupervised: IsolationForest on the behavioural features; its risk is the
  anomaly percentile x 100.
* ``ridge+isolation_forest``, ``hist_gradient_boosting+isolation_forest`` - the combination (see
  :class:`RiskModel`)::

      anomaly  a = share of training events less anomalous than this one (0..1, IsolationForest)
      bonus      = W * max(0, a - Q) / (1 - Q)          W = 40, Q = 0.98
      risk       = clip(supervised + bonus, 0, 100)

  so only the rarest 2% of behaviour gets a boost, at most 40 points: an event nobody labelled but the
  detector finds very odd climbs above the routine rule hits (35-55) in the daily report, while the
  analysts' and rules' high scores keep their order.

Every candidate carries the detector (weight 0 except in the combination) so the scores file always has
an ``anomaly_score``. Targets come from :func:`trailguard.labels.training_targets` (analyst > rules >
default 5). Evaluation: the paper's random 70/30 split AND a time split (older days train, newest days
test); the candidate with the best time-split average precision for high-risk events (target >= 70),
ties broken by precision@20, then by the anomaly bonus, then by RMSE (:func:`choose_best`: within 2% of the
lowest RMSE the simpler model wins) is registered; it becomes ``champion`` only if it beats the current
champion evaluated on the same test days (ties keep the champion), otherwise ``challenger``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor, IsolationForest
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import average_precision_score, mean_absolute_error, mean_squared_error, r2_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from trailguard.model.features import (
    API_CALL,
    CONSOLE_LOGIN,
    COUNT_FEATURES,
    DAY_COLUMNS,
    DEFAULT_HISTORY_DAYS,
    FEATURE_SETS,
    USE_CASES,
    FeatureSet,
    add_rule_details,
    add_rule_score,
    iter_day_features,
    load_rule_events,
    principal_of,
    profile_fresh,
)
from trailguard.model.labels import DEFAULT_TARGET, mark_training, read_labels, targets_and_sources
from trailguard.model.mlflow_store import relocate_local_store
from trailguard.model.sampling import HIGH_RISK, KEY, WEIGHT, StratifiedReservoir
from trailguard.store.events import EventStore
from trailguard.store.fs import DataPath, is_remote

log = logging.getLogger(__name__)

NETWORK_FLOW = "network_flow"  # VPC Flow Logs: trained by trailguard.model.network, registered the same way
MODEL_NAMES = {
    CONSOLE_LOGIN: "trailguard-console-login",
    API_CALL: "trailguard-api-call",
    NETWORK_FLOW: "trailguard-network-flow",
}
CHAMPION = "champion"
CHALLENGER = "challenger"
TOP_N = 20
RANDOM_STATE = 42
ANOMALY_WEIGHT = 40.0
ANOMALY_QUANTILE = 0.98
COMBINATION_FORMULA = (
    "risk = clip(supervised + W * max(0, a - Q) / (1 - Q), 0, 100); a = IsolationForest anomaly percentile "
    f"among training events; W = {ANOMALY_WEIGHT:g}, Q = {ANOMALY_QUANTILE:g}"
)
PAPER = "paper_linear_regression"
RIDGE = "ridge"
HGB = "hist_gradient_boosting"
IFOREST = "isolation_forest"


# -- the model that gets registered ------------------------------------------------------------------------
class RiskModel(RegressorMixin, BaseEstimator):
    """A 0-100 risk score from a supervised pipeline plus the anomaly detector (see the module docstring).

    ``supervised`` None = the detector alone (risk = 100 x anomaly percentile). ``weight`` 0 = the
    supervised score alone (the detector still reports ``anomaly_score``). Input: a DataFrame with at
    least ``columns``; extra columns are ignored.
    """

    def __init__(
        self,
        supervised: Pipeline | None = None,
        detector: Pipeline | None = None,
        columns: tuple[str, ...] = (),
        weight: float = 0.0,
        quantile: float = ANOMALY_QUANTILE,
    ) -> None:
        self.supervised = supervised
        self.detector = detector
        self.columns = columns
        self.weight = weight
        self.quantile = quantile

    def fit(self, X: pd.DataFrame, y: Any = None, sample_weight: np.ndarray | None = None) -> RiskModel:
        """Fit the supervised pipeline on (X, y); the detector too, on X, unless it is fitted already
        (training fits it once per use case with :func:`fit_detector` on a uniform sample)."""
        X = X[list(self.columns)]
        if self.supervised is not None:
            self.supervised.fit(X, y, **_weight_kwargs(self.supervised, sample_weight))
        if self.detector is not None and not hasattr(self, "anomaly_levels_"):
            fit_detector(self, X)
        return self

    def _anomaly(self, X: pd.DataFrame) -> np.ndarray:
        if self.detector is None or not hasattr(self, "anomaly_levels_"):
            return np.zeros(len(X))
        raw = -self.detector.score_samples(X)
        return np.interp(raw, self.anomaly_levels_, np.linspace(0.0, 1.0, len(self.anomaly_levels_)))

    def predict_components(self, X: pd.DataFrame) -> pd.DataFrame:
        """risk_score (0-100), supervised_score and anomaly_score (0-1 percentile) per row."""
        X = X[list(self.columns)]
        anomaly = self._anomaly(X)
        if self.supervised is None:
            supervised = np.full(len(X), np.nan)
            risk = 100.0 * anomaly
        else:
            supervised = np.clip(np.asarray(self.supervised.predict(X), dtype=float), 0.0, 100.0)
            bonus = self.weight * np.clip((anomaly - self.quantile) / (1.0 - self.quantile), 0.0, 1.0)
            risk = supervised + bonus
        return pd.DataFrame(
            {
                "risk_score": np.clip(risk, 0.0, 100.0),
                "supervised_score": supervised,
                "anomaly_score": anomaly,
            },
            index=X.index,
        )

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.supervised is not None and not self.weight:  # the anomaly cannot change the risk
            return np.clip(
                np.asarray(self.supervised.predict(X[list(self.columns)]), dtype=float), 0.0, 100.0
            )
        return self.predict_components(X)["risk_score"].to_numpy()


def fit_detector(model: RiskModel, X: pd.DataFrame) -> None:
    """Fit the detector on ``X`` (a uniform sample of ordinary traffic) and remember where its anomaly
    scores fall (1001 quantiles) so that scores become percentiles."""
    assert model.detector is not None
    X = X[list(model.columns)]
    model.detector.fit(X)
    raw = -model.detector.score_samples(X)
    model.anomaly_levels_ = np.maximum.accumulate(np.quantile(raw, np.linspace(0.0, 1.0, 1001)))


def _weight_kwargs(pipeline: Pipeline, sample_weight: np.ndarray | None) -> dict[str, Any]:
    if sample_weight is None:
        return {}
    return {f"{pipeline.steps[-1][0]}__sample_weight": sample_weight}


# -- candidates -----------------------------------------------------------------------------------------
class Categories(TransformerMixin, BaseEstimator):
    """Category columns as one-hot columns (``output="onehot"``, sparse) or category codes (``"ordinal"``),
    with the semantics of sklearn's OneHotEncoder / OrdinalEncoder but counted and looked up in Arrow's
    hash tables: sklearn's encoders make a Python object of every value first, seconds per million rows
    and column, in training and in every day's scoring.

    Values seen fewer than ``min_frequency`` times, and all but the ``max_categories - 1`` most frequent
    (ties: the first in sorted order), are pooled as one "infrequent" category (code ``len(categories_[i])``,
    column ``<col>_infrequent_sklearn``). Values never seen go to that pool when ``unknown="infrequent"``
    and there is one; otherwise (and always with ``"ignore"``) they get no column, or NaN as a code.
    Input: a DataFrame (or 2-D array) without missing values, as :func:`model_input` builds it.
    """

    def __init__(
        self,
        output: str = "onehot",
        min_frequency: int | None = None,
        max_categories: int | None = None,
        unknown: str = "infrequent",
    ) -> None:
        self.output = output
        self.min_frequency = min_frequency
        self.max_categories = max_categories
        self.unknown = unknown

    def fit(self, X: Any, y: Any = None) -> Categories:
        if self.output not in ("onehot", "ordinal") or self.unknown not in ("infrequent", "ignore"):
            raise ValueError(f"output={self.output!r} / unknown={self.unknown!r} not understood")
        frame = _as_frame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        self.categories_, self.infrequent_categories_ = [], []
        for col in frame.columns:
            counted = pc.value_counts(_arrow(frame[col]))
            values = counted.field("values")
            order = pc.array_sort_indices(values).to_numpy()  # sorted values, as sklearn's categories
            values, counts = values.take(order), counted.field("counts").to_numpy()[order]
            frequent = np.ones(len(counts), dtype=bool)
            if self.min_frequency is not None:
                frequent &= counts >= self.min_frequency
            if self.max_categories is not None and frequent.sum() > self.max_categories - 1:
                by_count = np.argsort(-np.where(frequent, counts, -1), kind="stable")[
                    : max(self.max_categories - 1, 0)
                ]
                frequent = np.zeros(len(counts), dtype=bool)
                frequent[by_count] = True
            self.categories_.append(values.filter(pa.array(frequent)))
            self.infrequent_categories_.append(values.filter(pa.array(~frequent)))
        return self

    def _codes(self, X: Any) -> np.ndarray:
        """(rows, columns) codes: a category's index, the pool's (``len(categories)``), or -1 for none."""
        frame = _as_frame(X)
        codes = np.empty((len(frame), len(self.categories_)), dtype=np.int64)
        for j, col in enumerate(frame.columns):
            values, known, rare = _arrow(frame[col]), self.categories_[j], self.infrequent_categories_[j]
            found = pc.index_in(values, value_set=known).to_numpy(zero_copy_only=False)
            code = (
                np.where(np.isnan(found), -1, found).astype(np.int64)
                if found.dtype.kind == "f"
                else found.astype(np.int64)
            )
            missing = code < 0
            if len(rare) and missing.any():
                if self.unknown == "infrequent":
                    code[missing] = len(known)
                else:  # only the values seen in training join the pool
                    seen = pc.is_in(values.filter(pa.array(missing)), value_set=rare).to_numpy(
                        zero_copy_only=False
                    )
                    code[np.flatnonzero(missing)[seen]] = len(known)
            codes[:, j] = code
        return codes

    def transform(self, X: Any) -> Any:
        codes = self._codes(X)
        if self.output == "ordinal":
            return np.where(codes >= 0, codes, np.nan).astype(np.float64)
        from scipy import sparse

        widths = np.array(
            [
                len(c) + (len(r) > 0)
                for c, r in zip(self.categories_, self.infrequent_categories_, strict=True)
            ]
        )
        offsets = np.concatenate(([0], np.cumsum(widths)[:-1]))
        valid = codes >= 0
        rows = np.broadcast_to(np.arange(len(codes))[:, None], codes.shape)[valid]
        columns = (codes + offsets)[valid]
        return sparse.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(codes), int(widths.sum())))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = [str(c) for c in (input_features if input_features is not None else self.feature_names_in_)]
        if self.output == "ordinal":
            return np.asarray(names, dtype=object)
        out = []
        for name, known, rare in zip(names, self.categories_, self.infrequent_categories_, strict=True):
            out += [f"{name}_{value}" for value in known.to_pylist()]
            if len(rare):
                out.append(f"{name}_infrequent_sklearn")
        return np.asarray(out, dtype=object)


def _as_frame(X: Any) -> pd.DataFrame:
    return X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X))


def _arrow(values: pd.Series) -> pa.Array:
    """A column as one Arrow array (zero-copy for the text columns :func:`model_input` builds)."""
    arr = pa.array(values, from_pandas=True)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _onehot(**kw: Any) -> Categories:
    return Categories(output="onehot", **kw)


def paper_pipeline(fs: FeatureSet) -> Pipeline:
    """The paper's model: LinearRegression(fit_intercept=True) on its own fields only."""
    pre = ColumnTransformer(
        [
            ("categories", _onehot(unknown="ignore", max_categories=100), list(fs.paper_categorical)),
            ("time", "passthrough", list(fs.paper_numeric)),
        ]
    )
    return Pipeline([("features", pre), ("model", LinearRegression(fit_intercept=True))])


def _log_counts() -> Pipeline:
    """log1p then standardise: counts grow with the organisation's size, a linear model must not
    extrapolate them."""
    return Pipeline(
        [
            ("log1p", FunctionTransformer(np.log1p, feature_names_out="one-to-one")),
            ("scale", StandardScaler()),
        ]
    )


def ridge_pipeline(fs: FeatureSet) -> Pipeline:
    counts = [c for c in fs.numeric if c in COUNT_FEATURES]
    numeric = [c for c in fs.numeric if c not in ("hour", "weekday") and c not in counts]
    pre = ColumnTransformer(
        [
            ("categories", _onehot(min_frequency=2, max_categories=300), list(fs.categorical)),
            ("time", _onehot(), ["hour", "weekday"]),
            ("counts", _log_counts(), counts),
            ("numbers", StandardScaler(), numeric),
        ]
    )
    return Pipeline([("features", pre), ("model", Ridge(alpha=1.0, random_state=RANDOM_STATE))])


def hgb_pipeline(fs: FeatureSet) -> Pipeline:
    categorical = list(fs.categorical)
    pre = ColumnTransformer(
        [
            (
                "categories",
                Categories(output="ordinal", max_categories=250, unknown="ignore"),
                categorical,
            ),
            ("numbers", "passthrough", list(fs.numeric)),
        ]
    )
    # a frame, not an array: the regressor re-encodes its categorical columns, and picking columns out of
    # a million-row array costs seconds at every scoring
    pre.set_output(transform="pandas")
    mask = [True] * len(categorical) + [False] * len(fs.numeric)
    model = HistGradientBoostingRegressor(
        max_iter=300,
        # 0.2 stops at about half the trees of 0.1 with the same held-out metrics on a month of a 100k-event
        # organisation: half the time of every day's scoring
        learning_rate=0.2,
        max_leaf_nodes=31,
        min_samples_leaf=10,  # rare high-risk calls (StopLogging...) need small leaves to be learnt at all
        l2_regularization=1.0,
        categorical_features=mask,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=20,
        random_state=RANDOM_STATE,
    )
    return Pipeline([("features", pre), ("model", model)])


def detector_pipeline(fs: FeatureSet) -> Pipeline:
    counts = [c for c in fs.behaviour if c in COUNT_FEATURES]
    pre = ColumnTransformer(
        [
            ("counts", FunctionTransformer(np.log1p, feature_names_out="one-to-one"), counts),
            ("behaviour", "passthrough", [c for c in fs.behaviour if c not in counts]),
        ]
    )
    forest = IsolationForest(n_estimators=100, max_samples="auto", random_state=RANDOM_STATE, n_jobs=1)
    return Pipeline([("features", pre), ("model", forest)])


SUPERVISED: dict[str, Callable[[FeatureSet], Pipeline]] = {
    PAPER: paper_pipeline,
    RIDGE: ridge_pipeline,
    HGB: hgb_pipeline,
}


# -- metrics --------------------------------------------------------------------------------------------
def ranking_metrics(
    positive: np.ndarray,
    scores: np.ndarray,
    days: np.ndarray,
    *,
    sample_weight: np.ndarray | None = None,
    top_n: int = TOP_N,
) -> dict[str, float]:
    """Ranking quality as the daily email sees it: precision@N is the mean over days of the share of
    high-risk events among the day's top N; recall@N is the share of all high-risk events that made
    their day's top N; average precision over the whole set.

    With ``sample_weight`` (rows of a sample standing for ``weight`` rows each) the top N is the first N
    rows' worth of weight, so the figures estimate those of the full set."""
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    days = np.asarray(days)
    weight = np.ones(len(scores)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    n_pos = int(positive.sum())
    ap = (
        float(average_precision_score(positive, scores, sample_weight=sample_weight))
        if 0 < n_pos < len(positive)
        else float("nan")
    )
    precisions, hits_total = [], 0.0
    frame = pd.DataFrame({"day": days, "score": scores, "pos": positive, "w": weight})
    frame = (
        frame.sample(frac=1.0, random_state=0) if len(frame) else frame
    )  # ties broken at random, reproducibly
    for _, part in frame.groupby("day", sort=True):
        top = part.sort_values("score", ascending=False, kind="stable")
        w = top["w"].to_numpy()
        before = np.concatenate(([0.0], np.cumsum(w)[:-1]))
        taken = np.clip(top_n - before, 0.0, w)  # each row's share of the first N rows' worth
        hits = float((taken * top["pos"].to_numpy()).sum())
        hits_total += hits
        precisions.append(hits / taken.sum())
    positives = float(weight[positive].sum())
    return {
        f"precision_at_{top_n}": float(np.mean(precisions)) if precisions else float("nan"),
        f"recall_at_{top_n}": hits_total / positives if n_pos else float("nan"),
        "average_precision": ap,
        "high_risk_events": positives,
    }


def evaluate(
    y: np.ndarray, pred: np.ndarray, days: np.ndarray, *, sample_weight: np.ndarray | None = None
) -> dict[str, float]:
    """R², RMSE, MAE of the 0-100 prediction plus :func:`ranking_metrics` for high-risk targets."""
    y = np.asarray(y, dtype=float)
    pred = np.clip(np.asarray(pred, dtype=float), 0.0, 100.0)
    out = {
        "r2": float(r2_score(y, pred, sample_weight=sample_weight)) if len(y) > 1 else float("nan"),
        "rmse": float(math.sqrt(mean_squared_error(y, pred, sample_weight=sample_weight)))
        if len(y)
        else float("nan"),
        "mae": float(mean_absolute_error(y, pred, sample_weight=sample_weight)) if len(y) else float("nan"),
        "rows": float(len(y)),
    }
    out.update(ranking_metrics(y >= HIGH_RISK, pred, days, sample_weight=sample_weight))
    return out


def _rank_key(metrics: dict[str, float]) -> tuple[float, float]:
    """What "better" means: average precision, then precision@20 (NaN counts as worst)."""

    def value(name: str) -> float:
        v = metrics.get(name, float("nan"))
        return -math.inf if v is None or math.isnan(v) else v

    return value("average_precision"), value(f"precision_at_{TOP_N}")


SIMPLER_FIRST = (PAPER, RIDGE, HGB, IFOREST)
RMSE_TOLERANCE = (
    0.02  # RMSEs within 2% of the lowest are a tie (sampling noise), which the simpler model wins
)


def choose_best(candidates: dict[str, CandidateResult]) -> str:
    """The candidate to register: the best :func:`_rank_key`; on a tie, a model that carries the anomaly
    bonus (it also covers events no label covers, at no cost to the ranking of the known ones); then, among
    those whose RMSE is within ``RMSE_TOLERANCE`` of the lowest, the simpler model (:data:`SIMPLER_FIRST`:
    cheaper to score and to explain, and the choice does not flip between runs on a difference of noise),
    then the lower RMSE."""

    def rmse(c: CandidateResult) -> float:
        return c.rmse if not math.isnan(c.rmse) else math.inf

    def key(c: CandidateResult) -> tuple[float, float, int]:
        return (*_rank_key(asdict(c)), int(c.name.endswith(f"+{IFOREST}")))

    top = max(key(c) for c in candidates.values())
    tied = [c for c in candidates.values() if key(c) == top]
    lowest = min(rmse(c) for c in tied)
    close = [c for c in tied if rmse(c) <= lowest * (1 + RMSE_TOLERANCE)]
    simplicity = {name: i for i, name in enumerate(SIMPLER_FIRST)}
    return min(close, key=lambda c: (simplicity.get(c.name.split("+")[0], len(SIMPLER_FIRST)), rmse(c))).name


# -- data -----------------------------------------------------------------------------------------------
def model_input(frame: pd.DataFrame, fs: FeatureSet) -> pd.DataFrame:
    """The exact frame models take (signature): categorical columns as text without nulls, numbers as
    float64. Training and scoring both build their input here, so a loaded model sees what it saw."""
    data = {}
    for col in fs.columns:
        if col in fs.categorical_columns:
            data[col] = (
                frame[col].astype("str").fillna("")
                if col in frame
                else pd.Series("", index=frame.index, dtype="str")
            )
        else:
            data[col] = (
                pd.to_numeric(frame[col], errors="coerce").astype(np.float64).fillna(0.0)
                if col in frame
                else 0.0
            )
    return pd.DataFrame(data, index=frame.index, copy=False)


TRAIN_ADDRESS_CACHE = 200_000  # addresses whose GeoIP answer training remembers across days
PIECE_EVENTS = 250_000  # a larger day's features are built a piece (of whole principals) at a time
RELEASE_AFTER_EVENTS = 50_000  # after a day this large, its memory is handed back (release_memory)


def release_memory() -> None:
    """Give the memory freed by a day back to the system: collect cycles, empty pyarrow's pool of freed
    blocks and trim glibc's heap (its arenas keep freed pages otherwise, and the next day's frames land on
    fragments of them: the process grew by 100-300 MB a day with 1M-event days)."""
    import ctypes
    import gc

    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def day_pieces(events: pd.DataFrame, max_events: int) -> list[np.ndarray]:
    """Boolean masks over ``events`` that split them into pieces of whole principals, each of at most
    ``max_events`` events unless one principal has more; one mask of every row when the day fits. Every
    per-principal feature of a piece is then worked out on the piece's own rows (no other principal's
    events need building), and only the organisation-wide counts look at the whole day."""
    if len(events) <= max_events:
        return [np.ones(len(events), dtype=bool)]
    codes, _ = pd.factorize(principal_of(events), sort=True)
    sizes = np.bincount(codes)
    piece_of = np.empty(len(sizes), dtype=np.int64)
    piece, filled = 0, 0
    for principal, size in enumerate(sizes):
        if filled and filled + size > max_events:
            piece, filled = piece + 1, 0
        piece_of[principal] = piece
        filled += int(size)
    pieces = piece_of[codes]
    return [pieces == p for p in range(piece + 1)]


def _labelled_days(
    store: EventStore,
    days: list[str],
    history_days: int,
    analyst: pd.DataFrame,
    progress: Callable[[str], None] | None = None,
    piece_events: int | None = PIECE_EVENTS,
) -> Iterator[tuple[str, pd.DataFrame, np.ndarray, np.ndarray]]:
    """Day by day: the day, its features (with the rule score), and each event's target and the target's
    source. Only the columns features and rules read; history comes from the days' profiles (compact
    per-principal counts), so a day costs the same whatever the number of days before it.

    A day of more than ``piece_events`` events (None: no limit) whose profile is already stored comes in
    pieces of whole principals (:func:`day_pieces`; several tuples with the same day): the rules label the
    whole day once, the features are built a piece at a time, the same as the whole day's
    (organisation-wide counts still count the whole day). The memory of a day is then its small columns
    and one piece's features."""
    from trailguard.detect.engine import label_events
    from trailguard.model.enrich import Enricher, default_enricher

    # the process-wide enricher remembers up to 2M addresses: over weeks of a large organisation's days
    # that memory grows day after day, so training keeps its own, smaller memory of them
    enricher = Enricher(default_enricher().geo, cache_limit=TRAIN_ADDRESS_CACHE)
    for day in days:
        events = load_rule_events(store, day)
        if events.empty:
            continue
        add_rule_details(store, day, events)
        lf = label_events(events)
        targets, sources = targets_and_sources(events, lf, analyst)
        targets, sources, lf = targets.to_numpy(), sources.to_numpy(), lf[["lf_score"]]
        pieces = (
            day_pieces(events, piece_events)
            if piece_events is not None and profile_fresh(store, day, enricher)
            else [None]
        )
        # the rules are done: features read only their own columns, the rest of the day's frame can go
        events = events[[c for c in DAY_COLUMNS if c in events.columns]]
        large = len(events) > RELEASE_AFTER_EVENTS
        if large:  # the rule columns' blocks, freed, back to the system before the features are built
            pa.default_memory_pool().release_unused()
        frames = iter_day_features(store, day, history_days, enricher=enricher, events=events, pieces=pieces)
        for rows, frame in zip(pieces, frames, strict=True):
            add_rule_score(frame, lf)
            picked = slice(None) if rows is None else rows
            yield day, frame, targets[picked], sources[picked]
            del frame  # not alive while the next piece is built
            if large:
                pa.default_memory_pool().release_unused()
        del events, lf, targets, sources, frames
        if large:
            release_memory()
        if progress:
            progress(day)


def _use_case_rows(
    frame: pd.DataFrame, targets: np.ndarray, sources: np.ndarray, day: str, uc: str, mask: np.ndarray
) -> pd.DataFrame:
    """The model columns of the ``mask`` rows of one day, with eventID, day, target and its source."""
    fs = FEATURE_SETS[uc]
    return model_input(frame.loc[mask, ["eventID", *fs.columns]], fs).assign(
        eventID=frame.loc[mask, "eventID"].to_numpy(),
        day=day,
        target=targets[mask],
        target_source=sources[mask],
    )


def training_data(
    store: EventStore,
    days: list[str],
    history_days: int = DEFAULT_HISTORY_DAYS,
    analyst: pd.DataFrame | None = None,
    progress: Callable[[str], None] | None = None,
    piece_events: int | None = PIECE_EVENTS,
) -> dict[str, pd.DataFrame]:
    """Model columns, target, target source, eventID and day of every event of ``days``, per use case
    (other event types dropped). ``analyst``: the label store's latest decisions (read when None).

    Every row of every day is in memory at once: training samples them as it reads instead
    (:func:`sample_training_data`); this is for inspecting a few days, and the unbounded way the bench
    compares with."""
    if analyst is None:
        analyst = read_labels(store.root)
    parts: dict[str, list[pd.DataFrame]] = {uc: [] for uc in USE_CASES}
    for day, frame, targets, sources in _labelled_days(
        store, days, history_days, analyst, progress, piece_events
    ):
        for uc in USE_CASES:
            mask = frame["use_case"].eq(uc).to_numpy()
            if mask.any():
                parts[uc].append(_use_case_rows(frame, targets, sources, day, uc, mask))
        del frame
    frames = {uc: pd.concat(p, ignore_index=True) if p else pd.DataFrame() for uc, p in parts.items()}
    # rows in an order of the events themselves (eventIDs are unique), not of part files or worker timing:
    # the seeded sampling and splitting then pick the same events from any store holding them
    return {
        uc: f.sort_values(["day", "eventID"], kind="stable", ignore_index=True) if len(f) else f
        for uc, f in frames.items()
    }


@dataclass
class SampledData:
    """One use case's training sample (:func:`sample_training_data`): the rows kept from the older days
    (``train``) and from the newest ``test_days`` (``test``), each a bounded stratified reservoir."""

    train: StratifiedReservoir
    test: StratifiedReservoir
    test_period: list[str]

    @property
    def rows_by_day(self) -> dict[str, int]:
        """Rows seen per day (days without a row of this use case left out)."""
        return dict(sorted((self.train.days + self.test.days).items()))

    def rows(self) -> pd.DataFrame:
        """Both samples, ordered by day and eventID, each row with its ``weight``."""
        parts = [r.sample() for r in (self.train, self.test) if r.rows_held]
        if not parts:
            return pd.DataFrame()
        return pd.concat(parts, ignore_index=True).sort_values(
            ["day", "eventID"], kind="stable", ignore_index=True
        )


def sample_training_data(
    store: EventStore,
    days: list[str],
    test_period: list[str],
    *,
    history_days: int = DEFAULT_HISTORY_DAYS,
    analyst: pd.DataFrame | None = None,
    max_train_rows: int = 150_000,
    max_test_rows: int = 100_000,
    seed: int = RANDOM_STATE,
    progress: Callable[[str], None] | None = None,
    piece_events: int | None = PIECE_EVENTS,
) -> dict[str, SampledData]:
    """What :func:`training_data` gives, as a bounded stratified sample per use case, read a day at a time:
    every labelled and high-risk event, and seeded uniform samples of the rule hits and of the rest
    (:mod:`trailguard.model.sampling`), at most ``max_train_rows`` from the days before ``test_period`` and
    ``max_test_rows`` from those days. Memory: the samples plus one day (its small columns and the
    features of at most ``piece_events`` of its events: see :func:`_labelled_days`), whatever the number
    of days; the sample is the same whatever ``piece_events``."""
    if analyst is None:
        analyst = read_labels(store.root)
    testing = set(test_period)
    out = {
        uc: SampledData(
            StratifiedReservoir(max_train_rows, seed),
            StratifiedReservoir(max_test_rows, seed),
            list(test_period),
        )
        for uc in USE_CASES
    }
    read: set[str] = set()
    for day, frame, targets, sources in _labelled_days(
        store, days, history_days, analyst, progress, piece_events
    ):
        read.add(day)
        use_case = frame["use_case"].to_numpy()
        for uc in USE_CASES:
            rows = np.flatnonzero(use_case == uc)
            if not len(rows):
                continue
            reservoir = out[uc].test if day in testing else out[uc].train
            ids = frame["eventID"].to_numpy()[rows]
            admit = reservoir.offer(day, ids, targets[rows], sources[rows])
            mask = np.zeros(len(frame), dtype=bool)
            mask[rows[admit]] = True
            reservoir.add(_use_case_rows(frame, targets, sources, day, uc, mask))
        del frame
        log.info(
            "training sample: day %s (%d/%d), %s",
            day,
            len(read),
            len(days),
            "; ".join(
                f"{uc} {sum(d.train.seen.values()) + sum(d.test.seen.values()):,} rows seen, "
                f"{d.train.rows_held + d.test.rows_held:,} kept"
                for uc, d in out.items()
            ),
        )
    return out


def stratified_sample(
    frame: pd.DataFrame, max_rows: int, *, seed: int = RANDOM_STATE
) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Keep every informative row (a rule fired or an analyst scored it, or the target is high) and a
    uniform sample of the default-target rest, up to ``max_rows`` in all; sampled rows get weight
    1/fraction so the fitted scores stay calibrated to the full data."""
    informative = (frame["target_source"].ne("default") | (frame["target"] >= HIGH_RISK)).to_numpy()
    n_info = int(informative.sum())
    rest = np.flatnonzero(~informative)
    room = max(max_rows - n_info, 0)
    fraction = 1.0 if len(rest) <= room else room / len(rest)
    rng = np.random.default_rng(seed)
    chosen_rest = rest if fraction >= 1.0 else np.sort(rng.choice(rest, size=room, replace=False))
    index = np.sort(np.concatenate([np.flatnonzero(informative), chosen_rest]))
    weights = np.where(informative[index], 1.0, 1.0 / fraction if fraction > 0 else 1.0)
    info = {
        "sample_rows_available": len(frame),
        "sample_rows_used": len(index),
        "sample_informative_rows_kept": n_info,
        "sample_default_rows_fraction": round(fraction, 6),
        "sample_max_rows": max_rows,
    }
    return frame.iloc[index], weights, info


# -- results --------------------------------------------------------------------------------------------
@dataclass
class CandidateResult:
    """One candidate's held-out (time split) metrics, its random-split metrics and its MLflow run."""

    name: str
    r2: float
    rmse: float
    mae: float
    precision_at_20: float
    recall_at_20: float
    average_precision: float
    run_id: str
    model_uri: str = ""
    random_split: dict[str, float] = field(default_factory=dict)


@dataclass
class ChampionDecision:
    """What the registry holds after this training."""

    model_name: str
    candidate: str
    version: str
    promoted: bool
    alias: str
    reason: str
    champion_version: str | None  # the version holding the champion alias afterwards


@dataclass
class UseCaseResult:
    use_case: str
    rows: int = 0
    train_rows: int = 0  # rows trained on (the sample)
    test_rows: int = 0  # events of the test days (what the test metrics stand for)
    test_sample_rows: int = 0  # rows of the test days' sample the metrics were measured on
    train_days: list[str] = field(default_factory=list)
    test_days: list[str] = field(default_factory=list)
    candidates: dict[str, CandidateResult] = field(default_factory=dict)
    best: str | None = None
    decision: ChampionDecision | None = None
    parent_run_id: str | None = None
    skipped: str | None = None
    seconds: float = 0.0


@dataclass
class TrainResult:
    tracking_uri: str
    experiment: str
    until: str | None
    use_cases: dict[str, UseCaseResult] = field(default_factory=dict)
    seconds: float = 0.0
    timings: dict[str, float] = field(
        default_factory=dict
    )  # seconds: "data" (features of every day), per use case

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (what the DAG task returns through XCom)."""
        return _clean(asdict(self))

    def lines(self) -> list[str]:
        """A table for the terminal / task log."""
        out = [
            f"tracking {self.tracking_uri}  experiment {self.experiment}  until {self.until}  ({self.seconds:.1f}s)"
        ]
        for uc, res in self.use_cases.items():
            if res.skipped:
                out.append(f"{uc}: skipped - {res.skipped}")
                continue
            out.append(
                f"{uc}: {res.rows} {'interface-days' if uc == NETWORK_FLOW else 'events'}, "
                f"train {res.train_rows} ({_span(res.train_days)}), "
                f"test {res.test_rows} ({_span(res.test_days)}), {res.seconds:.1f}s"
            )
            out.append(
                f"  {'candidate':42} {'AP':>6} {'P@20':>6} {'R@20':>6} {'R2':>7} {'RMSE':>7} {'MAE':>6}  random-split R2/RMSE"
            )
            for name, c in res.candidates.items():
                mark = "*" if name == res.best else " "
                rs = c.random_split
                out.append(
                    f" {mark}{name:42} {_f(c.average_precision)} {_f(c.precision_at_20)} {_f(c.recall_at_20)} "
                    f"{_f(c.r2, 7)} {_f(c.rmse, 7, 2)} {_f(c.mae, 6, 2)}  {_f(rs.get('r2'))}/{_f(rs.get('rmse'), 6, 2)}"
                )
            d = res.decision
            if d:
                out.append(
                    f"  {d.model_name} v{d.version} ({d.candidate}) -> {d.alias}: {d.reason}"
                    + ("" if d.promoted else f"; champion stays v{d.champion_version}")
                )
        return out


def _f(value: float | None, width: int = 6, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(width)
    return f"{value:{width}.{digits}f}"


def _span(days: list[str]) -> str:
    if not days:
        return "-"
    return days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


# -- MLflow ---------------------------------------------------------------------------------------------
def tracking_uri_for(root: DataPath | str, tracking_uri: str | None = None) -> str:
    """The argument, else MLFLOW_TRACKING_URI (settings), else a SQLite store inside a local data root.

    An S3 data root has no default: SQLite cannot live on S3, and a store local to each worker would
    hide one worker's champion from the others."""
    if tracking_uri:
        return tracking_uri
    from trailguard.store.settings import ConfigError, load_settings

    configured = load_settings().mlflow_tracking_uri
    if configured:
        return configured
    if is_remote(root):
        raise ConfigError(
            f"the data root {root} is on S3, where MLflow's default store (SQLite inside the data root) cannot "
            "live: set MLFLOW_TRACKING_URI to the MLflow server every worker uses (e.g. http://mlflow:5000, "
            "its artifacts on S3 or a shared volume); on a single machine a local store also works "
            "(e.g. sqlite:////var/lib/trailguard/mlflow.db)"
        )
    folder = Path(root).resolve() / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    relocate_local_store(folder)  # a copied root keeps its artifacts to itself
    return f"sqlite:///{folder / 'mlflow.db'}"


@contextmanager
def mlflow_tracking() -> Iterator[None]:
    """Whatever tracking and registry URI the block sets, MLflow's process-wide ones (and the
    ``MLFLOW_TRACKING_URI`` variable MLflow exports for subprocesses) are as before when it ends: a
    library call leaves no state behind for the next call, test or child process."""
    import mlflow
    from mlflow.tracking import _tracking_service
    from mlflow.tracking._model_registry import utils as registry_utils

    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved_tracking = _tracking_service.utils._tracking_uri
    saved_registry = registry_utils._registry_uri
    try:
        yield
    finally:
        if mlflow.active_run() is not None:
            mlflow.end_run()
        _tracking_service.utils._tracking_uri = saved_tracking
        registry_utils._registry_uri = saved_registry
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _setup_mlflow(root: DataPath, tracking_uri: str | None, experiment: str) -> tuple[str, str]:
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    import mlflow

    uri = tracking_uri_for(root, tracking_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return uri, found.experiment_id
    try:
        return uri, client.create_experiment(experiment, artifact_location=_artifact_location(uri))
    except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel run
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return uri, found.experiment_id


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a local SQLite store go beside the database (``<data root>/mlflow/artifacts`` for the
    default store), never into ``./mlruns`` of whatever folder the process runs in; a server decides
    for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).resolve().parent / "artifacts").as_uri()
    return None


def _pip_requirements() -> list[str]:
    import cloudpickle
    import sklearn

    return [
        f"scikit-learn=={sklearn.__version__}",
        f"pandas=={pd.__version__}",
        f"numpy=={np.__version__}",
        f"cloudpickle=={cloudpickle.__version__}",
    ]


def _log_model(model: RiskModel, example: pd.DataFrame, registered_name: str | None = None) -> Any:
    import mlflow
    from mlflow.models import infer_signature

    signature = infer_signature(example, model.predict(example))
    with _pickled_by_value():
        return mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=_pip_requirements(),
            serialization_format="cloudpickle",
            registered_model_name=registered_name,
        )


# Where the classes of models registered before TrailGuard's library was split into wings lived: such a
# model pickled a reference to them (newer models carry the classes by value and need no alias).
LEGACY_MODULES = {"trailguard.training": "trailguard.model.training"}


class ModelLoadError(RuntimeError):
    """A registered model that this TrailGuard cannot load (one line: what failed)."""


def load_registered_model(uri: str) -> Any:
    """Load a registered model. One pickled against module paths that no longer exist loads through
    :data:`LEGACY_MODULES`; one that cannot load at all raises :class:`ModelLoadError`."""
    import importlib

    import mlflow

    try:
        return mlflow.sklearn.load_model(uri)
    except (ModuleNotFoundError, AttributeError) as exc:
        error: Exception = exc
        aliases = {old: new for old, new in LEGACY_MODULES.items() if old not in sys.modules}
        if getattr(exc, "name", None) in aliases:
            sys.modules.update({old: importlib.import_module(new) for old, new in aliases.items()})
            try:
                return mlflow.sklearn.load_model(uri)
            except Exception as retry:  # reported below, in one line
                error = retry
            finally:
                for old in aliases:
                    sys.modules.pop(old, None)
        raise ModelLoadError(f"{error.__class__.__name__}: {error}") from None


def champion_version(name: str, tracking_uri: str) -> str | None:
    """The version of registered model ``name`` that holds the ``champion`` alias (None: no champion)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def load_model_version(name: str, version: str, tracking_uri: str) -> Any:
    """Version ``version`` of registered model ``name`` from ``tracking_uri`` (:func:`load_registered_model`:
    :class:`ModelLoadError` when this TrailGuard cannot load it)."""
    import mlflow

    with mlflow_tracking():
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        return load_registered_model(f"models:/{name}/{version}")


@contextmanager
def _pickled_by_value() -> Iterator[None]:
    """TrailGuard's own classes (RiskModel, Categories) go into the pickle by value, not as a reference to
    this module's path: a registered model then loads wherever its pip requirements are installed, with or
    without TrailGuard, and survives TrailGuard's modules being moved or renamed."""
    import cloudpickle

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def _log_charts(y: np.ndarray, pred: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    rng = np.random.default_rng(0)
    idx = np.arange(len(y)) if len(y) <= 20_000 else rng.choice(len(y), 20_000, replace=False)
    ys, ps = np.asarray(y)[idx], np.asarray(pred)[idx]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(ys, ps, s=6, alpha=0.35)
    ax.plot([0, 100], [0, 100], color="grey", linewidth=1)
    ax.set(
        xlabel="actual risk score (target)",
        ylabel="predicted risk score",
        title=f"{title}: actual vs predicted",
        xlim=(-2, 102),
        ylim=(-2, 102),
    )
    mlflow.log_figure(fig, "charts/actual_vs_predicted.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(ps, ys - ps, s=6, alpha=0.35)
    ax.axhline(0, color="grey", linewidth=1)
    ax.set(xlabel="predicted risk score", ylabel="actual - predicted", title=f"{title}: residuals")
    mlflow.log_figure(fig, "charts/residuals.png")
    plt.close(fig)


def _importances(
    name: str, model: RiskModel, X: pd.DataFrame, y: np.ndarray, repeats: int = 2
) -> pd.DataFrame:
    """Coefficients for the linear models (cheap, exact); permutation importance for the others on a
    1,000-row sample: the rise of the MAE when one column is shuffled, or for the detector alone, which
    has no target, the mean change of its score. All shuffled copies are scored in one batch."""
    if name in (PAPER, RIDGE) and model.supervised is not None:
        pre, est = model.supervised.named_steps["features"], model.supervised.named_steps["model"]
        names = pre.get_feature_names_out()
        frame = pd.DataFrame({"feature": names, "importance": np.abs(est.coef_), "coefficient": est.coef_})
        return frame.sort_values("importance", ascending=False).head(60)
    n = min(len(X), 1000)
    picked = X.sample(n=n, random_state=RANDOM_STATE).index if len(X) > n else X.index
    sample = X.loc[picked].reset_index(drop=True)
    ys = pd.Series(y, index=X.index).loc[picked].to_numpy()
    used = _used_columns(model)
    rng = np.random.default_rng(RANDOM_STATE)
    blocks = []
    for _ in range(repeats):
        for col in used:
            shuffled = sample.copy()
            shuffled[col] = rng.permutation(sample[col].to_numpy())
            blocks.append(shuffled)
    base = model.predict(sample)
    scores = model.predict(pd.concat(blocks, ignore_index=True)).reshape(repeats, len(used), len(sample))
    if model.supervised is None:
        effect = np.abs(scores - base).mean(axis=2)
    else:
        effect = np.abs(scores - ys).mean(axis=2) - np.abs(base - ys).mean()
    frame = pd.DataFrame({"feature": used, "importance": effect.mean(axis=0), "std": effect.std(axis=0)})
    return frame.sort_values("importance", ascending=False)


def _used_columns(model: RiskModel) -> list[str]:
    used: dict[str, None] = {}
    for pipe in (model.supervised, model.detector if model.weight or model.supervised is None else None):
        if pipe is None:
            continue
        for _, _, cols in pipe.named_steps["features"].transformers_:
            if isinstance(cols, list):
                used.update(dict.fromkeys(cols))
    return list(used)


# -- training -------------------------------------------------------------------------------------------
def train(
    store: EventStore,
    *,
    until: date | None = None,
    history_days: int = DEFAULT_HISTORY_DAYS,
    tracking_uri: str | None = None,
    experiment: str = "trailguard",
    test_days: int | None = None,
    min_history_days: int = 7,
    max_train_rows: int | None = None,
    max_test_rows: int | None = None,
    use_cases: tuple[str, ...] = USE_CASES,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
    min_events: int | None = None,
    min_days: int | None = None,
    network: bool = True,
    seed: int | None = None,
    sampling: str = "stream",
) -> TrainResult:
    """Train, compare and register the risk models of each use case on the ``history_days`` days up to
    ``until`` (default: the newest day in the store).

    Days with fewer than ``min_history_days`` days of history before them are left out (every
    behaviour looks new there), unless that would leave fewer than two days. The newest ``test_days``
    (default: a fifth, at least one) are the time split's test set. The days are read one at a time
    into a bounded stratified sample (:func:`sample_training_data`): every labelled and high-risk event,
    and seeded uniform samples of the rest, at most ``max_train_rows`` rows from the older days and
    ``max_test_rows`` from the test days (defaults: the settings TRAILGUARD_TRAIN_MAX_ROWS /
    _MAX_TEST_ROWS / _SEED), so memory does not grow with the number of days; metrics are weighted to
    stand for every event, and the sampling is logged (params and metrics). ``sampling="full"`` is the
    former way, every day in memory before sampling (:func:`training_data`), kept for comparison.
    A use case with fewer than ``min_events`` events or on fewer than ``min_days`` days (default: the
    settings TRAILGUARD_TRAIN_MIN_EVENTS / _MIN_DAYS) is not fitted: its result says what it lacks and that
    the cold-start scorer scores it meanwhile; the other use cases are trained all the same.
    With ``network`` and flow logs in the data root, the ``network_flow`` use case is trained too
    (:func:`trailguard.model.network.train_network`: interface-days instead of events, the same gate).
    ``threads`` caps OpenMP (gradient boosting): on a small box shared with Airflow, OpenMP threads waiting for a busy core cost far more
    than they save.
    """
    from threadpoolctl import threadpool_limits

    from trailguard.store.settings import load_settings

    if sampling not in ("stream", "full"):
        raise ValueError(f"sampling must be 'stream' or 'full', not {sampling!r}")
    settings = load_settings()
    min_events = settings.train_min_events if min_events is None else min_events
    min_days = settings.train_min_days if min_days is None else min_days
    limits = SampleLimits(
        max_train_rows=settings.train_max_rows if max_train_rows is None else max_train_rows,
        max_test_rows=settings.train_max_test_rows if max_test_rows is None else max_test_rows,
        seed=settings.train_seed if seed is None else seed,
        sampling=sampling,
    )
    with threadpool_limits(limits=threads, user_api="openmp"), mlflow_tracking():
        result = _train(
            store,
            until,
            history_days,
            tracking_uri,
            experiment,
            test_days,
            min_history_days,
            limits,
            use_cases,
            progress,
            max(1, min_events),
            max(2, min_days),
        )
        if network:
            _train_network(result, store.root, until, history_days, tracking_uri, experiment, test_days,
                           max(1, min_events), max(2, min_days))  # fmt: skip
        return result


def _train_network(
    result: TrainResult, root: DataPath, until: date | None, history_days: int, tracking_uri: str | None,
    experiment: str, test_days: int | None, min_events: int, min_days: int,
) -> None:  # fmt: skip
    """The network_flow use case beside the CloudTrail ones, when the data root holds flow logs."""
    from trailguard.model.network import train_network

    started = time.perf_counter()
    res = train_network(root, until=until.isoformat() if until else None, history_days=history_days,
                        tracking_uri=tracking_uri, experiment=experiment, test_days=test_days,
                        min_rows=min_events, min_days=min_days)  # fmt: skip
    if res is None:
        return
    result.use_cases[NETWORK_FLOW] = res
    result.timings[NETWORK_FLOW] = time.perf_counter() - started
    result.seconds += result.timings[NETWORK_FLOW]
    for line in result.lines():
        if line.startswith(NETWORK_FLOW) or line.startswith(f"  {MODEL_NAMES[NETWORK_FLOW]}"):
            log.info("%s", line)


@dataclass(frozen=True)
class SampleLimits:
    """How training samples: row caps (older days, test days), the seed, and ``stream`` (day by day, a
    bounded sample) or ``full`` (every day in memory first)."""

    max_train_rows: int = 150_000
    max_test_rows: int = 100_000
    seed: int = RANDOM_STATE
    sampling: str = "stream"


def _test_day_count(days: int, test_days: int | None) -> int:
    """How many of the newest days are the time split's test days: ``test_days``, else a fifth (at least
    one), always leaving a day to train on."""
    k = test_days or max(1, round(days * 0.2))
    return max(0, min(k, days - 1))


def _train(
    store: EventStore,
    until: date | None,
    history_days: int,
    tracking_uri: str | None,
    experiment: str,
    test_days: int | None,
    min_history_days: int,
    limits: SampleLimits,
    use_cases: tuple[str, ...],
    progress: Callable[[str], None] | None,
    min_events: int = 30,
    min_days: int = 2,
) -> TrainResult:
    started = time.perf_counter()
    root = store.root
    uri, experiment_id = _setup_mlflow(root, tracking_uri, experiment)
    available = store.dates()
    last = until.isoformat() if until else (available[-1] if available else None)
    result = TrainResult(tracking_uri=uri, experiment=experiment, until=last)
    if last is None:
        for uc in use_cases:
            result.use_cases[uc] = UseCaseResult(uc, skipped="the event store is empty: ingest logs first")
        result.seconds = time.perf_counter() - started
        return result
    first = (date.fromisoformat(last) - timedelta(days=history_days - 1)).isoformat()
    window = [d for d in available if first <= d <= last]
    history_count = {d: sum(1 for x in available if x < d and x >= _minus(d, history_days)) for d in window}
    eligible = [d for d in window if history_count[d] >= min_history_days]
    if len(eligible) < 2:
        eligible = window
    analyst = read_labels(root)
    log.info(
        "training on %d days %s..%s (%d analyst labels)",
        len(eligible),
        eligible[0] if eligible else "-",
        last,
        len(analyst),
    )
    data: dict[str, pd.DataFrame] = {}
    sampled: dict[str, SampledData] = {}
    if limits.sampling == "full":
        data = training_data(store, eligible, history_days, analyst, progress)
    else:
        k = _test_day_count(len(eligible), test_days)
        sampled = sample_training_data(
            store,
            eligible,
            eligible[len(eligible) - k :] if k else [],
            history_days=history_days,
            analyst=analyst,
            max_train_rows=limits.max_train_rows,
            max_test_rows=limits.max_test_rows,
            seed=limits.seed,
            progress=progress,
        )
    result.timings["data"] = time.perf_counter() - started

    for uc in use_cases:
        uc_started = time.perf_counter()
        frame = data.get(uc, pd.DataFrame())
        if limits.sampling == "full":
            by_day = frame["day"].value_counts().to_dict() if len(frame) else {}
        else:
            by_day = sampled[uc].rows_by_day
        rows = int(sum(by_day.values()))
        res = UseCaseResult(uc, rows=rows)
        result.use_cases[uc] = res
        days = sorted(by_day)
        if rows < min_events or len(days) < min_days:
            res.skipped = skip_reason(rows, len(days), min_events, min_days)
            continue
        k = _test_day_count(len(days), test_days)
        res.test_days, res.train_days = days[-k:], days[:-k]
        sets = (
            _sets_from_frame(frame, res, limits)
            if limits.sampling == "full"
            else _sets_from_sample(sampled.pop(uc), res)
        )
        del frame
        _train_use_case(res, sets, experiment_id, last, history_days)
        res.seconds = result.timings[uc] = time.perf_counter() - uc_started
    mark_training(root, analyst_labels=len(analyst), until=last)
    result.seconds = time.perf_counter() - started
    for line in result.lines():
        log.info("%s", line)
    return result


def skip_reason(events: int, days: int, min_events: int, min_days: int) -> str:
    """What a use case lacks for training and what scores it meanwhile."""
    lacks = []
    if events < min_events:
        lacks.append(f"{min_events - events} more event(s)")
    if days < min_days:
        lacks.append(f"{min_days - days} more day(s)")
    return (
        f"too little data: {events} events on {days} day(s), needs {' and '.join(lacks)} "
        f"(TRAILGUARD_TRAIN_MIN_EVENTS={min_events}, TRAILGUARD_TRAIN_MIN_DAYS={min_days}); "
        "its events are scored cold-start meanwhile (rules and organisation-wide rarity)"
    )


def _minus(day: str, days: int) -> str:
    return (date.fromisoformat(day) - timedelta(days=days)).isoformat()


DETECTOR_ROWS = 20_000  # a uniform sample of the training days' events: what the detector learns as usual


@dataclass
class TrainingSets:
    """What one use case's training takes: training rows (older days) and test rows (newest days), each
    with weights (how many events a row stands for), the detector's uniform sample, the rows of the
    paper's random split, and the sampling's params and metrics for MLflow."""

    train: pd.DataFrame
    train_weights: np.ndarray
    test: pd.DataFrame
    test_weights: np.ndarray
    detector: pd.DataFrame
    all_rows: pd.DataFrame
    all_weights: np.ndarray
    test_events: int
    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)


def _sets_from_frame(frame: pd.DataFrame, res: UseCaseResult, limits: SampleLimits) -> TrainingSets:
    """The former way: every event of the window in ``frame``, sampled now."""
    is_test = frame["day"].isin(res.test_days).to_numpy()
    train_all, test_all = frame[~is_test], frame[is_test]
    train_rows, weights, sample_info = stratified_sample(train_all, limits.max_train_rows, seed=limits.seed)
    # the test days are scored on a sample too: every informative event, the routine ones weighted
    test, w_test, test_info = stratified_sample(test_all, limits.max_test_rows, seed=limits.seed)
    detector = train_all.sample(n=min(len(train_all), DETECTOR_ROWS), random_state=limits.seed)
    all_rows, all_weights, _ = stratified_sample(frame, limits.max_train_rows, seed=limits.seed)
    return TrainingSets(
        train_rows,
        weights,
        test,
        w_test,
        detector,
        all_rows,
        all_weights,
        len(test_all),
        {
            "sampling": "full",
            "targets_from_analyst": int(frame["target_source"].eq("analyst").sum()),
            "targets_from_rules": int(frame["target_source"].eq("rules").sum()),
            **sample_info,
            **{f"test_{k}": v for k, v in test_info.items()},
        },
    )


def _sets_from_sample(data: SampledData, res: UseCaseResult) -> TrainingSets:
    """Day by day: the bounded samples of :func:`sample_training_data`, split at this use case's test
    days (the days read as test days unless the use case had no events on some of them: rows keep the
    weight of the sample they were drawn in)."""
    rows = data.rows()
    is_test = rows["day"].isin(res.test_days).to_numpy()
    weights = rows[WEIGHT].to_numpy(float)
    train_rows, test = rows[~is_test], rows[is_test]
    detector = train_rows[train_rows[KEY].to_numpy() < data.train.uniform_threshold(DETECTOR_ROWS)]
    if len(detector) < min(len(train_rows), 1000):  # a tiny cap: the detector takes what there is
        detector = train_rows.sample(n=min(len(train_rows), DETECTOR_ROWS), random_state=data.train.seed)
    sources = data.train.seen_by_source + data.test.seen_by_source
    params: dict[str, Any] = {
        "sampling": "stream",
        "targets_from_analyst": sources["analyst"],
        "targets_from_rules": sources["rules"],
        **data.train.info("sample"),
        **data.test.info("test_sample"),
    }
    counted = ("_rows_seen", "_rows_kept", "_fraction", "_peak_rows_held")
    return TrainingSets(
        train_rows,
        weights[~is_test],
        test,
        weights[is_test],
        detector,
        rows,
        weights,
        sum(n for day, n in data.rows_by_day.items() if day in set(res.test_days)),
        params,
        {k: float(v) for k, v in params.items() if k.endswith(counted)},
    )


def _train_use_case(
    res: UseCaseResult,
    sets: TrainingSets,
    experiment_id: str,
    until: str,
    history_days: int,
) -> None:
    import mlflow

    fs = FEATURE_SETS[res.use_case]
    columns = fs.columns
    train_rows, weights, test, w_test = sets.train, sets.train_weights, sets.test, sets.test_weights
    res.train_rows, res.test_rows, res.test_sample_rows = len(train_rows), sets.test_events, len(test)
    X_test, y_test, d_test = test[list(columns)], test["target"].to_numpy(float), test["day"].to_numpy()
    detector_rows = sets.detector[list(columns)]

    # the paper's random 70/30 split over the (sampled) window
    all_rows, all_weights = sets.all_rows, sets.all_weights
    rng = np.random.default_rng(RANDOM_STATE)
    in_train = rng.random(len(all_rows)) < 0.7
    r_train, r_test = all_rows[in_train], all_rows[~in_train]
    r_detector = r_train.sample(n=min(len(r_train), 20_000), random_state=RANDOM_STATE)[list(columns)]

    common_params = {
        "use_case": res.use_case,
        "until": until,
        "history_days": history_days,
        "train_days": _span(res.train_days),
        "test_days": _span(res.test_days),
        "high_risk_threshold": HIGH_RISK,
        "default_target": DEFAULT_TARGET,
        "random_split": "70/30 random rows (paper)",
        "time_split": "older days train, newest days test",
        **sets.params,
    }
    name = MODEL_NAMES[res.use_case]
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{res.use_case} {until}") as parent:
        res.parent_run_id = parent.info.run_id
        mlflow.set_tags({"trailguard.use_case": res.use_case, "trailguard.until": until})
        mlflow.log_params(common_params)
        if sets.metrics:
            mlflow.log_metrics(sets.metrics)

        detector = RiskModel(None, detector_pipeline(fs), columns)
        fit_detector(detector, detector_rows)
        r_det = RiskModel(None, detector_pipeline(fs), columns)
        fit_detector(r_det, r_detector)

        def make(supervised: Pipeline | None, det: RiskModel, weight: float = 0.0) -> RiskModel:
            model = RiskModel(supervised, det.detector, columns, weight=weight)
            model.anomaly_levels_ = det.anomaly_levels_
            return model

        # each supervised pipeline is fitted twice: older days (time split, the model that may be
        # registered) and 70% of the rows (the paper's random split)
        fitted: dict[str, RiskModel] = {}
        r_fitted: dict[str, RiskModel] = {}
        for cand, builder in SUPERVISED.items():
            fitted[cand] = make(builder(fs), detector).fit(
                train_rows[list(columns)], train_rows["target"].to_numpy(float), sample_weight=weights
            )
            r_fitted[cand] = make(builder(fs), r_det).fit(
                r_train[list(columns)], r_train["target"].to_numpy(float), sample_weight=all_weights[in_train]
            )
        fitted[IFOREST], r_fitted[IFOREST] = make(None, detector), make(None, r_det)
        for sup in (RIDGE, HGB):
            combo = f"{sup}+{IFOREST}"
            fitted[combo] = make(fitted[sup].supervised, detector, ANOMALY_WEIGHT)
            r_fitted[combo] = make(r_fitted[sup].supervised, r_det, ANOMALY_WEIGHT)
        combination = {
            "combination": COMBINATION_FORMULA,
            "anomaly_weight": ANOMALY_WEIGHT,
            "anomaly_quantile": ANOMALY_QUANTILE,
        }
        for cand, model in fitted.items():
            extra = combination if cand.endswith(f"+{IFOREST}") else {}
            if cand == IFOREST:
                extra = {"detector_rows": len(detector_rows)}
            _log_candidate(
                res,
                cand,
                model,
                r_fitted[cand],
                X_test,
                y_test,
                d_test,
                w_test,
                r_test,
                all_weights[~in_train],
                common_params | extra,
                fs,
            )

        best = choose_best(res.candidates)
        res.best = best
        mlflow.set_tag("trailguard.best_candidate", best)
        res.decision = _register(name, best, fitted[best], res, X_test, y_test, d_test, w_test)
        mlflow.set_tags(
            {"trailguard.decision": res.decision.alias, "trailguard.decision_reason": res.decision.reason}
        )


def _log_candidate(
    res: UseCaseResult,
    cand: str,
    model: RiskModel,
    rmodel: RiskModel,
    X_test: pd.DataFrame,
    y_test: np.ndarray,
    d_test: np.ndarray,
    w_test: np.ndarray,
    r_test: pd.DataFrame,
    r_weights: np.ndarray,
    params: dict[str, Any],
    fs: FeatureSet,
) -> None:
    import mlflow

    parent = mlflow.active_run()
    experiment_id = parent.info.experiment_id if parent else None
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{res.use_case}/{cand}", nested=True) as run:
        pred = model.predict(X_test)
        time_metrics = evaluate(y_test, pred, d_test, sample_weight=w_test)
        r_pred = rmodel.predict(r_test[list(fs.columns)])
        random_metrics = evaluate(
            r_test["target"].to_numpy(float), r_pred, r_test["day"].to_numpy(), sample_weight=r_weights
        )
        mlflow.set_tags({"trailguard.use_case": res.use_case, "trailguard.candidate": cand})
        mlflow.log_params({**params, "candidate": cand, **_model_params(model)})
        mlflow.log_metrics({f"test_{k}": v for k, v in time_metrics.items() if not math.isnan(v)})
        mlflow.log_metrics({f"random_{k}": v for k, v in random_metrics.items() if not math.isnan(v)})
        _log_charts(y_test, pred, f"{res.use_case} {cand}")
        try:
            imp = _importances(cand, model, X_test, y_test)
            mlflow.log_table(imp, "feature_importances.json")
        except Exception as exc:  # an importance failure must not lose the run
            log.warning("feature importances for %s failed: %s", cand, exc)
        example = X_test.head(5) if len(X_test) >= 5 else X_test
        info = _log_model(model, example)
        mlflow.set_tag("trailguard.model_uri", info.model_uri)
        res.candidates[cand] = CandidateResult(
            name=cand,
            r2=time_metrics["r2"],
            rmse=time_metrics["rmse"],
            mae=time_metrics["mae"],
            precision_at_20=time_metrics["precision_at_20"],
            recall_at_20=time_metrics["recall_at_20"],
            average_precision=time_metrics["average_precision"],
            run_id=run.info.run_id,
            model_uri=info.model_uri,
            random_split={
                k: random_metrics[k]
                for k in ("r2", "rmse", "mae", "precision_at_20", "recall_at_20", "average_precision")
            },
        )


def _model_params(model: RiskModel) -> dict[str, Any]:
    out: dict[str, Any] = {"anomaly_weight": model.weight, "anomaly_quantile": model.quantile}
    for label, pipe in (("supervised", model.supervised), ("detector", model.detector)):
        if pipe is None:
            continue
        est = pipe.named_steps["model"]
        out[f"{label}_estimator"] = type(est).__name__
        for k, v in est.get_params().items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                out[f"{label}_{k}"] = v
        for tname, _, cols in pipe.named_steps["features"].transformers:
            if isinstance(cols, list):
                out[f"{label}_columns_{tname}"] = ",".join(cols)[:5000]
    return out


def _register(
    name: str,
    cand: str,
    model: RiskModel,
    res: UseCaseResult,
    X_test: pd.DataFrame,
    y_test: np.ndarray,
    d_test: np.ndarray,
    w_test: np.ndarray,
) -> ChampionDecision:
    """Register the best candidate; make it champion only if it beats the current champion on these
    same test days (ties keep the champion), else challenger."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = mlflow.get_tracking_uri()
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    new = res.candidates[cand]
    new_key = _rank_key(asdict(new))
    current = None
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        current = None
    promote, reason = True, "no champion yet"
    if current is not None:
        try:
            old_model = load_registered_model(f"models:/{name}@{CHAMPION}")
            old_metrics = evaluate(y_test, old_model.predict(X_test), d_test, sample_weight=w_test)
            old_key = _rank_key(old_metrics)
            promote = new_key > old_key
            reason = (
                f"AP {_fmt(new.average_precision)} / P@20 {_fmt(new.precision_at_20)} vs champion v{current.version} "
                f"AP {_fmt(old_metrics['average_precision'])} / P@20 {_fmt(old_metrics['precision_at_20'])} "
                f"on the same test days: " + ("better" if promote else "not better (ties keep the champion)")
            )
            mlflow.log_metrics(
                {
                    "champion_test_average_precision": _nan0(old_metrics["average_precision"]),
                    "champion_test_precision_at_20": _nan0(old_metrics["precision_at_20"]),
                }
            )
        except Exception as exc:  # an unreadable or incompatible champion cannot defend its title
            promote, reason = True, f"current champion v{current.version} could not be evaluated: {exc}"
    version = mlflow.register_model(new.model_uri, name, tags={"trailguard.candidate": cand})
    alias = CHAMPION if promote else CHALLENGER
    client.set_registered_model_alias(name, alias, version.version)
    for key, value in {
        "trailguard.candidate": cand,
        "trailguard.decision": alias,
        "trailguard.reason": reason[:5000],
        "trailguard.run_id": new.run_id,
        "trailguard.test_days": _span(res.test_days),
    }.items():
        client.set_model_version_tag(name, version.version, key, value)
    client.set_tag(new.run_id, "trailguard.decision", f"{alias}: {reason}"[:5000])
    champion_version = version.version if promote else current.version
    log.info("%s v%s (%s) -> %s: %s", name, version.version, cand, alias, reason)
    return ChampionDecision(name, cand, str(version.version), promote, alias, reason, str(champion_version))


def _fmt(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def _nan0(value: float) -> float:
    return 0.0 if value is None or math.isnan(value) else value
