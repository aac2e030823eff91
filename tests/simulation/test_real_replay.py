"""The randomized-prompt replay on real activity: prompts, responses and the judge, on a
small generated stand-in for a real source (the default run must not need ../shared)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sendtime.cli import app
from sendtime.simulation.real_replay import START, ReplayConfig, design_config, judge, replay_events, run_replay
from sendtime.simulation.real_rhythms import activity_instants


def _studentlife(tmp_path, n_people: int = 16, days: int = 21, seed: int = 0):
    """Hourly activity levels like StudentLife's: half the people active 8-11, half 18-21."""
    rng = np.random.default_rng(seed)
    hours = pd.date_range("2013-03-25 00:00", periods=days * 24, freq="h")  # a Monday
    rows = []
    for p in range(n_people):
        busy = range(8, 12) if p % 2 == 0 else range(18, 22)
        act = np.where(np.isin(hours.hour, list(busy)), rng.random(len(hours)) < 0.85, rng.random(len(hours)) < 0.05)
        level = np.where(act, rng.integers(1, 6, len(hours)), 0)
        rows.append(pd.DataFrame({"timestamp": hours.strftime("%Y-%m-%d %H:%M:%S") + "-05:00", "user": f"u{p:02d}",
                                  "activity": level, "group": "none"}))
    pd.concat(rows).to_csv(tmp_path / "studentlife_activity.csv", index=False)
    return tmp_path


def test_prompts_are_uniform_and_responses_read_off_the_activity(tmp_path):
    root = _studentlife(tmp_path, days=10)  # one 10-day window: the replay keeps all of it
    act = activity_instants("studentlife", root)
    assert (act["local"].dt.minute == 30).all()  # the middle of each active hour
    cfg = ReplayConfig(source="studentlife", days=10, history_days=7, per_day=6, hours=(8, 22), window_minutes=60)
    events, users, prompts = replay_events(act, cfg)
    assert len(users) == 16 and len(prompts) == 16 * 10 * 6
    sends = events.loc[events["event_type"] == "send"]
    assert np.allclose(sends["propensity"], 1 / 14)
    local_hour = prompts["send_ts"].dt.hour
    assert local_hour.between(8, 21).all() and prompts["send_ts"].min() >= START
    # every response is the person's first activity within the hour after the prompt
    person_of = dict(zip(users["user_id"], sorted(act["person"].unique())))
    for r in prompts.sample(200, random_state=0).itertuples():
        mine = act.loc[act["person"] == person_of[r.user_id], "local"]
        mine = START + (mine - pd.Timestamp("2013-03-25"))
        after = mine[(mine >= r.send_ts) & (mine < r.send_ts + pd.Timedelta(minutes=60))]
        assert r.responded == (len(after) > 0)
        if r.responded:
            assert r.open_ts == after.min()
    opens = events.loc[events["event_type"] == "open"].merge(sends[["message_id", "timestamp"]], on="message_id")
    assert (opens["timestamp_x"] >= opens["timestamp_y"]).all()
    # morning people answer mornings, evening people evenings
    rate = prompts.assign(morning=local_hour < 14).groupby(["user_id", "morning"])["responded"].mean().unstack()
    assert rate.loc["p0000", True] > 2 * rate.loc["p0000", False]
    assert rate.loc["p0001", False] > 2 * rate.loc["p0001", True]


def test_judge_measures_pooled_and_within_person_auc():
    test = pd.DataFrame({
        "user_id": ["a"] * 4 + ["b"] * 4,
        "responded": [1, 0, 1, 0, 1, 1, 0, 0],
        "score": [0.9, 0.1, 0.8, 0.2, 0.7, 0.6, 0.3, 0.4],
        "blind": [0.5] * 4 + [0.5] * 4,
    })
    j = judge(test, n_boot=50)
    assert j["auc_sendtime"] == 1.0 and j["auc_hour_blind"] == 0.5 and j["auc_within_person"] == 1.0
    assert 0 < j["diff_low"] <= j["diff_high"] <= 0.5


def test_replay_learns_the_hours_a_week_of_randomized_prompts_shows(tmp_path):
    """Everyone answers about as often, so the hour-blind baseline is a coin; the hours differ
    by person and sendtime, trained by the real nightly on 7 days, must rank by them."""
    (tmp_path / "real").mkdir()
    root = _studentlife(tmp_path / "real")
    (tmp_path / "work").mkdir()
    r = run_replay(ReplayConfig(source="studentlife", days=10, history_days=7, per_day=10), root,
                   workdir=tmp_path / "work", say=lambda m: None)
    assert r.people == 16 and r.held_out_sends == 16 * 3 * 10
    assert r.auc_within_person > 0.75
    assert r.auc_sendtime > r.auc_hour_blind + 0.1
    assert r.diff_low > 0


def test_designs_and_bad_input(tmp_path):
    assert design_config("mrt", "enron").per_day == 5
    with pytest.raises(ValueError, match="design"):
        design_config("weekly", "git")
    with pytest.raises(ValueError, match="history_days"):
        ReplayConfig(source="git", days=7, history_days=7)
    runner = CliRunner()
    res = runner.invoke(app, ["replay", "--designs", "weekly"])
    assert res.exit_code == 2 and "weekly" in res.output
    res = runner.invoke(app, ["replay", "--realdata", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "does not exist" in res.output
