"""Training, the champion rule and scoring, on a real MLflow store (SQLite in tmp_path) and demo data.

The end-to-end tests share one small demo store (20 days, about 16,000 events, its injected attacks
already triaged by analysts) and one first training; they are marked slow. The metric and model tests
at the top are fast.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import pytest
from trailguard.model.features import FEATURE_SETS, add_rule_score, load_day_events, load_day_features
from trailguard.model.labels import read_labels, record_label
from trailguard.model.training import (
    ANOMALY_QUANTILE,
    ANOMALY_WEIGHT,
    COMBINATION_FORMULA,
    MODEL_NAMES,
    CandidateResult,
    RiskModel,
    choose_best,
    evaluate,
    model_input,
    ranking_metrics,
    stratified_sample,
    train,
    training_data,
)

log = logging.getLogger(__name__)
DEMO_DAYS, DEMO_EVENTS = 20, 16_000
CANDIDATES = {
    "paper_linear_regression",
    "ridge",
    "hist_gradient_boosting",
    "isolation_forest",
    "ridge+isolation_forest",
    "hist_gradient_boosting+isolation_forest",
}


# -- fast: metrics and the model object ------------------------------------------------------------------
def test_ranking_metrics_known_answers():
    positive = np.array([1, 0, 1, 0, 0, 1], dtype=bool)
    scores = np.array([90, 80, 70, 10, 5, 1], dtype=float)
    days = np.array(["d1", "d1", "d1", "d2", "d2", "d2"])
    m = ranking_metrics(positive, scores, days, top_n=2)
    assert m["precision_at_2"] == pytest.approx((1 / 2 + 0 / 2) / 2)  # d1: 90 yes, 80 no; d2: 10 no, 5 no
    assert m["recall_at_2"] == pytest.approx(1 / 3)
    assert m["average_precision"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 3)
    assert m["high_risk_events"] == 3


def test_evaluate_clips_to_the_score_range_and_counts_high_risk_targets():
    y = np.array([5, 5, 90, 80])
    pred = np.array([-20, 10, 130, 70])
    m = evaluate(y, pred, np.array(["d"] * 4))
    assert m["mae"] == pytest.approx((5 + 5 + 10 + 10) / 4)
    assert m["average_precision"] == pytest.approx(1.0) and m["high_risk_events"] == 2


def test_stratified_sample_keeps_every_informative_row_and_reweights_the_rest():
    frame = pd.DataFrame(
        {
            "target": [5.0] * 1000 + [80.0] * 10 + [40.0] * 5,
            "target_source": ["default"] * 1000 + ["rules"] * 10 + ["analyst"] * 5,
        }
    )
    sample, weights, info = stratified_sample(frame, 215)
    assert len(sample) == 215
    assert (sample["target_source"] != "default").sum() == 15
    default = (sample["target_source"] == "default").to_numpy()
    assert weights[default] == pytest.approx(np.full(200, 1000 / 200))
    assert weights[~default] == pytest.approx(np.ones(15))
    assert info["sample_default_rows_fraction"] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ({"unknown": "ignore", "max_categories": 4}, {"handle_unknown": "ignore", "max_categories": 4}),
        (
            {"min_frequency": 2, "max_categories": 5},
            {"handle_unknown": "infrequent_if_exist", "min_frequency": 2, "max_categories": 5},
        ),
        ({}, {"handle_unknown": "infrequent_if_exist"}),
        ({"min_frequency": 30}, {"handle_unknown": "infrequent_if_exist", "min_frequency": 30}),
    ],
)
def test_categories_encode_as_sklearns_encoders(ours, theirs):
    """The Arrow-based encoder gives sklearn's one-hot columns and ordinal codes, names included."""
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder
    from trailguard.model.training import Categories

    rng = np.random.default_rng(0)
    words = np.array(["alice", "bob", "carol", "dave", "erin", "frank", "grace"])
    train_X = pd.DataFrame(
        {
            "who": rng.choice(words, 200, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05]),
            "hour": rng.integers(0, 5, 200).astype(float),
        }
    ).astype({"who": "str"})
    test_X = pd.DataFrame(
        {"who": ["alice", "grace", "mallory", "frank", "bob"], "hour": [1.0, 9.0, 0.0, 4.0, 2.0]}
    ).astype({"who": "str"})
    mine = Categories(output="onehot", **ours).fit(train_X)
    sk = OneHotEncoder(sparse_output=True, **theirs).fit(train_X.astype({"who": object}))
    assert mine.transform(test_X).toarray() == pytest.approx(
        sk.transform(test_X.astype({"who": object})).toarray()
    )
    assert list(mine.get_feature_names_out()) == list(sk.get_feature_names_out())

    ordinal = {k: v for k, v in ours.items() if k != "unknown"}
    mine = Categories(output="ordinal", unknown="ignore", **ordinal).fit(train_X)
    sk = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, **ordinal).fit(
        train_X.astype({"who": object})
    )
    np.testing.assert_array_equal(mine.transform(test_X), sk.transform(test_X.astype({"who": object})))


