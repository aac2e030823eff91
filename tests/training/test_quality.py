"""Recommendation quality pieces: prior and shrinkage, hour-of-week answers, calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sendtime.features.contract import validate_events
from sendtime.features.engagement import build_user_features
from sendtime.features.messages import build_messages
from sendtime.training.model import expected_calibration_error


def _history(n_days: int, weekday_hour: int = 8, weekend_hour: int = 18, tz: str = "Europe/Berlin", seed: int = 0):
    """A user mailed at varying hours who reads at ``weekday_hour`` on weekdays, ``weekend_hour`` at weekends."""
    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2026-01-05T00:00:00Z")
    for d in range(n_days):
        send = start + pd.Timedelta(days=d, hours=int(rng.integers(0, 24)))
        rows.append((f"s{d}", "u1", f"m{d}", "send", send))
        local = send.tz_convert(tz)
        day = local.normalize()
        read_hour = weekend_hour if local.weekday() >= 5 else weekday_hour
        read = day + pd.Timedelta(hours=read_hour, minutes=int(rng.integers(0, 55)))
        if read < local:
            read = read + pd.Timedelta(days=1)
            if read.weekday() >= 5:
                read = read.normalize() + pd.Timedelta(hours=weekend_hour, minutes=10)
            else:
                read = read.normalize() + pd.Timedelta(hours=weekday_hour, minutes=10)
        if (read - local) < pd.Timedelta(hours=24) and rng.random() < 0.8:
            rows.append((f"o{d}", "u1", f"m{d}", "open", read.tz_convert("UTC")))
    ev = pd.DataFrame(rows, columns=["event_id", "user_id", "message_id", "event_type", "timestamp"])
    ev["machine_open"] = pd.array([False if t == "open" else pd.NA for t in ev["event_type"]], dtype="boolean")
    return validate_events(ev, now=pd.Timestamp("2026-12-01", tz="UTC")).accepted


@pytest.fixture(scope="module")
def population(world_dir):
    from sendtime.features.contract import read_events, read_users

    return read_events(world_dir / "events.parquet").accepted, read_users(world_dir / "users.parquet").accepted


def _with_user(population, n_days):
    """The tiny world plus one synthetic Berlin user with ``n_days`` of history."""
    ev, us = population
    mine = _history(n_days) if n_days else ev.iloc[:0]
    users = pd.concat([us, pd.DataFrame({"user_id": ["u1"], "timezone": ["Europe/Berlin"], "segment": ["consumer"]})], ignore_index=True)
    return pd.concat([ev, mine], ignore_index=True), users


def test_shrinkage_moves_from_prior_to_own_evidence(population):
    cut = pd.Timestamp("2026-05-01", tz="UTC")
    profiles, conf, answer = {}, {}, {}
    for n in (0, 3, 20, 90):
        ev, us = _with_user(population, n)
        uf = build_user_features(build_messages(ev, us), us, cut)
        row = uf.rows_of(["u1"])[0]
        profiles[n] = uf.lam[row] / uf.lam[row].sum()
        conf[n] = float(uf.table.iloc[row]["confidence"])
        answer[n] = float(uf.table.iloc[row]["answer_confidence"])
        assert uf.table.iloc[row]["source"] == ("prior" if n == 0 else "model")
    assert conf[0] == 0 and conf[0] < conf[3] < conf[20] < conf[90] < 1  # the own share of the profile
    # the answers' confidence: how far the user's own history raised the chance that their best
    # hour is right (0 with none; this user's rhythm is clear, so three weeks make it near certain)
    assert answer[0] == 0 and answer[0] < answer[3] < answer[20] <= answer[90] <= 1 and answer[90] >= 0.9
    # a user with no history gets exactly the prior profile of a new user of their segment
    ev, us = _with_user(population, 0)
    uf0 = build_user_features(build_messages(ev, us), us, cut)
    from sendtime.serving.scoring import _empty_messages

    cold = build_user_features(_empty_messages(), us.loc[us["user_id"] == "u1"], cut, prior=uf0.prior)
    np.testing.assert_allclose(cold.lam[0] / cold.lam[0].sum(), profiles[0], rtol=1e-5)
    # the more history, the further from the prior and the closer to the user's reading hours
    dist = {n: np.abs(profiles[n] - profiles[0]).sum() for n in (3, 20, 90)}
    assert dist[3] < dist[20] < dist[90]
    assert int(np.argmax(profiles[90][:24])) in (7, 8, 9)  # Monday
    assert int(np.argmax(profiles[90][5 * 24:6 * 24])) in (17, 18, 19)  # Saturday


def test_saturday_window_gets_a_different_hour_than_wednesday(population, trained):
    from sendtime.serving.model_store import load_champion
    from sendtime.serving.scoring import Scorer

    settings, _ = trained
    ev, us = _with_user(population, 120)
    cut = pd.Timestamp("2026-05-10", tz="UTC")
    uf = build_user_features(build_messages(ev, us), us, cut)
    model, version, columns = load_champion(settings.tracking_uri, settings.registry_uri, settings.model_name)
    scorer = Scorer(model=model, model_version=version, input_columns=columns, features=uf)
    hours = {}
    for day in ("2026-05-13", "2026-05-16"):  # a Wednesday and a Saturday
        start = pd.Timestamp(day).tz_localize("Europe/Berlin")
        res = scorer.best_in_window(["u1"], [None], start, start + pd.Timedelta(hours=23))
        hours[day] = int(res["local_hour"].iloc[0])
    assert hours["2026-05-13"] in (6, 7, 8)
    assert hours["2026-05-16"] in (16, 17, 18)


def test_expected_calibration_error_measures_miscalibration():
    rng = np.random.default_rng(0)
    p = rng.beta(2, 6, 200_000)
    y = (rng.random(len(p)) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.005
    assert expected_calibration_error(y, np.clip(p * 1.5, 0, 1)) > 0.08


def test_trained_model_is_calibrated_on_validation_weeks(trained):
    _, result = trained
    assert result.metrics["ece"] < 0.04  # tiny world; the 20,000-user runs in the README reach < 0.02
