"""The nightly's own rules (its steps are exercised end to end by test_cli and the fixtures)."""

from __future__ import annotations

import json

import pandas as pd

from tests.conftest import AS_OF, home_env


def test_the_status_quo_hour_setting_wins_over_the_history(world_dir, tmp_path):
    """SENDTIME_STATUS_QUO_UTC_HOUR is the status quo for the off-policy lift and the published
    manifest too, not only for the service; unset, it is the history's most frequent send hour."""
    from sendtime.features.contract import read_events
    from sendtime.features.messages import status_quo_hour
    from sendtime.nightly import run_nightly
    from sendtime.settings import Settings

    sends = read_events(world_dir / "events.parquet").accepted
    sends = sends.loc[(sends["event_type"] == "send") & (sends["timestamp"] < pd.Timestamp(AS_OF, tz="UTC"))]
    usual = status_quo_hour(sends.rename(columns={"timestamp": "send_ts"}))
    wanted = (usual + 5) % 24
    for hour, home in ((None, tmp_path / "a"), (wanted, tmp_path / "b")):
        env = {k: v for k, v in {**home_env(home)}.items() if not k.startswith("MLFLOW_TRACKING")}
        env.pop("MLFLOW_REGISTRY_URI", None)
        if hour is not None:
            env["SENDTIME_STATUS_QUO_UTC_HOUR"] = str(hour)
        env["SENDTIME_N_ESTIMATORS"], env["SENDTIME_TUNE_PROFILE_USERS"] = "10", "0"
        res = run_nightly(Settings.from_env(env), world_dir / "events.parquet", world_dir / "users.parquet",
                          pd.Timestamp(AS_OF, tz="UTC"), say=lambda m: None)
        manifest = json.loads((res.published / "manifest.json").read_text())
        assert manifest["status_quo_utc_hour"] == (usual if hour is None else wanted)


def test_the_nightly_reads_activity_weighs_it_and_says_so(tmp_path):
    """With ``activity_path`` the night validates the activity (rejects kept), chooses its
    strength on the held-out weeks with the other profile settings, and publishes features
    that used it; the same inputs without it are another run, not "already done"."""
    import mlflow

    from sendtime.nightly import run_nightly
    from sendtime.settings import Settings
    from sendtime.simulation.simulate import simulate_world, world_config, write_world

    w = simulate_world(world_config("activity", n_users=800, days=42, seed=4))
    paths = write_world(w, tmp_path / "world")
    act = w.activity.copy()
    act.loc[act.index[:3], "event_type"] = "teleport"  # three bad rows among them
    act.to_parquet(paths["activity"], index=False)
    env = home_env(tmp_path / "home")
    env.update(SENDTIME_N_ESTIMATORS="10", SENDTIME_TUNE_PROFILE_USERS="800")
    settings = Settings.from_env(env)
    as_of = w.config.end_ts
    res = run_nightly(settings, paths["events"], paths["users"], as_of, say=lambda m: None, activity_path=paths["activity"])
    run = mlflow.MlflowClient(settings.tracking_uri).get_run(res.run_id)
    assert run.data.metrics["activity_rejected"] == 3
    assert run.data.metrics["activity_accepted"] == len(act) - 3
    assert run.data.tags["activity_used"] == "true"
    chosen = float(run.data.params["chosen_activity_strength"])
    assert chosen < float("inf")  # activity that follows the users' rhythm is worth using
    assert "activity" in res.rejects and res.rejects["activity"].exists()
    again = run_nightly(settings, paths["events"], paths["users"], as_of, say=lambda m: None)  # no AlreadyDone
    assert again.run_id != res.run_id
    assert mlflow.MlflowClient(settings.tracking_uri).get_run(again.run_id).data.tags.get("activity_used") is None
    # the logged-data judgement reads the activity as the nightly did
    from sendtime.offline import evaluate_logged

    said = []
    rep = evaluate_logged(settings, paths["events"], paths["users"], as_of - pd.Timedelta(days=14), as_of,
                          say=said.append, activity_path=paths["activity"])
    assert any(line.startswith("activity: read") for line in said) and 0 < rep.snips < 1


def test_a_click_deployment_trains_on_clicks_and_says_so_in_every_answer(world_dir, tmp_path):
    """SENDTIME_OBJECTIVE=click: the label is a click within the horizon, the model is registered
    under its own name, the snapshot and every answer name the objective, and a request asking
    for another objective is refused."""
    import mlflow

    from sendtime.nightly import run_nightly
    from sendtime.settings import Settings
    from tests.conftest import in_process_service

    home = tmp_path / "home"
    env = {**home_env(home), "SENDTIME_OBJECTIVE": "click", "SENDTIME_N_ESTIMATORS": "10", "SENDTIME_TUNE_PROFILE_USERS": "0"}
    settings = Settings.from_env(env)
    res = run_nightly(settings, world_dir / "events.parquet", world_dir / "users.parquet", pd.Timestamp(AS_OF, tz="UTC"),
                      say=lambda m: None)
    client = mlflow.MlflowClient(settings.tracking_uri)
    run = client.get_run(res.run_id)
    assert run.data.params["objective"] == "click"
    assert client.get_registered_model("sendtime-click-model").name == "sendtime-click-model"
    manifest = json.loads((res.published / "manifest.json").read_text())
    assert manifest["objective"] == "click" and manifest["model_name"] == "sendtime-click-model"
    # clicks are rarer than opens: the labels are the clicks, not the opens
    from sendtime.features.contract import read_events

    ev = read_events(world_dir / "events.parquet").accepted
    ev = ev.loc[ev["timestamp"] < pd.Timestamp(AS_OF, tz="UTC")]
    n_send, n_click = (ev["event_type"] == "send").sum(), ev.loc[ev["event_type"] == "click", "message_id"].nunique()
    assert run.data.metrics["val_positive_rate"] < 1.5 * n_click / n_send
    body = {"users": [{"user_id": "u000001"}], "window_start": "2026-04-13T06:00:00Z", "window_end": "2026-04-13T22:00:00Z"}
    with in_process_service(home, SENDTIME_OBJECTIVE="click", SENDTIME_MODEL_NAME=None) as c:
        r = c.post("/best_send_time", json=body)
        assert r.status_code == 200 and r.json()["objective"] == "click"
        assert c.post("/info", json={}).json()["objective"] == "click"
        wrong = c.post("/best_send_time", json={**body, "objective": "open"})
        assert wrong.status_code == 400 and "not served here" in wrong.text
