"""The network_flow use case: trained, registered and gated like the others, then scored daily with the
detections (a real MLflow store in the data root)."""

from __future__ import annotations

import pytest
from trailguard.model.network import NETWORK_MODEL, combine, score_network_day, train_network
from trailguard.model.training import mlflow_tracking

from tests.flows.network_demo import END, write_demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from trailguard.flows.features import features_for_days
    from trailguard.model.labels import record_label

    demo = write_demo(tmp_path_factory.mktemp("netmodel"))
    until = (END.replace(day=END.day - 1)).isoformat()
    # an analyst's score on an interface-day of the training days (no detection fired on those days: without
    # it, only the unsupervised candidate has anything to learn)
    labelled = (
        END.replace(day=END.day - 2)
    ).isoformat()  # a training day (the newest, until, is the test day)
    rows = features_for_days(demo.root, [labelled])
    for eni in rows["interface_id"].head(2):
        record_label(demo.root, f"flow-model-{labelled}-{eni}", 90, verdict="malicious")
    with mlflow_tracking():
        first = train_network(demo.root, until=until, min_rows=20, min_days=2)
        second = train_network(demo.root, until=until, min_rows=20, min_days=2)
    return demo, first, second


def test_trained_registered_and_gated(trained):
    _, first, second = trained
    assert first.skipped is None and first.rows >= 20 and first.test_days and first.train_days
    assert "isolation_forest" in first.candidates
    # analysts' labels give targets: the supervised candidates are fitted too
    assert {"ridge", "hist_gradient_boosting", "ridge+isolation_forest"} <= set(first.candidates)
    assert first.decision.model_name == NETWORK_MODEL == "trailguard-network-flow"
    assert first.decision.promoted and first.decision.alias == "champion"
    # the same data again cannot beat the champion: registered as challenger, the champion stays
    assert not second.decision.promoted and second.decision.alias == "challenger"
    assert second.decision.champion_version == first.decision.version
    assert "not better" in second.decision.reason


def test_daily_score_combines_detections_and_champion(trained):
    demo, first, _ = trained
    found, note = score_network_day(demo.root, demo.day)
    assert note == f"{NETWORK_MODEL} v{first.decision.version}"
    detections = found[found["detection"] != "flow_model_anomaly"]
    assert set(detections["detection"]) >= {"flow_remote_access_brute_force", "flow_exfiltration_volume"}
    assert detections["anomaly_score"].between(0, 1).all() and detections["model_score"].notna().all()
    # a detection is never lowered by the model: max(detection, supervised) + an anomaly bonus
    assert (detections["risk_score"] >= detections["detection_score"]).all()
    assert (detections["risk_score"] <= 100).all()
    assert set(detections["model_version"]) == {first.decision.version}
    stored = demo.root / "flows_scores" / f"date={demo.day}" / "scores.parquet"
    assert stored.exists()
    again, _ = score_network_day(demo.root, demo.day)  # a rerun overwrites with the same findings
    assert again["eventID"].tolist() == found["eventID"].tolist()


def test_combination_rules():
    import pandas as pd

    detections = pd.DataFrame({"interface_id": ["eni-a"], "risk_score": [60.0], "eventID": ["flow-1"]})
    features = pd.DataFrame({"interface_id": ["eni-a", "eni-b", "eni-c"], "account_id": ["1"] * 3,
                             "instance_id": [None] * 3, "day": ["2026-01-31"] * 3,
                             **{c: [1.0, 500.0, 1.0] for c in ("flows", "bytes_out_internet")}})  # fmt: skip
    from trailguard.flows.features import NETWORK_FEATURES

    for column in NETWORK_FEATURES:
        if column not in features:
            features[column] = 1.0
    components = pd.DataFrame({"supervised_score": [70.0, 5.0, 5.0], "anomaly_score": [1.0, 0.995, 0.5]})
    out = combine(detections, features, components, "3").set_index("interface_id")
    assert out.loc["eni-a", "risk_score"] == 90.0  # max(60, 70) + the full bonus of 20
    assert out.loc["eni-a", "detection_score"] == 60.0
    assert out.loc["eni-b", "detection"] == "flow_model_anomaly"  # an anomaly nobody wrote a detection for
    assert out.loc["eni-b", "risk_score"] == pytest.approx(30 + 20 * (0.995 - 0.95) / 0.05)
    assert "eni-c" not in out.index  # ordinary: no finding
    cold = combine(detections, features, None, None)
    assert cold["risk_score"].tolist() == [60.0] and cold["model_score"].isna().all()
