"""Activity not tied to a message: its contract, point-in-time counts, and the rhythm it lends
to each user's prior, as strongly as the held-out weeks say."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sendtime.features import inputs as R
from sendtime.features.activity import (
    BAD_VALUE,
    activity_counts,
    activity_prior,
    build_activity,
    read_activity,
    validate_activity,
)
from sendtime.features.contract import ContractError, validate_events, validate_users
from sendtime.features.engagement import build_user_features
from sendtime.features.messages import build_messages
from sendtime.simulation.simulate import simulate_world, world_config

NOW = pd.Timestamp("2026-04-13", tz="UTC")


def test_every_activity_row_is_accepted_or_rejected_with_its_reason():
    raw = pd.DataFrame({
        "event_id": ["a1", "a2", "a3", "a4", "a5", "a6", "a1", None, "a9"],
        "user_id": ["u1", "u1", None, "u2", "u2", "u3", "u1", "u4", "u5"],
        "event_type": ["session", " Page_View ", "session", "swipe", "purchase", "app_open", "session", "session", "session"],
        "timestamp": ["2026-04-01T10:00:00Z", "2026-04-01T11:00:00+02:00", "2026-04-01T10:00:00Z",
                      "2026-04-01T10:00:00Z", "2026-04-02T09:00:00Z", "2026-04-02 09:00:00",
                      "2026-04-01T10:00:00Z", "2027-04-01T10:00:00Z", "2026-04-03T08:00:00Z"],
        "value": [None, None, None, None, "19.90", None, None, None, "lots"],
    })
    res = validate_activity(raw, now=NOW)
    assert res.read == res.n_accepted + res.n_rejected == 9
    why = dict(zip(res.rejects["source_row"], res.rejects["reason"]))
    assert why == {2: R.MISSING.format("user_id"), 3: R.UNKNOWN_EVENT_TYPE, 5: R.NAIVE_TIMESTAMP,
                   6: R.DUPLICATE_EVENT, 7: R.IN_THE_FUTURE, 8: BAD_VALUE}
    ok = res.accepted
    assert ok["event_type"].tolist() == ["page_view", "session", "purchase"]  # in time order; case and blanks do not matter
    assert ok.loc[ok["event_type"] == "purchase", "value"].item() == pytest.approx(19.90)
    assert str(ok["timestamp"].dt.tz) == "UTC" and ok["timestamp"].iloc[0] == pd.Timestamp("2026-04-01T09:00:00Z")


def test_an_activity_file_without_its_columns_is_refused_in_one_line(tmp_path):
    p = tmp_path / "activity.csv"
    p.write_text("user_id,timestamp\nu1,2026-04-01T10:00:00Z\n")
    with pytest.raises(ContractError) as e:
        read_activity(p)
    assert "event_type" in str(e.value) and "\n" not in str(e.value)


def test_counts_are_point_in_time_and_in_each_users_local_hour_of_week():
    users = pd.DataFrame({"user_id": ["u1", "u2"], "timezone": ["America/New_York", "Asia/Tokyo"], "segment": ["a", "a"]})
    acc = validate_activity(pd.DataFrame({
        "user_id": ["u1", "u1", "u2", "u2"], "event_type": ["session"] * 4,
        # Wednesday 2026-04-01 14:00 UTC = 10:00 in New York (EDT), 23:00 in Tokyo
        "timestamp": ["2026-04-01T14:00:00Z", "2026-04-13T00:00:00Z", "2026-04-01T14:30:00Z", "2026-04-12T23:59:59Z"],
    }), now=NOW).accepted
    act = build_activity(acc, users)
    counts = activity_counts(act, pd.Index(["u1", "u2", "u3"]), NOW)
    assert counts.shape == (3, 168)
    assert counts[0].sum() == 1 and counts[0, 2 * 24 + 10] == 1  # the event at the cutoff is not counted
    assert counts[1, 2 * 24 + 23] == 1 and counts[1, 8] == 1  # Sunday 23:59 UTC is Monday 08:59 in Tokyo
    assert counts[2].sum() == 0


def test_the_prior_takes_the_activitys_shape_as_far_as_its_strength_and_keeps_its_level():
    rng = np.random.default_rng(0)
    prior = rng.uniform(0.01, 0.05, (3, 168))
    counts = np.zeros((3, 168))
    counts[0, 20] = 200  # busy at one hour
    counts[1, 20] = 2  # two events
    out = activity_prior(prior, counts, strength=40.0, smooth_hours=0.0)
    np.testing.assert_allclose(out.mean(1), prior.mean(1))  # the level stays the e-mail history's
    np.testing.assert_allclose(out[2], prior[2])  # no activity: the prior as it was
    share = out[:, 20] / out.sum(1)
    assert share[0] > 0.8 and 0.04 < share[1] < 0.1 and share[2] < 0.03
    np.testing.assert_allclose(activity_prior(prior, counts, float("inf"), 1.0), prior)
    weak = activity_prior(prior, counts, strength=400.0, smooth_hours=0.0)
    assert weak[0, 20] < out[0, 20]


@pytest.fixture(scope="module")
def activity_world():
    w = simulate_world(world_config("activity", n_users=1200, days=49, seed=5))
    ev, us = validate_events(w.events).accepted, validate_users(w.users).accepted
    return w, build_messages(ev, us), us, build_activity(validate_activity(w.activity).accepted, us)


def _rhythm_correlation(uf, truth: pd.DataFrame) -> float:
    """Mean over users of the correlation of their profile with their true P(open) over the week."""
    lam = pd.DataFrame(uf.lam, index=uf.table.index).reindex(truth.index).to_numpy()
    t = truth.to_numpy()

    def z(x):
        return (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-12)

    return float(np.nanmean((z(lam) * z(t)).mean(1)))


def test_activity_makes_the_profiles_closer_to_the_true_rhythm(activity_world):
    w, msgs, us, act = activity_world
    truth = w.truth.pivot(index="user_id", columns="how", values="p_open")
    end = w.config.end_ts
    without = _rhythm_correlation(build_user_features(msgs, us, end), truth)
    with_act = _rhythm_correlation(build_user_features(msgs, us, end, activity=act), truth)
    assert with_act > without + 0.1, (without, with_act)
    # the mail alone is unchanged by the activity stream (its own random numbers)
    plain = simulate_world(world_config("default", n_users=1200, days=49, seed=5))
    pd.testing.assert_frame_equal(plain.events, w.events)
    assert plain.activity is None


def test_the_world_draws_activity_at_its_rate_and_never_after_the_cutoff(activity_world):
    w = activity_world[0]
    a = w.activity
    per_user_week = len(a) / w.config.n_users / (w.config.days / 7)
    assert 0.75 * 7.0 < per_user_week <= 7.0  # new users start late
    assert a["timestamp"].max() < w.config.end_ts and a["timestamp"].min() >= w.config.start_ts
    assert set(a["event_type"]) == {"session", "page_view"} and a["event_id"].is_unique
