"""Real CloudTrail from the first day: each shape of public fixture set (one day, API calls but no console
sign-ins, only service events, a history of two events, each fixture file alone) goes through `trailguard
ingest`, `train`, `score` and `report` with exit code 0, and every stored event is scored - by a champion
where training could fit one, by the cold-start scorer (rules + rarity) where not, and the report says which."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from trailguard.cli import main
from trailguard.model.coldstart import COLD_START, fit_cold_start
from trailguard.model.features import API_CALL, build_features
from trailguard.model.scoring import read_scores
from trailguard.store.events import EventStore

from tests.conftest import FIXTURES


def _raw(name: str) -> list[dict]:
    """Fixture records with their provenance keys (tests only: ground truth)."""
    if not (FIXTURES / name).exists():
        pytest.skip(f"public CloudTrail fixtures not found at {FIXTURES}")
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def _published(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]


def _sets() -> dict[str, list[dict]]:
    stratus, panther, docs = (
        _raw(n)
        for n in (
            "stratus_red_team_detonations.ndjson",
            "panther_rule_tests.ndjson",
            "aws_docs_samples.ndjson",
        )
    )
    everything = stratus + panther + docs
    return {
        "one_day": [r for r in stratus if str(r.get("eventTime", "")).startswith("2024-08-02")],
        "api_calls_no_sign_ins": [r for r in panther if r.get("eventType") == "AwsApiCall"],
        "only_service_events": [
            r for r in everything if r.get("eventType") in ("AwsServiceEvent", "AwsVpceEvent")
        ],
        "history_of_two_events": [r for r in docs if r.get("eventType") == "AwsConsoleSignIn"][:1]
        + [r for r in docs if r.get("eventType") == "AwsApiCall"][:1],
        "aws_docs_samples": docs,
        "panther_rule_tests": panther,
        "stratus_red_team_detonations": stratus,
    }


def run_pipeline(tmp_path: Path, records: list[dict]) -> tuple[EventStore, list[str]]:
    src = tmp_path / "evidence"
    src.mkdir()
    (src / "export.ndjson").write_text("\n".join(json.dumps(r) for r in _published(records)) + "\n")
    data = str(tmp_path / "data")
    assert main(["--data", data, "ingest", "--source", str(src), "--workers", "1"]) == 0
    assert main(["--data", data, "train"]) == 0
    store = EventStore(Path(data))
    days = store.dates()
    for day in days:
        assert main(["--data", data, "score", "--date", day]) == 0
        assert main(["--data", data, "report", "--date", day]) == 0
    return store, days


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "one_day",
        "api_calls_no_sign_ins",
        "only_service_events",
        "history_of_two_events",
        "aws_docs_samples",
        "panther_rule_tests",
        "stratus_red_team_detonations",
    ],
)
def test_every_event_of_every_set_is_scored_and_reported(tmp_path, name, capsys):
    records = _sets()[name]
    assert records, name
    store, days = run_pipeline(tmp_path, records)
    assert days
    total = 0
    for day in days:
        stored = set(store.read_partition(day, ["eventID"]).column("eventID").to_pylist())
        scores = read_scores(store.root, day)
        assert set(scores["eventID"]) == stored, f"{day}: every stored event has exactly one score"
        assert scores["risk_score"].between(0, 100).all()
        assert scores["model_name"].notna().all() and scores["scorer_note"].str.len().gt(0).all()
        cold = scores[scores["model_name"] == COLD_START]
        assert (cold["model_version"].fillna("") == "").all()
        report = json.loads((store.root / "reports" / day / "report.json").read_text())
        assert report["summary"]["events_scored"] == len(stored), (
            "the report's counts add up to the day's events"
        )
        assert sum(m["events"] for m in report["models"]) == len(stored)
        for m in report["models"]:
            if m["model_name"] == COLD_START:
                assert m["note"] and ("no model" in m["note"] or "cannot be loaded" in m["note"])
        total += len(stored)
    print(f"{name}: {total} events scored on {len(days)} day(s)")


def test_cold_start_scorer_on_one_day_without_history_ranks_the_rule_hit_and_the_odd_one_first():
    """Unit: no history, 40 routine reads by one role and one odd principal's call: the odd call scores
    above the routine ones on rarity alone; a rule score lifts an event above both."""
    base = {
        "eventType": "AwsApiCall",
        "eventSource": "s3.amazonaws.com",
        "awsRegion": "eu-west-1",
        "userIdentity.type": "AssumedRole",
        "recipientAccountId": "111122223333",
        "userIdentity.accountId": "111122223333",
    }
    rows = [
        {
            **base,
            "eventID": f"r{i}",
            "eventTime": f"2024-08-02T10:{i:02d}:00Z",
            "eventName": "GetObject",
            "sourceIPAddress": "10.0.0.1",
            "userAgent": "aws-sdk-java/1.0",
            "userIdentity.arn": "arn:aws:sts::1:assumed-role/app/x",
        }
        for i in range(40)
    ]
    rows.append(
        {
            **base,
            "eventID": "odd",
            "eventTime": "2024-08-02T10:50:00Z",
            "eventName": "ListBuckets",
            "eventSource": "s3.amazonaws.com",
            "sourceIPAddress": "203.0.113.9",
            "userAgent": "curl/8.0",
            "userIdentity.type": "IAMUser",
            "userIdentity.arn": "arn:aws:iam::1:user/mallory",
        }
    )
    day = pd.DataFrame(rows)
    features = build_features(day, None)
    features["rule_score"] = 0.0
    scorer = fit_cold_start(
        API_CALL, features.iloc[0:0], features, history_days=1, min_events=10, day="2024-08-02"
    )
    risk = scorer.predict_components(features)["risk_score"].to_numpy()
    assert not np.isnan(risk).any()
    odd = features["eventID"].eq("odd").to_numpy()
    assert risk[odd][0] > np.max(risk[~odd])
    assert "1 day of history" in scorer.note and not any(c.startswith("first_") for c in scorer.columns)
    features.loc[features["eventID"].eq("r3"), "rule_score"] = 70.0
    risk = scorer.predict_components(features)["risk_score"].to_numpy()
    assert features["eventID"].iloc[int(np.argmax(risk))] == "r3"


ODD_DAYS = {
    "one_event": [{"eventID": "a", "eventTime": "2024-08-02T00:00:00Z", "eventType": "AwsApiCall"}],
    "only_service_roles": [
        {
            "eventID": f"s{i}",
            "eventTime": f"2024-08-02T0{i % 10}:00:00Z",
            "eventType": "AwsServiceEvent",
            "eventName": "AssumeRole",
            "eventSource": "sts.amazonaws.com",
            "userIdentity.type": "AWSService",
            "userIdentity.invokedBy": "lambda.amazonaws.com",
            "sourceIPAddress": "lambda.amazonaws.com",
        }
        for i in range(12)
    ],
    "sign_ins_only_one_account_one_region": [
        {
            "eventID": f"c{i}",
            "eventTime": f"2024-08-02T1{i % 10}:00:00Z",
            "eventType": "AwsConsoleSignIn",
            "eventName": "ConsoleLogin",
            "awsRegion": "us-east-1",
            "recipientAccountId": "111122223333",
            "userIdentity.type": "IAMUser",
            "userIdentity.arn": f"arn:aws:iam::111122223333:user/u{i % 2}",
            "responseElements.ConsoleLogin": "Success" if i % 3 else "Failure",
            "sourceIPAddress": "198.51.100.7",
        }
        for i in range(15)
    ],
}


@pytest.mark.parametrize("shape", sorted(ODD_DAYS))
def test_odd_days_without_history_give_finite_features_and_scores(shape):
    """0 days of history, one event, no IP or user agent, only service roles, no sign-ins or nothing but
    them: every model input is a finite number and the cold-start scorer scores every row."""
    from trailguard.model.features import FEATURE_SETS, RULE_SCORE, USE_CASES
    from trailguard.model.training import model_input

    day = pd.DataFrame(ODD_DAYS[shape])
    features = build_features(day, None)
    features[RULE_SCORE] = 0.0
    assert len(features) == len(day)
    for uc in USE_CASES:
        X = model_input(features, FEATURE_SETS[uc])
        numbers = X[[c for c in X.columns if c not in FEATURE_SETS[uc].categorical_columns]].to_numpy(
            np.float64
        )
        assert np.isfinite(numbers).all(), f"{shape}/{uc}: a NaN or infinite model input"
    for uc in set(features["use_case"]):
        rows = features[features["use_case"].eq(uc).to_numpy()]
        scorer = fit_cold_start(uc, rows.iloc[0:0], rows, history_days=1, min_events=10, day="2024-08-02")
        risk = scorer.predict_components(rows)["risk_score"].to_numpy()
        assert len(risk) == len(rows) and np.isfinite(risk).all() and ((risk >= 0) & (risk <= 100)).all()
        assert (scorer.detector is None) == (len(rows) < 10), (
            "a detector exactly when there are enough events"
        )
