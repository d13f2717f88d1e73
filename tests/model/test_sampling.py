"""The training sampler: a bounded stratified sample of a stream of days that always keeps every labelled
and every high-risk event, holds at most its cap plus one day whatever the number of days, and draws the
same sample for the same seed and events, in whatever order they are read. The last test reads a real
demo store day by day."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from trailguard.model.sampling import (
    DEFAULT,
    HIGH_RISK,
    KEPT,
    RULES,
    StratifiedReservoir,
    sample_keys,
    strata,
)


def _day(day: int, n: int, rng: np.random.Generator, labelled: float = 0.01) -> pd.DataFrame:
    """A day of ``n`` rows: mostly routine, some rule hits (a few high-risk), a few analyst labels (some
    benign); ``x`` a number to check the sample's uniformity on."""
    source = rng.choice(["default", "rules", "analyst"], n, p=[0.94 - labelled, 0.06, labelled])
    high = min(0.4, labelled * 40)  # the share of rule hits and labels at or above HIGH_RISK
    scores = rng.choice([20.0, 40.0, 55.0, 75.0, 90.0], n, p=[(1 - high) / 3] * 3 + [high / 2] * 2)
    target = np.where(source == "default", 5.0, scores)
    return pd.DataFrame(
        {
            "eventID": [f"{day:03d}-{i:05d}" for i in range(n)],
            "day": f"d{day:03d}",
            "target": target,
            "target_source": source,
            "x": rng.random(n),
        }
    )


def _feed(reservoir: StratifiedReservoir, days: list[pd.DataFrame]) -> pd.DataFrame:
    for frame in days:
        admit = reservoir.offer(
            frame["day"].iloc[0], frame["eventID"], frame["target"], frame["target_source"]
        )
        reservoir.add(frame[admit])
    return reservoir.sample()


def _days(count: int, rows: int, seed: int = 0, labelled: float = 0.01) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    return [_day(d, rows, rng, labelled) for d in range(count)]


def test_strata_define_always_kept_as_labelled_or_high_risk():
    got = strata(
        np.array([5, 40, 75, 10, 90, 5]),
        np.array(["default", "rules", "rules", "analyst", "analyst", "rules"]),
    )
    assert got.tolist() == [DEFAULT, RULES, KEPT, KEPT, KEPT, RULES]


def test_every_labelled_and_high_risk_event_is_kept_and_the_rest_stays_under_the_cap():
    days = _days(30, 2_000)
    everything = pd.concat(days, ignore_index=True)
    must = everything[(everything["target_source"] == "analyst") | (everything["target"] >= HIGH_RISK)]
    cap = 3_000
    sample = _feed(StratifiedReservoir(cap, seed=7), days)
    assert len(must) < cap  # the case the cap is meant for: alerts are a small share
    assert set(must["eventID"]) <= set(sample["eventID"])
    assert len(sample) <= cap
    # every stratum has a share, and the weights stand for every row seen
    assert set(sample["_stratum"]) == {KEPT, RULES, DEFAULT}
    for name, part in sample.groupby("_stratum"):
        seen = int((strata(everything["target"], everything["target_source"]) == name).sum())
        assert part["weight"].sum() == pytest.approx(seen)
    assert (sample.loc[sample["_stratum"] == KEPT, "weight"] == 1.0).all()
    # the routine rows are a uniform sample: their mean of x is that of all routine rows
    routine = sample[sample["_stratum"] == DEFAULT]
    assert routine["x"].mean() == pytest.approx(0.5, abs=0.03)
    assert routine["day"].nunique() == 30  # drawn from every day, not the first or last ones


@pytest.mark.parametrize("count", [3, 30, 120])
def test_rows_held_never_exceed_the_cap_plus_one_day_whatever_the_number_of_days(count):
    cap, rows = 2_000, 1_000
    reservoir = StratifiedReservoir(cap, seed=1)
    always = 0
    for frame in _days(count, rows, seed=count, labelled=0.001):  # alerts: about 4 a day
        always += int(((frame["target_source"] == "analyst") | (frame["target"] >= HIGH_RISK)).sum())
        admit = reservoir.offer(
            frame["day"].iloc[0], frame["eventID"], frame["target"], frame["target_source"]
        )
        assert reservoir.add(frame[admit]) <= cap
        assert reservoir.peak_rows_held <= cap + rows
    assert always < cap * 0.9
    assert sum(reservoir.seen.values()) == count * rows
    info = reservoir.info()
    assert info["sample_rows_seen"] == count * rows and info["sample_rows_kept"] == reservoir.rows_held
    assert info["sample_cap"] == cap and info["sample_seed"] == 1


