"""Capacity plans: caps always hold, and expected opens within 0.5% of the LP optimum."""

from __future__ import annotations

import numpy as np
import pytest

from sendtime.serving.capacity import lp_optimum, plan_with_caps, uncapped_opens


def _instance(seed: int, n: int = 300, m: int = 10, tight: float = 1.1, blocked: float = 0.2):
    rng = np.random.default_rng(seed)
    level = rng.beta(2, 5, (n, 1))
    p = np.clip(level * (0.2 + 3 * rng.dirichlet(np.full(m, 0.5), n)), 0, 0.99)
    allowed = rng.random((n, m)) > blocked
    caps = rng.multinomial(int(n * tight), np.full(m, 1.0 / m))
    return p, allowed, caps


@pytest.mark.parametrize("seed", range(8))
def test_caps_hold_and_plan_is_near_the_lp_optimum(seed):
    p, allowed, caps = _instance(seed)
    plan = plan_with_caps(p, allowed, caps)
    load = np.bincount(plan.hour[plan.assigned], minlength=p.shape[1])
    assert (load <= caps).all()
    assert allowed[np.flatnonzero(plan.assigned), plan.hour[plan.assigned]].all()
    lp_opens, lp_assigned = lp_optimum(p, allowed, caps)
    assert plan.assigned.sum() == round(lp_assigned)  # as many users sent as capacity allows
    assert plan.expected_opens >= 0.995 * lp_opens
    assert plan.expected_opens <= uncapped_opens(p, allowed) + 1e-9


def test_caps_shift_users_away_from_the_popular_hour():
    n = 1000
    p = np.full((n, 4), 0.1)
    p[:, 2] = 0.3  # everyone's best hour
    plan = plan_with_caps(p, np.ones_like(p, dtype=bool), np.array([400, 400, 300, 400]))
    assert np.bincount(plan.hour, minlength=4)[2] == 300
    assert plan.assigned.all()
    assert plan.expected_opens == pytest.approx(300 * 0.3 + 700 * 0.1)


def test_not_enough_capacity_leaves_users_unplanned():
    p, allowed, _ = _instance(1, n=100, m=5, blocked=0.0)
    plan = plan_with_caps(p, allowed, np.full(5, 10))
    assert plan.assigned.sum() == 50
    # the 50 who were sent are the ones worth most
    lp_opens, _ = lp_optimum(p, allowed, np.full(5, 10))
    assert plan.expected_opens >= 0.995 * lp_opens


def test_bad_caps_are_refused():
    p, allowed, _ = _instance(2, n=10, m=3)
    with pytest.raises(ValueError, match="one value per hour"):
        plan_with_caps(p, allowed, np.array([1, 2]))
    with pytest.raises(ValueError, match=">= 0"):
        plan_with_caps(p, allowed, np.array([1, -2, 3]))


@pytest.mark.slow
def test_a_million_users_in_seconds():
    import time

    rng = np.random.default_rng(0)
    n, m = 1_000_000, 24
    p = rng.beta(2, 5, (n, 1)) * (0.3 + 3 * rng.dirichlet(np.full(m, 0.5), n))
    p[:, 10] += 0.2
    caps = np.full(m, n // m + 1)
    t = time.perf_counter()
    plan = plan_with_caps(p, np.ones((n, m), dtype=bool), caps)
    elapsed = time.perf_counter() - t
    assert (np.bincount(plan.hour[plan.assigned], minlength=m) <= caps).all()
    print(f"1,000,000 users x 24 capped hours planned in {elapsed:.1f}s")


def test_scores_of_any_scale_and_sign_still_plan_everyone_with_room():
    """Expected revenue above 1 and penalized scores below 0: every user a cap has room for is
    planned, and each at their best hour when nothing competes."""
    import numpy as np

    from sendtime.serving.capacity import plan_with_caps

    p = np.array([[3.0, 0.0], [0.01, 0.0]])
    allowed = np.array([[True, True], [True, False]])
    plan = plan_with_caps(p, allowed, np.array([1, 1]))
    assert plan.hour.tolist() == [1, 0]
    neg = plan_with_caps(np.array([[-0.2, -0.05, -0.1]]), np.ones((1, 3), dtype=bool), np.array([5, 5, 5]))
    assert neg.hour.tolist() == [1]


def test_a_time_budget_stops_the_auction_on_identical_users_and_the_caps_still_hold():
    """8,000 new users of one zone have one score row: the auction's prices creep up by eps for
    hundreds of rounds. Stopped by the budget, the repaired plan keeps every cap and places
    as many users as the caps allow, at their best hours first."""
    rng = np.random.default_rng(3)
    m = 48
    row = rng.beta(2, 20, size=m)
    p = np.vstack([np.tile(row, (8000, 1)), rng.beta(2, 20, size=(2000, m))])
    allowed = np.ones_like(p, dtype=bool)
    caps = np.full(m, 150)
    plan = plan_with_caps(p, allowed, caps, max_seconds=0.05)
    full = plan_with_caps(p, allowed, caps)
    assert plan.stopped_early and plan.iterations < full.iterations
    load = np.bincount(plan.hour[plan.hour >= 0], minlength=m)
    assert (load <= caps).all() and plan.assigned.sum() == min(len(p), caps.sum())
    assert plan.expected_opens >= 0.97 * full.expected_opens  # the repair's greedy fill is nearly as good
