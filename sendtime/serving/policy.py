"""From scores to a logged decision: holdout, exploration, and the propensity of every answer.

- A stable, hash-based share of users (``holdout_share``) always gets the status-quo time: the
  control group that proves the lift.
- Of the rest, ``exploration_rate`` of answers get an hour drawn uniformly from the window:
  the randomized sends that break the confounding of the old schedule and make off-policy
  estimates possible.
- Every answer carries the probability the policy had of choosing that hour, so the scheduler
  can log it next to the send (the ``propensity`` column of the event contract).

Draws are a hash of (user, window, salt): a retried request gets the same answer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


def unit_hash(keys: list[str], salt: str) -> np.ndarray:
    """Deterministic uniform numbers in [0, 1) from strings (SipHash keyed by the salt)."""
    import pandas as pd

    key = hashlib.blake2b(salt.encode(), digest_size=8).hexdigest()  # 16 characters, as SipHash wants
    h = pd.util.hash_array(np.asarray(keys, dtype=object), hash_key=key, categorize=False)
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53)


def propensities(best: int, n_hours: int, exploration_rate: float) -> np.ndarray:
    """P(each hour of the window) under the optimizing policy with uniform exploration."""
    p = np.full(n_hours, exploration_rate / n_hours)
    p[best] += 1.0 - exploration_rate
    return p


@dataclass(frozen=True)
class ExplorationPolicy:
    exploration_rate: float = 0.0
    holdout_share: float = 0.0
    salt: str = "sendtime"

    def __post_init__(self) -> None:
        for name in ("exploration_rate", "holdout_share"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")

    def in_holdout(self, user_ids: list[str]) -> np.ndarray:
        if self.holdout_share <= 0:
            return np.zeros(len(user_ids), dtype=bool)
        return unit_hash(user_ids, self.salt + "|holdout") < self.holdout_share

    def choose(
        self,
        user_ids: list[str],
        scores: np.ndarray,
        status_quo_index: np.ndarray,
        window_key: str,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pick an hour index per user from (n_users, n_hours) scores.

        ``status_quo_index`` is, per user, the index of the status-quo hour in the window.
        Returns (index, propensity, policy label) per user.
        """
        n, m = scores.shape
        best = scores.argmax(axis=1)
        idx = best.copy()
        prop = np.full(n, 1.0 - self.exploration_rate + self.exploration_rate / m)
        label = np.full(n, "optimized", dtype=object)
        hold = self.in_holdout(user_ids)
        if self.exploration_rate > 0:
            keys = [f"{u}|{window_key}" for u in user_ids]
            u_explore = unit_hash(keys, self.salt + "|explore")
            u_hour = unit_hash(keys, self.salt + "|hour")
            explore = ~hold & (u_explore < self.exploration_rate)
            drawn = np.minimum((u_hour * m).astype(np.int64), m - 1)
            idx = np.where(explore, drawn, idx)
            label[explore] = "explore"
            # the propensity of the hour actually chosen, whichever branch chose it
            prop = np.where(idx == best, 1.0 - self.exploration_rate + self.exploration_rate / m, self.exploration_rate / m)
        idx = np.where(hold, status_quo_index, idx)
        prop = np.where(hold, 1.0, prop)
        label[hold] = "holdout"
        return idx, prop, label
