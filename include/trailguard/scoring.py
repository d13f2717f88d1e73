"""Score one day's events with the champion models: a 0-100 risk and the reasons a human can check.

Why reasons: an analyst reading the daily report must see *why* an event is on top - the rule that
fired, the behaviour new for this principal ("first console login from BR for alice"), the anomaly, the
model's largest contribution - or the score is not actionable.

Writes ``scores/date=YYYY-MM-DD/scores.parquet`` atomically (a rescore replaces the day). Events of other
types (AwsServiceEvent, Insight...) are not scored but counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from trailguard import features as feat
from trailguard.features import API_CALL, CONSOLE_LOGIN, FEATURE_SETS, USE_CASES
from trailguard.fs import DataPath, as_path, read_parquet
from trailguard.store import EventStore, write_parquet_atomic
from trailguard.training import (
    ANOMALY_QUANTILE,
    CHAMPION,
    MODEL_NAMES,
    RiskModel,
    model_input,
    tracking_uri_for,
)

log = logging.getLogger(__name__)

MAX_REASONS = 5
SCORE_COLUMNS: tuple[str, ...] = (
    "eventID",
    "eventTime",
    "use_case",
    "risk_score",
    "reasons",
    "attack_technique",
    "model_name",
    "model_version",
    "principal",
    "principal_short",
    "eventName",
    "eventSource",
    "awsRegion",
    "account",
    "sourceIPAddress",
    "country",
    "asn",
    "network_zone",
    "userAgent",
    "ua_family",
    "errorCode",
    "category",
    "lf_score",
    "lf_rules",
    "anomaly_score",
    "supervised_score",
)
_SCORE_TYPES = {
    "eventTime": pa.timestamp("us", tz="UTC"),
    "risk_score": pa.float64(),
    "lf_score": pa.int64(),
    "anomaly_score": pa.float64(),
    "supervised_score": pa.float64(),
}
SCORE_SCHEMA = pa.schema([(c, _SCORE_TYPES.get(c, pa.string())) for c in SCORE_COLUMNS])


class NoChampionError(LookupError):
    """No model holds the champion alias yet for a use case that has events to score."""


@dataclass
class Champion:
    model_name: str
    version: str
    model: RiskModel


@dataclass
class ScoreResult:
    day: str
    path: DataPath | None
    events: int = 0
    scored: dict[str, int] = field(default_factory=dict)  # per use case
    skipped: dict[str, int] = field(default_factory=dict)  # per eventType not scored
    model_versions: dict[str, str] = field(default_factory=dict)  # model name -> version
    high_risk: int = 0  # scored events with risk_score >= 70
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path) if self.path else None
        return out

    def lines(self) -> list[str]:
        scored = ", ".join(f"{uc} {n}" for uc, n in self.scored.items()) or "none"
        skipped = ", ".join(f"{t or 'no eventType'} {n}" for t, n in self.skipped.items()) or "none"
        models = ", ".join(f"{m} v{v}" for m, v in self.model_versions.items()) or "-"
        return [
            f"day          {self.day}: {self.events} events",
            f"scored       {scored} ({self.high_risk} with risk >= 70)",
            f"not scored   {skipped}",
            f"models       {models}",
            f"written      {self.path}",
            f"seconds      {self.seconds:.1f} ("
            + ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items()) + ")",
        ]


def scores_path(root: DataPath | str, day: date | str) -> DataPath:
    return as_path(root) / "scores" / f"date={_day(day)}" / "scores.parquet"


def load_champion(use_case: str, tracking_uri: str) -> Champion:
    """The champion of a use case; :class:`NoChampionError` says what to do when there is none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name = MODEL_NAMES[use_case]
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        raise NoChampionError(f"no champion model for {name} yet: run `trailguard train` first") from None
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    model = mlflow.sklearn.load_model(f"models:/{name}/{version.version}")
    return Champion(name, str(version.version), model)


