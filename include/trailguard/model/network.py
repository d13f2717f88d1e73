"""The ``network_flow`` use case: models over each network interface's day, trained, gated and scored
like the CloudTrail use cases.

**Rows**: one per interface and day (:mod:`trailguard.flows.features`). **Targets** (for the supervised
candidates): an analyst's score on one of that interface-day's flow findings (``trailguard label flow-...``)
wins; else the highest network detection score of the interface that day (the detections encode what is
dangerous, as the rules do for CloudTrail); else the default 5.

**Candidates** (each an MLflow run in experiment ``trailguard``, tagged ``trailguard.use_case =
network_flow``): ``isolation_forest`` (unsupervised, always), and where the training days hold any target
above the default - analysts' labels or detections - ``ridge``, ``hist_gradient_boosting`` and both
``+isolation_forest``, all as :class:`trailguard.model.training.RiskModel`. The best by the same
:func:`~trailguard.model.training.choose_best` is registered as ``trailguard-network-flow`` and becomes
``champion`` only if it beats the current one on the same test days
(:func:`~trailguard.model.training._register`, the gate the other use cases pass).

**Daily score** (``flows_scores/date=D/scores.parquet``, :func:`score_network_day`): the detections'
findings plus the champion's view of the interface-day each belongs to::

    a  = anomaly percentile of the interface-day among the training interface-days (IsolationForest)
    s  = the champion's supervised score of the interface-day (0 when the champion is the forest alone)
    bonus = W * clip((a - Q) / (1 - Q), 0, 1)                      W = 20, Q = 0.95
    detection finding:            risk = clip(max(detection, s) + bonus, 0, 100)
    interface-day, no detection:  a finding ``flow_model_anomaly`` when a >= 0.99 or s >= 40:
                                  risk = clip(max(s, 30) + bonus, 0, 100)

so a detection on an interface that also behaves unlike any day the model saw climbs up to 20 points, an
anomaly nobody wrote a detection for is a medium finding (30-50) naming the features that stand out, and
the analysts' scores, learnt by the supervised model, can raise either. Without a champion the
detections' scores stand alone (the rows say so).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor, IsolationForest
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from trailguard.flows.context import attach_context, instance_inventory
from trailguard.flows.detect import (
    MODEL_NAME as DETECTIONS_MODEL,
)
from trailguard.flows.detect import (
    SCORE_COLUMNS,
    USE_CASE,
    detect,
    history_of,
    prepare,
    scores_dir,
)
from trailguard.flows.features import COUNT_COLUMNS, HISTORY_DAYS, NETWORK_FEATURES, features_for_days
from trailguard.flows.ingestion import FlowStore
from trailguard.model.labels import DEFAULT_TARGET, read_labels
from trailguard.model.training import (
    HGB,
    HIGH_RISK,
    IFOREST,
    MODEL_NAMES,
    RANDOM_STATE,
    RIDGE,
    CandidateResult,
    RiskModel,
    UseCaseResult,
    _log_model,
    _register,
    _setup_mlflow,
    _span,
    choose_best,
    evaluate,
    fit_detector,
    skip_reason,
)
from trailguard.store import fs
from trailguard.store.events import day_text
from trailguard.store.fs import DataPath, as_path

log = logging.getLogger(__name__)

NETWORK_FLOW = USE_CASE  # "network_flow"
NETWORK_MODEL = MODEL_NAMES[NETWORK_FLOW]
ANOMALY_WEIGHT = 20.0
ANOMALY_QUANTILE = 0.95
MODEL_BASE = 30.0
MODEL_ONLY_QUANTILE = 0.99  # an interface-day with no detection is a finding from this anomaly percentile on
MODEL_SUPERVISED_FLOOR = 40.0
MODEL_DETECTION = "flow_model_anomaly"
MODEL_PREFIX = "flow-model-"  # eventID of a model-only finding: flow-model-<day>-<interface>
MIN_HISTORY_DAYS = 3  # an interface-day needs this many days of flow history before it to be a training row
COMBINATION = (
    "risk = clip(max(detection, s) + W * clip((a - Q) / (1 - Q), 0, 1), 0, 100); model-only finding "
    f"risk = clip(max(s, {MODEL_BASE:g}) + bonus); W = {ANOMALY_WEIGHT:g}, Q = {ANOMALY_QUANTILE:g}"
)
EXTRA_COLUMNS = ("detection_score", "model_score", "anomaly_score", "role", "security_groups", "context_event",
                 "context_call")  # fmt: skip


# -- pipelines ------------------------------------------------------------------------------------------
def _features(scale: bool) -> ColumnTransformer:
    others = [c for c in NETWORK_FEATURES if c not in COUNT_COLUMNS]
    counts: Any = FunctionTransformer(np.log1p, feature_names_out="one-to-one")
    if scale:
        counts = Pipeline([("log1p", counts), ("scale", StandardScaler())])
    ratio = Pipeline([("log1p", FunctionTransformer(np.log1p, feature_names_out="one-to-one"))] +
                     ([("scale", StandardScaler())] if scale else []))  # fmt: skip
    return ColumnTransformer([("counts", counts, list(COUNT_COLUMNS)), ("other", ratio, others)])


def detector_pipeline() -> Pipeline:
    forest = IsolationForest(n_estimators=200, random_state=RANDOM_STATE, n_jobs=1)
    return Pipeline([("features", _features(scale=False)), ("model", forest)])


def ridge_pipeline() -> Pipeline:
    return Pipeline(
        [("features", _features(scale=True)), ("model", Ridge(alpha=1.0, random_state=RANDOM_STATE))]
    )


def hgb_pipeline() -> Pipeline:
    model = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.1, min_samples_leaf=3,
                                          l2_regularization=1.0, random_state=RANDOM_STATE)  # fmt: skip
    return Pipeline([("features", _features(scale=False)), ("model", model)])


SUPERVISED = {RIDGE: ridge_pipeline, HGB: hgb_pipeline}


def model_input(frame: pd.DataFrame) -> pd.DataFrame:
    """The exact frame the network models take: every feature as float64, missing as 0."""
    return pd.DataFrame(
        {c: pd.to_numeric(frame[c], errors="coerce").astype("float64").fillna(0.0) if c in frame else 0.0
         for c in NETWORK_FEATURES}, index=frame.index,
    )  # fmt: skip


# -- targets --------------------------------------------------------------------------------------------
def _day_detections(data_root: DataPath, day: str) -> pd.DataFrame:
    """The day's detection findings: from ``flows_scores/`` when scored, else detected now."""
    path = scores_dir(data_root, day) / "scores.parquet"
    if path.exists():
        frame = fs.read_parquet_pandas(path)
        frame = frame[frame["detection"].ne(MODEL_DETECTION)]
        score = frame["detection_score"] if "detection_score" in frame else frame["risk_score"]
        return frame.assign(detection_score=pd.to_numeric(score, errors="coerce"))
    store = FlowStore(as_path(data_root))
    outbound, seen = history_of(store, day)
    found = detect(prepare(store.read_partition(day)), outbound, seen)
    return found.assign(detection_score=pd.to_numeric(found["risk_score"], errors="coerce"))


