"""Registered models load anywhere TrailGuard's pip requirements are installed, not only where its modules
sit at the paths they had when the model was saved; older champions still load or say what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from trailguard.model import training
from trailguard.model.scoring import IncompatibleChampionError, load_champion
from trailguard.model.training import CHAMPION, MODEL_NAMES, RiskModel

COLUMNS = ("a", "b", "c")
USE_CASE = "api_call"


def _model() -> tuple[RiskModel, pd.DataFrame]:
    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=list(COLUMNS))
    y = 40 + 10 * X["a"] - 5 * X["b"]
    model = RiskModel(
        supervised=Pipeline([("scale", StandardScaler()), ("lr", LinearRegression())]),
        detector=Pipeline([("forest", IsolationForest(n_estimators=20, random_state=0))]),
        columns=COLUMNS,
        weight=20.0,
    )
    return model.fit(X, y), X


@contextmanager
def _class_module(name: str):
    """Pretend RiskModel lives at ``name`` while it is pickled by reference (how older versions saved)."""
    original = RiskModel.__module__
    RiskModel.__module__ = name
    sys.modules[name] = training
    try:
        yield
    finally:
        RiskModel.__module__ = original
        sys.modules.pop(name, None)


def _register(tmp_path, *, by_value: bool = True, module: str | None = None) -> str:
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    model, X = _model()
    with training.mlflow_tracking():
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        experiment = mlflow.create_experiment(
            "portability", artifact_location=(tmp_path / "artifacts").as_uri()
        )
        with mlflow.start_run(experiment_id=experiment):
            if by_value:
                info = training._log_model(model, X.head(5), MODEL_NAMES[USE_CASE])
            else:  # the way models were logged before: classes pickled as references to their module
                with _class_module(module or "trailguard.training"):
                    info = mlflow.sklearn.log_model(
                        model,
                        name="model",
                        serialization_format="cloudpickle",
                        pip_requirements=["scikit-learn"],
                        registered_model_name=MODEL_NAMES[USE_CASE],
                    )
        client = mlflow.MlflowClient(uri, registry_uri=uri)
        client.set_registered_model_alias(MODEL_NAMES[USE_CASE], CHAMPION, info.registered_model_version)
    return uri


@pytest.mark.slow
def test_a_new_champion_loads_without_trailguard_importable(tmp_path) -> None:
    uri = _register(tmp_path)
    model, X = _model()
    code = (
        "import sys, json; sys.modules['trailguard'] = None\n"  # importing trailguard now fails
        "import mlflow, pandas as pd\n"
        f"mlflow.set_registry_uri({uri!r}); mlflow.set_tracking_uri({uri!r})\n"
        f"m = mlflow.sklearn.load_model('models:/{MODEL_NAMES[USE_CASE]}@{CHAMPION}')\n"
        f"X = pd.DataFrame(json.loads(sys.stdin.read()))\n"
        "print(json.dumps(m.predict(X).tolist()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=X.to_json(orient="columns"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert np.allclose(json.loads(out.stdout.strip().splitlines()[-1]), model.predict(X))


def test_a_champion_saved_under_the_old_module_path_still_loads(tmp_path) -> None:
    uri = _register(tmp_path, by_value=False, module="trailguard.training")
    assert "trailguard.training" not in sys.modules
    champion = load_champion(USE_CASE, uri)
    model, X = _model()
    assert np.allclose(champion.model.predict(X), model.predict(X))
    assert "trailguard.training" not in sys.modules  # the alias is not left behind


def test_a_champion_that_cannot_load_says_to_train_in_one_line(tmp_path) -> None:
    uri = _register(tmp_path, by_value=False, module="trailguard.somewhere_else")
    with pytest.raises(IncompatibleChampionError) as caught:
        load_champion(USE_CASE, uri)
    message = str(caught.value)
    assert (
        "\n" not in message and "run `trailguard train`" in message and "trailguard.somewhere_else" in message
    )


def test_loading_a_champion_leaves_no_mlflow_state_behind(tmp_path, monkeypatch) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = _register(tmp_path)
    before = mlflow.get_tracking_uri()
    load_champion(USE_CASE, uri)
    assert "MLFLOW_TRACKING_URI" not in os.environ  # a child process would inherit it
    assert mlflow.get_tracking_uri() == before
