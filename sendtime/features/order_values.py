"""Each user's expected order value as of a cutoff: what one conversion of theirs is worth.

The value objective ranks hours by P(conversion) times this. A user's own orders say most about
them once there are several; with one or none the population's typical order stands in. The
mean of a user's orders is shrunk towards the population's by empirical Bayes: how much users'
means differ beyond what the spread of single orders explains sets how far each is trusted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sendtime.features.message_extras import within


@dataclass
class OrderValues:
    """``value``: per user of ``index`` (shrunk); ``population``: the prior mean; ``orders``: per user."""

    index: pd.Index
    value: np.ndarray
    orders: np.ndarray
    population: float
    between_var: float
    within_var: float

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"user_id": np.asarray(self.index, dtype=object), "order_value": self.value,
                             "orders": self.orders})


def order_values(msgs: pd.DataFrame, index: pd.Index, as_of: pd.Timestamp, horizon_hours: int) -> OrderValues:
    """The shrunk expected order value of every user of ``index`` from the valued conversions
    seen before ``as_of`` (``msgs`` with :func:`sendtime.features.message_extras.attach_extras`)."""
    conv = within(msgs["t_conversion"], msgs["send_ts"], as_of, horizon_hours) & (msgs["conversion_value"].to_numpy() > 0)
    rows = index.get_indexer(msgs["user_id"].to_numpy()[conv])
    v = msgs["conversion_value"].to_numpy(dtype=np.float64)[conv]
    ok = rows >= 0
    rows, v = rows[ok], v[ok]
    n = np.bincount(rows, minlength=len(index)).astype(np.float64)
    if not len(v):
        return OrderValues(index, np.zeros(len(index)), n, 0.0, 0.0, 0.0)
    s = np.bincount(rows, weights=v, minlength=len(index))
    mu = float(v.mean())
    has = n > 0
    mean_u = np.where(has, s / np.maximum(n, 1), mu)
    # within-user variance from users with several orders; between-user variance by moments
    dev = v - mean_u[rows]
    multi = n[rows] > 1
    within_var = float((dev[multi] ** 2).sum() / max((n[n > 1] - 1).sum(), 1)) if multi.any() else float(v.var())
    between_var = max(float(np.mean((mean_u[has] - mu) ** 2) - within_var * np.mean(1 / n[has])), 1e-9 * mu * mu)
    w = n / (n + within_var / between_var) if within_var > 0 else (n > 0).astype(np.float64)
    return OrderValues(index, w * mean_u + (1 - w) * mu, n, mu, between_var, within_var)
