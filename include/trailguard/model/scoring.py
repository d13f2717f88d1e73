"""Score one day's events with the champion models: a 0-100 risk and the reasons a human can check.

Why reasons: an analyst reading the daily report must see *why* an event is on top - the rule that
fired, the behaviour new for this principal ("first console login from BR for alice"), the anomaly, the
model's largest contribution - or the score is not actionable.

Scores are written per partition of the day, account x region: ``scores/date=YYYY-MM-DD/part-<account>-
<region>.parquet``, each atomically. :func:`day_partitions` lists a day's partitions, so that an Airflow
task can be mapped over them; ``score_day(store, day, account=..., region=...)`` scores one; ``score_day``
without them scores the whole day and writes the same files. A rescore replaces its files, never adds
to them.

No day fails for want of a model: a use case without a champion, and every event that is neither a
console sign-in nor an API call (AwsServiceEvent, AwsVpceEvent, Insight...), is scored by the cold-start
scorer (:mod:`trailguard.model.coldstart`: the rules plus an anomaly detector on organisation-wide rarity);
its rows say ``model_name`` ``cold-start``, an empty ``model_version`` and, in ``scorer_note``, why.

Why partitions score exactly as the whole day: the labelling functions' window rules and the
organisation-wide features count the whole day's events (read without their large columns), and the
per-principal features take each principal's events in every partition.
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

from trailguard.model.features import (
    API_CALL,
    CONSOLE_LOGIN,
    DEFAULT_HISTORY_DAYS,
    FEATURE_SETS,
    OTHER,
    USE_CASES,
    FeatureSet,
    add_rule_details,
    add_rule_score,
    load_day_features,
    load_rule_events,
    use_case_of,
)
from trailguard.model.training import (
    ANOMALY_QUANTILE,
    MODEL_NAMES,
    ModelLoadError,
    RiskModel,
    champion_version,
    load_model_version,
    model_input,
    tracking_uri_for,
)
from trailguard.store.events import EventStore, safe_name, write_parquet_atomic
from trailguard.store.fs import DataPath, as_path, read_parquet, visible_files

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
    "scorer_note",
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
    path: DataPath | None  # the day's scores folder
    partition: dict[str, str] | None = None  # {"account": ..., "region": ...} when one partition was scored
    files: list[DataPath] = field(default_factory=list)  # the part files written
    events: int = 0
    scored: dict[str, int] = field(default_factory=dict)  # per use case
    skipped: dict[str, int] = field(default_factory=dict)  # per eventType not scored (none since cold start)
    model_versions: dict[str, str] = field(default_factory=dict)  # model name -> version
    scorers: dict[str, dict[str, str]] = field(default_factory=dict)  # use case -> model_name, version, note
    high_risk: int = 0  # scored events with risk_score >= 70
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    cpu_timings: dict[str, float] = field(default_factory=dict)  # CPU seconds of this process per stage

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path) if self.path else None
        out["files"] = [str(f) for f in self.files]
        return out

    def lines(self) -> list[str]:
        scored = ", ".join(f"{uc} {n}" for uc, n in self.scored.items()) or "none"
        skipped = ", ".join(f"{t or 'no eventType'} {n}" for t, n in self.skipped.items()) or "none"
        models = (
            "; ".join(
                f"{uc}: {s['model_name']}"
                + (f" v{s['model_version']}" if s["model_version"] else f" ({s['note']})")
                for uc, s in self.scorers.items()
            )
            or "-"
        )
        part = (
            f" account {self.partition['account']} region {self.partition['region']}"
            if self.partition
            else ""
        )
        return [
            f"day          {self.day}{part}: {self.events} events",
            f"scored       {scored} ({self.high_risk} with risk >= 70)",
            *([f"not scored   {skipped}"] if self.skipped else []),
            f"models       {models}",
            f"written      {len(self.files)} part file(s) in {self.path}",
            f"seconds      {self.seconds:.1f} ("
            + ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items())
            + "); CPU seconds "
            + ", ".join(f"{k} {v:.1f}" for k, v in self.cpu_timings.items()),
        ]


# -- where scores go: one file per partition (account x region) of the day ----------------------------------
PARTITION_COLUMNS = ("recipientAccountId", "userIdentity.accountId", "awsRegion")
UNKNOWN = "unknown"
EMPTY_DAY_FILE = "empty.parquet"  # what scoring a day without events leaves, so the report can say so
LEGACY_FILE = "scores.parquet"  # the whole day in one file, as earlier versions wrote it
_KEY_CHARS = 100


def partition_key(value: str | None, *, account: bool = False) -> str:
    """A partition's account or region as it appears in file names and in :func:`day_partitions`: the
    value made file-name safe (:func:`store.safe_name`, at most 100 characters), ``unknown`` when missing.
    An account key has no "-", so ``part-<account>-<region>`` reads back unambiguously. Applying it to a
    key gives the key: callers may pass either."""
    text = value if isinstance(value, str) and value else UNKNOWN
    key = safe_name(text, limit=_KEY_CHARS)
    return key.replace("-", "_") if account else key


def _partition_keys(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The account key (recipientAccountId, else userIdentity.accountId) and region key (awsRegion) of
    every event, worked out once per distinct value."""
    empty = pd.Series(None, index=events.index, dtype="str")
    recipient = events["recipientAccountId"] if "recipientAccountId" in events else empty
    caller = events["userIdentity.accountId"] if "userIdentity.accountId" in events else empty
    region = events["awsRegion"] if "awsRegion" in events else empty
    account = recipient.where(recipient.notna() & recipient.ne(""), caller)
    keys = []
    for values, is_account in ((account, True), (region, False)):
        codes, distinct = pd.factorize(values, use_na_sentinel=False)
        mapped = np.array(
            [partition_key(v if isinstance(v, str) else None, account=is_account) for v in distinct],
            dtype=object,
        )
        keys.append(mapped[codes] if len(distinct) else np.empty(0, dtype=object))
    return keys[0], keys[1]


