"""Scoring a day in partitions (account x region) as the daily DAG maps it, against scoring the whole day:
the same files, the same scores, and reruns that replace instead of adding.

One small demo store (4 days) plus a few events whose account and region are hostile or missing; the
champions are fitted here on the first days (no MLflow), a ridge for API calls (its reasons include the
linear model's contributions) and gradient boosting for console sign-ins.
"""

from __future__ import annotations

import re
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from trailguard.model.features import FEATURE_SETS, RULE_SCORE, load_day_features
from trailguard.model.scoring import (
    LEGACY_FILE,
    Champion,
    day_partitions,
    partition_key,
    read_scores,
    score_day,
    scores_dir,
)
from trailguard.model.training import (
    ANOMALY_WEIGHT,
    RiskModel,
    detector_pipeline,
    hgb_pipeline,
    ridge_pipeline,
    training_data,
)

SAFE = re.compile(r"^[A-Za-z0-9._=-]+$")
HOSTILE = [  # (recipientAccountId, userIdentity.accountId, awsRegion)
    ("../../etc/passwd", "111122223333", "us-east-1"),
    (None, "444455556666", "eu-west-1"),  # no recipient: the caller's account
    (None, None, None),  # nothing at all: unknown / unknown
    ("123-456", "123-456", "x" * 400),  # a dash in the account, an overlong region
    ("123", "123", "456-eu"),  # must not share a file name with the one above
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from trailguard.demo import generator
    from trailguard.ingest.ingestion import ingest
    from trailguard.ingest.normalise import normalise, rows_to_table
    from trailguard.ingest.sources import LocalFolderSource
    from trailguard.store.events import EventStore

    root = tmp_path_factory.mktemp("scoring")
    summary = generator.generate(root / "logs", days=4, events=4_000, bad_files=False)
    store = EventStore(root / "data")
    ingest(LocalFolderSource(root / "logs" / "AWSLogs"), store)
    records = []
    for i, (recipient, caller, region) in enumerate(HOSTILE * 3):
        record = {
            "eventVersion": "1.09", "eventID": f"hostile-{i}", "eventTime": f"{summary.end}T10:{i:02d}:00Z",
            "eventSource": "iam.amazonaws.com", "eventName": "ListUsers" if i % 2 else "CreateAccessKey",
            "eventType": "AwsApiCall", "sourceIPAddress": "203.0.113.9", "userAgent": "aws-cli/2.17.0",
            "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{caller or '0'}:user/mallory",
                             **({"accountId": caller} if caller else {})},
        }  # fmt: skip
        if recipient:
            record["recipientAccountId"] = recipient
        if region:
            record["awsRegion"] = region
        records.append(normalise(record, "test"))
    store.append_events(rows_to_table(records), "hostile")
    return store


@pytest.fixture(scope="module")
def champions(store):
    days = store.dates()
    data = training_data(store, days[:-1])
    out = {}
    for uc, builder in (("api_call", ridge_pipeline), ("console_login", hgb_pipeline)):
        fs = FEATURE_SETS[uc]
        frame = data[uc]
        model = RiskModel(builder(fs), detector_pipeline(fs), fs.columns, weight=ANOMALY_WEIGHT)
        model.fit(frame[list(fs.columns)], frame["target"].to_numpy(float))
        out[uc] = Champion(f"test-{uc}", "1", model)
    return out


def _files(store, day) -> dict[str, pa.Table]:
    folder = scores_dir(store.root, day)
    return {p.name: pq.read_table(p) for p in sorted(folder.glob("*.parquet"))}


def test_partition_keys_are_file_name_safe_and_read_back():
    assert partition_key("123456789012", account=True) == "123456789012"
    assert partition_key("us-east-1") == "us-east-1"
    assert partition_key(None) == partition_key("") == "unknown"
    assert partition_key("../../etc/passwd", account=True) == "etc_passwd"
    assert "-" not in partition_key("123-456", account=True)
    long = partition_key("x" * 400)
    assert len(long) <= 100 and SAFE.match(long)
    for value in ("../../etc/passwd", "123-456", "x" * 400, None, "a b/c"):  # a key is its own key
        for account in (True, False):
            key = partition_key(value, account=account)
            assert partition_key(key, account=account) == key


def test_day_partitions_cover_every_event_with_safe_keys(store):
    day = store.dates()[-1]
    parts = day_partitions(store, day)
    assert sum(p["events"] for p in parts) == store.count_rows(day)
    assert parts == sorted(parts, key=lambda p: (p["account"], p["region"]))
    assert len({(p["account"], p["region"]) for p in parts}) == len(parts)
    for part in parts:
        assert SAFE.match(part["account"]) and SAFE.match(part["region"]) and "-" not in part["account"]
    keys = {(p["account"], p["region"]) for p in parts}
    assert {("etc_passwd", "us-east-1"), ("444455556666", "eu-west-1"), ("unknown", "unknown")} <= keys
    assert len([k for k in keys if k[0] in ("123_456", "123")]) == 2
    from trailguard.demo.organisation import ACCOUNTS, REGIONS

    assert {(a.id, r) for a in ACCOUNTS for r in REGIONS} & keys  # the demo's own partitions
    assert {p["account"] for p in parts} >= {a.id for a in ACCOUNTS if (a.id, "us-east-1") in keys}
    assert day_partitions(store, "1999-01-01") == []


