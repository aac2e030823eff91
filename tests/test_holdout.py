"""`sendtime evaluate --holdout`: the lift measured on the service's control group."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sendtime.serving.policy import ExplorationPolicy
from sendtime.settings import Settings
from tests.conftest import home_env

SINCE, UNTIL = pd.Timestamp("2026-03-15", tz="UTC"), pd.Timestamp("2026-04-13", tz="UTC")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from sendtime.simulation.simulate import simulate_world, world_config, write_world

    out = tmp_path_factory.mktemp("holdout-world")
    w = simulate_world(world_config("default", n_users=2000, days=60, seed=21, end="2026-04-13"))
    write_world(w, out)
    return out, w


def _thinned(world, tmp_path, settings):
    """The same history with half the holdout users' messages never opened or clicked: a
    service that doubles the holdout's response."""
    out, w = world
    ev = w.events
    hold_users = set(np.asarray(w.users["user_id"])[ExplorationPolicy(0, settings.holdout_share, settings.policy_salt)
                                                   .in_holdout(w.users["user_id"].tolist())])
    msgs = ev.loc[(ev["event_type"] == "send") & ev["user_id"].isin(hold_users), "message_id"]
    drop_msgs = set(msgs.iloc[::2])
    thin = ev.loc[~(ev["event_type"].isin(["open", "click"]) & ev["message_id"].isin(drop_msgs))]
    path = tmp_path / "events.parquet"
    thin.to_parquet(path, index=False)
    return path, out / "users.parquet"


def test_the_holdout_measures_a_doubled_response_per_outcome(world, tmp_path):
    from sendtime.holdout import evaluate_holdout

    settings = Settings.from_env({**home_env(tmp_path / "home"), "SENDTIME_HOLDOUT_SHARE": "0.2"})
    events, users = _thinned(world, tmp_path, settings)
    rep = evaluate_holdout(settings, events, users, SINCE, UNTIL, say=lambda m: None)
    t = rep.table.set_index("outcome")
    assert set(t.index) == {"open", "click", "unsubscribe"}  # no conversions in this history
    assert 0.15 < rep.holdout_users / (rep.holdout_users + rep.treated_users) < 0.25
    assert t.loc["open", "lift_lo"] < 1.0 < t.loc["open", "lift_hi"]  # the truth: +100%
    assert t.loc["open", "lift_lo"] > 0.5 and t.loc["click", "lift"] > 0.5


def test_no_effect_gives_an_interval_around_zero(world, tmp_path):
    from sendtime.holdout import evaluate_holdout

    out, _ = world
    settings = Settings.from_env({**home_env(tmp_path / "home"), "SENDTIME_HOLDOUT_SHARE": "0.2"})
    rep = evaluate_holdout(settings, out / "events.parquet", out / "users.parquet", SINCE, UNTIL, say=lambda m: None)
    t = rep.table.set_index("outcome")
    assert t.loc["open", "lift_lo"] < 0 < t.loc["open", "lift_hi"]
    assert t.loc["open", "lift_hi"] - t.loc["open", "lift_lo"] < 0.4


def test_the_command_prints_the_lifts_and_refuses_without_a_holdout(world, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from sendtime.cli import app

    out, _ = world
    for k, v in home_env(tmp_path / "home").items():
        monkeypatch.setenv(k, v)
    args = ["evaluate", "--holdout", "--events", str(out / "events.parquet"), "--users", str(out / "users.parquet"),
            "--since", "2026-03-15", "--as-of", "2026-04-13"]
    monkeypatch.setenv("SENDTIME_HOLDOUT_SHARE", "0.2")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "in the holdout" in r.output and "open" in r.output and "lift" in r.output
    monkeypatch.setenv("SENDTIME_HOLDOUT_SHARE", "0")
    r = CliRunner().invoke(app, args)
    assert r.exit_code != 0 and "no control group" in r.output
    r = CliRunner().invoke(app, args[:2] + args[2:4])
    assert r.exit_code != 0 and "--holdout needs" in r.output