def day_partitions(store: EventStore, day: date | str) -> list[dict[str, Any]]:
    """The day's partitions, ``[{"account": ..., "region": ..., "events": n}, ...]`` sorted by account and
    region, for scoring them apart (``score_day(store, day, account=..., region=...)``, e.g. one mapped
    Airflow task each). Values are :func:`partition_key`s: attacker-controlled text made file-name safe."""
    key = _day(day)
    table = store.read_partition(key, columns=PARTITION_COLUMNS)
    if table.num_rows == 0:
        return []
    account, region = _partition_keys(table.to_pandas())
    counts = pd.DataFrame({"account": account, "region": region}).value_counts().sort_index()
    return [{"account": a, "region": r, "events": int(n)} for (a, r), n in counts.items()]


def scores_dir(root: DataPath | str, day: date | str) -> DataPath:
    return as_path(root) / "scores" / f"date={_day(day)}"


def part_path(root: DataPath | str, day: date | str, account: str, region: str) -> DataPath:
    """``scores/date=D/part-<account>-<region>.parquet`` (keys as :func:`partition_key` makes them)."""
    return (
        scores_dir(root, day) / f"part-{partition_key(account, account=True)}-{partition_key(region)}.parquet"
    )


def _part_of(path: DataPath) -> tuple[str, str] | None:
    """(account, region) of a part file's name; None for other files."""
    name = path.name
    if not (name.startswith("part-") and name.endswith(".parquet")):
        return None
    account, sep, region = name[len("part-") : -len(".parquet")].partition("-")
    return (account, region) if sep else None


def prune_parts(root: DataPath | str, day: date | str, partitions: Iterable[dict[str, Any]]) -> list[str]:
    """Remove the day's scores of partitions that are no longer in ``partitions`` (e.g. validation moved
    all their events out), and the files of other layouts: what a whole-day run does before the
    partitions are scored apart. Returns the names removed."""
    keep = {(p["account"], p["region"]) for p in partitions}
    removed = []
    for path in visible_files(scores_dir(root, day), "*.parquet"):
        if _part_of(path) not in keep:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def load_champions(store: EventStore, tracking_uri: str | None = None) -> dict[str, Champion]:
    """The champion of every use case that has one (to load once and score several partitions with)."""
    uri = tracking_uri_for(store.root, tracking_uri)
    champions = {}
    for use_case in USE_CASES:
        try:
            champions[use_case] = load_champion(use_case, uri)
        except NoChampionError:
            continue  # score_day says what to do if that use case has events
    return champions


