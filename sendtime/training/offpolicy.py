"""Off-policy evaluation: what open rate would a policy have had on the logged sends?

Each logged send is a context (user, UTC day) and an action (the UTC hour it went out at) taken
with a known propensity. A deterministic target policy picks one hour per context; inverse
propensity scoring reweights the sends where the two agree:

    IPS   = mean( 1[a = pi(x)] * r / p )
    SNIPS = sum( 1[a = pi(x)] * r / p ) / sum( 1[a = pi(x)] / p )

Confidence intervals come from a bootstrap over users and days together (sends of one user,
and sends of one campaign day, are not independent).
The lift over the status quo is estimated from the same logs with the same resamples, so its
interval accounts for both estimates moving together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sendtime.features.engagement import UserFeatures
from sendtime.features.messages import hour_of_week


@dataclass
class LoggedSends:
    """Logged sends usable for off-policy estimates (propensity known, label observed)."""

    user_id: np.ndarray
    day: pd.DatetimeIndex  # UTC midnight of the send's UTC day
    hour: np.ndarray  # UTC hour the send went out at
    propensity: np.ndarray
    reward: np.ndarray  # 1 if a human open within the horizon

    def __len__(self) -> int:
        return len(self.hour)

    def take(self, idx: np.ndarray) -> "LoggedSends":
        return LoggedSends(self.user_id[idx], self.day[idx], self.hour[idx], self.propensity[idx], self.reward[idx])


def logged_sends(msgs: pd.DataFrame, reward: np.ndarray, start: pd.Timestamp, end: pd.Timestamp) -> LoggedSends:
    """Sends in [start, end) that carry a propensity; ``reward`` is aligned with ``msgs`` rows."""
    send = msgs["send_ts"]
    m = ((send >= start) & (send < end) & msgs["propensity"].notna()).to_numpy()
    m = m & msgs["t_bounce"].isna().to_numpy()
    sel = msgs.loc[m]
    return LoggedSends(
        user_id=sel["user_id"].astype(str).to_numpy(),
        day=pd.DatetimeIndex(sel["send_ts"].dt.floor("D")),
        hour=sel["send_ts"].dt.hour.to_numpy(),
        propensity=sel["propensity"].to_numpy(dtype=float),
        reward=np.asarray(reward)[m].astype(float),
    )


def policy_hours(model, columns: list[str], uf: UserFeatures, logs: LoggedSends, chunk: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """The UTC hour the model's policy picks for each logged context, and the scores of all 24."""
    rows = uf.rows_of(logs.user_id)
    if (rows < 0).any():
        raise ValueError("some logged users are missing from the feature snapshot")
    zones = uf.table["timezone"].to_numpy()[rows]
    n = len(logs)
    how = np.empty((n, 24), dtype=np.int64)
    for h in range(24):
        inst = pd.Series(logs.day + pd.Timedelta(hours=h))
        how[:, h] = hour_of_week(inst, zones)
    scores = np.empty((n, 24))
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        X = uf.model_frame(np.repeat(rows[s:e], 24), how[s:e].ravel())[columns]
        scores[s:e] = model.predict_proba(X)[:, 1].reshape(e - s, 24)
    return scores.argmax(axis=1), scores


def _estimates(match: np.ndarray, reward: np.ndarray, prop: np.ndarray) -> tuple[float, float]:
    w = match / prop
    ips = float((w * reward).mean()) if len(w) else float("nan")
    snips = float((w * reward).sum() / w.sum()) if w.sum() > 0 else float("nan")
    return ips, snips