def targets(
    data_root: DataPath, rows: pd.DataFrame, analyst: pd.DataFrame | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each interface-day's target and where it came from (``analyst``, ``rules``, ``default``)."""
    analyst = read_labels(data_root) if analyst is None else analyst
    scores = (
        dict(zip(analyst["eventID"].astype(str), analyst["risk_score"], strict=True)) if len(analyst) else {}
    )
    rule: dict[tuple[str, str], float] = {}
    labelled: dict[tuple[str, str], float] = {}
    for day in sorted(rows["day"].unique()):
        found = _day_detections(data_root, day)
        for eid, eni, score in zip(
            found["eventID"], found["interface_id"], found["detection_score"], strict=True
        ):
            key = (day, str(eni))
            if pd.notna(score):
                rule[key] = max(rule.get(key, 0.0), float(score))
            if str(eid) in scores:
                labelled[key] = max(labelled.get(key, 0.0), float(scores[str(eid)]))
    for eid, score in scores.items():  # a label on a model-only finding names its interface-day itself
        if eid.startswith(MODEL_PREFIX) and len(eid) > len(MODEL_PREFIX) + 11:
            key = (eid[len(MODEL_PREFIX) : len(MODEL_PREFIX) + 10], eid[len(MODEL_PREFIX) + 11 :])
            labelled[key] = max(labelled.get(key, 0.0), float(score))
    target, source = [], []
    for key in zip(rows["day"], rows["interface_id"].astype(str), strict=True):
        if key in labelled:
            target.append(labelled[key]), source.append("analyst")
        elif key in rule:
            target.append(rule[key]), source.append("rules")
        else:
            target.append(float(DEFAULT_TARGET)), source.append("default")
    return np.asarray(target, dtype=float), np.asarray(source, dtype=object)


# -- training -------------------------------------------------------------------------------------------
def train_network(
    data_root: DataPath | str,
    *,
    until: str | None,
    history_days: int = 30,
    tracking_uri: str | None = None,
    experiment: str = "trailguard",
    test_days: int | None = None,
    min_rows: int = 30,
    min_days: int = 2,
) -> UseCaseResult | None:
    """Train and gate the ``network_flow`` models on the flow days up to ``until`` (default: the newest);
    None when the data root holds no flow logs at all (a deployment without them)."""
    import mlflow

    started = time.perf_counter()
    root = as_path(data_root)
    available = FlowStore(root).dates()
    if not available:
        return None
    last = until or available[-1]
    first = (date.fromisoformat(last) - timedelta(days=history_days - 1)).isoformat()
    window = [d for d in available if first <= d <= last]
    eligible = [d for d in window if sum(1 for x in available if x < d) >= MIN_HISTORY_DAYS]
    if len(eligible) < 2:
        eligible = window
    res = UseCaseResult(NETWORK_FLOW)
    frame = features_for_days(root, eligible, HISTORY_DAYS)
    res.rows = len(frame)
    days = sorted(frame["day"].unique()) if len(frame) else []
    if len(frame) < min_rows or len(days) < min_days:
        res.skipped = skip_reason(len(frame), len(days), min_rows, min_days).replace(
            "events", "interface-days").replace("cold-start (rules and organisation-wide rarity)", "by the network detections alone")  # fmt: skip
        return res
    analyst = read_labels(root)
    y_all, sources = targets(root, frame, analyst)
    frame = frame.assign(target=y_all, target_source=sources)
    k = min(test_days or max(1, round(len(days) * 0.2)), len(days) - 1)
    res.test_days, res.train_days = days[-k:], days[:-k]
    is_test = frame["day"].isin(res.test_days).to_numpy()
    train, test = frame[~is_test], frame[is_test]
    res.train_rows, res.test_rows = len(train), len(test)
    X_train, y_train = model_input(train), train["target"].to_numpy(float)
    X_test, y_test, d_test = model_input(test), test["target"].to_numpy(float), test["day"].to_numpy()
    columns = tuple(NETWORK_FEATURES)
    uri, experiment_id = _setup_mlflow(root, tracking_uri, experiment)
    params = {
        "use_case": NETWORK_FLOW, "until": last, "history_days": history_days, "feature_history_days": HISTORY_DAYS,
        "train_days": _span(res.train_days), "test_days": _span(res.test_days), "high_risk_threshold": HIGH_RISK,
        "default_target": DEFAULT_TARGET, "rows": len(frame), "unit": "interface-day",
        "targets_from_analyst": int((sources == "analyst").sum()), "targets_from_rules": int((sources == "rules").sum()),
        "time_split": "older days train, newest days test", "combination": COMBINATION,
    }  # fmt: skip
    supervised = bool((train["target"] > DEFAULT_TARGET).any())
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{NETWORK_FLOW} {last}") as parent:
        res.parent_run_id = parent.info.run_id
        mlflow.set_tags({"trailguard.use_case": NETWORK_FLOW, "trailguard.until": last})
        mlflow.log_params(params | {"supervised_candidates": supervised})
        detector = RiskModel(None, detector_pipeline(), columns)
        fit_detector(detector, X_train)
        fitted = {IFOREST: detector}
        if supervised:
            for name, builder in SUPERVISED.items():
                model = RiskModel(builder(), detector.detector, columns)
                model.anomaly_levels_ = detector.anomaly_levels_
                fitted[name] = model.fit(X_train, y_train)
                combo = RiskModel(fitted[name].supervised, detector.detector, columns, weight=ANOMALY_WEIGHT,
                                  quantile=ANOMALY_QUANTILE)  # fmt: skip
                combo.anomaly_levels_ = detector.anomaly_levels_
                fitted[f"{name}+{IFOREST}"] = combo
        for name, model in fitted.items():
            _log_network_candidate(res, name, model, X_test, y_test, d_test, params)
        res.best = choose_best(res.candidates)
        mlflow.set_tag("trailguard.best_candidate", res.best)
        res.decision = _register(NETWORK_MODEL, res.best, fitted[res.best], res, X_test, y_test, d_test, None)
        mlflow.set_tags(
            {"trailguard.decision": res.decision.alias, "trailguard.decision_reason": res.decision.reason}
        )
    res.seconds = time.perf_counter() - started
    return res


def _log_network_candidate(
    res: UseCaseResult, name: str, model: RiskModel, X_test: pd.DataFrame, y_test: np.ndarray,
    d_test: np.ndarray, params: dict[str, Any],
) -> None:  # fmt: skip
    import mlflow

    parent = mlflow.active_run()
    with mlflow.start_run(
        experiment_id=parent.info.experiment_id, run_name=f"{NETWORK_FLOW}/{name}", nested=True
    ) as run:
        metrics = evaluate(y_test, model.predict(X_test), d_test)
        mlflow.set_tags({"trailguard.use_case": NETWORK_FLOW, "trailguard.candidate": name})
        mlflow.log_params(params | {"candidate": name, "anomaly_weight": model.weight,
                                    "supervised_estimator": type(model.supervised.named_steps["model"]).__name__
                                    if model.supervised is not None else "none"})  # fmt: skip
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if not np.isnan(v)})
        info = _log_model(model, X_test.head(5))
        mlflow.set_tag("trailguard.model_uri", info.model_uri)
        res.candidates[name] = CandidateResult(
            name=name, r2=metrics["r2"], rmse=metrics["rmse"], mae=metrics["mae"],
            precision_at_20=metrics["precision_at_20"], recall_at_20=metrics["recall_at_20"],
            average_precision=metrics["average_precision"], run_id=run.info.run_id, model_uri=info.model_uri,
        )  # fmt: skip