def load_champion(use_case: str, tracking_uri: str) -> Champion:
    """The champion of a use case; :class:`NoChampionError` says what to do when there is none."""
    name = MODEL_NAMES[use_case]
    version = champion_version(name, tracking_uri)
    if version is None:
        raise NoChampionError(f"no champion model for {name} yet: run `trailguard train` first")
    try:
        model = load_model_version(name, version, tracking_uri)
    except ModelLoadError as exc:
        raise IncompatibleChampionError(
            f"champion {name} v{version} cannot be loaded by this TrailGuard ({exc}): "
            "run `trailguard train` to register a new champion"
        ) from None
    return Champion(name, version, model)


class IncompatibleChampionError(NoChampionError):
    """The champion cannot be loaded by this TrailGuard: the message says to run ``trailguard train``."""


def score_day(
    store: EventStore,
    day: date | str,
    *,
    account: str | None = None,
    region: str | None = None,
    tracking_uri: str | None = None,
    history_days: int = DEFAULT_HISTORY_DAYS,
    champions: dict[str, Champion] | None = None,
    threads: int = 1,
    cold_starts: dict[tuple[str, str], Any] | None = None,
    registry: bool = True,
) -> ScoreResult:
    """Score every event of ``day`` - console sign-ins and API calls with the champion of their use case,
    the rest and use cases without a champion with the cold-start scorer - and write one scores file per
    partition (account x region), replacing earlier ones.

    ``account`` and ``region`` (as :func:`day_partitions` gives them) narrow the work to one partition
    (or one account, or one region): its events get the same scores as in a whole-day run. A whole-day
    run also removes the day's files of partitions that no longer exist. ``champions`` overrides the
    registry (tests, backfills); ``threads`` caps OpenMP as in training. ``cold_starts``: a dict that keeps
    the cold-start scorers fitted for (day, use case), for several partitions of a day to share.
    ``registry`` False: no model registry is asked (only ``champions``; cold start for the rest)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="openmp"):
        return _score_day(
            store,
            day,
            tracking_uri,
            history_days,
            champions,
            account,
            region,
            {} if cold_starts is None else cold_starts,
            registry,
        )


def _score_day(
    store: EventStore,
    day: date | str,
    tracking_uri: str | None,
    history_days: int,
    champions: dict[str, Champion] | None,
    account: str | None,
    region: str | None,
    cold_starts: dict[tuple[str, str], Any],
    registry: bool = True,
) -> ScoreResult:
    from trailguard.detect.engine import label_events

    started = time.perf_counter()
    key = _day(day)
    uri = tracking_uri_for(store.root, tracking_uri) if registry else ""
    account = partition_key(account, account=True) if account is not None else None
    region = partition_key(region) if region is not None else None
    whole_day = account is None and region is None
    result = ScoreResult(day=key, path=scores_dir(store.root, key))
    if not whole_day:
        result.partition = {"account": account or "*", "region": region or "*"}
    clock = _Clock(result.timings, result.cpu_timings)

    # the whole day without its large columns: rules' windows and organisation-wide features count it all
    events = load_rule_events(store, key, PARTITION_COLUMNS)
    accounts, regions = _partition_keys(events)
    rows = np.ones(len(events), dtype=bool)
    if account is not None:
        rows &= accounts == account
    if region is not None:
        rows &= regions == region
    result.events = int(rows.sum())
    clock("read")
    if result.events == 0:
        _write_parts(result, store.root, key, None, whole_day, account, region, None)
        result.seconds = time.perf_counter() - started
        return result

    use_case = use_case_of(events["eventType"]).to_numpy(dtype=object)
    present = [uc for uc in (*USE_CASES, OTHER) if (rows & (use_case == uc)).any()]
    champions = dict(champions or {})
    unloadable: dict[str, str] = {}  # use case -> why its champion could not be loaded
    for uc in present:
        if registry and uc in USE_CASES and uc not in champions:
            try:
                champions[uc] = load_champion(uc, uri)
            except NoChampionError as exc:
                log.info("%s: %s; the cold-start scorer scores %s", key, exc, uc)
                if isinstance(exc, IncompatibleChampionError):
                    unloadable[uc] = str(exc)
    clock("models")

    add_rule_details(store, key, events, None if whole_day else rows)
    clock("read")
    lf = label_events(events, rows=None if whole_day else rows)
    clock("rules")
    features = load_day_features(store, key, history_days, events=events, rows=None if whole_day else rows)
    lf = lf[rows] if not whole_day else lf
    add_rule_score(features, lf)
    event_ids = events["eventID"][rows]
    part_codes, parts = _pair_codes(accounts[rows], regions[rows])
    day_features = features if whole_day else None
    del events
    clock("features")

    use_case = use_case[rows]
    n = len(features)
    risk, anomaly, supervised = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    model_name = np.full(n, None, dtype=object)
    model_version = np.full(n, None, dtype=object)
    scorer_note = np.full(n, None, dtype=object)
    reasons = pa.nulls(n, pa.large_string())
    lf_reasons = lf["lf_reasons"].to_numpy(dtype=object)
    for uc in present:
        mask = use_case == uc
        champ = champions.get(uc)
        if champ is None:
            if (key, uc) not in cold_starts:
                if day_features is None:  # the cold-start reference is the whole day, as in a whole-day run
                    day_features = load_day_features(store, key, history_days)
                cold_starts[(key, uc)] = _fit_cold_start(
                    store, key, uc, day_features, history_days, cold_starts
                )
            why = _score_cold_start(
                cold_starts[(key, uc)],
                uc,
                mask,
                features,
                lf_reasons,
                result,
                (risk, anomaly, supervised, model_name, model_version, scorer_note),
                unloadable.get(uc),
            )
            reasons = pc.replace_with_mask(reasons, pa.array(mask), why)
            continue
        fs = FEATURE_SETS[uc]
        # a use case holding nearly every row is scored on the whole frame and its few other rows dropped
        # after: cheaper than copying 70 columns of a million rows; every score and reason is row by row
        whole = mask.mean() > 0.9
        uc_rows = (
            features if whole else _subset(features, mask, dict.fromkeys((*fs.columns, *REASON_COLUMNS)))
        )
        comps = champ.model.predict_components(model_input(uc_rows, fs))
        why = explain(
            uc_rows,
            lf_reasons if whole else lf_reasons[mask],
            comps,
            champ.model,
            console=uc == CONSOLE_LOGIN,
        )
        if whole:
            comps, why = comps[mask], why.filter(pa.array(mask)) if not mask.all() else why
        risk[mask] = comps["risk_score"].to_numpy()
        anomaly[mask] = comps["anomaly_score"].to_numpy()
        supervised[mask] = comps["supervised_score"].to_numpy()
        model_name[mask], model_version[mask] = champ.model_name, champ.version
        reasons = pc.replace_with_mask(reasons, pa.array(mask), why)
        result.scored[uc] = int(mask.sum())
        result.model_versions[champ.model_name] = champ.version
        scorer_note[mask] = f"champion {champ.model_name} v{champ.version}"
        result.scorers[uc] = {
            "model_name": champ.model_name,
            "model_version": champ.version,
            "note": scorer_note[mask][0],
        }
    clock("predict")

    table = pa.Table.from_pandas(
        features[[c for c in SCORE_COLUMNS if c in features.columns]], preserve_index=False
    )
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
        "scorer_note": pa.array(scorer_note, type=pa.string()),
    }
    for name, values in extra.items():
        table = table.append_column(name, values)
    table = table.select(list(SCORE_COLUMNS)).cast(SCORE_SCHEMA)
    _write_parts(result, store.root, key, (table, part_codes, parts), whole_day, account, region, event_ids)
    result.high_risk = int(np.sum(table.column("risk_score").to_numpy() >= 70))
    clock("write")
    result.seconds = time.perf_counter() - started
    log.info("scored %s: %s", key, "; ".join(result.lines()[:3]))
    return result


def _fit_cold_start(
    store: EventStore, key: str, uc: str, day_features: pd.DataFrame, history_days: int, cache: dict
) -> Any:
    """The cold-start scorer of a use case for the day, as the settings size it."""
    from trailguard.model.coldstart import build_cold_start
    from trailguard.store.settings import load_settings

    settings = load_settings()
    return build_cold_start(
        store,
        key,
        uc,
        day_features,
        history_days=history_days,
        fit_days=settings.coldstart_fit_days,
        min_events=settings.coldstart_min_events,
        cache=cache,
    )


def _score_cold_start(
    scorer: Any,
    uc: str,
    mask: np.ndarray,
    features: pd.DataFrame,
    lf_reasons: np.ndarray,
    result: ScoreResult,
    out: tuple[np.ndarray, ...],
    unloadable: str | None = None,
) -> pa.Array:
    """Score the rows of ``mask`` (one use case without a champion) with its cold-start scorer; fill
    ``out`` (risk, anomaly, supervised, model name, version, note) and return the reasons. ``unloadable``:
    why the champion could not be loaded, said in the note instead of "no model yet"."""
    from trailguard.model.coldstart import COLD_START, ORG_RARITY_COLUMNS, feature_set_of

    fs = feature_set_of(uc)
    uc_rows = _subset(features, mask, dict.fromkeys((*fs.columns, *REASON_COLUMNS, *ORG_RARITY_COLUMNS)))
    comps = scorer.predict_components(uc_rows)
    why = explain(uc_rows, lf_reasons[mask], comps, scorer, console=uc == CONSOLE_LOGIN)  # type: ignore[arg-type]
    risk, anomaly, supervised, model_name, model_version, scorer_note = out
    risk[mask] = comps["risk_score"].to_numpy()
    anomaly[mask] = comps["anomaly_score"].to_numpy()
    supervised[mask] = comps["supervised_score"].to_numpy()
    note = scorer.note if unloadable is None else f"{unloadable}; meanwhile {scorer.note.partition(': ')[2]}"
    model_name[mask], model_version[mask], scorer_note[mask] = COLD_START, "", note
    result.scored[uc] = int(mask.sum())
    result.scorers[uc] = {"model_name": COLD_START, "model_version": "", "note": note}
    return why


def _pair_codes(accounts: np.ndarray, regions: np.ndarray) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """A code per row for its (account, region) and the pairs in code order, sorted."""
    a_codes, a_values = pd.factorize(accounts)
    r_codes, r_values = pd.factorize(regions)
    pairs, codes = np.unique(a_codes.astype(np.int64) * max(len(r_values), 1) + r_codes, return_inverse=True)
    names = [(a_values[p // max(len(r_values), 1)], r_values[p % max(len(r_values), 1)]) for p in pairs]
    order = sorted(range(len(names)), key=names.__getitem__)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes] if len(codes) else codes, [names[i] for i in order]


def _write_parts(
    result: ScoreResult,
    root: DataPath,
    day: str,
    scored: tuple[pa.Table, np.ndarray, list[tuple[str, str]]] | None,
    whole_day: bool,
    account: str | None,
    region: str | None,
    event_ids: pd.Series | None,
) -> None:
    """One file per partition that had events (``scored``: the table, each row's partition code, the
    partitions), so a partition without scorable events still replaces its old file; then the files this
    run stands for and did not write go: in a whole-day run every other file of the day, else the
    selection's stale parts. Rows of the selection in a whole-day file of an earlier version are taken
    out of it."""
    folder = scores_dir(root, day)
    written: list[DataPath] = []
    if scored is not None:
        table, codes, parts = scored
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(parts) + 1))
        for i, (part_account, part_region) in enumerate(parts):
            part = table.take(pa.array(order[bounds[i] : bounds[i + 1]]))
            written.append(write_parquet_atomic(part, part_path(root, day, part_account, part_region)))
    elif whole_day:
        written.append(write_parquet_atomic(SCORE_SCHEMA.empty_table(), folder / EMPTY_DAY_FILE))
    result.files = written
    if not folder.exists():
        return
    for path in visible_files(folder, "*"):
        if path in written:
            continue
        if whole_day:
            if path.suffix == ".parquet":
                path.unlink(missing_ok=True)
            continue
        part = _part_of(path)
        if (
            part is not None
            and (account is None or part[0] == account)
            and (region is None or part[1] == region)
        ):
            path.unlink(missing_ok=True)
        elif path.name == LEGACY_FILE and event_ids is not None:
            legacy = read_parquet(path)
            keep = pc.invert(
                pc.is_in(
                    legacy.column("eventID"),
                    value_set=pa.array(event_ids.to_numpy(dtype=object), type=pa.string()),
                )
            )
            legacy = legacy.filter(keep)
            if legacy.num_rows:
                write_parquet_atomic(legacy, path)
            else:
                path.unlink(missing_ok=True)


class _Clock:
    """Records the wall and CPU seconds since the previous call under a stage name."""

    def __init__(self, into: dict[str, float], cpu: dict[str, float]) -> None:
        self.into, self.cpu = into, cpu
        self.last, self.last_cpu = time.perf_counter(), time.process_time()

    def __call__(self, stage: str) -> None:
        now, now_cpu = time.perf_counter(), time.process_time()
        self.into[stage] = self.into.get(stage, 0.0) + now - self.last
        self.cpu[stage] = self.cpu.get(stage, 0.0) + now_cpu - self.last_cpu
        self.last, self.last_cpu = now, now_cpu


REASON_COLUMNS = (
    "principal",
    "principal_short",
    "country",
    "asn",
    "network_zone",
    "eventName",
    "awsRegion",
    "ua_family",
    "sourceIPAddress",
    "userAgent",
    "is_aws_service",
    "new_principal",
    "last_hour_failures",
    "last_hour_distinct_names",
    "ua_offensive",
    "errorCode",
    "account",
    "category",
    "is_root",
    "access_denied",
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
    return pd.DataFrame(data, copy=False)


# -- reasons -------------------------------------------------------------------------------------------
_TEXT = pa.large_string()


def explain(
    rows: pd.DataFrame,
    lf_reasons: np.ndarray,
    comps: pd.DataFrame,
    model: RiskModel | None = None,
    *,
    console: bool = False,
) -> pa.Array:
    """Up to MAX_REASONS human-readable reasons per row, "; "-joined, most important first: the rules
    that fired, behaviour new for the principal, bursts, offensive tooling, the anomaly, and the linear
    model's largest contribution. Each kind of reason is built in Arrow on the rows it applies to only."""
    n = len(rows)
    pieces: list[tuple[np.ndarray, int, pa.Array]] = []
    texts: dict[str, pa.Array] = {}

    def col(name: str) -> pa.Array:
        """A column as text, "" where missing."""
        if name not in texts:
            arr = pa.array(rows[name], from_pandas=True)
            arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
            texts[name] = pc.fill_null(arr.cast(_TEXT), "")
        return texts[name]

    def add(mask: np.ndarray, priority: int, *parts: str | pa.Array | np.ndarray) -> None:
        """A reason on the rows of ``mask``: literal texts, text columns (whole length) and whole numbers."""
        where = np.flatnonzero(mask)
        if not len(where):
            return
        take = pa.array(where)
        values = []
        for part in parts:
            if isinstance(part, str):
                values.append(pa.scalar(part, _TEXT))
            elif isinstance(part, np.ndarray):
                values.append(pa.array(part[where].astype(np.int64)).cast(_TEXT))
            else:
                values.append(part.take(take))
        if all(isinstance(v, pa.Scalar) for v in values):
            joined = pa.array(["".join(v.as_py() for v in values)] * len(where), _TEXT)
        else:
            joined = pc.binary_join_element_wise(*values, pa.scalar("", _TEXT))
        pieces.append((where, priority, joined))

    def num(name: str) -> np.ndarray:
        return rows[name].to_numpy(np.float64) if name in rows else np.zeros(n)

    short = col("principal_short")
    who = pc.if_else(pc.equal(short, ""), col("principal"), short)
    service = num("is_aws_service") > 0
    new_principal = num("new_principal") > 0
    verb = "console login" if console else "activity"
    public = rows["network_zone"].eq("public").to_numpy()

    fired = pc.fill_null(pa.array(lf_reasons, _TEXT, from_pandas=True), "")
    has_lf = pc.not_equal(fired, "").to_numpy(zero_copy_only=False) if n else np.zeros(0, bool)
    if has_lf.any():  # the first two rules that fired
        first_two = pc.binary_join(
            pc.list_slice(pc.split_pattern(fired.filter(pa.array(has_lf)), "; "), 0, 2),
            pa.scalar("; ", _TEXT),
        )
        pieces.append((np.flatnonzero(has_lf), 0, first_two))
    add(new_principal & ~service, 1, "first activity ever seen for ", who)
    first_country = (num("first_country") > 0) & public & ~new_principal
    add(first_country, 2, f"first {verb} from ", col("country"), " for ", who)
    add(
        (num("first_asn") > 0) & public & ~first_country & ~new_principal,
        3,
        f"first {verb} from network ",
        col("asn"),
        " for ",
        who,
    )
    if not console:
        add(
            (num("first_event_name") > 0) & ~service & ~new_principal,
            3,
            "first use of ",
            col("eventName"),
            " by ",
            who,
        )
        add(
            (num("first_region") > 0) & ~service & ~new_principal,
            4,
            "first use of region ",
            col("awsRegion"),
            " by ",
            who,
        )
    add(
        (num("first_ua") > 0) & ~service & ~new_principal,
        4,
        "first ",
        col("ua_family"),
        " user agent for ",
        who,
    )
    add(
        (num("first_ip") > 0) & public & ~first_country & ~service & ~new_principal,
        5,
        "new IP ",
        col("sourceIPAddress"),
        " for ",
        who,
    )
    later_in_new_country = (num("novel_country") > 0) & (num("first_country") == 0) & public & ~new_principal
    add(later_in_new_country, 3, f"{verb} from ", col("country"), ", a country new for ", who, " today")
    add(
        (num("novel_asn") > 0)
        & (num("first_asn") == 0)
        & public
        & ~later_in_new_country
        & ~new_principal
        & ~service,
        4,
        f"{verb} from network ",
        col("asn"),
        ", new for ",
        who,
        " today",
    )
    add(num("is_root") > 0, 5, "the root user")
    add(num("access_denied") > 0, 6, "access denied (", col("errorCode"), ")")
    add(num("cross_account") > 0, 6, "call into account ", col("account"), " from another account")
    failures = num("last_hour_failures")
    add(failures >= 5, 2, failures, " failed calls in the last hour by ", who)
    if not console:
        distinct = num("last_hour_distinct_names")
        add(distinct >= 20, 3, distinct, " different API calls in the last hour by ", who)
    add(
        num("ua_offensive") > 0,
        1,
        "offensive tool in the user agent: ",
        pc.utf8_slice_codeunits(col("userAgent"), 0, 60),
    )
    anomaly = comps["anomaly_score"].to_numpy()
    unusual = anomaly >= (model.quantile if model is not None else ANOMALY_QUANTILE)  # where the bonus starts
    if unusual.any():
        tenths = np.floor(np.minimum(anomaly[unusual], 0.999) * 1000).astype(np.int64)
        codes, uniq = pd.factorize(tenths)
        of = (
            "this organisation's events"
            if getattr(model, "model_name", None) == "cold-start"
            else "training events"
        )
        labels = [f"unusual behaviour (more anomalous than {u / 10:.1f}% of {of})" for u in uniq]
        pieces.append((np.flatnonzero(unusual), 4, pa.array(labels, _TEXT).take(pa.array(codes))))
    if model is not None:
        top = _linear_contributions(model, rows, comps)
        if top is not None:
            has = top.ne("").to_numpy()
            if has.any():
                pieces.append((np.flatnonzero(has), 6, pa.array(top.to_numpy(dtype=object)[has], _TEXT)))

    risk = comps["risk_score"].to_numpy()
    explained = np.zeros(n, dtype=bool)
    for rows_with, _, _ in pieces:
        explained[rows_with] = True
    add(
        ~explained & (risk >= 40),
        9,
        "model score for ",
        col("eventName"),
        " (",
        col("category"),
        ") by ",
        who,
    )
    if not any(len(p[0]) for p in pieces):
        return pa.array([""] * n, _TEXT)
    row = np.concatenate([p[0] for p in pieces])
    prio = np.concatenate([np.full(len(p[0]), p[1]) for p in pieces])
    order = np.lexsort(
        (prio, row)
    )  # stable: a row's reasons of one priority keep the order they were added in
    row = row[order]
    reason = pa.concat_arrays([p[2] for p in pieces]).take(pa.array(order))
    first = np.r_[True, row[1:] != row[:-1]]
    starts = np.flatnonzero(first)
    slot = np.arange(len(row)) - np.repeat(starts, np.diff(np.r_[starts, len(row)]))
    keep = slot < MAX_REASONS
    row, reason = row[keep], reason.filter(pa.array(keep))
    starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    per_row = pa.LargeListArray.from_arrays(pa.array(np.r_[starts, len(row)], pa.int64()), reason)
    has_reason = np.zeros(n, dtype=bool)
    has_reason[row[starts]] = True
    joined = pc.replace_with_mask(
        pa.nulls(n, _TEXT), pa.array(has_reason), pc.binary_join(per_row, pa.scalar("; ", _TEXT))
    )
    return pc.fill_null(joined, "")


