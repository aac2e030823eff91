"""The machine-open mixture (features/machine_opens.py) on worlds where a delay window fails:
proxies that fetch hours later, humans who open within a minute, no machine openers at all,
flags on part of the history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sendtime.features.contract import validate_events, validate_users
from sendtime.features.machine_opens import STAT_COLUMNS, MachineOpenModel, classify, machine_stats
from sendtime.features.messages import MACHINE_OPEN_WINDOW, OUTCOME_COLUMNS, build_messages, micros, micros_of
from sendtime.simulation.evaluate import machine_open_report
from sendtime.simulation.simulate import simulate_world, world_config

WINDOW = int(MACHINE_OPEN_WINDOW.total_seconds() * 1e6)


def _world(**kw):
    cfg = world_config("default", n_users=1500, days=60, seed=11, **kw)
    w = simulate_world(cfg)
    return w, validate_events(w.events).accepted, validate_users(w.users).accepted


def _stats(ev, us, as_of):
    msgs = build_messages(ev, us)
    idx = pd.Index(us["user_id"])
    t = {c: micros(msgs[c]) for c in OUTCOME_COLUMNS}
    st = machine_stats(micros(msgs["send_ts"]), t, idx.get_indexer(msgs["user_id"]), len(idx), micros_of(as_of), 24, WINDOW)
    return idx, st


def test_late_prefetch_without_flags_is_found_by_the_mixture():
    # most proxy fetches wait for the next night: almost no machine open is within 10 minutes
    w, ev, us = _world(machine_flags=False, late_fetch_share=0.8, machine_delay_s=(60.0, 4 * 3600.0))
    idx, st = _stats(ev, us, w.config.end_ts)
    fast_share = st[:, 2] / np.maximum(st[:, 0], 1)
    is_mpp = w.is_mpp.reindex(idx).to_numpy()
    assert np.median(fast_share[is_mpp & (st[:, 0] > 0)]) < 0.3  # a 10-minute window would miss them
    rep = machine_open_report(ev, us, w.open_truth, w.config.end_ts, user_truth=w.user_truth)
    for k in ("machine_user_precision", "machine_user_recall", "machine_open_precision", "machine_open_recall"):
        assert rep[k] >= 0.9, (k, rep)


def test_eager_checkers_are_not_machine_openers():
    # no proxy at all, and 40% of people open within a minute when they are awake
    w, ev, us = _world(machine_flags=False, mpp_share=0.0, eager_share=0.4, eager_boost=4.0)
    idx, st = _stats(ev, us, w.config.end_ts)
    eager = w.user_truth.set_index("user_id")["is_eager"].reindex(idx).to_numpy()
    fast_share = st[:, 2] / np.maximum(st[:, 0], 1)
    assert fast_share[eager].mean() > 3 * fast_share[~eager].mean()  # they do open fast
    is_machine, p, model = classify(st)
    assert not model.has_machine_
    assert is_machine.sum() == 0


def test_eager_checkers_beside_late_proxies():
    w, ev, us = _world(machine_flags=False, eager_share=0.3, late_fetch_share=0.5, machine_delay_s=(2.0, 1800.0))
    rep = machine_open_report(ev, us, w.open_truth, w.config.end_ts, user_truth=w.user_truth)
    for k in ("machine_user_precision", "machine_user_recall", "machine_open_precision", "machine_open_recall"):
        assert rep[k] >= 0.9, (k, rep)


def test_flags_on_part_of_the_history_label_users_and_calibrate_the_rest():
    w, ev, us = _world(flag_share=0.3, late_fetch_share=0.5)
    idx, st = _stats(ev, us, w.config.end_ts)
    fm, fh = st[:, STAT_COLUMNS.index("flag_machine")], st[:, STAT_COLUMNS.index("flag_human")]
    labelled = (fm + fh) > 0
    assert 0.2 < labelled.mean() < 0.95  # some users carry flags, some do not
    model = MachineOpenModel().fit(st)
    p = model.posterior(st)
    np.testing.assert_array_equal(p[labelled], (fm >= fh)[labelled].astype(float))
    is_mpp = w.is_mpp.reindex(idx).to_numpy()
    unl = ~labelled & (st[:, 0] >= 3)
    assert unl.sum() > 50
    assert ((p[unl] >= 0.5) == is_mpp[unl]).mean() >= 0.95


def test_the_fit_depends_on_counts_not_on_user_order_or_buckets():
    w, ev, us = _world(machine_flags=False, late_fetch_share=0.5)
    _, st = _stats(ev, us, w.config.end_ts)
    a = MachineOpenModel().fit(st)
    perm = np.random.default_rng(0).permutation(len(st))
    b = MachineOpenModel().fit(np.concatenate([st[perm[:400]], np.zeros((30, 6), np.int64), st[perm[400:]]]))
    np.testing.assert_array_equal(a.posterior(st), b.posterior(st))
    c = MachineOpenModel.from_dict(a.to_dict())
    np.testing.assert_allclose(a.posterior(st), c.posterior(st))
    assert 0.2 < a.summary()["machine_share"] < 0.4


def test_no_data_means_no_machine_openers():
    is_machine, p, model = classify(np.zeros((5, 6), np.int64))
    assert not is_machine.any() and not model.has_machine_


@pytest.mark.parametrize("bad", [np.zeros((3, 5))])
def test_counts_have_six_columns(bad):
    with pytest.raises(ValueError):
        MachineOpenModel().fit(bad)
