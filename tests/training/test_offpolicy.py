"""Inverse propensity scoring: unbiased on a case with a known answer, and its 95% interval
covers the true value of a real policy on simulated logs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sendtime.training.offpolicy import LoggedSends, evaluate_policy


def test_ips_recovers_a_known_open_rate():
    rng = np.random.default_rng(0)  # a 95% interval misses 1 seed in 20 (seed 3 is one)
    n = 200_000
    q = np.linspace(0.05, 0.4, 24)  # true open rate by hour
    # logging policy: 70% at hour 14, 30% uniform -> known propensities
    explore = rng.random(n) < 0.3
    hour = np.where(explore, rng.integers(0, 24, n), 14)
    prop = np.where(hour == 14, 0.7 + 0.3 / 24, 0.3 / 24)
    reward = (rng.random(n) < q[hour]).astype(float)
    logs = LoggedSends(np.char.add("u", (np.arange(n) % 20_000).astype(str)), pd.DatetimeIndex(["2026-01-01"] * n, tz="UTC"), hour, prop, reward)
    rep = evaluate_policy(logs, chosen_hour=np.full(n, 23), status_quo_hour=14, n_boot=150)
    assert rep.snips == pytest.approx(q[23], abs=0.03)
    assert rep.ips_ci[0] < q[23] < rep.ips_ci[1]
    assert rep.snips_ci[0] < q[23] < rep.snips_ci[1]
    assert rep.status_quo_snips == pytest.approx(q[14], abs=0.01)
    true_lift = q[23] / q[14] - 1
    assert rep.lift_ci[0] < true_lift < rep.lift_ci[1]
    # a policy that never agrees with the log has no matched sends
    rep0 = evaluate_policy(logs.take(np.flatnonzero(hour == 14)), np.full(int((hour == 14).sum()), 3), 14, n_boot=50)
    assert rep0.n_matched == 0 and rep0.ips == 0


def test_truth_inside_the_interval_on_simulated_logs(tmp_path):
    from sendtime.features.contract import validate_events, validate_users
    from sendtime.features.engagement import build_user_features, outcomes_at
    from sendtime.features.messages import build_messages, hour_of_week
    from sendtime.features.definitions import MODEL_FEATURES
    from sendtime.simulation.evaluate import truth_matrix
    from sendtime.simulation.simulate import simulate_world, world_config
    from sendtime.training.dataset import build_training_set
    from sendtime.training.model import ForestParams, make_pipeline
    from sendtime.training.offpolicy import logged_sends, policy_hours

    w = simulate_world(world_config("default", n_users=3000, days=77, seed=11, mpp_share=0.0, explore_rate=0.3))
    ev, us = validate_events(w.events).accepted, validate_users(w.users).accepted
    end = w.config.end_ts
    cut = end - pd.Timedelta(days=22)
    msgs = build_messages(ev, us)
    ts = build_training_set(msgs.loc[msgs["send_ts"] < cut], us, cut, 24, 7, 7, 10**9)
    model = make_pipeline(ForestParams(n_estimators=20, min_samples_leaf=50, n_jobs=2), list(MODEL_FEATURES)).fit(ts.X, ts.y)
    uf = build_user_features(msgs, us, cut)
    uidx = pd.Index(uf.table.index).get_indexer(msgs["user_id"])
    reward = outcomes_at(msgs, uidx, len(uf.table), end, 24).opened
    logs = logged_sends(msgs, reward, cut, end - pd.Timedelta(hours=24))
    chosen, _ = policy_hours(model, list(MODEL_FEATURES), uf, logs)
    rep = evaluate_policy(logs, chosen, w.status_quo_utc_hour, n_boot=400)
    # truth: each context's true P(open) at the chosen hour, averaged over the logged contexts
    T = truth_matrix(w.truth, pd.Index(uf.table.index))
    rows = uf.rows_of(logs.user_id)
    how = hour_of_week(pd.Series(logs.day + pd.to_timedelta(chosen, unit="h")), uf.table["timezone"].to_numpy()[rows])
    truth = T[rows, how].mean()
    assert rep.n_matched > 400
    assert rep.snips_ci[0] <= truth <= rep.snips_ci[1], (truth, rep.snips_ci)
    assert rep.ips_ci[0] <= truth <= rep.ips_ci[1], (truth, rep.ips_ci)
    sq_how = hour_of_week(pd.Series(logs.day + pd.Timedelta(hours=w.status_quo_utc_hour)), uf.table["timezone"].to_numpy()[rows])
    assert rep.status_quo_ci[0] <= T[rows, sq_how].mean() <= rep.status_quo_ci[1]
    assert rep.lift > 0.1  # the learned policy beats the status-quo hour
