"""The analyst label store: append-only, latest decision wins, analyst beats the rules, clear errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow.parquet as pq
import pytest
from trailguard.ingest.normalise import normalise, rows_to_table
from trailguard.model import labels
from trailguard.model.labels import (
    DEFAULT_TARGET,
    find_event,
    label_history,
    labels_since_last_training,
    mark_training,
    read_labels,
    record_label,
    target_sources,
    training_targets,
)
from trailguard.store.events import EventStore


def test_record_label_writes_one_file_per_decision_batch(tmp_path):
    path = record_label(tmp_path, "ev-1", 90, verdict="malicious", analyst="ana", note="stolen key")
    assert path.parent == tmp_path / "labels" and path.suffix == ".parquet"
    table = pq.read_table(path)
    assert table.column_names == ["eventID", "risk_score", "verdict", "analyst", "note", "time"]
    assert table.to_pylist()[0] | {"time": None} == {
        "eventID": "ev-1",
        "risk_score": 90,
        "verdict": "malicious",
        "analyst": "ana",
        "note": "stolen key",
        "time": None,
    }
    labels.record_labels(
        tmp_path, [{"eventID": "ev-2", "risk_score": 10}, {"eventID": "ev-3", "risk_score": 50}]
    )
    assert len(list((tmp_path / "labels").glob("*.parquet"))) == 2


def test_labels_are_append_only_and_the_latest_decision_wins(tmp_path):
    t0 = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)
    labels.record_labels(tmp_path, [{"eventID": "ev-1", "risk_score": 90, "analyst": "ana", "time": t0}])
    labels.record_labels(tmp_path, [{"eventID": "ev-2", "risk_score": 40, "analyst": "ana", "time": t0}])
    labels.record_labels(
        tmp_path,
        [
            {
                "eventID": "ev-1",
                "risk_score": 15,
                "verdict": "benign",
                "analyst": "bo",
                "note": "red team exercise",
                "time": t0 + timedelta(hours=1),
            }
        ],
    )
    history = label_history(tmp_path)
    assert history["eventID"].tolist() == ["ev-1", "ev-2", "ev-1"]  # nothing overwritten
    latest = read_labels(tmp_path).set_index("eventID")
    assert latest.loc["ev-1", "risk_score"] == 15 and latest.loc["ev-1", "verdict"] == "benign"
    assert latest.loc["ev-1", "analyst"] == "bo" and latest.loc["ev-2", "risk_score"] == 40
    assert len(latest) == 2


def test_default_verdict_follows_the_score(tmp_path):
    for event_id, score in (("a", 85), ("b", 50), ("c", 5)):
        record_label(tmp_path, event_id, score)
    verdicts = read_labels(tmp_path).set_index("eventID")["verdict"].to_dict()
    assert verdicts == {"a": "malicious", "b": "needs-review", "c": "benign"}


@pytest.mark.parametrize("score", [101, -1, 50.5, "high", True, None])
def test_bad_score_is_refused_with_a_clear_message(tmp_path, score):
    with pytest.raises(ValueError, match=r"risk_score for ev-1 must be a whole number from 0 to 100"):
        record_label(tmp_path, "ev-1", score)  # type: ignore[arg-type]
    assert not (tmp_path / "labels").exists()


def test_bad_verdict_is_refused_with_the_choices(tmp_path):
    with pytest.raises(
        ValueError, match=r"verdict for ev-1 must be one of malicious, benign, needs-review; got 'evil'"
    ):
        record_label(tmp_path, "ev-1", 90, verdict="evil")


def test_a_bad_row_stops_the_whole_batch(tmp_path):
    with pytest.raises(ValueError, match="eventID must be a non-empty string"):
        labels.record_labels(
            tmp_path, [{"eventID": "ok", "risk_score": 10}, {"eventID": "", "risk_score": 10}]
        )
    assert read_labels(tmp_path).empty


def test_training_targets_analyst_beats_rules_beats_default():
    events = pd.DataFrame({"eventID": ["a", "b", "c", "d"]}, index=[10, 11, 12, 13])
    lf = pd.DataFrame({"lf_score": [80, 0, 70, 0]}, index=events.index)
    analyst = pd.DataFrame({"eventID": ["c", "d", "zz"], "risk_score": [5, 95, 50]})
    targets = training_targets(events, lf, analyst)
    assert targets.index.tolist() == [10, 11, 12, 13]
    assert targets.tolist() == [80, DEFAULT_TARGET, 5, 95]
    assert target_sources(events, lf, analyst).tolist() == ["rules", "default", "analyst", "analyst"]
    assert training_targets(events, None, None).tolist() == [DEFAULT_TARGET] * 4


def test_relabel_changes_the_training_target(tmp_path):
    events = pd.DataFrame({"eventID": ["a", "b"]})
    lf = pd.DataFrame({"lf_score": [75, 0]})
    assert training_targets(events, lf, read_labels(tmp_path)).tolist() == [75, DEFAULT_TARGET]
    record_label(tmp_path, "a", 10, verdict="benign", note="expected admin work")
    record_label(tmp_path, "b", 80)
    assert training_targets(events, lf, read_labels(tmp_path)).tolist() == [10, 80]


def _record(event_id: str, when: str) -> dict:
    return {
        "eventID": event_id,
        "eventTime": when,
        "eventName": "ConsoleLogin",
        "eventSource": "signin.amazonaws.com",
        "eventType": "AwsConsoleSignIn",
        "sourceIPAddress": "8.8.8.8",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/alice"},
    }


def test_find_event_scans_the_store(tmp_path):
    store = EventStore(tmp_path)
    rows = [
        normalise(_record("old", "2026-11-18T10:00:00Z"), "k"),
        normalise(_record("new", "2026-11-20T10:00:00Z"), "k"),
    ]
    store.append_events(rows_to_table(rows), "run")
    found = find_event(store, "old")
    assert found is not None
    assert found["date"] == "2026-11-18" and found["eventName"] == "ConsoleLogin"
    assert found["userIdentity.arn"] == "arn:aws:iam::111122223333:user/alice"
    assert find_event(store, "missing") is None
    assert find_event(EventStore(tmp_path / "empty"), "old") is None


def test_labels_since_last_training(tmp_path):
    t0 = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)
    assert labels_since_last_training(tmp_path) == 0
    labels.record_labels(tmp_path, [{"eventID": "a", "risk_score": 90, "time": t0}])
    assert labels_since_last_training(tmp_path) == 1  # never trained: every decision is new
    mark_training(tmp_path, t0 + timedelta(minutes=5))
    assert labels_since_last_training(tmp_path) == 0
    labels.record_labels(tmp_path, [{"eventID": "b", "risk_score": 10, "time": t0 + timedelta(minutes=10)}])
    assert labels_since_last_training(tmp_path) == 1
