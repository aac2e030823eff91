"""`sendtime evaluate --holdout`: the lift the live service brought, measured on its control group.

The service answers a hashed share of users (``SENDTIME_HOLDOUT_SHARE``, salted by
``SENDTIME_POLICY_SALT``) with the status-quo hour: a randomized control group, so comparing their
sends with everyone else's over the same days is an unbiased estimate of the lift, for every
objective at once, with no model in the comparison. Intervals come from a bootstrap over users
(a user's sends are correlated).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from sendtime.features.contract import read_events, read_users
from sendtime.features.engagement import outcomes_at
from sendtime.features.message_extras import attach_extras, build_extras, channel_history, within
from sendtime.features.messages import build_messages
from sendtime.serving.policy import ExplorationPolicy
from sendtime.settings import Settings


@dataclass
class HoldoutReport:
    """One row per outcome: rate of the treated users' sends and of the holdout's, the lift and its interval."""

    table: pd.DataFrame
    treated_users: int
    holdout_users: int
    sends: int

    def lines(self) -> list[str]:
        out = [f"{self.sends:,} sends: {self.treated_users:,} users answered by sendtime, {self.holdout_users:,} in the holdout "
               "(the status-quo hour)"]
        for r in self.table.itertuples():
            out.append(f"{r.outcome:<12} sendtime {r.treated_rate:.4f}   holdout {r.holdout_rate:.4f}   "
                       f"lift {r.lift:+.1%} [{r.lift_lo:+.1%}, {r.lift_hi:+.1%}] (95% bootstrap over users)")
        return out


def _lift(rate_t: float, rate_h: float) -> float:
    return rate_t / rate_h - 1 if rate_h > 0 else float("nan")


def holdout_lift(outcomes: dict[str, np.ndarray], user_codes: np.ndarray, in_holdout: np.ndarray,
                 n_boot: int = 500, seed: int = 0) -> pd.DataFrame:
    """Per outcome (a bool per send), the rates of treated and holdout sends and the lift, with a
    95% bootstrap interval that resamples users. ``user_codes``: each send's user as 0..U-1;
    ``in_holdout``: per user."""
    n_users = int(user_codes.max()) + 1 if len(user_codes) else 0
    sends = np.bincount(user_codes, minlength=n_users).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_users, np.full(n_users, 1.0 / max(n_users, 1)), size=n_boot).astype(np.float64) if n_users else np.zeros((n_boot, 0))
    h = in_holdout.astype(bool)
    draws_t, draws_h = draws[:, ~h], draws[:, h]  # sliced once for every outcome
    del draws
    rows = []
    for name, y in outcomes.items():
        hits = np.bincount(user_codes, weights=y.astype(np.float64), minlength=n_users)
        rt, rh = hits[~h].sum() / max(sends[~h].sum(), 1), hits[h].sum() / max(sends[h].sum(), 1)
        bt = (draws_t @ hits[~h]) / np.maximum(draws_t @ sends[~h], 1)
        bh = (draws_h @ hits[h]) / np.maximum(draws_h @ sends[h], 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            bl = np.where(bh > 0, bt / bh - 1, np.nan)
        lo, hi = np.nanpercentile(bl, [2.5, 97.5]) if np.isfinite(bl).any() else (np.nan, np.nan)
        rows.append({"outcome": name, "treated_rate": rt, "holdout_rate": rh, "lift": _lift(rt, rh),
                     "lift_lo": float(lo), "lift_hi": float(hi), "treated_events": int(hits[~h].sum()),
                     "holdout_events": int(hits[h].sum())})
    return pd.DataFrame(rows)


def evaluate_holdout(settings: Settings, events_path: str | Path, users_path: str | Path, since: pd.Timestamp,
                     until: pd.Timestamp, say: Callable[[str], None] = print) -> HoldoutReport:
    """The holdout's judgement of the sends between ``since`` and ``until`` minus the horizon
    (the deployment's channel), for every outcome the history holds."""
    if until <= since:
        raise ValueError("--as-of must be after --since")
    policy = ExplorationPolicy(0.0, settings.holdout_share, settings.policy_salt)
    if settings.holdout_share <= 0:
        raise ValueError("SENDTIME_HOLDOUT_SHARE is 0: the service kept no control group to compare with")
    ev, us = read_events(events_path), read_users(users_path)
    say(ev.summary("events"))
    events = ev.accepted.loc[ev.accepted["timestamp"] < until]
    msgs = build_messages(events, us.accepted, settings.default_timezone)
    msgs = attach_extras(msgs, build_extras(events, msgs, settings.horizon_hours))
    msgs, _, _ = channel_history(msgs, settings.channel, us.accepted, settings.default_timezone, None)
    horizon = settings.horizon_hours
    period = (msgs["send_ts"] >= since) & (msgs["send_ts"] < until - pd.Timedelta(hours=horizon))
    if not period.any():
        raise ValueError(f"no {settings.channel} sends between {since.date()} and {until.date()} minus the horizon")
    codes, uniq = pd.factorize(msgs["user_id"])
    oc = outcomes_at(msgs, codes, len(uniq), until, horizon)
    sel = period.to_numpy()
    outcomes = {"open": oc.opened[sel], "click": oc.clicked[sel]}
    if msgs["t_conversion"].notna().any():
        outcomes["conversion"] = within(msgs["t_conversion"], msgs["send_ts"], until, horizon)[sel]
    outcomes["unsubscribe"] = within(msgs["t_negative"], msgs["send_ts"], until, horizon)[sel]
    sub_codes, sub_users = pd.factorize(msgs.loc[sel, "user_id"])
    hold = policy.in_holdout([str(u) for u in sub_users])
    if not hold.any() or hold.all():
        raise ValueError(f"the period's {len(sub_users):,} users hold {int(hold.sum())} holdout users: nothing to compare")
    table = holdout_lift(outcomes, sub_codes, hold, seed=settings.random_state)
    return HoldoutReport(table=table, treated_users=int((~hold).sum()), holdout_users=int(hold.sum()), sends=int(sel.sum()))
