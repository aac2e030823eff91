"""Campaign plans under per-hour send caps.

Sending everyone at their personal best hour piles a list onto a few hours, which hurts
deliverability. A plan assigns each user one allowed hour so that no hour exceeds its cap and
expected opens are as high as possible: an assignment (transportation) problem.

It is solved through its dual: every hour gets a price, every user takes the hour with the best
P(open) minus price, and prices of over-subscribed hours rise (an ascending auction, all users
bidding at once) until no cap is exceeded; a repair pass then settles ties. Prices only rise, so
the loop ends; on small instances the result is checked against the exact linear program.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: added to every allowed (user, hour): assigning one more user always beats a better hour for
#: another, so the plan first sends as many users as capacity allows, then maximises opens.
ASSIGN_BONUS = 1.0


@dataclass
class Plan:
    hour: np.ndarray  # chosen hour index per user, -1 when no hour could take them
    expected_opens: float
    prices: np.ndarray
    iterations: int
    stopped_early: bool = False  # the time budget ended the auction before its prices settled

    @property
    def assigned(self) -> np.ndarray:
        return self.hour >= 0


def _net_choice(w: np.ndarray, prices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    net = w - prices[None, :]
    choice = net.argmax(axis=1)
    best = net[np.arange(len(w)), choice]
    choice = np.where(best > 0, choice, -1)
    return choice, net


def plan_with_caps(p: np.ndarray, allowed: np.ndarray, caps: np.ndarray, max_iter: int = 500, eps: float = 1e-3,
                   max_seconds: float | None = None) -> Plan:
    """Assign users (rows) to hours (columns) under ``caps``, maximising the sum of ``p``.

    ``allowed`` marks the (user, hour) pairs that may be used (window, quiet hours, lead time).
    ``max_seconds`` bounds the auction (many users with identical scores, e.g. new users of one
    zone, make its prices creep up by ``eps`` for hundreds of rounds); the repair pass then
    makes every cap hold, so a plan stopped early is feasible, only perhaps a little worse.
    """
    import time

    deadline = None if max_seconds is None else time.perf_counter() + max_seconds
    stopped = False
    n, m = p.shape
    caps = np.asarray(caps, dtype=np.int64)
    if caps.shape != (m,):
        raise ValueError(f"caps must have one value per hour ({m}), got shape {caps.shape}")
    if (caps < 0).any():
        raise ValueError("caps must be >= 0")
    # the bonus makes any allowed hour worth more than none, whatever the scores' scale and sign
    # (expected revenue above 1, a penalty below 0), so the plan assigns whoever a cap has room for
    finite = p[allowed] if allowed.any() else np.zeros(1)
    bonus = ASSIGN_BONUS + float(finite.max() - finite.min()) + max(0.0, -float(finite.min()))
    w = np.where(allowed, p + bonus, -np.inf)
    prices = np.zeros(m)
    it = 0
    rows = np.arange(n)
    for it in range(1, max_iter + 1):
        choice, top2 = _bids(w, prices)
        load = np.bincount(choice[choice >= 0], minlength=m)
        over = np.flatnonzero(load > caps)
        if len(over) == 0:
            break
        if it > 20 and (load - caps)[over].sum() <= max(1, n // 5000):
            break  # near-equilibrium: the repair pass moves the last few users
        if deadline is not None and time.perf_counter() > deadline:
            stopped = True
            break
        # the highest price at which each user still wants their current hour
        bid = w[rows, np.maximum(choice, 0)] - np.maximum(top2[:, 1], 0.0)
        for h in over:
            bids = bid[choice == h]
            k = caps[h]
            kth = bids.max() if k == 0 else np.partition(bids, len(bids) - k - 1)[len(bids) - k - 1]
            prices[h] = max(prices[h], kth + eps)
    choice, _ = _net_choice(w, prices)
    choice = _repair(w, choice, caps)
    opens = float(p[np.arange(n)[choice >= 0], choice[choice >= 0]].sum())
    return Plan(hour=choice, expected_opens=opens, prices=prices, iterations=it, stopped_early=stopped)


_SLICE = 1024  # users per numpy call: a 10,000-user plan never holds the interpreter for long


def _bids(w: np.ndarray, prices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each user's best hour at these prices (-1 when none is worth it) and their two best net
    values, a slice of users at a time (so a single-user request beside a plan keeps its turn)."""
    n, m = w.shape
    choice = np.empty(n, dtype=np.int64)
    top2 = np.empty((n, 2))
    for i in range(0, n, _SLICE):
        net = w[i:i + _SLICE] - prices[None, :]
        t2 = -np.partition(-net, 1, axis=1)[:, :2] if m > 1 else np.hstack([net, np.full((len(net), 1), -np.inf)])
        choice[i:i + _SLICE] = np.where(t2[:, 0] > 0, net.argmax(axis=1), -1)
        top2[i:i + _SLICE] = t2
    return choice, top2


def _repair(w: np.ndarray, choice: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Make every cap hold: move the users who lose least from overfull hours to hours with room.

    After the auction only a few users are left over (ties, the early stop), so this walks them
    one by one, each to their best hour that still has room, or to no hour when none does.
    """
    m = w.shape[1]
    choice = choice.copy()
    load = np.bincount(choice[choice >= 0], minlength=m)
    room = caps - load
    for h in np.flatnonzero(room < 0):
        users = np.flatnonzero(choice == h)
        alt = w[users].copy()
        alt[:, h] = -np.inf
        loss = w[users, h] - np.where(np.isfinite(alt.max(axis=1)), alt.max(axis=1), -1.0)
        for u in users[np.argsort(loss)][: -room[h]]:
            options = np.where(room > 0, w[u], -np.inf)
            options[h] = -np.inf
            d = int(options.argmax())
            if np.isfinite(options[d]):
                choice[u] = d
                room[d] -= 1
            else:
                choice[u] = -1
            room[h] += 1
    return choice


def uncapped_opens(p: np.ndarray, allowed: np.ndarray) -> float:
    q = np.where(allowed, p, -np.inf)
    best = q.max(axis=1)
    return float(best[np.isfinite(best)].sum())


def lp_optimum(p: np.ndarray, allowed: np.ndarray, caps: np.ndarray) -> float:
    """Exact optimum of the same problem by linear programming (small instances: tests only)."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    n, m = p.shape
    idx = np.flatnonzero(allowed.ravel())
    users, hours = idx // m, idx % m
    c = -(p.ravel()[idx] + ASSIGN_BONUS)
    k = len(idx)
    a_user = coo_matrix((np.ones(k), (users, np.arange(k))), shape=(n, k))
    a_hour = coo_matrix((np.ones(k), (hours, np.arange(k))), shape=(m, k))
    from scipy.sparse import vstack

    res = linprog(c, A_ub=vstack([a_user, a_hour]), b_ub=np.concatenate([np.ones(n), caps]), bounds=(0, 1), method="highs")
    if not res.success:
        raise RuntimeError(res.message)
    x = res.x
    return float((p.ravel()[idx] * x).sum()), float(x.sum())