def score_day(
    store: EventStore,
    day: date | str,
    *,
    tracking_uri: str | None = None,
    history_days: int = feat.DEFAULT_HISTORY_DAYS,
    champions: dict[str, Champion] | None = None,
    threads: int = 1,
) -> ScoreResult:
    """Score every console sign-in and API call of ``day`` with the champion of its use case and write
    the day's scores file (replacing an earlier one). ``champions`` overrides the registry (tests,
    backfills); ``threads`` caps OpenMP as in training."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="openmp"):
        return _score_day(store, day, tracking_uri, history_days, champions)


def _score_day(
    store: EventStore,
    day: date | str,
    tracking_uri: str | None,
    history_days: int,
    champions: dict[str, Champion] | None,
) -> ScoreResult:
    from trailguard.detections import label_events

    started = time.perf_counter()
    key = _day(day)
    uri = tracking_uri_for(store.root, tracking_uri)
    result = ScoreResult(day=key, path=None)
    clock = _Clock(result.timings)
    events = feat.load_day_events(store, key)
    result.events = len(events)
    clock("read")
    if events.empty:
        result.path = write_parquet_atomic(SCORE_SCHEMA.empty_table(), scores_path(store.root, key))
        return result
    use_case = feat.use_case_of(events["eventType"]).to_numpy(dtype=object)
    present = [uc for uc in USE_CASES if (use_case == uc).any()]
    champions = dict(champions or {})
    for uc in present:
        if uc not in champions:
            champions[uc] = load_champion(uc, uri)
    other = events["eventType"].to_numpy(dtype=object)[use_case == feat.OTHER]
    result.skipped = {str(k): int(v) for k, v in pd.Series(other, dtype=object).fillna("").value_counts().items()}

    clock("models")
    lf = label_events(events)
    clock("rules")
    features = feat.load_day_features(store, key, history_days, events=events)
    feat.add_rule_score(features, lf)
    del events
    clock("features")
    n = len(features)
    risk, anomaly, supervised = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    model_name = np.full(n, None, dtype=object)
    model_version = np.full(n, None, dtype=object)
    reasons = pa.nulls(n, pa.large_string())
    lf_reasons = lf["lf_reasons"].to_numpy(dtype=object)
    for uc in present:
        mask = use_case == uc
        champ = champions[uc]
        fs = FEATURE_SETS[uc]
        rows = _subset(features, mask, dict.fromkeys((*fs.columns, *REASON_COLUMNS)))
        comps = champ.model.predict_components(model_input(rows, fs))
        risk[mask] = comps["risk_score"].to_numpy()
        anomaly[mask] = comps["anomaly_score"].to_numpy()
        supervised[mask] = comps["supervised_score"].to_numpy()
        model_name[mask], model_version[mask] = champ.model_name, champ.version
        why = explain(rows, lf_reasons[mask], comps, champ.model, console=uc == CONSOLE_LOGIN)
        reasons = pc.replace_with_mask(reasons, pa.array(mask), why)
        result.scored[uc] = int(mask.sum())
        result.model_versions[champ.model_name] = champ.version
    clock("predict")

    table = pa.Table.from_pandas(features[[c for c in SCORE_COLUMNS if c in features.columns]], preserve_index=False)
    extra = {
        "risk_score": pa.array(risk),
        "reasons": pc.fill_null(reasons, ""),
        "attack_technique": pa.array(lf["attack_technique"].to_numpy(dtype=object), type=pa.string()),
        "model_name": pa.array(model_name, type=pa.string()),
        "model_version": pa.array(model_version, type=pa.string()),
        "lf_score": pa.array(lf["lf_score"].to_numpy(np.int64)),
        "lf_rules": pa.array(lf["lf_rules"].to_numpy(dtype=object), type=pa.string()),
        "anomaly_score": pa.array(anomaly),
        "supervised_score": pa.array(supervised),
    }
    for name, values in extra.items():
        table = table.append_column(name, values)
    table = table.filter(pa.array(use_case != feat.OTHER)).select(list(SCORE_COLUMNS)).cast(SCORE_SCHEMA)
    result.path = write_parquet_atomic(table, scores_path(store.root, key))
    result.high_risk = int(np.sum(table.column("risk_score").to_numpy() >= 70))
    clock("write")
    result.seconds = time.perf_counter() - started
    log.info("scored %s: %s", key, "; ".join(result.lines()[1:3]))
    return result


class _Clock:
    """Records the seconds since the previous call under a stage name."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into, self.last = into, time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.into[stage] = self.into.get(stage, 0.0) + now - self.last
        self.last = now


REASON_COLUMNS = (
    "principal", "principal_short", "country", "asn", "network_zone", "eventName", "awsRegion", "ua_family",
    "sourceIPAddress", "userAgent", "is_aws_service", "new_principal", "last_hour_failures",
    "last_hour_distinct_names", "ua_offensive", "errorCode", "account", "category", "is_root", "access_denied",
    "cross_account",
)


def _subset(frame: pd.DataFrame, mask: np.ndarray, columns: Iterable[str]) -> pd.DataFrame:
    """Rows of ``frame`` where ``mask`` holds, for ``columns`` only: text filtered in Arrow, numbers in
    numpy (a pandas boolean index on a million Arrow strings costs seconds)."""
    columns = [c for c in columns if c in frame.columns]
    if mask.all():
        return frame[columns].reset_index(drop=True)
    keep = pa.array(mask)
    data = {}
    for col in columns:
        values = frame[col]
        if isinstance(values.dtype, pd.StringDtype):
            data[col] = pd.Series(pa.array(values).filter(keep), dtype="str")
        else:
            data[col] = values.to_numpy()[mask]
    return pd.DataFrame(data)