# -- daily scoring --------------------------------------------------------------------------------------
@dataclass
class NetworkChampion:
    version: str
    model: RiskModel


def load_network_champion(tracking_uri: str) -> tuple[NetworkChampion | None, str]:
    """The network champion and a line on it; (None, why) when there is none or it cannot load."""
    from trailguard.model.training import ModelLoadError, champion_version, load_model_version

    version = champion_version(NETWORK_MODEL, tracking_uri)
    if version is None:
        return None, f"no champion {NETWORK_MODEL} yet (run `trailguard train`): detections alone"
    try:
        model = load_model_version(NETWORK_MODEL, version, tracking_uri)
    except ModelLoadError as exc:
        return None, f"champion {NETWORK_MODEL} v{version} cannot be loaded ({exc}): detections alone"
    return NetworkChampion(version, model), f"{NETWORK_MODEL} v{version}"


def _standouts(row: pd.Series, usual: pd.Series) -> str:
    """The features of an interface-day furthest above the training's usual (log scale), in words."""
    gaps = []
    for column in NETWORK_FEATURES:
        value, base = float(row[column]), float(usual.get(column, 0.0))
        if value > base:
            gaps.append((np.log1p(value) - np.log1p(base), column, value, base))
    gaps.sort(reverse=True)
    return ", ".join(f"{c} {v:,.0f} (usual {b:,.0f})" for _, c, v, b in gaps[:3]) or "an unusual mix"