def test_risk_model_combination_formula():
    class Fixed:  # stands in for a fitted supervised pipeline
        def predict(self, X):
            return np.full(len(X), 40.0)

    model = RiskModel(supervised=Fixed(), detector=None, columns=("x",), weight=ANOMALY_WEIGHT)  # type: ignore[arg-type]
    model.anomaly_levels_ = np.linspace(0, 1, 1001)

    class Detector:  # anomaly score = x itself
        def score_samples(self, X):
            return -X["x"].to_numpy()

    model.detector = Detector()  # type: ignore[assignment]
    X = pd.DataFrame({"x": [0.5, ANOMALY_QUANTILE, (ANOMALY_QUANTILE + 1) / 2, 1.0]})
    parts = model.predict_components(X)
    assert parts["supervised_score"].tolist() == [40, 40, 40, 40]
    assert parts["risk_score"].to_numpy() == pytest.approx(
        [40, 40, 40 + ANOMALY_WEIGHT / 2, 40 + ANOMALY_WEIGHT]
    )
    assert "clip(supervised + W" in COMBINATION_FORMULA


def _candidate(name, ap=0.9, p20=0.5, rmse=3.0):
    return CandidateResult(
        name,
        r2=0.9,
        rmse=rmse,
        mae=1.0,
        precision_at_20=p20,
        recall_at_20=1.0,
        average_precision=ap,
        run_id=name,
    )


def test_choose_best_ranks_first_then_prefers_the_simpler_model_within_noise_of_the_lowest_rmse():
    def best(*cands):
        return choose_best({c.name: c for c in cands})

    hgb, ridge = "hist_gradient_boosting+isolation_forest", "ridge+isolation_forest"
    # the bench's near tie (api_call, 30 days): RMSE 3.052 against 3.054 is noise, the simpler model wins
    assert best(_candidate(hgb, rmse=3.052), _candidate(ridge, rmse=3.054)) == ridge
    # a clear RMSE gain is kept
    assert best(_candidate(hgb, rmse=2.5), _candidate(ridge, rmse=3.054)) == hgb
    # at the edge of the 2% tolerance: 1.9% above the lowest is still a tie, 2.1% is not
    assert best(_candidate(hgb, rmse=3.0), _candidate(ridge, rmse=3.0 * 1.019)) == ridge
    assert best(_candidate(hgb, rmse=3.0), _candidate(ridge, rmse=3.0 * 1.021)) == hgb
    # ranking comes first: a better average precision or precision@20 wins whatever its RMSE or simplicity
    assert best(_candidate(hgb, ap=0.95, rmse=9.0), _candidate(ridge, rmse=1.0)) == hgb
    assert best(_candidate(hgb, p20=0.55, rmse=9.0), _candidate(ridge, rmse=1.0)) == hgb
    # then the anomaly bonus: the combination wins a tie with the bare model, even a simpler one
    assert best(_candidate("ridge", rmse=3.0), _candidate(hgb, rmse=3.0)) == hgb
    # the paper's baseline is the simplest of all; NaN metrics count as worst
    assert (
        best(_candidate("paper_linear_regression", rmse=3.01), _candidate("ridge", rmse=3.0))
        == "paper_linear_regression"
    )
    assert best(_candidate(ridge, ap=float("nan"), rmse=1.0), _candidate(hgb, rmse=float("nan"))) == hgb
    assert best(_candidate(hgb, rmse=float("nan")), _candidate(ridge, rmse=float("nan"))) == ridge