def _linear_contributions(
    model: RiskModel, rows: pd.DataFrame, comps: pd.DataFrame, min_risk: float = 40.0
) -> pd.Series | None:
    """For linear supervised models: the input with the largest positive contribution, on the rows that
    matter (risk >= ``min_risk``; decided row by row, so a partition's rows get what the whole day's do).
    Tree models return None (no cheap exact answer)."""
    pipe = model.supervised
    if pipe is None or not hasattr(pipe.named_steps["model"], "coef_"):
        return None
    score = comps["risk_score"].to_numpy()
    risky = np.flatnonzero(score >= min_risk)
    out = pd.Series("", index=rows.index, dtype=object)
    if not len(risky):
        return out
    pre = pipe.named_steps["features"]
    coef = pipe.named_steps["model"].coef_
    names = np.asarray(pre.get_feature_names_out(), dtype=object)
    fs = _feature_set_for(model)
    texts: list[str] = []
    for start in range(0, len(risky), 50_000):  # bounded memory on a day where much is risky
        chunk = risky[start : start + 50_000]
        X = model_input(rows.iloc[chunk], fs)[list(model.columns)]
        Z = pre.transform(X)
        contrib = Z.multiply(coef).tocsr() if hasattr(Z, "multiply") else np.asarray(Z) * coef
        contrib = contrib.toarray() if hasattr(contrib, "toarray") else contrib
        best = contrib.argmax(axis=1)
        value = contrib[np.arange(len(chunk)), best]
        texts += [
            f"model: {_pretty(name)} (+{v:.0f})" if v >= 5 else ""
            for name, v in zip(names[best], value, strict=True)
        ]
    out.iloc[risky] = texts
    return out