def combine(
    detections: pd.DataFrame, features: pd.DataFrame, components: pd.DataFrame | None, champion: str | None
) -> pd.DataFrame:
    """The day's network findings: detections raised by the model's view of their interface-day, and
    the interface-days the model alone finds odd (module docstring)."""
    out = detections.copy()
    out["detection_score"] = pd.to_numeric(out["risk_score"], errors="coerce").astype(float)
    if components is None or features.empty:
        out["model_score"], out["anomaly_score"] = np.nan, np.nan
        return out
    per = (
        features[["interface_id"]]
        .assign(
            s=components["supervised_score"].fillna(0.0).to_numpy(), a=components["anomaly_score"].to_numpy()
        )
        .set_index("interface_id")
    )
    bonus = ANOMALY_WEIGHT * np.clip((per["a"] - ANOMALY_QUANTILE) / (1 - ANOMALY_QUANTILE), 0, 1)
    s = out["interface_id"].map(per["s"]).fillna(0.0)
    a = out["interface_id"].map(per["a"])
    b = out["interface_id"].map(bonus).fillna(0.0)
    out["model_score"], out["anomaly_score"] = s.to_numpy(), a.to_numpy()
    out["risk_score"] = np.clip(np.maximum(out["detection_score"], s) + b, 0, 100)
    out["model_name"], out["model_version"] = (
        f"{DETECTIONS_MODEL}+{NETWORK_MODEL}",
        champion,
    )
    lone = per[((per["a"] >= MODEL_ONLY_QUANTILE) | (per["s"] >= MODEL_SUPERVISED_FLOOR))
               & ~per.index.isin(set(out["interface_id"]))]  # fmt: skip
    if len(lone):
        usual = features[list(NETWORK_FEATURES)].median()
        rows = features.set_index("interface_id").loc[lone.index]
        extra = pd.DataFrame({
            "interface_id": lone.index, "account_id": rows["account_id"].to_numpy(),
            "instance_id": rows["instance_id"].to_numpy(), "detection": MODEL_DETECTION,
            "eventTime": pd.Timestamp(rows["day"].iloc[0], tz="UTC"), "flows": rows["flows"].to_numpy(),
            "bytes": rows["bytes_out_internet"].to_numpy(), "srcaddr": None, "dstaddr": None, "dstport": None,
            "attack_technique": None, "detection_score": np.nan, "model_score": lone["s"].to_numpy(),
            "anomaly_score": lone["a"].to_numpy(),
            "risk_score": np.clip(np.maximum(lone["s"], MODEL_BASE) + bonus.loc[lone.index], 0, 100).to_numpy(),
            "reasons": [f"{eni}'s day is unlike the days the model learnt (anomaly percentile {x:.1%}, "
                        f"supervised {y:.0f}): {_standouts(rows.loc[eni], usual)}"
                        for eni, x, y in zip(lone.index, lone["a"], lone["s"], strict=True)],
            "use_case": USE_CASE, "model_name": NETWORK_MODEL, "model_version": champion,
        })  # fmt: skip
        extra["eventID"] = [f"{MODEL_PREFIX}{rows['day'].iloc[0]}-{eni}" for eni in lone.index]
        out = pd.concat([out, extra], ignore_index=True)
    return out


