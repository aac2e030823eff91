"""The simulator as a family: knobs drawn from wide ranges, real people's rhythms, held-out
members; none of it needs the real-data folder (a tiny stand-in is written here)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sendtime.simulation.real_rhythms import MIN_EVENTS, real_shapes, smooth_shapes
from sendtime.simulation.simulate import (HELD_OUT_SEED_FROM, HELD_OUT_SOURCES, TUNING_SOURCES, family_config, simulate_world,
                               world_config)


@pytest.fixture()
def realdata(tmp_path):
    """A stand-in real-data folder: 12 commit authors, each active around their own hour."""
    rng = np.random.default_rng(0)
    rows = []
    for a in range(12):
        peak = (a * 2) % 24
        for _ in range(MIN_EVENTS + 10):
            day, hour = int(rng.integers(0, 7)), int((peak + rng.normal(0, 1.5)) % 24)
            rows.append({"author_id": f"a{a}", "author_local_hour_of_week": day * 24 + hour})
    rows.append({"author_id": "too-few", "author_local_hour_of_week": 3})
    pd.DataFrame(rows).to_csv(tmp_path / "git_commits.csv", index=False)
    return tmp_path


def test_real_shapes_are_one_per_person_with_their_own_peak(realdata):
    shapes, which = real_shapes(["git"], realdata)
    assert shapes.shape == (12, 168) and (which == 0).all()  # the author with one commit is left out
    assert np.allclose(shapes.max(1), 1.0)
    peaks = shapes.reshape(12, 7, 24).mean(1).argmax(1)
    want = (np.arange(12) * 2) % 24
    assert (np.minimum(abs(peaks - want), 24 - abs(peaks - want)) <= 2).all()


def test_unknown_or_missing_sources_are_clear_errors(realdata, tmp_path):
    with pytest.raises(ValueError, match="unknown real rhythm source"):
        real_shapes(["myspace"], realdata)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        real_shapes(["git"], tmp_path / "nowhere")


def test_smoothing_keeps_mass_near_the_events():
    c = np.zeros((1, 168))
    c[0, 24 * 2 + 9] = 50
    s = smooth_shapes(c)
    assert s[0].argmax() % 24 == 9 and s[0, 24 * 2 + 9] == 1.0


def test_a_world_of_real_rhythms_uses_them(realdata):
    w = simulate_world(world_config("default", n_users=300, days=21, rhythm="real:git", realdata_dir=str(realdata)))
    lam = w.truth["p_open"].to_numpy().reshape(300, 168)
    assert np.isfinite(lam).all() and (w.user_truth["persona"] == "real:git").all()


def test_family_members_span_the_ranges_and_hold_out_seeds(realdata):
    cfgs = [family_config(s, n_users=100, realdata_dir=str(realdata)) for s in range(40)]
    days = [c.days for c in cfgs]
    assert min(days) >= 14 and max(days) <= 365 and max(days) > 150 and min(days) < 40
    assert {c.rhythm.split(":")[0] for c in cfgs} == {"personas", "random", "real"}
    flags = {("absent" if not c.machine_flags else "partial" if c.flag_share < 1 else "present") for c in cfgs}
    assert flags == {"absent", "partial", "present"}
    assert max(c.mpp_share for c in cfgs) > 0.5 and min(c.mpp_share for c in cfgs) < 0.1
    assert max(c.late_fetch_share for c in cfgs) > 0.5 and max(c.eager_share for c in cfgs) > 0.2
    assert family_config(7, realdata_dir=str(realdata)) == family_config(7, realdata_dir=str(realdata))
    tuned = [c.rhythm for c in cfgs if c.rhythm.startswith("real:")]
    held = [family_config(s, realdata_dir=str(realdata)).rhythm for s in range(HELD_OUT_SEED_FROM, HELD_OUT_SEED_FROM + 30)]
    assert all(r == "real:" + ",".join(TUNING_SOURCES) for r in tuned)
    assert {r for r in held if r.startswith("real:")} == {"real:" + ",".join(HELD_OUT_SOURCES)}


def test_late_fetches_wait_for_the_night_and_eager_humans_open_within_a_minute():
    w = simulate_world(world_config("default", n_users=800, days=28, seed=4, late_fetch_share=1.0, eager_share=0.5))
    mt = w.message_truth
    machine = mt.loc[mt["machine_open_at"].notna()]
    delay_h = (machine["machine_open_at"] - machine["sent_at"]) / pd.Timedelta(hours=1)
    assert delay_h.median() > 3 and delay_h.max() <= 30
    eager = set(w.user_truth.loc[w.user_truth["is_eager"], "user_id"])
    opened = mt.loc[mt["human_open"] & mt["user_id"].isin(eager)]
    fast = ((opened["human_open_at"] - opened["sent_at"]) <= pd.Timedelta(minutes=1)).mean()
    assert fast > 0.2


def test_partial_flags_cover_only_the_recent_part_of_the_history():
    w = simulate_world(world_config("default", n_users=300, days=40, seed=2, flag_share=0.25))
    opens = w.events.loc[w.events["event_type"] == "open"]
    flagged = opens["machine_open"].notna()
    split = w.config.end_ts - pd.Timedelta(days=10)
    assert flagged[opens["timestamp"] >= split].all() and not flagged[opens["timestamp"] < split].any()


@pytest.mark.parametrize("bad, match", [
    (dict(machine_delay_s=(10.0, 5.0)), "machine_delay_s"),
    (dict(late_fetch_share=1.5), "late_fetch_share"),
    (dict(rhythm="martian"), "rhythm must be"),
    (dict(eager_boost=0.5), "eager_boost"),
])
def test_bad_family_knobs_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        world_config("default", **bad)


def test_simulate_command_draws_a_family_member(tmp_path):
    from typer.testing import CliRunner

    from sendtime.cli import app

    r = CliRunner().invoke(app, ["simulate", "--world", "family", "--seed", "1002", "--users", "150", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    import json

    meta = json.loads((tmp_path / "world.json").read_text())
    want = family_config(1002, n_users=150)
    assert meta["config"]["days"] == want.days and meta["config"]["mpp_share"] == pytest.approx(want.mpp_share)


def test_a_proxy_that_misses_some_messages_fetches_that_share():
    w = simulate_world(world_config("default", n_users=600, days=28, seed=8, mpp_share=0.5, fetch_share=0.6))
    mt = w.message_truth
    mpp = mt["user_id"].isin(set(w.user_truth.loc[w.user_truth["is_mpp"], "user_id"])) & ~mt["bounced"]
    share = mt.loc[mpp, "machine_open_at"].notna().mean()
    assert 0.55 < share < 0.65