def test_scoring_every_partition_gives_the_whole_days_files(store, champions):
    day = store.dates()[-1]
    whole = score_day(store, day, champions=champions)
    assert whole.partition is None and len(whole.files) == len(day_partitions(store, day))
    by_day = _files(store, day)
    assert all(name.startswith("part-") for name in by_day)
    assert sum(t.num_rows for t in by_day.values()) == sum(whole.scored.values())

    for path in scores_dir(store.root, day).iterdir():
        path.unlink()
    results = [
        score_day(store, day, account=p["account"], region=p["region"], champions=champions)
        for p in day_partitions(store, day)
    ]
    by_partition = _files(store, day)
    assert list(by_partition) == list(by_day)
    for name, table in by_day.items():
        assert by_partition[name].equals(table), name
    assert sum(r.events for r in results) == whole.events
    assert {k: sum(r.scored.get(k, 0) for r in results) for k in whole.scored} == whole.scored
    scores = read_scores(store.root, day)
    assert scores["eventID"].is_unique and len(scores) == sum(whole.scored.values())
    assert (scores["reasons"] != "").any() and scores["reasons"].str.contains("model: ").any()
    # the hostile events were scored, in their own partitions
    hostile = scores[scores["eventID"].str.startswith("hostile-")]
    assert len(hostile) == len(HOSTILE) * 3 and hostile["risk_score"].between(0, 100).all()


def test_rescoring_replaces_and_never_duplicates(store, champions):
    day = store.dates()[-1]
    score_day(store, day, champions=champions)
    first = _files(store, day)
    folder = scores_dir(store.root, day)
    stale = folder / "part-999999999999-nowhere.parquet"  # a partition whose events are gone
    pq.write_table(next(iter(first.values())).slice(0, 1), stale)
    part = day_partitions(store, day)[0]

    again = score_day(store, day, account=part["account"], region=part["region"], champions=champions)
    assert len(again.files) == 1 and stale.exists()  # a partition's run leaves other partitions alone
    assert _files(store, day).keys() == first.keys() | {stale.name}
    score_day(store, day, champions=champions)
    after = _files(store, day)
    assert after.keys() == first.keys()  # the whole day's run drops what it did not write
    for name, table in first.items():
        assert after[name].equals(table), name

    # a day scored by an earlier version (one whole-day file): a partition's run takes its rows out of
    # it, a whole-day run replaces it
    everything = pa.concat_tables(list(first.values()))
    for path in folder.iterdir():
        path.unlink()
    pq.write_table(everything, folder / LEGACY_FILE)
    score_day(store, day, account=part["account"], region=part["region"], champions=champions)
    scores = read_scores(store.root, day)
    assert scores["eventID"].is_unique and len(scores) == everything.num_rows
    assert (
        pq.read_table(folder / LEGACY_FILE).num_rows
        == everything.num_rows - after[f"part-{part['account']}-{part['region']}.parquet"].num_rows
    )
    score_day(store, day, champions=champions)
    assert sorted(p.name for p in folder.iterdir()) == sorted(first)


def test_a_partition_without_events_leaves_no_file(store, champions):
    day = store.dates()[-1]
    result = score_day(store, day, account="000000000000", region="nowhere-1", champions=champions)
    assert result.events == 0 and result.files == []
    assert not (scores_dir(store.root, day) / "part-000000000000-nowhere-1.parquet").exists()


def test_the_report_reads_every_part(store, champions):
    from trailguard.report.daily import build_report
    from trailguard.report.daily import read_scores as report_scores

    day = store.dates()[-1]
    score_day(store, day, champions=champions)
    scores = report_scores(store.root, day)
    assert scores["eventID"].is_unique and len(scores) == len(read_scores(store.root, day))
    report = build_report(store.root, day, top_k=10)
    assert len(report.top_events) == 10
    assert report.summary["events_scored"] == len(scores)


def test_an_empty_day_is_scored_as_empty(store, champions):
    day = (pd.Timestamp(store.dates()[0]) - timedelta(days=5)).date().isoformat()
    result = score_day(store, day, champions=champions)
    assert result.events == 0 and [p.name for p in result.files] == ["empty.parquet"]
    assert len(read_scores(store.root, day)) == 0
    assert np.all(
        read_scores(store.root, day).columns[:4] == ["eventID", "eventTime", "use_case", "risk_score"]
    )


def test_reasons_of_rows_nothing_explains_are_empty(store, champions):
    """A partition of routine events (no rule, nothing new, low risk) gets empty reasons, not an error."""
    from trailguard.model.scoring import REASON_COLUMNS, explain
    from trailguard.model.training import model_input

    day = store.dates()[-1]
    rows = load_day_features(store, day)
    rows = rows[rows["use_case"] == "api_call"].head(50).reset_index(drop=True)
    flags = [c for c in rows.columns if c.startswith(("first_", "novel_", "last_hour_"))]
    rows[
        flags + ["new_principal", "is_root", "access_denied", "cross_account", "ua_offensive", RULE_SCORE]
    ] = 0.0
    rows = rows[list(dict.fromkeys((*FEATURE_SETS["api_call"].columns, *REASON_COLUMNS)))]
    comps = pd.DataFrame(
        {"risk_score": 10.0, "supervised_score": 10.0, "anomaly_score": 0.0}, index=rows.index
    )
    model = champions["api_call"].model
    assert model_input(rows, FEATURE_SETS["api_call"]).shape[0] == 50
    assert explain(rows, np.full(50, "", dtype=object), comps, model).to_pylist() == [""] * 50
    comps["risk_score"] = 45.0  # now the model's own reason (its largest contribution, or the call) appears
    assert all(explain(rows, np.full(50, "", dtype=object), comps, model).to_pylist())
