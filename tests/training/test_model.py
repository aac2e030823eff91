"""The level of the hour blend: the hour-blind forest and the rate model, weighed on held-out rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from sendtime.features.definitions import HOUR_BLIND_FEATURES, MODEL_FEATURES
from sendtime.serving.scoring import forests_in
from sendtime.training.model import (
    ForestParams,
    blend,
    choose_level_weight,
    level_blend,
    make_blind_pipeline,
    make_pipeline,
    make_rate_pipeline,
)


def _people(n_people: int, sends: int, seed: int, noise_columns: bool):
    """Rows of people whose chance of answering is their own rate; their past rates are what
    they answered of ``sends`` earlier prompts (smoothed), the other columns carry nothing."""
    rng = np.random.default_rng(seed)
    true = rng.beta(0.6, 12.0, n_people)  # sparse answerers, 1-10%
    past = rng.binomial(sends, true)
    person = np.repeat(np.arange(n_people), 20)
    X = pd.DataFrame(rng.random((len(person), len(MODEL_FEATURES))), columns=list(MODEL_FEATURES)).astype("float32")
    for c in ("open_rate_28d", "open_rate_90d"):
        X[c] = ((past + 0.5) / (sends + 5.0))[person]
    X["click_rate_90d"] = X["open_rate_28d"] * 0.3
    if not noise_columns:  # the forest's columns know something the rates do not
        X["days_since_open"] = rng.random(n_people)[person] * 30
    y = (rng.random(len(person)) < true[person] * (2.0 if not noise_columns else 1.0)
         * (np.where(X["days_since_open"] < 5, 1.5, 0.5) if not noise_columns else 1.0)).astype(int)
    return X, y, person


def test_sparse_people_are_ranked_by_their_rates_and_the_forest_only_counts_where_it_adds():
    fp = ForestParams(n_estimators=40, max_depth=8, min_samples_leaf=20, n_jobs=2)
    blind_cols = list(HOUR_BLIND_FEATURES)
    # one or two answers each, nothing else to know: the rate model ranks people better, the weight says so
    X, y, person = _people(600, 40, seed=3, noise_columns=True)
    tr, va = person < 400, person >= 400
    forest = make_blind_pipeline(fp, blind_cols).fit(X[tr], y[tr])
    rate = make_rate_pipeline().fit(X[tr], y[tr])
    p_f, p_r = forest.predict_proba(X[va])[:, 1], rate.predict_proba(X[va])[:, 1]
    assert roc_auc_score(y[va], p_r) > roc_auc_score(y[va], p_f) + 0.01
    b, scores = choose_level_weight(y[va], p_f, p_r, person[va])
    assert b <= 0.6, scores  # the rate model carries the level (a mix is what held-out log loss likes best)
    p_b = b * p_f + (1 - b) * p_r
    assert roc_auc_score(y[va], p_b) > roc_auc_score(y[va], p_f) + 0.01
    assert scores[b] < scores[1.0]
    # where another column matters (recent openers answer three times as often), the forest gets weight
    X2, y2, person2 = _people(1500, 40, seed=4, noise_columns=False)
    tr2, va2 = person2 < 1000, person2 >= 1000
    forest2 = make_blind_pipeline(fp, blind_cols).fit(X2[tr2], y2[tr2])
    rate2 = make_rate_pipeline().fit(X2[tr2], y2[tr2])
    b2, scores2 = choose_level_weight(y2[va2], forest2.predict_proba(X2[va2])[:, 1], rate2.predict_proba(X2[va2])[:, 1],
                                      person2[va2])
    assert b2 >= 0.7, scores2
    assert b2 > b


def test_the_level_blend_is_hour_blind_and_scores_as_its_weighted_parts():
    X, y, person = _people(300, 40, seed=5, noise_columns=True)
    fp = ForestParams(n_estimators=10, max_depth=6, min_samples_leaf=10, n_jobs=1)
    forest = make_blind_pipeline(fp, list(HOUR_BLIND_FEATURES)).fit(X, y)
    rate = make_rate_pipeline().fit(X, y)
    level = level_blend(forest, rate, 0.3, y)
    full = make_pipeline(fp, list(MODEL_FEATURES)).fit(X, y)
    model = blend(full, level, 0.6, y)
    head = X.head(40)
    want_level = 0.3 * forest.predict_proba(head)[:, 1] + 0.7 * rate.predict_proba(head)[:, 1]
    np.testing.assert_allclose(level.predict_proba(head)[:, 1], want_level)
    np.testing.assert_allclose(model.predict_proba(head)[:, 1], 0.6 * full.predict_proba(head)[:, 1] + 0.4 * want_level)
    moved = head.copy()
    moved["cand_hour"] = (moved["cand_hour"] + 7) % 24
    moved["act_24"] = moved["act_24"][::-1].to_numpy()
    np.testing.assert_allclose(level.predict_proba(moved)[:, 1], want_level)  # the candidate hour does not reach it
    assert len(forests_in(model)) == 2  # the hour-aware forest and the level's forest
