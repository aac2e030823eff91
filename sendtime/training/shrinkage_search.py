"""The profile hyperparameters, chosen each night by what predicts the held-out weeks best.

The activity profiles shrink each user's hourly evidence towards a prior (``shape_strength``),
pool neighbouring hours (``smooth_hours``) and learn ``mixture_k`` reading rhythms for that
prior. How much a user's own hours should count depends on the data: with a real hour effect
and long histories, weak shrinkage wins; where the send hour does not matter, the strongest
shrinkage wins and the profiles go flat. So the nightly fits the profiles at the start of the
validation weeks for each candidate of a bounded grid and keeps the one whose predicted open
probabilities give the held-out human opens the highest likelihood (the profiles' own model:
P(open within the horizon | delivered at hour h) = 1 - exp(-sum_k lam[h + k] decay^k)). The
grid, every score and the choice go to MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pandas as pd

from sendtime.features.engagement import build_user_features, outcomes_at
from sendtime.features.machine_opens import MachineOpenModel
from sendtime.features.profiles import ShrinkageParams, decayed_sums
from sendtime.training.dataset import sample_users

#: candidates: x the default shape strength, smoothing hours, rhythm components
SHAPE_FACTORS = (0.25, 1.0, 4.0, 16.0, 64.0)
SMOOTH_HOURS = (1.0, 2.5)
MIXTURE_K = (5, 10, 20)
#: x the default activity strength (inf: activity not used), searched only when there is activity
ACTIVITY_FACTORS = (1 / 32, 0.125, 0.5, 2.0, 8.0, float("inf"))


@dataclass
class ShrinkageChoice:
    params: ShrinkageParams
    scores: pd.DataFrame  # one row per candidate: shape_strength, smooth_hours, mixture_k, loglik, opens, sends
    validation_start: pd.Timestamp | None
    activity_searched: bool = False  # the activity strength was chosen too (there was activity)

    def as_params(self) -> dict[str, float]:
        p = self.params
        out = {"chosen_shape_strength": p.shape_strength, "chosen_smooth_hours": p.smooth_hours,
               "chosen_mixture_k": p.mixture_k}
        if self.activity_searched:
            out["chosen_activity_strength"] = p.activity_strength
        return out


@dataclass
class HeldOutSends:
    """The held-out sends and their outcomes, the same for every candidate, so the search
    classifies machine opens once per cutoff instead of once per candidate."""

    later: pd.DataFrame  # sends in [start, as_of - horizon) of users with a profile
    rows: np.ndarray  # each send's user row in the profiles
    y: np.ndarray  # a human open within the horizon (float)
    live: np.ndarray  # at risk for some of the horizon before as_of
    machine: MachineOpenModel  # the machine-open mixture fitted at ``start`` (the profiles' cutoff)

    @classmethod
    def of(cls, msgs: pd.DataFrame, users: pd.DataFrame, start: pd.Timestamp, as_of: pd.Timestamp,
           params: ShrinkageParams, default_tz: str = "UTC", activity: pd.DataFrame | None = None) -> "HeldOutSends":
        H = params.horizon_hours
        uf = build_user_features(msgs, users, start, params=params, default_tz=default_tz, activity=activity)
        known = msgs.loc[msgs["send_ts"] < as_of]
        rows_all = uf.rows_of(known["user_id"])
        ok = rows_all >= 0
        known, rows_all = known.loc[ok], rows_all[ok]
        # Which opens were human is judged on each user's whole history up to as_of, as the
        # nightly will judge it. Judged on the held-out weeks alone, a few messages per user,
        # many proxy openers pass for people and their proxies' night-time fetches, counted as
        # human opens, made the search prefer blurred profiles (smoothing 2.5 h over 1 h on a
        # world of late proxies: capture 0.661 against 0.693).
        oc = outcomes_at(known, rows_all, len(uf.table), as_of, H)
        pick = ((known["send_ts"] >= start) & (known["send_ts"] < as_of - pd.Timedelta(hours=H))).to_numpy()
        later, rows = known.loc[pick], rows_all[pick]
        return cls(later=later, rows=rows, y=oc.opened[pick].astype(np.float64), live=oc.at_risk_hours[pick] > 0,
                   machine=uf.prior.machine)


def heldout_loglik(msgs: pd.DataFrame, users: pd.DataFrame, start: pd.Timestamp, as_of: pd.Timestamp,
                   params: ShrinkageParams, default_tz: str = "UTC",
                   heldout: HeldOutSends | None = None, activity: pd.DataFrame | None = None) -> tuple[float, int, int]:
    """Mean Bernoulli log-likelihood of human opens of the sends in [start, as_of - horizon)
    under profiles fitted at ``start``; returns (loglik, opens, sends). ``heldout``: those
    sends and outcomes computed once (:meth:`HeldOutSends.of`) for a whole search."""
    H = params.horizon_hours
    heldout = heldout or HeldOutSends.of(msgs, users, start, as_of, params, default_tz, activity)
    if heldout.later.empty:
        return float("nan"), 0, 0
    uf = build_user_features(msgs, users, start, params=params, default_tz=default_tz, machine=heldout.machine,
                             activity=activity)
    S = decayed_sums(uf.lam, uf.prior.decay, H)
    p = 1.0 - np.exp(-S[heldout.rows, heldout.later["send_how"].to_numpy(dtype=np.int64) % 168].astype(np.float64))
    p = np.clip(p, 1e-4, 1 - 1e-4)
    y, live = heldout.y, heldout.live
    ll = y * np.log(p) + (1 - y) * np.log1p(-p)
    return float(ll[live].mean()) if live.any() else float("nan"), int(y[live].sum()), int(live.sum())


def choose_shrinkage(msgs: pd.DataFrame, users: pd.DataFrame, validation_start: pd.Timestamp, as_of: pd.Timestamp,
                     base: ShrinkageParams, default_tz: str = "UTC", max_users: int = 20_000, seed: int = 0,
                     progress: Callable[[str], None] | None = None, min_sends: int = 200,
                     activity: pd.DataFrame | None = None) -> ShrinkageChoice:
    """Grid search over :data:`SHAPE_FACTORS` x :data:`SMOOTH_HOURS`, then :data:`MIXTURE_K` at
    the best of those, then (with ``activity``) :data:`ACTIVITY_FACTORS`, on at most
    ``max_users`` users (a seeded sample). With fewer than ``min_sends`` held-out sends the base
    parameters stay (too little to choose by)."""

    say = progress or (lambda _m: None)
    msgs, users = sample_users(msgs, users, max_users, seed)
    horizon = pd.Timedelta(hours=base.horizon_hours)
    n_val = int(((msgs["send_ts"] >= validation_start) & (msgs["send_ts"] < as_of - horizon)).sum())
    before = int((msgs["send_ts"] < validation_start).sum())
    if n_val < min_sends or before == 0:
        say(f"profile hyperparameters: {n_val} held-out sends, {before} before them: keeping the defaults")
        return ShrinkageChoice(base, pd.DataFrame(), None)
    rows = []
    has_activity = activity is not None and bool((activity["timestamp"] < validation_start).any())
    activity = activity if has_activity else None
    heldout = HeldOutSends.of(msgs, users, validation_start, as_of, base, default_tz, activity)

    def score(p: ShrinkageParams) -> float:
        ll, opens, sends = heldout_loglik(msgs, users, validation_start, as_of, p, default_tz, heldout, activity)
        rows.append({"shape_strength": p.shape_strength, "smooth_hours": p.smooth_hours, "mixture_k": p.mixture_k,
                     "activity_strength": p.activity_strength if has_activity else float("nan"),
                     "loglik": ll, "opens": opens, "sends": sends})
        return ll if np.isfinite(ll) else -np.inf

    best, best_ll = base, -np.inf
    for f in SHAPE_FACTORS:
        for s in SMOOTH_HOURS:
            p = replace(base, shape_strength=base.shape_strength * f, smooth_hours=s)
            ll = score(p)
            if ll > best_ll:
                best, best_ll = p, ll
    for k in MIXTURE_K:
        if k == best.mixture_k:
            continue
        p = replace(best, mixture_k=k)
        ll = score(p)
        if ll > best_ll:
            best, best_ll = p, ll
    for f in ACTIVITY_FACTORS if has_activity else ():
        p = replace(best, activity_strength=base.activity_strength * f)
        ll = score(p)
        if ll > best_ll:
            best, best_ll = p, ll
    activity_said = f", activity strength {best.activity_strength:g}" if has_activity else ""
    say(f"profile hyperparameters by held-out likelihood ({len(rows)} candidates, {n_val:,} held-out sends): "
        f"shape strength {best.shape_strength:g}, smoothing {best.smooth_hours:g} h, {best.mixture_k} rhythms{activity_said}")
    return ShrinkageChoice(best, pd.DataFrame(rows), validation_start, activity_searched=has_activity)