@pytest.fixture(autouse=True)
def _mlflow_scope():
    """The tests below point MLflow at their store; that is undone after each (no URI left behind)."""
    from trailguard.model.training import mlflow_tracking

    with mlflow_tracking():
        yield


# -- slow: the whole loop on demo data ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A small demo store whose injected attacks analysts have already triaged (the paper's feedback
    loop: their scores are in the label store), and its ground truth."""
    from trailguard.demo import generator
    from trailguard.ingest.ingestion import ingest
    from trailguard.ingest.sources import LocalFolderSource
    from trailguard.model.labels import record_labels
    from trailguard.store.events import EventStore

    root = tmp_path_factory.mktemp("demo")
    summary = generator.generate(root / "logs", days=DEMO_DAYS, events=DEMO_EVENTS, bad_files=False)
    store = EventStore(root / "data")
    ingest(LocalFolderSource(root / "logs"), store)
    truth = pd.read_csv(summary.ground_truth)
    record_labels(
        store.root,
        [
            {
                "eventID": e,
                "risk_score": int(r),
                "verdict": "malicious",
                "analyst": "soc",
                "note": f"demo: {s}",
            }
            for e, r, s in zip(truth["eventID"], truth["risk_score"], truth["scenario"], strict=True)
        ],
    )
    return store, truth, f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture(scope="module")
def first(demo):
    store, _, uri = demo
    started = time.perf_counter()
    result = train(store, tracking_uri=uri)
    log.warning("first training: %.1fs\n%s", time.perf_counter() - started, "\n".join(result.lines()))
    return result


def _client(uri: str):
    import mlflow

    return mlflow.MlflowClient(uri)


@pytest.mark.slow
def test_training_logs_every_candidate_and_makes_a_champion(demo, first):
    store, _, uri = demo
    client = _client(uri)
    for uc, res in first.use_cases.items():
        assert res.skipped is None, res.skipped
        assert set(res.candidates) == CANDIDATES
        for cand in res.candidates.values():
            run = client.get_run(cand.run_id)
            assert run.info.experiment_id == client.get_experiment_by_name("trailguard").experiment_id
            metrics = run.data.metrics
            for name in (
                "test_r2",
                "test_rmse",
                "test_mae",
                "test_precision_at_20",
                "test_recall_at_20",
                "test_average_precision",
                "random_r2",
                "random_rmse",
            ):
                assert name in metrics, (uc, cand.name, name)
            assert run.data.tags["trailguard.candidate"] == cand.name
            assert run.data.tags["mlflow.parentRunId"] == res.parent_run_id
            artifacts = {a.path for a in client.list_artifacts(cand.run_id)} | {
                a.path for a in client.list_artifacts(cand.run_id, "charts")
            }
            assert {
                "charts/actual_vs_predicted.png",
                "charts/residuals.png",
                "feature_importances.json",
            } <= artifacts
        for combined in ("ridge+isolation_forest", "hist_gradient_boosting+isolation_forest"):
            assert (
                client.get_run(res.candidates[combined].run_id).data.params["combination"]
                == COMBINATION_FORMULA
            )
        d = res.decision
        assert d is not None and d.promoted and d.alias == "champion" and d.reason == "no champion yet"
        assert d.model_name == MODEL_NAMES[uc] and d.candidate == res.best
        assert str(client.get_model_version_by_alias(MODEL_NAMES[uc], "champion").version) == d.version
    assert any("champion" in line for line in first.lines())
    assert first.as_dict()["use_cases"]["api_call"]["decision"]["alias"] == "champion"


@pytest.mark.slow
def test_a_second_training_that_is_not_better_keeps_the_champion(demo, first):
    store, _, uri = demo
    client = _client(uri)
    second = train(store, tracking_uri=uri)
    for uc, res in second.use_cases.items():
        d = res.decision
        assert d is not None
        # same data, same seeds: the same best model, a tie, and ties keep the champion
        assert not d.promoted and d.alias == "challenger", d.reason
        assert "not better" in d.reason
        assert d.champion_version == first.use_cases[uc].decision.version
        name = MODEL_NAMES[uc]
        assert (
            str(client.get_model_version_by_alias(name, "champion").version)
            == first.use_cases[uc].decision.version
        )
        assert str(client.get_model_version_by_alias(name, "challenger").version) == d.version
        assert (
            client.get_run(res.candidates[res.best].run_id)
            .data.tags["trailguard.decision"]
            .startswith("challenger")
        )


@pytest.mark.slow
def test_the_champion_scores_new_rows_as_in_training(demo, first):
    import mlflow
    from trailguard.model.scoring import read_scores, score_day

    store, _, uri = demo
    day = store.dates()[-1]
    result = score_day(store, day, tracking_uri=uri)
    assert result.scored["api_call"] > 0 and result.scored["console_login"] > 0
    assert set(result.skipped) <= {"AwsServiceEvent"}
    assert result.events == sum(result.scored.values()) + sum(result.skipped.values())
    scores = read_scores(store.root, day)
    assert len(scores) == sum(result.scored.values())
    for col in (
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
        "country",
        "asn",
        "category",
        "lf_score",
        "anomaly_score",
    ):
        assert col in scores.columns
    assert scores["risk_score"].between(0, 100).all()
    top = scores.sort_values("risk_score", ascending=False).head(20)
    assert (top["reasons"] != "").all()

    mlflow.set_tracking_uri(uri)
    from trailguard.detect.engine import label_events

    events = load_day_events(store, day)
    features = add_rule_score(load_day_features(store, day, events=events), label_events(events))
    for uc, fs in FEATURE_SETS.items():
        rows = features[features["use_case"] == uc]
        X = model_input(rows, fs)
        pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL_NAMES[uc]}@champion")
        native = mlflow.sklearn.load_model(f"models:/{MODEL_NAMES[uc]}@champion")
        via_pyfunc = np.asarray(pyfunc.predict(X), dtype=float)
        assert via_pyfunc == pytest.approx(native.predict(X))
        written = scores.set_index("eventID").loc[rows["eventID"], "risk_score"].to_numpy()
        assert via_pyfunc == pytest.approx(written)

    # rescoring replaces the day's files (one per account x region)
    again = score_day(store, day, tracking_uri=uri)
    assert again.files == result.files and len(read_scores(store.root, day)) == len(scores)
    assert sorted(p.name for p in result.path.iterdir()) == sorted(p.name for p in result.files)
    assert all(p.name.startswith("part-") for p in result.files) and len(result.files) > 1


@pytest.mark.slow
def test_no_champion_scores_cold_start_and_says_so(tmp_path, demo):
    from trailguard.model.scoring import NoChampionError, load_champion, read_scores, score_day

    store, _, _ = demo
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(
        NoChampionError, match=r"no champion model for trailguard-.* yet: run `trailguard train` first"
    ):
        load_champion("api_call", empty)
    day = store.dates()[-1]
    result = score_day(store, day, tracking_uri=empty)
    scores = read_scores(store.root, day)
    assert len(scores) == result.events == sum(result.scored.values())  # every event, whatever its type
    assert set(scores["model_name"]) == {"cold-start"} and (scores["model_version"].fillna("") == "").all()
    assert all("no model" in s["note"] and "history" in s["note"] for s in result.scorers.values())


@pytest.mark.slow
def test_relabel_changes_the_training_target(demo, first, tmp_path):
    store, _, _ = demo
    day = store.dates()[-1]
    before = training_data(store, [day])["api_call"].set_index("eventID")
    event_id = before.index[before["target_source"] == "default"][0]
    assert before.loc[event_id, "target"] == 5
    labelled = len(read_labels(store.root))
    path = record_label(store.root, event_id, 88, verdict="malicious", analyst="test", note="relabel")
    try:
        after = training_data(store, [day])["api_call"].set_index("eventID")
        assert after.loc[event_id, "target"] == 88 and after.loc[event_id, "target_source"] == "analyst"
    finally:  # leave the shared store's labels as they were for the other tests
        path.unlink()
    assert len(read_labels(store.root)) == labelled


def _champion_vs_paper(store, truth: pd.DataFrame, uri: str, result, uc: str) -> dict[str, dict[str, float]]:
    """Ranking of the injected attacks on the test days: the champion and the paper's LinearRegression."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    res = result.use_cases[uc]
    champion = mlflow.sklearn.load_model(f"models:/{MODEL_NAMES[uc]}@champion")
    paper = mlflow.sklearn.load_model(res.candidates["paper_linear_regression"].model_uri)
    frames = [load_day_features(store, day) for day in res.test_days]
    rows = pd.concat([f[f["use_case"] == uc] for f in frames], ignore_index=True)
    X = model_input(rows, FEATURE_SETS[uc])
    attack = rows["eventID"].isin(truth["eventID"]).to_numpy()
    days = rows["eventTime"].dt.strftime("%Y-%m-%d").to_numpy()
    return {
        "champion": ranking_metrics(attack, champion.predict(X), days),
        "paper": ranking_metrics(attack, paper.predict(X), days),
    }