def _feature_set_for(model: RiskModel) -> FeatureSet:
    cols = set(model.columns)
    return FEATURE_SETS[API_CALL] if "first_event_name" in cols else FEATURE_SETS[CONSOLE_LOGIN]


def _pretty(name: str) -> str:
    """``categories__eventName_StopLogging`` -> ``eventName=StopLogging``; ``numbers__failed`` -> ``failed``."""
    _, _, rest = name.partition("__")
    for col in sorted(
        {*FEATURE_SETS[API_CALL].columns, *FEATURE_SETS[CONSOLE_LOGIN].columns}, key=len, reverse=True
    ):
        if (
            rest.startswith(col + "_")
            and col
            in FEATURE_SETS[API_CALL].categorical_columns + FEATURE_SETS[CONSOLE_LOGIN].categorical_columns
        ):
            value = rest[len(col) + 1 :]
            return f"{col}={'(rare value)' if value == 'infrequent_sklearn' else value}"
    return rest or name


def read_scores(root: DataPath | str, day: date | str) -> pd.DataFrame:
    """A day's scores, every part file, as pandas (an empty frame with the columns when the day was not
    scored)."""
    folder = scores_dir(root, day)
    files = (
        sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(".")) if folder.exists() else []
    )
    if not files:
        return SCORE_SCHEMA.empty_table().to_pandas()
    return pa.concat_tables([read_parquet(f) for f in files], promote_options="default").to_pandas()


def _day(day: date | str) -> str:
    return day.isoformat() if isinstance(day, date) else date.fromisoformat(str(day)).isoformat()
