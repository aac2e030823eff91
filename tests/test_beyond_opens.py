"""Objectives and channels beyond e-mail opens, end to end: a conversion deployment, a push
deployment, and the unsubscribe penalty through the service."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import AS_OF, home_env, in_process_service

FAST = {"SENDTIME_N_ESTIMATORS": "10", "SENDTIME_TUNE_PROFILE_USERS": "0"}


def _world(tmp_path, preset, n_users=500, seed=11):
    from sendtime.simulation.simulate import simulate_world, world_config, write_world

    out = tmp_path / preset
    write_world(simulate_world(world_config(preset, n_users=n_users, days=56, seed=seed, end=AS_OF)), out)
    return out


def _nightly(world, home, **env):
    from sendtime.nightly import run_nightly
    from sendtime.settings import Settings

    settings = Settings.from_env({**home_env(home), **FAST, **env})
    res = run_nightly(settings, world / "events.parquet", world / "users.parquet", pd.Timestamp(AS_OF, tz="UTC"),
                      say=lambda m: None)
    return settings, res


def test_a_conversion_deployment_learns_from_attributed_conversions(tmp_path):
    world = _world(tmp_path, "shoppers")
    home = tmp_path / "home"
    settings, res = _nightly(world, home, SENDTIME_OBJECTIVE="conversion")
    assert settings.model_name == "sendtime-conversion-model"
    run = mlflow.MlflowClient(settings.tracking_uri).get_run(res.run_id)
    ev = pd.read_parquet(world / "events.parquet")
    ev = ev.loc[ev["timestamp"] < pd.Timestamp(AS_OF, tz="UTC")]
    n_conv = ev.loc[ev["event_type"] == "conversion", "message_id"].nunique()
    n_send = (ev["event_type"] == "send").sum()
    assert run.data.metrics["conversions"] == n_conv
    # the label is a conversion: its rate is the conversions', far below the opens'
    assert run.data.metrics["val_positive_rate"] < 2.5 * n_conv / n_send
    assert run.data.params["objective"] == "conversion"
    manifest = json.loads((res.published / "manifest.json").read_text())
    assert manifest["objective"] == "conversion"
    body = {"users": [{"user_id": "u000001"}], "window_start": "2026-04-13T00:00:00Z", "window_end": "2026-04-13T23:00:00Z"}
    with in_process_service(home, SENDTIME_OBJECTIVE="conversion", SENDTIME_MODEL_NAME=None) as c:
        r = c.post("/best_send_time", json=body)
        assert r.status_code == 200 and r.json()["objective"] == "conversion"
        assert c.post("/best_send_time", json={**body, "objective": "click"}).status_code == 400


def test_a_conversion_objective_without_conversions_is_refused_with_a_reason(world_dir, tmp_path):
    from sendtime.features.contract import ContractError

    with pytest.raises(ContractError, match="no conversion event"):
        _nightly(world_dir, tmp_path / "home", SENDTIME_OBJECTIVE="conversion")


def test_a_push_deployment_learns_from_push_sends_and_the_mails_opens(tmp_path):
    world = _world(tmp_path, "push")
    home = tmp_path / "home"
    settings, res = _nightly(world, home, SENDTIME_CHANNEL="push")
    assert settings.model_name == "sendtime-push-open-model"
    client = mlflow.MlflowClient(settings.tracking_uri)
    run = client.get_run(res.run_id)
    ev = pd.read_parquet(world / "events.parquet")
    ev = ev.loc[ev["timestamp"] < pd.Timestamp(AS_OF, tz="UTC")]
    sends = ev.loc[ev["event_type"] == "send"]
    assert run.data.metrics["sends_push"] == (sends["channel"] == "push").sum()
    assert run.data.metrics["other_channel_opens"] > 0
    assert run.data.tags["activity_used"] == "true"
    assert run.data.params["channel"] == "push"
    # every training row is a push send: the validation rows' count is the push sends' at most
    assert run.data.metrics["val_rows"] <= (sends["channel"] == "push").sum()
    manifest = json.loads((res.published / "manifest.json").read_text())
    assert manifest["channel"] == "push"
    with in_process_service(home, SENDTIME_CHANNEL="push", SENDTIME_MODEL_NAME=None) as c:
        assert c.post("/info", json={}).json()["channel"] == "push"


def test_the_unsubscribe_penalty_moves_night_sends_to_safer_hours(tmp_path):
    world = _world(tmp_path, "night-unsub", n_users=800)
    home = tmp_path / "home"
    settings, res = _nightly(world, home)
    manifest = json.loads((res.published / "manifest.json").read_text())
    risk = np.asarray(manifest["negative_risk_by_local_hour"])
    night = [23, 0, 1, 2, 3, 4, 5]
    assert risk[night].mean() > 5 * np.delete(risk, night).mean()  # learned from the sends' unsubscribes
    run = mlflow.MlflowClient(settings.tracking_uri).get_run(res.run_id)
    assert run.data.metrics["negatives"] > 0 and "plots/unsubscribe_risk_by_hour.png" in [
        a.path for a in mlflow.MlflowClient(settings.tracking_uri).list_artifacts(res.run_id, "plots")]
    users = pd.read_parquet(world / "users.parquet")["user_id"].tolist()
    body = {"users": [{"user_id": u} for u in users], "window_start": "2026-04-13T00:00:00Z",
            "window_end": "2026-04-13T23:00:00Z"}
    with in_process_service(home, SENDTIME_EXPLORATION_RATE="0", SENDTIME_HOLDOUT_SHARE="0") as c:
        plain = c.post("/best_send_time", json=body).json()["results"]
        careful = c.post("/best_send_time", json={**body, "unsubscribe_penalty": 50}).json()["results"]
        plan0 = c.post("/plan_campaign", json={**body, "hourly_cap": 400}).json()["summary"]
        plan1 = c.post("/plan_campaign", json={**body, "hourly_cap": 400, "unsubscribe_penalty": 50}).json()["summary"]

    def at_night(res):
        return np.mean([a["local_hour"] in night for a in res])

    assert at_night(plain) > 0.02 and at_night(careful) < at_night(plain) / 2
    assert all(a["p_unsubscribe"] is not None for a in careful)
    assert sum(a["p_unsubscribe"] for a in careful) < sum(a["p_unsubscribe"] for a in plain)
    assert plan1["expected_unsubscribes_plan"] < plan0["expected_unsubscribes_plan"]
    assert plan1["unsubscribe_penalty"] == 50 and plan0["unsubscribe_penalty"] == 0
    assert plan1["expected_opens_plan"] <= plan0["expected_opens_plan"] + 1e-6  # the opens it costs


def test_one_service_answers_for_several_objectives_each_with_its_own_model(tmp_path):
    """Two nightlies into one home (open, then conversion) and SENDTIME_SERVE_OBJECTIVES: a
    request's objective picks the model and snapshot; the default is the deployment's."""
    world = _world(tmp_path, "shoppers", n_users=400)
    home = tmp_path / "home"
    s_open, r_open = _nightly(world, home)
    s_conv, r_conv = _nightly(world, home, SENDTIME_OBJECTIVE="conversion")
    assert r_open.published.parent == home / "published" and r_conv.published.parent == home / "published-email-conversion"
    body = {"users": [{"user_id": "u000001"}, {"user_id": "u000002"}], "window_start": "2026-04-13T00:00:00Z",
            "window_end": "2026-04-13T23:00:00Z"}
    with in_process_service(home, SENDTIME_SERVE_OBJECTIVES="conversion", SENDTIME_EXPLORATION_RATE="0",
                            SENDTIME_HOLDOUT_SHARE="0") as c:
        info = c.post("/info", json={}).json()
        assert info["objectives"] == {"open": r_open.champion_version, "conversion": r_conv.champion_version}
        default = c.post("/best_send_time", json=body).json()
        conv = c.post("/best_send_time", json={**body, "objective": "conversion"}).json()
        assert default["objective"] == "open" and conv["objective"] == "conversion"
        # each is its own model's probability: conversions are far rarer than opens
        assert max(a["p_open"] for a in conv["results"]) < min(a["p_open"] for a in default["results"])
        assert c.post("/best_send_time", json={**body, "objective": "click"}).status_code == 400
        assert c.post("/admin/reload", json={}).json()["reloaded"] is False


def test_a_value_deployment_ranks_by_expected_revenue_and_plans_for_it(tmp_path):
    """SENDTIME_OBJECTIVE=value: the forest learns P(conversion), each user's order value is
    shrunk towards the population's and published, answers carry expected_value, and a capacity
    plan gives scarce hours to the users worth most."""
    from sendtime.features.order_values import order_values

    world = _world(tmp_path, "shoppers")
    home = tmp_path / "home"
    settings, res = _nightly(world, home, SENDTIME_OBJECTIVE="value")
    assert settings.model_name == "sendtime-value-model"
    manifest = json.loads((res.published / "manifest.json").read_text())
    ov = pd.read_parquet(res.published / "order_values.parquet").set_index("user_id")
    conv = pd.read_parquet(world / "events.parquet").query("event_type == 'conversion'")
    assert 0.8 * conv["value"].mean() < manifest["order_value_population"] < 1.25 * conv["value"].mean()
    # users with orders are pulled towards their own mean, the rest get the population's
    assert (ov.loc[ov["orders"] == 0, "order_value"] == manifest["order_value_population"]).all()
    assert ov.loc[ov["orders"] > 0, "order_value"].std() > 0
    users = pd.read_parquet(world / "users.parquet")["user_id"].tolist()
    body = {"users": [{"user_id": u} for u in users], "window_start": "2026-04-13T00:00:00Z",
            "window_end": "2026-04-13T23:00:00Z"}
    with in_process_service(home, SENDTIME_OBJECTIVE="value", SENDTIME_MODEL_NAME=None, SENDTIME_EXPLORATION_RATE="0",
                            SENDTIME_HOLDOUT_SHARE="0") as c:
        r = c.post("/best_send_time", json=body).json()
        assert r["objective"] == "value"
        a = pd.DataFrame(r["results"]).set_index("user_id")
        np.testing.assert_allclose(a["expected_value"], a["p_open"] * ov["order_value"].reindex(a.index), rtol=1e-5)
        plan = c.post("/plan_campaign", json={**body, "hourly_cap": 30}).json()
        s = plan["summary"]
        assert s["expected_value_plan"] > s["expected_value_status_quo"]
    # under tight caps, planning for value beats planning for conversions alone, judged on value
    from sendtime.serving.capacity import plan_with_caps
    from sendtime.serving.model_store import load_scorer
    from sendtime.serving.scoring import WindowRules

    scorer, _ = load_scorer(settings)
    g = scorer.grid(users, None, WindowRules(pd.Timestamp("2026-04-13T00:00Z"), pd.Timestamp("2026-04-13T23:00Z")))
    caps = np.full(len(g.candidates), 30)

    def worth(plan):
        ok = plan.hour >= 0
        return g.expected[np.flatnonzero(ok), plan.hour[ok]].sum()

    assert worth(plan_with_caps(g.expected, g.allowed, caps)) > worth(plan_with_caps(g.p, g.allowed, caps))
    assert abs(worth(plan_with_caps(g.expected, g.allowed, caps)) - s["expected_value_plan"]) < 1e-6 * s["expected_value_plan"]
    # the shrinkage: one order moves a user less than many
    idx = pd.Index(["a", "b", "c"])
    msgs = pd.DataFrame({"user_id": ["a"] * 6 + ["b"] + ["c"] * 3,
                         "send_ts": pd.Timestamp("2026-01-01", tz="UTC"),
                         "t_conversion": pd.Timestamp("2026-01-01 01:00", tz="UTC"),
                         "conversion_value": [100.0] * 6 + [100.0] + [10.0, 12.0, 8.0]})
    got = order_values(msgs, idx, pd.Timestamp("2026-02-01", tz="UTC"), 24)
    assert got.value[0] > got.value[1] > got.population > got.value[2]