# -- reasons -------------------------------------------------------------------------------------------
_SEP = pa.scalar("; ", pa.large_string())


def explain(
    rows: pd.DataFrame, lf_reasons: np.ndarray, comps: pd.DataFrame, model: RiskModel | None = None, *, console: bool = False
) -> pa.Array:
    """Up to MAX_REASONS human-readable reasons per row, "; "-joined, most important first: the rules
    that fired, behaviour new for the principal, bursts, offensive tooling, the anomaly, and the linear
    model's largest contribution. Each kind of reason is built in Arrow over the rows it applies to."""
    n = len(rows)
    pieces: list[tuple[np.ndarray, int, pa.Array]] = []

    def text(series: pd.Series) -> pa.Array:
        return pa.array(series.astype("str").fillna(""), type=pa.large_string())

    def add(mask: np.ndarray, values: pa.Array | pd.Series | str, priority: int) -> None:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        if isinstance(values, str):
            arr = pa.array([values] * int(mask.sum()), type=pa.large_string())
        else:
            arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else text(values)
            arr = arr.filter(pa.array(mask)) if len(arr) == n else arr
        pieces.append((np.flatnonzero(mask), priority, arr))

    def col(name: str) -> pd.Series:
        return rows[name].astype("str").fillna("")

    def num(name: str) -> np.ndarray:
        return rows[name].to_numpy(np.float64) if name in rows else np.zeros(n)

    who = col("principal_short").where(col("principal_short").ne(""), col("principal"))
    service = num("is_aws_service") > 0
    new_principal = num("new_principal") > 0
    verb = "console login" if console else "activity"
    public = rows["network_zone"].eq("public").to_numpy()

    has_lf = np.array([bool(r) for r in lf_reasons], dtype=bool) if len(lf_reasons) else np.zeros(0, bool)
    if has_lf.any():
        firsts = ["; ".join(r.split("; ")[:2]) for r in lf_reasons[has_lf]]
        add(has_lf, pa.array(firsts, type=pa.large_string()), 0)
    add(new_principal & ~service, "first activity ever seen for " + who, 1)
    first_country = (num("first_country") > 0) & public & ~new_principal
    add(first_country, f"first {verb} from " + col("country") + " for " + who, 2)
    add((num("first_asn") > 0) & public & ~first_country & ~new_principal,
        f"first {verb} from network " + col("asn") + " for " + who, 3)
    if not console:
        add((num("first_event_name") > 0) & ~service & ~new_principal, "first use of " + col("eventName") + " by " + who, 3)
        add((num("first_region") > 0) & ~service & ~new_principal, "first use of region " + col("awsRegion") + " by " + who, 4)
    add((num("first_ua") > 0) & ~service & ~new_principal, "first " + col("ua_family") + " user agent for " + who, 4)
    add((num("first_ip") > 0) & public & ~first_country & ~service & ~new_principal,
        "new IP " + col("sourceIPAddress") + " for " + who, 5)
    later_in_new_country = (num("novel_country") > 0) & (num("first_country") == 0) & public & ~new_principal
    add(later_in_new_country, f"{verb} from " + col("country") + ", a country new for " + who + " today", 3)
    add((num("novel_asn") > 0) & (num("first_asn") == 0) & public & ~later_in_new_country & ~new_principal & ~service,
        f"{verb} from network " + col("asn") + ", new for " + who + " today", 4)
    add(num("is_root") > 0, "the root user", 5)
    add(num("access_denied") > 0, "access denied (" + col("errorCode") + ")", 6)
    add(num("cross_account") > 0, "call into account " + col("account") + " from another account", 6)
    failures = num("last_hour_failures")
    add(failures >= 5, pd.Series(failures.astype(np.int64)).astype("str") + " failed calls in the last hour by " + who, 2)
    if not console:
        distinct = num("last_hour_distinct_names")
        add(distinct >= 20, pd.Series(distinct.astype(np.int64)).astype("str") + " different API calls in the last hour by " + who, 3)
    add(num("ua_offensive") > 0, "offensive tool in the user agent: " + col("userAgent").str.slice(0, 60), 1)
    anomaly = comps["anomaly_score"].to_numpy()
    unusual = anomaly >= (model.quantile if model is not None else ANOMALY_QUANTILE)  # where the bonus starts
    if unusual.any():
        tenths = np.floor(np.minimum(anomaly[unusual], 0.999) * 1000).astype(np.int64)
        codes, uniq = pd.factorize(tenths)
        labels = [f"unusual behaviour (more anomalous than {u / 10:.1f}% of training events)" for u in uniq]
        add(unusual, pa.array(labels, type=pa.large_string()).take(pa.array(codes)), 4)
    if model is not None:
        top = _linear_contributions(model, rows, comps)
        if top is not None:
            add(top.ne("").to_numpy(), pa.array(top.to_numpy(dtype=object), type=pa.large_string()), 6)

    risk = comps["risk_score"].to_numpy()
    explained = np.zeros(n, dtype=bool)
    for rows_with, _, _ in pieces:
        explained[rows_with] = True
    add(~explained & (risk >= 40), "model score for " + col("eventName") + " (" + col("category") + ") by " + who, 9)
    if not pieces:
        return pa.array([""] * n, type=pa.large_string())
    row = np.concatenate([p[0] for p in pieces])
    prio = np.concatenate([np.full(len(p[0]), p[1]) for p in pieces])
    texts = pa.concat_arrays([p[2].combine_chunks() if isinstance(p[2], pa.ChunkedArray) else p[2] for p in pieces])
    order = np.lexsort((prio, row))
    row, texts = row[order], texts.take(pa.array(order))
    slot = pd.Series(row).groupby(row, sort=False).cumcount().to_numpy()
    columns = []
    for k in range(MAX_REASONS):
        sel = slot == k
        if not sel.any():
            break
        mask = np.zeros(n, dtype=bool)
        mask[row[sel]] = True
        columns.append(pc.replace_with_mask(pa.nulls(n, pa.large_string()), pa.array(mask), texts.filter(pa.array(sel))))
    joined = pc.fill_null(columns[0], "")
    for column in columns[1:]:  # a row has slot k only if it has slot k-1
        joined = pc.coalesce(pc.binary_join_element_wise(joined, column, _SEP), joined)
    return joined