def score_network_day(
    data_root: DataPath | str, day: date | str, *, tracking_uri: str | None = None, use_model: bool = True
) -> tuple[pd.DataFrame, str]:
    """Detections plus the network champion for a stored day of flows, with the instance and role of each
    finding from CloudTrail, written to ``flows_scores/date=D/scores.parquet`` (overwritten on rerun).
    Returns the findings and a line saying which scorer ran."""
    from trailguard.model.training import tracking_uri_for

    root, text = as_path(data_root), day_text(day)
    store = FlowStore(root)
    outbound, remote_seen = history_of(store, text)
    found = detect(prepare(store.read_partition(text)), outbound, remote_seen)
    champion, note = (None, "detections alone (model not asked for)")
    if use_model:
        champion, note = load_network_champion(tracking_uri_for(root, tracking_uri))
    features = features_for_days(root, [text]) if champion is not None else pd.DataFrame()
    components = (champion.model.predict_components(model_input(features)).reset_index(drop=True)
                  if champion is not None and len(features) else None)  # fmt: skip
    out = combine(found, features.reset_index(drop=True), components, champion.version if champion else None)
    out = attach_context(out, instance_inventory(root, text))
    out = out.sort_values(["risk_score", "eventTime"], ascending=[False, True], kind="stable")
    out = out[[*SCORE_COLUMNS, *EXTRA_COLUMNS]].reset_index(drop=True)
    table = pa.Table.from_pandas(
        out.astype({"risk_score": "float64", "detection_score": "float64", "model_score": "float64",
                    "anomaly_score": "float64"}), preserve_index=False,
    )  # fmt: skip
    path = fs.write_parquet_atomic(table, scores_dir(root, text) / "scores.parquet", compression="zstd")
    log.info("network %s: %d findings (%s) written to %s", text, len(out), note, path)
    return out, note
