"""Hostile corpus, same content same result (issue 15, row 17): two stores holding the same events,
written differently (one worker and large batches; two workers, small batches and two runs), train the
same models and score every event of the next day identically."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from trailguard.demo import generator
from trailguard.ingest.ingestion import ingest
from trailguard.ingest.sources import LocalFolderSource
from trailguard.model.scoring import read_scores, score_day
from trailguard.model.training import train, training_data
from trailguard.store.events import EventStore

END = date(2026, 11, 20)


def metrics(result) -> dict:
    return {
        (uc, name): (
            round(c.rmse, 9),
            round(c.r2, 9),
            round(c.average_precision, 9),
            tuple(sorted((k, round(v, 9)) for k, v in c.random_split.items())),
        )
        for uc, res in result.use_cases.items()
        for name, c in res.candidates.items()
    }


@pytest.mark.slow
def test_same_events_written_differently_train_and_score_the_same(tmp_path):
    logs = tmp_path / "logs"
    generator.generate(logs, days=10, events=9000, end=END, bad_files=False)
    one, two = EventStore(tmp_path / "one"), EventStore(tmp_path / "two")
    ingest(LocalFolderSource(logs), one, workers=1, batch_records=100_000)
    ingest(LocalFolderSource(logs), two, workers=2, batch_records=300, start=date(2026, 11, 16))
    ingest(LocalFolderSource(logs), two, workers=2, batch_records=700)
    assert [one.count_rows(d) for d in one.dates()] == [two.count_rows(d) for d in two.dates()]
    assert [p.name for p in one.partition_files(one.dates()[-1])] != [
        p.name for p in two.partition_files(two.dates()[-1])
    ]

    days = one.dates()[:-1]
    first, second = (training_data(s, days)["api_call"] for s in (one, two))
    pd.testing.assert_frame_equal(first, second)  # the features of the same events, in the events' order

    until, scored = date(2026, 11, 19), date(2026, 11, 20)
    results = [
        train(s, until=until, tracking_uri=f"sqlite:///{tmp_path / s.root.name}.db") for s in (one, two)
    ]
    assert metrics(results[0]) == metrics(results[1]) and metrics(results[0])
    assert [r.use_cases[uc].best for r in results for uc in sorted(r.use_cases)][:2] == [
        r.use_cases[uc].best for r in results for uc in sorted(r.use_cases)
    ][2:]
    frames = []
    for store in (one, two):
        score_day(store, scored, tracking_uri=f"sqlite:///{tmp_path / store.root.name}.db")
        frames.append(read_scores(store.root, scored).set_index("eventID")["risk_score"].sort_index())
    assert len(frames[0]) > 100
    pd.testing.assert_series_equal(frames[0], frames[1])
