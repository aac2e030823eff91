"""Features: point-in-time correctness, one code path for training and serving rows, and the
exposure-corrected profile recovering a user's rhythm despite a fixed send schedule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sendtime.features.contract import read_events, read_users, validate_events, validate_users
from sendtime.features.definitions import MODEL_FEATURES
from sendtime.features.engagement import build_user_features
from sendtime.features.messages import build_messages
from sendtime.training.dataset import build_training_set

CUT = pd.Timestamp("2026-03-30", tz="UTC")


@pytest.fixture(scope="module")
def world(world_dir):
    ev = read_events(world_dir / "events.parquet").accepted
    us = read_users(world_dir / "users.parquet").accepted
    return ev, us


def _features(ev, us, cut=CUT):
    return build_user_features(build_messages(ev, us), us, cut)


def test_events_after_the_cutoff_change_no_feature(world):
    ev, us = world
    before = _features(ev.loc[ev["timestamp"] < CUT], us)
    full = _features(ev, us)  # same cutoff, but the history runs two more weeks
    pd.testing.assert_frame_equal(before.table, full.table)
    np.testing.assert_array_equal(before.lam, full.lam)
    # and an open of a pre-cutoff send that lands after the cutoff is not seen either
    late_send = ev.loc[(ev["event_type"] == "send") & (ev["timestamp"] < CUT)].iloc[-1]
    extra = pd.DataFrame([{**late_send.to_dict(), "event_id": "late-open", "event_type": "open",
                           "timestamp": CUT + pd.Timedelta(minutes=30), "machine_open": False}])
    with_late = _features(pd.concat([ev, extra], ignore_index=True), us)
    pd.testing.assert_frame_equal(full.table, with_late.table)


def test_features_do_see_events_before_the_cutoff(world):
    ev, us = world
    a = _features(ev, us, CUT)
    b = _features(ev, us, CUT + pd.Timedelta(days=7))
    assert (a.table["sends_90d"] < b.table["sends_90d"]).sum() > 0.5 * len(a.table)


def test_training_rows_are_built_by_the_serving_code(world):
    ev, us = world
    msgs = build_messages(ev, us)
    ts = build_training_set(msgs, us, pd.Timestamp("2026-04-13", tz="UTC"), 24, 7, 7, 10**9)
    assert list(ts.X.columns) == list(MODEL_FEATURES)
    snap = ts.meta["snapshot"].iloc[len(ts.meta) // 2]
    rows = ts.meta.index[ts.meta["snapshot"] == snap][:50]
    uf = build_user_features(msgs, us, snap)
    again = uf.model_frame(uf.rows_of(ts.meta.loc[rows, "user_id"]), ts.meta.loc[rows, "send_how"].to_numpy())
    pd.testing.assert_frame_equal(ts.X.loc[rows].reset_index(drop=True), again)
    # every training row's features come from a snapshot at or before its send
    assert (ts.meta["snapshot"] <= ts.meta["send_ts"]).all()
    # labels are fully observed: the horizon of every labelled send ends before the as-of date
    assert (ts.meta["send_ts"] + pd.Timedelta(hours=24) <= pd.Timestamp("2026-04-13", tz="UTC")).all()


def _one_user_history(peak_local_hour: int, n_days: int = 60) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A Berlin user mailed every day at 06:00 UTC who reads mail only around ``peak_local_hour``."""
    rng = np.random.default_rng(1)
    rows = []
    start = pd.Timestamp("2026-01-05T06:00:00Z")
    for d in range(n_days):
        send = start + pd.Timedelta(days=d)
        rows.append((f"s{d}", "u1", f"m{d}", "send", send, pd.NA))
        local_send = send.tz_convert("Europe/Berlin")
        peak = local_send.normalize() + pd.Timedelta(hours=peak_local_hour, minutes=int(rng.integers(0, 50)))
        if rng.random() < 0.7:
            rows.append((f"o{d}", "u1", f"m{d}", "open", peak.tz_convert("UTC"), False))
    ev = pd.DataFrame(rows, columns=["event_id", "user_id", "message_id", "event_type", "timestamp", "machine_open"])
    ev["timestamp"] = pd.to_datetime(ev["timestamp"], utc=True)
    us = pd.DataFrame({"user_id": ["u1"], "timezone": ["Europe/Berlin"], "segment": ["consumer"]})
    return validate_events(ev, now=pd.Timestamp("2026-12-01", tz="UTC")).accepted, us


