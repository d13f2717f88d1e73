"""The training sample: read day by day, keep a bounded stratified sample, so that training's memory is
that of the sample (and one day), not of the history.

Every event falls in one stratum (:func:`strata`):

* ``kept`` - labelled by an analyst (any score: a "benign" verdict teaches as much as a "malicious" one)
  or high-risk (target >= :data:`HIGH_RISK`: an analyst's or a rule's score of 70 or more). Always kept:
  they are the few events the daily email must surface, and what the models learn that from.
* ``rules`` - a rule fired with a score below :data:`HIGH_RISK` (the routine rule hits, 35-55).
* ``default`` - nothing fired and nobody scored it (target :data:`~trailguard.model.labels.DEFAULT_TARGET`).

``rules`` and ``default`` are sampled, each by bottom-k ("priority") reservoir sampling: every event gets
a key in [0, 1) from a seeded hash of its eventID, and a stratum keeps the events with the smallest keys
up to its capacity. That is a uniform sample of the stratum seen so far, whatever the order the days and
files come in (the same events give the same sample from any store), and reproducible with the seed.
Capacities only ever shrink (a bottom-k sample of a bottom-k sample is one), so a day is merged and
trimmed at once, and of a day only the rows that can stay (at most a stratum's capacity, by key) are
built at all: the rows held never exceed the cap plus one day (in fact plus the day's share of the cap).

Capacities: the cap less the ``kept`` rows (but at least a tenth of the cap: the routine events must stay
represented however many alerts there were) is the room; ``rules`` may take up to half of it, ``default``
the rest. A sampled row stands for ``seen / kept`` rows of its stratum (its weight), so metrics and fitted
scores stay those of the full data.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

HIGH_RISK = 70  # a target at or above this is a high-risk event (what the daily email must surface)
KEPT, RULES, DEFAULT = "kept", "rules", "default"
STRATA = (KEPT, RULES, DEFAULT)
MIN_ROOM_SHARE = 0.1  # of the cap, left for the sampled strata however many rows are always kept
KEY = "_sample_key"
STRATUM = "_stratum"
WEIGHT = "weight"


def strata(targets: np.ndarray, sources: np.ndarray, high_risk: float = HIGH_RISK) -> np.ndarray:
    """Each row's stratum (see the module docstring) from its training target and the target's source
    (``analyst``, ``rules`` or ``default``: :func:`trailguard.model.labels.targets_and_sources`)."""
    targets = np.asarray(targets, dtype=float)
    sources = np.asarray(sources, dtype=object)
    out = np.full(len(targets), DEFAULT, dtype=object)
    out[sources == "rules"] = RULES
    out[(sources == "analyst") | (targets >= high_risk)] = KEPT
    return out


def sample_keys(event_ids: Any, seed: int) -> np.ndarray:
    """A key in [0, 1) per eventID: a seeded hash, so the same event draws the same key in every run."""
    values = np.asarray(pd.Series(event_ids, dtype="str").fillna("").to_numpy(dtype=object), dtype=object)
    hashed = pd.util.hash_array(values, hash_key=f"trailguard{seed % 10**6:06d}", categorize=False)
    return (hashed >> np.uint64(11)).astype(np.float64) / float(2**53)


class StratifiedReservoir:
    """A bounded stratified sample of a stream of days (see the module docstring).

    Per day: :meth:`offer` the day's eventIDs, targets and sources (counts them, returns which rows may
    enter), then :meth:`add` those rows' frame (any columns). :meth:`sample` gives the rows kept, with
    their weights.
    """

    def __init__(self, cap: int, seed: int, *, high_risk: float = HIGH_RISK) -> None:
        if cap < 1:
            raise ValueError(f"the sample's cap must be at least 1 row, not {cap}")
        self.cap = int(cap)
        self.seed = int(seed)
        self.high_risk = high_risk
        self.seen: Counter[str] = Counter()
        self.seen_by_source: Counter[str] = Counter()
        self.days: Counter[str] = Counter()  # rows seen per day
        self.peak_rows_held = 0
        self._held = pd.DataFrame()
        self._pending: tuple[str, np.ndarray, np.ndarray] | None = None
        self._threshold = {KEPT: 1.0, RULES: 1.0, DEFAULT: 1.0}  # keys at or above are out for good

    # capacities: both only ever shrink (see the module docstring)
    def _room(self) -> int:
        return max(self.cap - self.seen[KEPT], int(self.cap * MIN_ROOM_SHARE), 2)

    def capacity(self, stratum: str) -> int | None:
        """How many rows of ``stratum`` the sample may hold now (None: all of them)."""
        if stratum == KEPT:
            return None
        room = self._room()
        if stratum == RULES:
            return min(self.seen[RULES], room // 2)
        return room - min(self.seen[RULES], room // 2)

    @property
    def rows_held(self) -> int:
        return len(self._held)

    def offer(self, day: str, event_ids: Any, targets: Any, sources: Any) -> np.ndarray:
        """Count a day's rows (one use case's) and return the mask of those that may enter the sample: the
        rest are out whatever comes later. Call :meth:`add` with the frame of those rows next."""
        if self._pending is not None:
            raise RuntimeError("offer() twice without add(): add the rows offered first")
        sources = np.asarray(sources, dtype=object)
        stratum = strata(targets, sources, self.high_risk)
        keys = sample_keys(event_ids, self.seed)
        names, counts = np.unique(stratum, return_counts=True)
        self.seen.update(dict(zip(names.tolist(), counts.tolist(), strict=True)))
        names, counts = np.unique(sources, return_counts=True)
        self.seen_by_source.update(dict(zip(names.tolist(), counts.tolist(), strict=True)))
        self.days[day] += len(stratum)
        admit = np.ones(len(stratum), dtype=bool)
        for name in (RULES, DEFAULT):
            admit[stratum == name] = keys[stratum == name] < self._threshold[name]
            # of the day itself, no more than the stratum's capacity can stay: the rest need never be built
            where = np.flatnonzero(admit & (stratum == name))
            cap = self.capacity(name)
            if cap is not None and len(where) > cap:
                out = where[np.argpartition(keys[where], cap)[cap:]]
                admit[out] = False
                self._threshold[name] = min(self._threshold[name], float(keys[out].min()))
        self._pending = (day, stratum[admit], keys[admit])
        return admit

    def add(self, rows: pd.DataFrame) -> int:
        """Merge the rows :meth:`offer` admitted (in its order) and trim every stratum to its capacity;
        the number of rows held afterwards."""
        if self._pending is None:
            raise RuntimeError("add() without offer(): offer the day's rows first")
        day, stratum, keys = self._pending
        self._pending = None
        if len(rows) != len(stratum):
            raise ValueError(f"{len(rows)} rows added for {len(stratum)} admitted by offer() on {day}")
        rows = rows.reset_index(drop=True).assign(**{STRATUM: stratum, KEY: keys})
        held = pd.concat([self._held, rows], ignore_index=True) if len(self._held) else rows
        self.peak_rows_held = max(self.peak_rows_held, len(held))
        self._held = self._trim(held)
        return len(self._held)

    def _trim(self, held: pd.DataFrame) -> pd.DataFrame:
        keep = np.ones(len(held), dtype=bool)
        stratum, keys = held[STRATUM].to_numpy(), held[KEY].to_numpy()
        for name in (RULES, DEFAULT):
            cap = self.capacity(name)
            where = np.flatnonzero(stratum == name)
            if cap is None or len(where) <= cap:
                continue
            order = np.argpartition(keys[where], cap)  # the cap smallest keys first
            keep[where[order[cap:]]] = False
            # the smallest key ever left out: every row seen below it is held, none at or above can enter
            self._threshold[name] = min(self._threshold[name], float(keys[where[order[cap:]]].min()))
        return held[keep].reset_index(drop=True) if not keep.all() else held

    def weights(self, frame: pd.DataFrame) -> np.ndarray:
        """Rows of :meth:`sample`: how many rows of the whole stream each one stands for."""
        held = Counter(frame[STRATUM].tolist())
        per = {s: (self.seen[s] / held[s] if held[s] else 1.0) for s in STRATA}
        return frame[STRATUM].map(per).to_numpy(dtype=float)

    def uniform_threshold(self, rows: int) -> float:
        """A key below which the rows held are a uniform sample of every row seen (all strata), of about
        ``rows`` rows: a Bernoulli sample at that rate, as each stratum holds every row below its own
        threshold."""
        total = sum(self.seen.values())
        if not total:
            return 0.0
        return min(rows / total, *self._threshold.values(), 1.0)

    def sample(self) -> pd.DataFrame:
        """The rows held, ordered by day and eventID when those columns are there (an order of the events
        themselves, not of the reading), with ``weight``, the stratum and the key."""
        held = self._held.copy()
        if not len(held):
            return held
        held[WEIGHT] = self.weights(held)
        order = [c for c in ("day", "eventID") if c in held]
        return held.sort_values(order, kind="stable", ignore_index=True) if order else held

    def info(self, prefix: str = "sample") -> dict[str, Any]:
        """The sampling as MLflow params: cap, seed, and per stratum rows seen, kept and their weight."""
        held = Counter(self._held[STRATUM].tolist()) if len(self._held) else Counter()
        out: dict[str, Any] = {
            f"{prefix}_cap": self.cap,
            f"{prefix}_seed": self.seed,
            f"{prefix}_high_risk_threshold": self.high_risk,
            f"{prefix}_days": len(self.days),
            f"{prefix}_rows_seen": sum(self.seen.values()),
            f"{prefix}_rows_kept": len(self._held),
            f"{prefix}_peak_rows_held": self.peak_rows_held,
        }
        for s in STRATA:
            out[f"{prefix}_{s}_rows_seen"] = self.seen[s]
            out[f"{prefix}_{s}_rows_kept"] = held[s]
            out[f"{prefix}_{s}_fraction"] = round(held[s] / self.seen[s], 6) if self.seen[s] else 1.0
        return out