def test_alerts_beyond_the_cap_are_all_kept_and_routine_rows_keep_a_share():
    rng = np.random.default_rng(3)
    days = []
    for d in range(10):
        frame = _day(d, 1_000, rng)
        frame.loc[:199, ["target", "target_source"]] = [80.0, "rules"]  # 200 high-risk a day
        days.append(frame)
    sample = _feed(StratifiedReservoir(1_000, seed=3), days)
    assert (sample["_stratum"] == KEPT).sum() >= 2_000
    assert (sample["_stratum"] == DEFAULT).sum() >= 50  # a tenth of the cap stays for the sampled strata


def test_the_same_seed_draws_the_same_sample_whatever_the_reading_order():
    days = _days(12, 1_500)
    first = _feed(StratifiedReservoir(2_000, seed=42), days)
    # the same events read in another order (days reversed, rows shuffled within each day)
    shuffled = [d.sample(frac=1.0, random_state=5) for d in reversed(days)]
    second = _feed(StratifiedReservoir(2_000, seed=42), shuffled)
    pd.testing.assert_frame_equal(first, second)
    other = _feed(StratifiedReservoir(2_000, seed=43), days)
    assert set(other["eventID"]) != set(first["eventID"])


def test_uniform_threshold_gives_a_uniform_sample_of_every_row_seen():
    reservoir = StratifiedReservoir(5_000, seed=9)
    sample = _feed(reservoir, _days(20, 2_000))
    uniform = sample[sample["_sample_key"] < reservoir.uniform_threshold(1_000)]
    assert 700 <= len(uniform) <= 1_300
    # as many alerts as their share of the stream, not their (much larger) share of the sample
    share = reservoir.seen[KEPT] / sum(reservoir.seen.values())
    assert (uniform["_stratum"] == KEPT).mean() == pytest.approx(share, abs=0.02)


def test_offer_and_add_go_in_pairs():
    reservoir = StratifiedReservoir(10, seed=0)
    with pytest.raises(RuntimeError, match="offer"):
        reservoir.add(pd.DataFrame())
    reservoir.offer("d", ["a", "b"], [5, 5], ["default", "default"])
    with pytest.raises(ValueError, match="1 rows added for 2 admitted"):
        reservoir.add(pd.DataFrame({"eventID": ["a"]}))
    with pytest.raises(ValueError, match="at least 1 row"):
        StratifiedReservoir(0, seed=0)


@pytest.fixture(scope="module")
def labelled_store(tmp_path_factory):
    """A small demo store (6 days) whose injected attacks analysts have scored."""
    from trailguard.demo import generator
    from trailguard.ingest.ingestion import ingest
    from trailguard.ingest.sources import LocalFolderSource
    from trailguard.model.labels import record_labels
    from trailguard.store.events import EventStore

    root = tmp_path_factory.mktemp("sampled")
    summary = generator.generate(root / "logs", days=6, events=6_000, bad_files=False)
    store = EventStore(root / "data")
    ingest(LocalFolderSource(root / "logs"), store)
    truth = pd.read_csv(summary.ground_truth)
    record_labels(
        store.root,
        [
            {"eventID": e, "risk_score": int(r)}
            for e, r in zip(truth["eventID"], truth["risk_score"], strict=True)
        ],
    )
    return store


def test_training_reads_day_by_day_into_the_sample_and_keeps_every_label_and_alert(labelled_store):
    from trailguard.model.training import sample_training_data, training_data

    store = labelled_store
    days = store.dates()
    full = training_data(store, days)
    sampled = sample_training_data(store, days, days[-1:], max_train_rows=400, max_test_rows=150, seed=5)
    for uc, data in sampled.items():
        everything = full[uc]
        rows = data.rows()
        by_day = everything["day"].value_counts()
        assert data.rows_by_day == by_day.sort_index().to_dict()  # every row counted
        must = everything[(everything["target_source"] == "analyst") | (everything["target"] >= HIGH_RISK)]
        assert set(must["eventID"]) <= set(rows["eventID"])
        assert data.train.rows_held <= max(400, data.train.seen[KEPT] + 40)
        assert data.test.rows_held <= max(150, data.test.seen[KEPT] + 15)
        assert data.train.peak_rows_held <= 400 + by_day.max()
        assert set(rows.loc[rows["day"] == days[-1], "eventID"]) <= set(
            everything.loc[everything["day"] == days[-1], "eventID"]
        )
        # a kept row's features and target are those the whole history gives it
        columns = [c for c in everything.columns if c in rows.columns]
        expected = everything.set_index("eventID").loc[
            rows["eventID"], [c for c in columns if c != "eventID"]
        ]
        pd.testing.assert_frame_equal(
            rows.set_index("eventID")[expected.columns], expected, check_dtype=False
        )
    # the features training reads are those scoring computes for the same day from the whole partition
    from trailguard.detect.engine import label_events
    from trailguard.model.features import FEATURE_SETS, add_rule_score, load_day_events, load_day_features
    from trailguard.model.training import model_input

    events = load_day_events(store, days[-1])
    scored = add_rule_score(load_day_features(store, days[-1], events=events), label_events(events))
    api = scored[scored["use_case"] == "api_call"]
    expected = model_input(api, FEATURE_SETS["api_call"]).set_index(api["eventID"].to_numpy())
    got = full["api_call"].set_index("eventID").loc[expected.index, expected.columns]
    pd.testing.assert_frame_equal(got, expected, check_names=False)
    again = sample_training_data(store, days, days[-1:], max_train_rows=400, max_test_rows=150, seed=5)
    for uc in sampled:
        pd.testing.assert_frame_equal(sampled[uc].rows(), again[uc].rows())