@dataclass
class OffPolicyReport:
    n_sends: int
    n_matched: int
    ips: float
    snips: float
    ips_ci: tuple[float, float]
    snips_ci: tuple[float, float]
    status_quo_hour: int
    status_quo_snips: float
    status_quo_ci: tuple[float, float]
    lift: float
    lift_ci: tuple[float, float]
    extra: dict = field(default_factory=dict)

    def as_metrics(self, prefix: str = "ope_") -> dict[str, float]:
        out = {
            "sends": self.n_sends, "matched": self.n_matched, "ips": self.ips, "snips": self.snips,
            "snips_lo": self.snips_ci[0], "snips_hi": self.snips_ci[1],
            "status_quo_snips": self.status_quo_snips, "lift": self.lift,
            "lift_lo": self.lift_ci[0], "lift_hi": self.lift_ci[1],
        }
        return {prefix + k: float(v) for k, v in out.items() if np.isfinite(v)}

    def lines(self) -> list[str]:
        return [
            f"logged sends with propensities: {self.n_sends:,} ({self.n_matched:,} agree with the policy)",
            f"policy open rate  IPS {self.ips:.4f} [{self.ips_ci[0]:.4f}, {self.ips_ci[1]:.4f}]   "
            f"SNIPS {self.snips:.4f} [{self.snips_ci[0]:.4f}, {self.snips_ci[1]:.4f}]",
            f"status quo ({self.status_quo_hour:02d}:00 UTC)  SNIPS {self.status_quo_snips:.4f} "
            f"[{self.status_quo_ci[0]:.4f}, {self.status_quo_ci[1]:.4f}]",
            f"lift over the status quo  {self.lift:+.1%} [{self.lift_ci[0]:+.1%}, {self.lift_ci[1]:+.1%}] (95% bootstrap over users and days)",
        ]


def evaluate_policy(
    logs: LoggedSends,
    chosen_hour: np.ndarray,
    status_quo_hour: int,
    n_boot: int = 400,
    seed: int = 0,
    level: float = 0.95,
) -> OffPolicyReport:
    match = (logs.hour == chosen_hour).astype(float)
    sq_match = (logs.hour == status_quo_hour).astype(float)
    r, p = logs.reward, logs.propensity
    ips, snips = _estimates(match, r, p)
    _, sq = _estimates(sq_match, r, p)
    # Pigeonhole bootstrap: resample users and days at once (each send weighted by its user's
    # and its day's draw counts). Sends of one user are correlated, and so are the sends of one
    # day (a campaign's hour is drawn once for everyone), so resampling users alone is too narrow.
    users, u_inv = np.unique(logs.user_id, return_inverse=True)
    days, d_inv = np.unique(np.asarray(logs.day.asi8), return_inverse=True)
    rng = np.random.default_rng(seed)
    wr, w = match * r / p, match / p
    sq_wr, sq_w = sq_match * r / p, sq_match / p
    boots = np.empty((n_boot, 4))
    for b in range(n_boot):
        ku = rng.multinomial(len(users), np.full(len(users), 1.0 / len(users)))[u_inv]
        kd = rng.multinomial(len(days), np.full(len(days), 1.0 / len(days)))[d_inv]
        k = (ku * kd).astype(float)
        n_b = max(k.sum(), 1e-12)
        ips_b = (k * wr).sum() / n_b
        snips_b = (k * wr).sum() / max((k * w).sum(), 1e-12)
        sq_b = (k * sq_wr).sum() / max((k * sq_w).sum(), 1e-12)
        boots[b] = (ips_b, snips_b, snips_b / sq_b - 1 if sq_b > 0 else np.nan, sq_b)
    a = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(boots[:, :3], [a, 100 - a], axis=0)
    sq_boot = boots[:, 3]  # not recovered from the lift: a resample with no reward has lift -1 and 0 / 0
    sq_lo, sq_hi = np.nanpercentile(sq_boot, [a, 100 - a])
    return OffPolicyReport(
        n_sends=len(logs), n_matched=int(match.sum()), ips=ips, snips=snips,
        ips_ci=(lo[0], hi[0]), snips_ci=(lo[1], hi[1]), status_quo_hour=int(status_quo_hour),
        status_quo_snips=sq, status_quo_ci=(sq_lo, sq_hi),
        lift=snips / sq - 1 if sq > 0 else float("nan"), lift_ci=(lo[2], hi[2]),
    )
