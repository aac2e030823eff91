"""The compiled profile kernels give the numpy reference's numbers bit for bit, on generated
inputs that exercise every branch and on the tiny world's real messages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sendtime.features import kernels, profiles
from sendtime.features.contract import read_users
from sendtime.features.engagement import outcomes_at
from sendtime.features.profiles import ShrinkageParams

AS_OF = pd.Timestamp("2026-04-13", tz="UTC")


def _messages(rng, n_msgs: int, n_users: int, horizon: int = 24):
    uidx = rng.integers(0, n_users, n_msgs)
    how = rng.choice([9, 10, 33, 57, 100, 150, 160, 167], n_msgs) if n_msgs else np.zeros(0, np.int64)
    opened = rng.random(n_msgs) < 0.3
    delay = np.where(opened, rng.integers(0, horizon, n_msgs), -1)
    at_risk = np.where(opened, delay + 1, rng.choice([horizon, horizon, 3, 0], n_msgs))  # some cut short, some bounced
    return uidx, how, at_risk, delay


@pytest.mark.parametrize("n_msgs,n_users,horizon,decay", [(20_000, 700, 24, 0.83), (5_000, 3_000, 12, 0.5), (0, 5, 24, 0.9)])
def test_risk_counts_equal_the_reference(n_msgs, n_users, horizon, decay):
    rng = np.random.default_rng(n_msgs)
    args = _messages(rng, n_msgs, n_users, horizon)
    O_ref, E_ref = profiles.risk_counts(*args, n_users, horizon, decay)
    O, E = kernels.risk_counts(*args, n_users, horizon, decay)
    np.testing.assert_array_equal(O, O_ref)
    np.testing.assert_array_equal(E, E_ref)  # exact: same products, added in the same order
    assert E.sum() > 0 or n_msgs == 0
    # the order of the messages does not change a bit
    perm = rng.permutation(n_msgs)
    O2, E2 = kernels.risk_counts(*(a[perm] for a in args), n_users, horizon, decay)
    np.testing.assert_array_equal(E2, E_ref)


@pytest.mark.parametrize("smooth_hours", [1.0, 0.0, 2.5])
def test_user_profiles_and_row_stats_equal_the_reference(smooth_hours):
    rng = np.random.default_rng(3)
    args = _messages(rng, 30_000, 900)
    O, E = profiles.risk_counts(*args, 900, 24, 0.8)
    O[:50], E[:50] = 0.0, 0.0  # users with no evidence get their prior
    prior48 = rng.gamma(2.0, 0.01, size=(900, 48))  # the rhythm mixture's form: weekday and weekend hours
    p = ShrinkageParams(smooth_hours=smooth_hours)
    lam_ref, level_ref = profiles.user_profiles(O, E, profiles.from_daytype48(prior48), p)
    lam, level = kernels.user_profiles(O, E, prior48, p)
    np.testing.assert_array_equal(kernels.user_profiles(O, E, profiles.from_daytype48(prior48), p)[0], lam_ref)
    np.testing.assert_array_equal(level, level_ref)
    np.testing.assert_array_equal(lam, lam_ref)
    assert lam.dtype == np.float32 and not np.allclose(lam[0], lam[-1])
    O48, E48, e_tot = kernels.row_stats(O, E)
    np.testing.assert_array_equal(O48, profiles.to_daytype48(O))
    np.testing.assert_array_equal(E48, profiles.to_daytype48(E))
    np.testing.assert_array_equal(e_tot, E.sum(1))


def test_kernels_on_the_tiny_worlds_messages(world_dir):
    from sendtime.features.contract import read_events
    from sendtime.features.messages import build_messages

    users = read_users(world_dir / "users.parquet").accepted
    ev = read_events(world_dir / "events.parquet", now=AS_OF + pd.Timedelta(days=7)).accepted
    msgs = build_messages(ev.loc[ev["timestamp"] < AS_OF], users)
    index = pd.Index(users["user_id"])
    uidx = index.get_indexer(msgs["user_id"])
    oc = outcomes_at(msgs, uidx, len(index), AS_OF, 24)
    args = (uidx, msgs["send_how"].to_numpy(np.int64), oc.at_risk_hours, oc.open_delay_hour)
    assert oc.opened.sum() > 100 and oc.is_machine_user.sum() > 0
    decay, _ = profiles.fit_decay(args[1], oc.at_risk_hours, oc.open_delay_hour, 24)
    ref = profiles.risk_counts(*args, len(index), 24, decay)
    got = kernels.risk_counts(*args, len(index), 24, decay)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)


def test_decay_counts_count_every_hour_at_risk():
    how = np.array([0, 0, 5, 167])
    at_risk = np.array([3, 1, 0, 2])
    delay = np.array([2, -1, -1, 1])
    A, B = profiles.decay_counts(how, at_risk, delay, 4)
    assert A[0].tolist() == [2, 1, 1, 0] and A[5].sum() == 0 and A[167].tolist() == [1, 1, 0, 0]
    assert B[0, 2] == 1 and B[167, 1] == 1 and B.sum() == 2


@pytest.mark.parametrize("days_before", [0, 3, 20])
def test_compiled_outcomes_equal_the_reference(world_dir, days_before):
    """Machine openers, human opens, hours at risk and clicks: the same arrays, also at a cutoff
    inside the history (outcomes after it unseen, sends cut short)."""
    from sendtime.features.contract import read_events
    from sendtime.features.engagement import outcomes_of
    from sendtime.features.messages import OUTCOME_COLUMNS, build_messages, micros, micros_of

    users = read_users(world_dir / "users.parquet").accepted
    ev = read_events(world_dir / "events.parquet", now=AS_OF + pd.Timedelta(days=7)).accepted
    msgs = build_messages(ev.loc[ev["timestamp"] < AS_OF], users)
    cut = AS_OF - pd.Timedelta(days=days_before, hours=5)
    index = pd.Index(users["user_id"])
    uidx = index.get_indexer(msgs["user_id"]).astype(np.int64)
    send = micros(msgs["send_ts"])
    t = {c: micros(msgs[c]) for c in OUTCOME_COLUMNS}
    how = msgs["send_how"].to_numpy(np.int64)
    ref = outcomes_of(send, t, uidx, len(index), micros_of(cut), 24, how=how)
    got = kernels.outcomes(send, t, uidx, len(index), micros_of(cut), 24, how=how)
    for name in ("sent", "opened", "open_delay_hour", "at_risk_hours", "clicked", "is_machine_user", "fast_share"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
    assert ref.opened.sum() > 50 and ref.is_machine_user.any() and (ref.at_risk_hours < 24).any()


def test_compiled_activity_and_decay_counts_equal_the_reference(world_dir):
    from sendtime.features.contract import read_events
    from sendtime.features.engagement import activity_columns, outcomes_of
    from sendtime.features.messages import OUTCOME_COLUMNS, build_messages, micros, micros_of

    users = read_users(world_dir / "users.parquet").accepted
    ev = read_events(world_dir / "events.parquet", now=AS_OF + pd.Timedelta(days=7)).accepted
    msgs = build_messages(ev.loc[ev["timestamp"] < AS_OF], users)
    index = pd.Index(users["user_id"])
    uidx = index.get_indexer(msgs["user_id"]).astype(np.int64)
    send, how = micros(msgs["send_ts"]), msgs["send_how"].to_numpy(np.int64)
    t = {c: micros(msgs[c]) for c in OUTCOME_COLUMNS}
    cut = micros_of(AS_OF - pd.Timedelta(days=2))
    oc = outcomes_of(send, t, uidx, len(index), cut, 24, how=how)
    ref = activity_columns(send, t["t_click"], uidx, len(index), oc, cut)
    cols, A, B = kernels.activity_and_decay(send, t["t_click"], how, uidx, len(index), oc, cut, 24)
    assert list(cols) == list(ref)
    for k in ref:
        np.testing.assert_array_equal(cols[k], ref[k], err_msg=k)
        assert cols[k].dtype == ref[k].dtype
    A_ref, B_ref = profiles.decay_counts(how, oc.at_risk_hours, oc.open_delay_hour, 24)
    np.testing.assert_array_equal(A, A_ref)
    np.testing.assert_array_equal(B, B_ref)
    assert ref["clicks_90d"].sum() > 0 and (ref["days_since_open"] < 999).any()


@pytest.mark.parametrize("decay,widths", [(0.3, (3, 6, 24)), (0.87, (24, 3, 6)), (0.5, (1, 48, 6)), (1.0, (200,))])
def test_decayed_sums_in_one_pass_equal_the_reference(decay, widths):
    """Bit for bit, for every width asked (in any order, past a week's 168 hours too)."""
    rng = np.random.default_rng(len(widths))
    lam = (rng.gamma(0.5, 0.02, size=(257, 168)) * (rng.random((257, 168)) < 0.7)).astype(np.float32)
    got = kernels.decayed_sums_at(lam, decay, widths)
    for w, g in zip(widths, got):
        np.testing.assert_array_equal(g, profiles.decayed_sums(lam, decay, w))
    assert kernels.decayed_sums_at(lam[:0], decay, widths)[0].shape == (0, 168)
    with pytest.raises(ValueError, match="at least one hour"):
        kernels.decayed_sums_at(lam, decay, (0, 3))
