"""The unsubscribe risk by delivery hour: flat when the hours do not differ, the night when it does."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sendtime.training.negative_risk import fit_negative_risk

AS_OF = pd.Timestamp("2026-03-01", tz="UTC")


def _msgs(rate_of_hour, n=200_000, seed=0):
    rng = np.random.default_rng(seed)
    hour = rng.integers(0, 24, n)
    send = AS_OF - pd.Timedelta(days=40) + pd.to_timedelta(rng.integers(0, 30 * 24, n), unit="h")
    neg = rng.random(n) < rate_of_hour[hour]
    t_neg = pd.Series(pd.NaT, index=range(n), dtype="datetime64[us, UTC]")
    t_neg[neg] = (send[neg] + pd.Timedelta(hours=2)).astype("datetime64[us, UTC]")
    return pd.DataFrame({"send_ts": pd.Series(send).astype("datetime64[us, UTC]"), "send_how": hour, "t_negative": t_neg})


def test_hours_that_differ_only_by_chance_come_out_flat():
    risk = fit_negative_risk(_msgs(np.full(24, 0.002)), AS_OF, 24)
    assert risk.negatives.sum() > 300
    spread = risk.by_local_hour.max() / risk.by_local_hour.min()
    raw = risk.negatives / risk.sends
    assert spread < 1.1 and raw.max() / raw.min() > 1.3  # the raw rates differ by chance; the shrunk ones not
    assert abs(risk.overall - 0.002) < 0.0005


def test_a_risky_night_is_found_and_kept():
    rate = np.full(24, 0.001)
    rate[[23, 0, 1, 2, 3, 4, 5]] = 0.02
    risk = fit_negative_risk(_msgs(rate), AS_OF, 24)
    night = risk.by_local_hour[[23, 0, 1, 2, 3, 4, 5]]
    day = np.delete(risk.by_local_hour, [23, 0, 1, 2, 3, 4, 5])
    assert night.min() > 5 * day.max()
    np.testing.assert_allclose(night, 0.02, rtol=0.25)  # shrunk a little towards the overall rate


def test_sends_whose_horizon_is_not_over_do_not_count():
    m = _msgs(np.full(24, 0.01), n=5000)
    late = m.assign(send_ts=AS_OF - pd.Timedelta(hours=3))
    risk = fit_negative_risk(pd.concat([m, late], ignore_index=True), AS_OF, 24)
    assert risk.sends.sum() == 5000