@pytest.mark.slow
def test_the_champion_ranks_the_injected_attacks_far_above_the_paper_baseline(demo, first):
    store, truth, uri = demo
    api = _champion_vs_paper(store, truth, uri, first, "api_call")
    console = _champion_vs_paper(store, truth, uri, first, "console_login")
    log.warning(
        "attacks on the test days - api_call: champion %s, paper %s; console_login: champion %s, paper %s",
        api["champion"],
        api["paper"],
        console["champion"],
        console["paper"],
    )
    assert api["champion"]["high_risk_events"] >= 20
    assert api["champion"]["average_precision"] >= api["paper"]["average_precision"] + 0.1
    assert api["champion"]["precision_at_20"] >= api["paper"]["precision_at_20"]
    assert console["champion"]["average_precision"] >= console["paper"]["average_precision"] + 0.1


@pytest.mark.slow
def test_training_day_by_day_matches_the_former_way_and_logs_its_sampling(demo, first, tmp_path):
    """The demo fits in the sample, so reading it day by day trains on the same rows as holding every
    day first: the same held-out ranking (the detector's uniform sample is drawn otherwise), and the
    sampling is on the run."""
    store, _, uri = demo
    full = train(store, tracking_uri=f"sqlite:///{tmp_path / 'full.db'}", sampling="full")
    client = _client(uri)
    for uc, res in first.use_cases.items():
        other = full.use_cases[uc]
        assert (res.rows, res.train_rows, res.test_rows) == (other.rows, other.train_rows, other.test_rows)
        # test_rows: the test days' events; test_sample_rows: the rows measured (all of them: the demo fits)
        assert res.test_sample_rows == res.test_rows == other.test_sample_rows
        for name in ("paper_linear_regression", "ridge", "hist_gradient_boosting"):
            assert res.candidates[name].average_precision == pytest.approx(
                other.candidates[name].average_precision, abs=0.01
            )
        parent = client.get_run(res.parent_run_id).data
        assert parent.params["sampling"] == "stream" and parent.params["sample_seed"] == "42"
        assert int(parent.params["sample_cap"]) == 150_000
        assert parent.metrics["sample_rows_seen"] + parent.metrics["test_sample_rows_seen"] == res.rows
        assert parent.metrics["sample_kept_fraction"] == 1.0
        assert parent.metrics["sample_kept_rows_seen"] >= 1
