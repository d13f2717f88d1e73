"""Hostile corpus, a copied data root (issue 16): its MLflow store works on its own and never writes into
the folder it was copied from."""

from __future__ import annotations

import shutil

import mlflow
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from trailguard.model.training import mlflow_tracking, tracking_uri_for


def files_under(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def log_model(root, name: str) -> str:
    uri = tracking_uri_for(root)
    with mlflow_tracking():
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        client = mlflow.MlflowClient(uri, registry_uri=uri)
        found = client.get_experiment_by_name("trailguard")
        experiment = (
            found.experiment_id
            if found
            else client.create_experiment(
                "trailguard", artifact_location=(root.resolve() / "mlflow" / "artifacts").as_uri()
            )
        )
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_text("hello", f"{name}.txt")
            model = LinearRegression().fit(np.arange(10).reshape(-1, 1), np.arange(10))
            mlflow.sklearn.log_model(model, name="model", registered_model_name=name)
        return run.info.artifact_uri


@pytest.mark.slow
def test_copied_root_keeps_its_artifacts_to_itself(tmp_path):
    origin, copy = tmp_path / "origin", tmp_path / "copy"
    assert log_model(origin, "first").startswith((origin.resolve() / "mlflow" / "artifacts").as_uri())
    shutil.copytree(origin, copy)
    before = files_under(origin)
    artifact_uri = log_model(copy, "second")
    assert artifact_uri.startswith((copy.resolve() / "mlflow" / "artifacts").as_uri()), artifact_uri
    assert files_under(origin) == before, "nothing written into the original root"
    shutil.rmtree(origin)  # the copy stands alone: the model registered in the origin still loads
    uri = tracking_uri_for(copy)
    with mlflow_tracking():
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        model = mlflow.sklearn.load_model("models:/first/1")
    assert round(float(model.predict([[3.0]])[0]), 6) == 3.0
