"""Exploration, holdout and propensities: what the scheduler logs for off-policy estimates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sendtime.serving.policy import ExplorationPolicy, propensities
from sendtime.serving.scoring import candidate_hours, status_quo_index


@pytest.mark.parametrize("m, eps", [(1, 0.1), (5, 0.0), (24, 0.05), (168, 0.3)])
def test_propensities_sum_to_one_over_the_window(m, eps):
    p = propensities(best=min(3, m - 1), n_hours=m, exploration_rate=eps)
    assert p.sum() == pytest.approx(1.0)
    assert p.argmax() == min(3, m - 1) and (p > 0).all() if eps > 0 else p.max() == 1.0


def test_choices_match_their_logged_propensity_and_rates():
    rng = np.random.default_rng(0)
    n, m = 20_000, 12
    scores = rng.random((n, m))
    ids = [f"u{i}" for i in range(n)]
    pol = ExplorationPolicy(exploration_rate=0.2, holdout_share=0.1)
    idx, prop, label = pol.choose(ids, scores, np.full(n, 5), "w1")
    best = scores.argmax(1)
    assert abs((label == "holdout").mean() - 0.1) < 0.01
    assert abs((label == "explore").mean() - 0.2 * 0.9) < 0.01
    assert (idx[label == "holdout"] == 5).all() and (prop[label == "holdout"] == 1).all()
    opt = label == "optimized"
    assert (idx[opt] == best[opt]).all()
    expected = np.where(idx == best, 0.8 + 0.2 / m, 0.2 / m)
    np.testing.assert_allclose(prop[label != "holdout"], expected[label != "holdout"])
    # explored hours are uniform over the window
    counts = np.bincount(idx[label == "explore"], minlength=m)
    assert counts.min() > 0.7 * counts.mean()


def test_same_request_same_answer_and_stable_holdout():
    pol = ExplorationPolicy(exploration_rate=0.5, holdout_share=0.3)
    ids = [f"u{i}" for i in range(500)]
    s = np.random.default_rng(1).random((500, 8))
    a = pol.choose(ids, s, np.zeros(500, dtype=int), "window-A")
    b = pol.choose(ids, s, np.zeros(500, dtype=int), "window-A")
    c = pol.choose(ids, s, np.zeros(500, dtype=int), "window-B")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2] == "holdout", c[2] == "holdout")  # holdout is per user, not per request
    assert (a[2] != c[2]).any()  # exploration draws differ between windows


def test_bad_rates_are_refused():
    with pytest.raises(ValueError, match="exploration_rate"):
        ExplorationPolicy(exploration_rate=1.5)


def test_status_quo_index_prefers_the_exact_hour():
    cands = candidate_hours(pd.Timestamp("2026-04-14T10:00Z"), pd.Timestamp("2026-04-15T09:00Z"))
    assert cands[status_quo_index(cands, 14)].hour == 14
    short = candidate_hours(pd.Timestamp("2026-04-14T02:00Z"), pd.Timestamp("2026-04-14T05:00Z"))
    assert short[status_quo_index(short, 14)].hour == 5
