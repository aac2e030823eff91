"""Hour effects only as strong as the evidence: on a world where the send hour does not matter
the hour weight and the profile hyperparameters chosen on held-out weeks go flat; where it
matters they keep the hours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sendtime.features.contract import validate_events, validate_users
from sendtime.features.definitions import HOUR_BLIND_FEATURES, MODEL_FEATURES
from sendtime.features.engagement import build_user_features
from sendtime.features.messages import build_messages
from sendtime.features.profiles import ShrinkageParams
from sendtime.simulation.simulate import simulate_world, world_config
from sendtime.training.dataset import build_training_set
from sendtime.training.model import ForestParams, blend, choose_hour_weight, make_blind_pipeline, make_pipeline
from sendtime.training.shrinkage_search import SHAPE_FACTORS, choose_shrinkage


def _history(preset: str):
    w = simulate_world(world_config(preset, n_users=1500, days=70, seed=21))
    ev, us = validate_events(w.events).accepted, validate_users(w.users).accepted
    return w, build_messages(ev, us), us


@pytest.fixture(scope="module")
def flat():
    return _history("flat")


@pytest.fixture(scope="module")
def rhythmic():
    return _history("random-rhythms")


def _tuned_model(hist):
    """The nightly's choices on this history: profile hyperparameters by held-out likelihood,
    then the full and hour-blind forests weighed on the validation weeks."""
    w, msgs, us = hist
    end = w.config.end_ts
    choice = choose_shrinkage(msgs, us, end - pd.Timedelta(days=15), end, ShrinkageParams(), max_users=1500)
    ts = build_training_set(msgs, us, end, 24, 14, 7, 60_000, 0, params=choice.params)
    cols = list(MODEL_FEATURES)
    fp = ForestParams(n_estimators=40, n_jobs=2)
    X_tr, y_tr, X_va, y_va = ts.X[ts.train_mask][cols], ts.y[ts.train_mask], ts.X[ts.val_mask][cols], ts.y[ts.val_mask]
    full = make_pipeline(fp, cols).fit(X_tr, y_tr)
    blind = make_blind_pipeline(fp, list(HOUR_BLIND_FEATURES)).fit(X_tr, y_tr)
    weight, scores = choose_hour_weight(y_va, full.predict_proba(X_va)[:, 1], blind.predict_proba(X_va)[:, 1])
    model = blend(full, blind, weight, y_tr)
    uf = build_user_features(msgs, us, end, params=choice.params)
    rows, how = np.repeat(np.arange(400), 24), np.tile(np.arange(24) + 48, 400)  # one Wednesday
    p = model.predict_proba(uf.model_frame(rows, how)[cols])[:, 1].reshape(400, 24)
    return choice, weight, scores, model, X_va, float((p.std(1) / p.mean(1)).mean())


def test_a_flat_world_gets_flat_hour_scores_and_a_rhythmic_one_keeps_its_hours(flat, rhythmic):
    c_flat, w_flat, s_flat, model, X_va, spread_flat = _tuned_model(flat)
    c_rhythm, w_rhythm, s_rhythm, _, _, spread_rhythm = _tuned_model(rhythmic)
    base = ShrinkageParams().shape_strength
    assert c_flat.params.shape_strength >= 16 * base  # the held-out weeks say: shrink the hours away
    assert c_rhythm.params.shape_strength < c_flat.params.shape_strength
    assert spread_flat < 0.25 * spread_rhythm, (spread_flat, spread_rhythm)  # a user's hours barely differ
    assert s_rhythm[1.0] < s_rhythm[0.0]  # where hours matter the full model beats hour-blind
    assert w_rhythm >= 0.5
    # the blend is one stock scikit-learn model and scores like the weighted average of its parts
    full, blind = model.estimators_
    p = model.predict_proba(X_va.head(50))[:, 1]
    want = w_flat * full.predict_proba(X_va.head(50))[:, 1] + (1 - w_flat) * blind.predict_proba(X_va.head(50))[:, 1]
    np.testing.assert_allclose(p, want)


def test_profile_search_scores_every_candidate(flat):
    w, msgs, us = flat
    base = ShrinkageParams()
    start = w.config.end_ts - pd.Timedelta(days=15)
    choice = choose_shrinkage(msgs, us, start, w.config.end_ts, base, max_users=1500)
    assert len(choice.scores) >= len(SHAPE_FACTORS) * 2 and np.isfinite(choice.scores["loglik"]).all()
    best = choice.scores.loc[choice.scores["loglik"].idxmax()]
    p = choice.params
    assert (best["shape_strength"], best["smooth_hours"], best["mixture_k"]) == (p.shape_strength, p.smooth_hours, p.mixture_k)
    assert set(choice.as_params()) == {"chosen_shape_strength", "chosen_smooth_hours", "chosen_mixture_k"}


def test_too_little_held_out_data_keeps_the_defaults(flat):
    w, msgs, us = flat
    base = ShrinkageParams()
    late = w.config.end_ts - pd.Timedelta(hours=30)
    choice = choose_shrinkage(msgs, us, late, w.config.end_ts, base, max_users=50, min_sends=10_000)
    assert choice.params == base and choice.scores.empty


def test_the_hour_weight_needs_evidence_beyond_the_noise():
    """Held-out rows of 300 users x 24 sends: when the full model's hour modulation is noise
    around the level the smallest weight is chosen, even though some weight fits the noise a
    hair better; when the modulation is real the full weight stays."""
    rng = np.random.default_rng(3)
    users = np.repeat(np.arange(300), 24)
    level = rng.uniform(0.05, 0.5, 300)[users]
    hour = np.tile(np.arange(24), 300)
    wobble = 0.8 * np.sin(hour / 24 * 2 * np.pi + rng.uniform(0, 6.3, 300)[users])
    noise_full = np.clip(level * (1 + 0.6 * rng.standard_normal(len(users))), 0.01, 0.99)
    real_full = np.clip(level * (1 + wobble), 0.01, 0.99)
    y_flat = rng.random(len(users)) < level
    y_real = rng.random(len(users)) < real_full
    w_noise, s_noise = choose_hour_weight(y_flat, noise_full, level, users)
    w_real, s_real = choose_hour_weight(y_real, real_full, level, users)
    assert w_noise == 0.1 and w_real >= 0.8
    assert s_real[1.0] < s_real[0.0] and s_noise[0.0] < s_noise[1.0]
    # the order of a user's hours is kept at any weight: the full model's, shrunk
    p = w_noise * noise_full + (1 - w_noise) * level
    first = slice(0, 24)
    assert (np.argsort(p[first]) == np.argsort(noise_full[first])).all()
