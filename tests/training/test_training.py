"""Training against a real SQLite MLflow store: run contents, registration and the alias gate."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from sendtime.features.definitions import MODEL_FEATURES
from sendtime.training.registry import CHALLENGER, CHAMPION, configure, gate, log_model
from sendtime.training.model import ForestParams, classification_metrics, make_pipeline


def _client(settings) -> MlflowClient:
    configure(settings.tracking_uri, settings.registry_uri, settings.experiment, settings.artifact_root)
    return MlflowClient()


def test_run_logs_params_metrics_model_and_plots(trained, tmp_path):
    settings, result = trained
    assert settings.tracking_uri.startswith("sqlite:///") and str(settings.home) in settings.tracking_uri
    client = _client(settings)
    run = client.get_run(result.run_id)
    for key in ("val_roc_auc", "val_log_loss", "val_brier", "val_ece", "events_accepted"):
        assert key in run.data.metrics
    # the product knows nothing of simulated worlds: judging them is the simulation package's job
    assert not any(k.startswith("sim_") for k in run.data.metrics)
    assert 0.6 < run.data.metrics["val_roc_auc"] <= 1.0
    assert run.data.params["n_estimators"] == "30"
    arts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {"plots/reliability.png", "plots/feature_importance.png"} <= arts
    info = mlflow.models.get_model_info(f"models:/{settings.model_name}/{result.model_version}")
    assert info.signature.inputs.input_names() == list(MODEL_FEATURES)
    # the model's environment is what loading and scoring it needs, pinned: not what the
    # training process happened to import (pytest, rich)
    reqs = Path(mlflow.artifacts.download_artifacts(f"models:/{settings.model_name}/{result.model_version}/requirements.txt",
                                                     dst_path=str(tmp_path))).read_text().split()
    assert [r.split("==")[0] for r in reqs] == ["mlflow", "numpy", "pandas", "scikit-learn", "scipy", "skops"]
    assert all("==" in r for r in reqs)
    from importlib.metadata import version

    assert f"scikit-learn=={version('scikit-learn')}" in reqs
    # artifacts live under the state folder, not the working directory
    assert str(settings.home) in client.get_run(result.run_id).info.artifact_uri


def test_first_model_becomes_champion(trained):
    settings, result = trained
    client = _client(settings)
    assert result.promoted
    assert str(client.get_model_version_by_alias(settings.model_name, CHAMPION).version) == result.champion_version


def test_worse_model_gets_challenger_and_champion_stays(trained, world_dir, private_home):
    """In a private copy of the trained state: the challenger it registers stays there."""
    from sendtime.settings import Settings
    from tests.conftest import home_env

    settings = Settings.from_env(home_env(private_home))
    client = _client(settings)
    champion_before = str(client.get_model_version_by_alias(settings.model_name, CHAMPION).version)
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((400, len(MODEL_FEATURES))), columns=list(MODEL_FEATURES))
    y = (rng.random(400) < 0.2).astype(int)
    noise = make_pipeline(ForestParams(n_estimators=3, max_depth=2, n_jobs=1)).fit(X, y)
    # validation rows the real champion understands: the ones it was validated on
    X_val, y_val = _validation_rows(trained, world_dir)
    p = noise.predict_proba(X_val)[:, 1]
    with mlflow.start_run():
        _, version = log_model(noise, X, settings.model_name)
        decision = gate(client, settings.model_name, version, classification_metrics(y_val, p), X_val, y_val, 0.002)
    assert not decision.promoted
    assert "worse than champion" in decision.reason
    assert str(client.get_model_version_by_alias(settings.model_name, CHAMPION).version) == champion_before
    assert str(client.get_model_version_by_alias(settings.model_name, CHALLENGER).version) == version
    assert client.get_model_version(settings.model_name, version).tags["gate"] == decision.reason


def _validation_rows(trained, world_dir, params=None):
    from sendtime.features.contract import read_events
    from sendtime.features.messages import build_messages
    from sendtime.training.dataset import build_training_set

    settings, result = trained
    msgs = build_messages(read_events(world_dir / "events.parquet").accepted, result.users.accepted)
    ts = build_training_set(msgs, result.users.accepted, result.as_of, settings.horizon_hours,
                            settings.validation_days, settings.snapshot_days, settings.max_train_rows, params=params)
    return ts.X[ts.val_mask], ts.y[ts.val_mask]


def test_a_long_history_registers_the_model_its_figures_describe(trained):
    """Eight weeks of history fill the configured windows: no refit, no twin, and the gate
    judges the champion itself."""
    from sendtime.training.registry import TWIN_TAG, judged_model

    settings, result = trained
    client = _client(settings)
    assert client.get_run(result.run_id).data.params["refit_on_validation"] == "False"
    assert TWIN_TAG not in client.get_model_version(settings.model_name, result.model_version).tags
    assert judged_model(client, settings.model_name, result.model_version)[1] == ""


def test_a_refitted_champion_is_judged_by_its_validation_twin(trained, world_dir, tmp_path):
    """With a refit the registered model has seen the validation weeks; its twin, fitted
    without them, is what the run's validation figures describe and what a later gate
    compares against."""

    from sendtime.nightly import run_nightly
    from sendtime.settings import Settings
    from sendtime.serving.model_store import champion_profile_params
    from tests.conftest import home_env
    from sendtime.training.registry import TWIN_TAG, judged_model

    env = {**home_env(tmp_path / "home"), "SENDTIME_REFIT": "always"}
    settings = Settings.from_env(env)
    result = run_nightly(settings, world_dir / "events.parquet", world_dir / "users.parquet",
                         trained[1].as_of, say=lambda m: None)
    client = _client(settings)
    name, version = settings.model_name, result.model_version
    run = client.get_run(result.run_id)
    assert run.data.params["refit_on_validation"] == "True"
    assert TWIN_TAG in client.get_model_version(name, version).tags
    twin, how = judged_model(client, name, version)
    assert how == " (its validation twin)"
    registered = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    X_val, y_val = _validation_rows((settings, result), world_dir, champion_profile_params(settings))
    cols = list(MODEL_FEATURES)
    twin_loss = classification_metrics(y_val, twin.predict_proba(X_val[cols])[:, 1])["log_loss"]
    seen_loss = classification_metrics(y_val, registered.predict_proba(X_val[cols])[:, 1])["log_loss"]
    assert np.isclose(twin_loss, run.data.metrics["val_log_loss"], rtol=1e-6)
    assert seen_loss < twin_loss  # the refit learned from these very rows


def test_training_sample_is_bounded_in_users_and_rows_and_seeded(world_dir):
    """The sampling plan: at most max_users users and max_rows rows, validation weeks kept,
    the same sample for the same seed."""
    from sendtime.features.contract import read_events, read_users
    from sendtime.features.messages import build_messages
    from sendtime.training.dataset import build_training_set

    as_of = pd.Timestamp("2026-04-13", tz="UTC")
    users = read_users(world_dir / "users.parquet").accepted
    msgs = build_messages(read_events(world_dir / "events.parquet").accepted, users)

    def build(max_users, max_rows, seed=0):
        return build_training_set(msgs, users, as_of, 24, 14, 7, max_rows, seed, max_users=max_users)

    full = build(None, 10**9)
    small = build(120, 900)
    assert full.meta["user_id"].nunique() > 300
    assert small.meta["user_id"].nunique() <= 120
    assert len(small.X) <= 900 < len(full.X)
    assert small.val_mask.sum() == 300 and small.train_mask.sum() == 600  # a third for validation
    again = build(120, 900)
    assert again.meta["message_id"].tolist() == small.meta["message_id"].tolist()
    assert build(120, 900, seed=1).meta["message_id"].tolist() != small.meta["message_id"].tolist()


def test_nightly_logs_the_analysts_figures(trained):
    """People who never open a notebook see the same plots in the MLflow UI."""
    settings, result = trained
    client = _client(settings)
    names = {f.path for f in client.list_artifacts(result.run_id, "plots")}
    for expected in ("plots/reliability.png", "plots/opens_by_local_hour.png", "plots/reading_profiles.png",
                     "plots/machine_open_share.png", "plots/time_to_open.png", "plots/history_length.png"):
        assert expected in names, names
