"""Any history length: the validation window and the snapshot step shrink to what a short
history allows, so a week of history trains; a history with no labelled send yet says so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import AS_OF, make_env
from sendtime.training.dataset import fit_windows

DAY = pd.Timedelta(days=1)


@pytest.mark.parametrize("days, validation, snapshot", [
    (365, 14 * DAY, 7 * DAY),  # long enough: as configured
    (42, 14 * DAY, 7 * DAY),
    (30, 10 * DAY, 5 * DAY),
    (6, 2 * DAY, DAY),
    (0.5, pd.Timedelta(hours=4), pd.Timedelta(hours=2)),
])
def test_windows_fit_the_history(days, validation, snapshot):
    first = pd.Timestamp("2026-01-01", tz="UTC")
    assert fit_windows(first, first + pd.Timedelta(days=days), 14, 7) == (validation, snapshot)


def _settings(tmp_path):
    from sendtime.settings import Settings

    return Settings.from_env(make_env(tmp_path / "home"))


def test_a_week_of_history_trains_and_logs_the_windows_it_used(tmp_path):
    import mlflow

    from sendtime.nightly import run_nightly
    from sendtime.simulation.simulate import simulate_world, world_config, write_world

    write_world(simulate_world(world_config("default", n_users=600, days=7, seed=4, end=AS_OF)), tmp_path / "w")
    said = []
    settings = _settings(tmp_path)
    r = run_nightly(settings, tmp_path / "w" / "events.parquet", tmp_path / "w" / "users.parquet",
                    pd.Timestamp(AS_OF, tz="UTC"), say=said.append)
    assert r.model_version == "1" and r.promoted
    assert any("validation window" in m for m in said)
    params = mlflow.MlflowClient(settings.tracking_uri).get_run(r.run_id).data.params
    assert float(params["validation_hours_used"]) < 14 * 24 and float(params["snapshot_hours_used"]) < 7 * 24
    assert params["refit_on_validation"] == "True"  # shrunk windows: the registered model saw all seven days
    assert 0.5 < r.metrics["roc_auc"] <= 1.0


def test_one_day_of_history_publishes_the_stated_prior_only_policy(world_dir, tmp_path):
    from sendtime.nightly import run_nightly
    from sendtime.serving.model_store import load_scorer

    ev = pd.read_parquet(world_dir / "events.parquet")
    last = ev.loc[ev["event_type"] == "send", "timestamp"].max()  # one campaign day, run the night after
    cut = last.floor("D") + DAY
    ev.loc[(ev["timestamp"] >= last.floor("D")) & (ev["timestamp"] < cut)].to_parquet(tmp_path / "day.parquet", index=False)
    said = []
    settings = _settings(tmp_path)
    r = run_nightly(settings, tmp_path / "day.parquet", world_dir / "users.parquet", cut, say=said.append)
    assert r.model_version == "" and not r.promoted and "no send is labelled yet" in r.reason
    assert any("prior-only policy" in m for m in said)
    pred = pd.read_parquet(r.predictions)
    assert len(pred) > 0 and pred["best_hour_local"].between(0, 23).all()
    scorer, manifest = load_scorer(settings)  # what `sendtime serve` loads: the same stated policy
    assert manifest["policy"] == "profiles" and scorer.model_version == "profiles" and scorer.served is not None
    scores = scorer.served.quantized.values(np.arange(scorer.n_users), np.broadcast_to(np.arange(24), (scorer.n_users, 24)))
    assert (scores.max(1) > scores.min(1)).mean() > 0.5  # the population's rhythm, not a flat answer