def test_profile_finds_the_reading_hour_not_the_send_hour():
    ev, us = _one_user_history(peak_local_hour=19)
    uf = build_user_features(build_messages(ev, us), us, pd.Timestamp("2026-03-10", tz="UTC"))
    weekday_profile = uf.lam[0, :24]
    assert int(np.argmax(weekday_profile)) == 19
    # the send hour (07:00 Berlin winter time) is not where the user reads
    assert weekday_profile[19] > 5 * weekday_profile[7]


def test_no_history_users_get_the_prior(world):
    ev, us = world
    uf = _features(ev, us)
    cold = uf.table["n_sends"] == 0
    assert cold.any()
    assert (uf.table.loc[cold, "source"] == "prior").all()
    assert (uf.table.loc[cold, "confidence"] == 0).all()
    assert (uf.table.loc[~cold, "source"] == "model").all()


def test_snapshot_round_trip_gives_the_same_rows_for_known_and_cold_users(world, tmp_path):
    from sendtime.features.store import load_features, save_features
    from sendtime.serving.scoring import _empty_messages

    ev, us = world
    uf = _features(ev, us)
    back = load_features(save_features(uf, tmp_path / "snap"))
    rows = np.arange(len(uf.table))
    how = (rows * 7) % 168
    pd.testing.assert_frame_equal(uf.model_frame(rows, how), back.model_frame(rows, how))
    cold = pd.DataFrame({"user_id": ["new1"], "timezone": ["Asia/Tokyo"], "segment": ["business"]})
    a = build_user_features(_empty_messages(), cold, CUT, prior=uf.prior)
    b = build_user_features(_empty_messages(), cold, CUT, prior=back.prior)
    np.testing.assert_allclose(a.lam, b.lam, rtol=1e-6)
    assert back.prior.mixture is not None and back.prior.mixture.components.shape[1] == 48


def test_history_with_sends_but_no_opens_builds_features():
    ev = validate_events(pd.DataFrame({"event_id": ["s1", "s2"], "user_id": ["u", "u"], "message_id": ["m1", "m2"],
                                       "event_type": ["send", "send"],
                                       "timestamp": ["2026-03-01T10:00:00Z", "2026-03-02T10:00:00Z"]})).accepted
    us = validate_users(pd.DataFrame({"user_id": ["u"], "timezone": ["UTC"]})).accepted
    uf = build_user_features(build_messages(ev, us), us, pd.Timestamp("2026-03-10", tz="UTC"))
    assert uf.table.loc["u", "sends_28d"] == 2 and uf.table.loc["u", "human_opens_28d"] == 0


def test_the_slot_blocks_are_the_model_frame_as_float32(tmp_path):
    """The compiled scoring's input, built without the frame: the same numbers, split into the
    columns that vary by slot (a column's rows side by side) and one row per user of the rest,
    in any columns' order."""
    from sendtime.features.definitions import HOUR_BLIND_FEATURES
    from sendtime.simulation.simulate import simulate_world, world_config

    w = simulate_world(world_config("default", n_users=300, days=30, seed=4))
    ev, us = validate_events(w.events).accepted, validate_users(w.users).accepted
    uf = build_user_features(build_messages(ev, us), us, w.config.end_ts)
    cols = list(MODEL_FEATURES)[::-1]
    varies = np.array([c not in HOUR_BLIND_FEATURES for c in cols])
    want = uf.model_frame(np.repeat(np.arange(40, 97), 168), np.tile(np.arange(168), 57))[cols].to_numpy(dtype=np.float32)
    XT, U = uf.slot_blocks(40, 97, cols, varies)
    assert XT.shape == (varies.sum(), 57 * 168) and U.shape == (57, (~varies).sum())
    np.testing.assert_array_equal(XT.T, want[:, varies])
    np.testing.assert_array_equal(U, want[::168][:, ~varies])
    assert (want[:, ~varies].reshape(57, 168, -1) == U[:, None, :]).all()  # a user's own columns: one row is all rows
    with pytest.raises(KeyError, match="not a per-user model feature"):
        uf.slot_blocks(0, 3, ["nope"], np.array([False]))
    with pytest.raises(KeyError, match="varies by slot"):
        uf.slot_blocks(0, 3, ["sends_7d"], np.array([True]))