def test_of_a_day_larger_than_the_cap_only_what_can_stay_is_admitted():
    """A day of 20,000 rows against a cap of 500: only the day's alerts and at most the cap's worth of the
    rest are admitted (the rest never need their model columns built), and the sample is the same."""
    days = _days(6, 20_000, seed=4, labelled=0.0005)
    reservoir = StratifiedReservoir(500, seed=2)
    for frame in days:
        admit = reservoir.offer(
            frame["day"].iloc[0], frame["eventID"], frame["target"], frame["target_source"]
        )
        alerts = ((frame["target_source"] == "analyst") | (frame["target"] >= HIGH_RISK)).to_numpy()
        assert admit.sum() <= alerts.sum() + 500
        reservoir.add(frame[admit])
    assert reservoir.peak_rows_held <= 2 * 500 + reservoir.seen[KEPT]
    # the same as a reservoir that took every row of every day and trimmed afterwards
    everything = pd.concat(days, ignore_index=True)
    keys = everything.assign(
        stratum=strata(everything["target"], everything["target_source"]),
        key=sample_keys(everything["eventID"], 2),
    )
    sample = reservoir.sample()
    for name in (RULES, DEFAULT):
        part = keys[keys["stratum"] == name]
        smallest = set(part.nsmallest((sample["_stratum"] == name).sum(), "key")["eventID"])
        assert smallest == set(sample.loc[sample["_stratum"] == name, "eventID"])


def test_a_day_built_in_pieces_gives_the_same_features_and_sample_as_the_whole_day(labelled_store):
    """Training builds a large day's features a piece (of whole principals) at a time: the
    features and the seeded sample are those of the whole day, and each piece's frame is gone once the
    next one is built."""
    import weakref

    from trailguard.model.features import load_rule_events, principal_of, profile_fresh
    from trailguard.model.labels import read_labels
    from trailguard.model.training import (
        _labelled_days,
        day_pieces,
        sample_training_data,
        training_data,
    )

    store = labelled_store
    days = store.dates()
    whole = training_data(store, days, piece_events=None)  # whole days: also stores each day's profile
    assert all(profile_fresh(store, day) for day in days)
    events = load_rule_events(store, days[2])
    pieces = day_pieces(events, 150)
    assert len(pieces) > 2
    assert (np.sum(pieces, axis=0) == 1).all()  # every event in exactly one piece
    principal = principal_of(events).to_numpy()
    for rows in pieces:  # a principal is never split between pieces
        assert not set(principal[rows]) & set(principal[~rows])
    assert len(day_pieces(events, len(events))) == 1

    in_pieces = {}
    seen_frames = []
    for day, frame, targets, sources in _labelled_days(store, days, 30, read_labels(store.root), None, 150):
        assert len(frame) == len(targets) == len(sources)
        seen_frames.append(weakref.ref(frame))
        in_pieces.setdefault(day, 0)
        in_pieces[day] += 1
        del frame
        assert all(ref() is None for ref in seen_frames[:-1])  # earlier pieces and days are freed
    assert max(in_pieces.values()) > 2
    pieced = training_data(store, days, piece_events=150)
    for uc in whole:
        pd.testing.assert_frame_equal(pieced[uc], whole[uc])

    kwargs = dict(max_train_rows=400, max_test_rows=150, seed=5)
    one = sample_training_data(store, days, days[-1:], piece_events=None, **kwargs)
    many = sample_training_data(store, days, days[-1:], piece_events=150, **kwargs)
    for uc in one:
        assert many[uc].rows_by_day == one[uc].rows_by_day
        pd.testing.assert_frame_equal(many[uc].rows(), one[uc].rows())