def _linear_contributions(model: RiskModel, rows: pd.DataFrame, comps: pd.DataFrame, min_risk: float = 40.0) -> pd.Series | None:
    """For linear supervised models: the input with the largest positive contribution, on the rows that
    matter (risk >= ``min_risk``, at most 5,000). Tree models return None (no cheap exact answer)."""
    pipe = model.supervised
    if pipe is None or not hasattr(pipe.named_steps["model"], "coef_"):
        return None
    score = comps["risk_score"].to_numpy()
    risky = np.flatnonzero(score >= min_risk)
    risky = np.sort(risky[np.argsort(-score[risky], kind="stable")[:5000]])
    out = pd.Series("", index=rows.index, dtype=object)
    if not len(risky):
        return out
    pre = pipe.named_steps["features"]
    X = model_input(rows.iloc[risky], _feature_set_for(model))[list(model.columns)]
    Z = pre.transform(X)
    coef = pipe.named_steps["model"].coef_
    contrib = Z.multiply(coef).tocsr() if hasattr(Z, "multiply") else np.asarray(Z) * coef
    contrib = contrib.toarray() if hasattr(contrib, "toarray") else contrib
    best = contrib.argmax(axis=1)
    value = contrib[np.arange(len(risky)), best]
    names = np.asarray(pre.get_feature_names_out(), dtype=object)[best]
    texts = [f"model: {_pretty(name)} (+{v:.0f})" if v >= 5 else "" for name, v in zip(names, value, strict=True)]
    out.iloc[risky] = texts
    return out


def _feature_set_for(model: RiskModel) -> feat.FeatureSet:
    cols = set(model.columns)
    return FEATURE_SETS[API_CALL] if "first_event_name" in cols else FEATURE_SETS[CONSOLE_LOGIN]


def _pretty(name: str) -> str:
    """``categories__eventName_StopLogging`` -> ``eventName=StopLogging``; ``numbers__failed`` -> ``failed``."""
    _, _, rest = name.partition("__")
    for col in sorted({*FEATURE_SETS[API_CALL].columns, *FEATURE_SETS[CONSOLE_LOGIN].columns}, key=len, reverse=True):
        if rest.startswith(col + "_") and col in FEATURE_SETS[API_CALL].categorical_columns + FEATURE_SETS[CONSOLE_LOGIN].categorical_columns:
            value = rest[len(col) + 1:]
            return f"{col}={'(rare value)' if value == 'infrequent_sklearn' else value}"
    return rest or name


def read_scores(root: DataPath | str, day: date | str) -> pd.DataFrame:
    """A day's scores file as pandas (empty frame with the columns when the day was not scored)."""
    path = scores_path(root, day)
    if not path.exists():
        return SCORE_SCHEMA.empty_table().to_pandas()
    return read_parquet(path).to_pandas()


def _day(day: date | str) -> str:
    return day.isoformat() if isinstance(day, date) else date.fromisoformat(str(day)).isoformat()
