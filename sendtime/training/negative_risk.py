"""P(unsubscribe or complaint within the horizon) by the local hour a message is delivered.

Why by hour only: a person unsubscribes once, so no user has a history of it; what the sends
tell is how the risk moves with the local hour of delivery, pooled over everyone. Each hour's
rate is shrunk towards the overall rate by empirical Bayes (a beta prior whose strength is the
one that makes the hours' counts most likely), so hours whose counts differ only by chance come
out flat, and a flat risk changes no ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import betaln

from sendtime.features.message_extras import within

#: prior strengths tried (pseudo-sends); the largest stands for "no difference between hours"
STRENGTHS = np.geomspace(10.0, 1e7, 25)


@dataclass
class NegativeRisk:
    """``by_local_hour``: 24 shrunk rates; ``sends``, ``negatives``: the counts per hour."""

    by_local_hour: np.ndarray
    sends: np.ndarray
    negatives: np.ndarray
    strength: float

    @property
    def overall(self) -> float:
        return float(self.negatives.sum() / max(self.sends.sum(), 1))

    def as_metrics(self) -> dict[str, float]:
        r = self.by_local_hour
        return {"negative_rate": self.overall, "negative_rate_max_hour": float(r.max()),
                "negative_rate_min_hour": float(r.min()), "negative_risk_prior_strength": self.strength,
                "negatives": float(self.negatives.sum())}

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"local_hour": np.arange(24), "sends": self.sends, "negatives": self.negatives,
                             "rate": self.negatives / np.maximum(self.sends, 1), "shrunk_rate": self.by_local_hour})


def fit_negative_risk(msgs: pd.DataFrame, as_of: pd.Timestamp, horizon_hours: int) -> NegativeRisk:
    """The shrunk risk per local hour of delivery from the sends whose horizon is complete.
    ``msgs`` carries ``t_negative`` (:func:`sendtime.features.message_extras.attach_extras`)."""
    done = msgs.loc[msgs["send_ts"] < as_of - pd.Timedelta(hours=horizon_hours)]
    hour = done["send_how"].to_numpy(dtype=np.int64) % 24
    neg = (within(done["t_negative"], done["send_ts"], as_of, horizon_hours) if "t_negative" in done.columns
           else np.zeros(len(done), dtype=bool))
    n = np.bincount(hour, minlength=24).astype(np.float64)
    if not n.sum():  # no send with a finished horizon: no risk to tell
        return NegativeRisk(by_local_hour=np.zeros(24), sends=n, negatives=n.copy(), strength=float(STRENGTHS[-1]))
    k = np.bincount(hour[neg], minlength=24).astype(np.float64)
    p0 = (k.sum() + 0.5) / (n.sum() + 1.0)
    # marginal likelihood of each hour's count under Beta(s p0, s (1 - p0)), summed over hours
    ll = [float(np.sum(betaln(k + s * p0, n - k + s * (1 - p0)) - betaln(s * p0, s * (1 - p0)))) for s in STRENGTHS]
    s = float(STRENGTHS[int(np.argmax(ll))])
    rate = (k + s * p0) / (n + s)
    return NegativeRisk(by_local_hour=rate, sends=n, negatives=k, strength=s)


def risk_figure(risk: NegativeRisk):
    """Raw and shrunk risk by local hour, with the sends behind each hour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = risk.frame()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(f["local_hour"], f["rate"] * 100, color="#cfd8e3", label="observed")
    ax.plot(f["local_hour"], f["shrunk_rate"] * 100, "o-", color="#d8613b", label="shrunk (used)")
    ax.set_xlabel("local hour of delivery")
    ax.set_ylabel("unsubscribe or complaint, %")
    ax.set_title(f"Risk by delivery hour ({int(risk.negatives.sum()):,} of {int(risk.sends.sum()):,} sends)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
