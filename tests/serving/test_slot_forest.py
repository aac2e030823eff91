"""The compiled slot traversal (serving/slot_forest.py) gives scikit-learn's probabilities and
best hours, on a forest built like the nightly's and on the nightly's own champion."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline

from sendtime.serving.slot_forest import SlotForest
from sendtime.training.model import ForestParams, make_pipeline


def _slots(n_users: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """n_users x 168 rows: three user columns (one per user) and three slot columns."""
    rng = np.random.default_rng(seed)
    user = rng.normal(size=(n_users, 3)).astype(np.float32)
    peak = rng.integers(0, 168, n_users)
    how = np.tile(np.arange(168), n_users)
    dist = np.abs(((how - np.repeat(peak, 168)) + 84) % 168 - 84).astype(np.float32)
    X = pd.DataFrame({
        "u0": np.repeat(user[:, 0], 168), "u1": np.repeat(user[:, 1], 168), "u2": np.repeat(user[:, 2], 168),
        "hour": (how % 24).astype(np.float32), "act": np.exp(-dist / 6).astype(np.float32),
        "noise": rng.random(n_users * 168).astype(np.float32)})
    X["act_sq"] = (X["act"] ** 2).astype(np.float32)  # rises with act
    logit = -2 + 1.5 * X["act"] + 0.7 * X["u0"] - 0.3 * X["u1"]
    y = (rng.random(len(X)) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y, np.array([False, False, False, True, True, True, True])


def test_equals_predict_proba_and_its_best_hours():
    X, y, varies = _slots(300, 0)
    model = make_pipeline(ForestParams(n_estimators=25, max_depth=12, min_samples_leaf=20, n_jobs=1),
                          list(X.columns)).fit(X, y)
    fast = SlotForest.of(model)
    assert fast is not None
    Xt, _, _ = _slots(120, 1)
    want = model.predict_proba(Xt)[:, 1]
    # user splits decided once per user, or every split row by row; rows sorted by "act", with
    # "act_sq" rising with it and "noise" (wrongly) said to: each group's check keeps it exact
    ordered = np.isin(X.columns, ["act", "act_sq", "noise"])
    for kw in (dict(varies=varies), dict(varies=None), dict(varies=varies, key=4, ordered=ordered)):
        got = fast.predict(Xt.to_numpy(np.float32), 168, **kw)
        assert np.abs(got - want).max() <= 1e-12
        np.testing.assert_array_equal(got.reshape(-1, 168).argmax(1), want.reshape(-1, 168).argmax(1))
    # groups of any size, given by their first rows
    starts = np.array([0, 5, 168, 200, 336])
    got = fast.predict(Xt.iloc[:400].to_numpy(np.float32), starts, varies)
    assert np.abs(got - want[:400]).max() <= 1e-12


def test_missing_values_are_imputed_as_the_pipeline_does():
    X, y, varies = _slots(100, 2)
    X.loc[X.index[::7], "u2"] = np.nan
    model = make_pipeline(ForestParams(n_estimators=10, max_depth=8, min_samples_leaf=30, n_jobs=1), list(X.columns)).fit(X, y)
    Xt, _, _ = _slots(30, 3)
    Xt.loc[Xt.index[:168 * 3], "act"] = np.nan
    got = SlotForest.of(model).predict(Xt.to_numpy(np.float32), 168, varies)
    assert np.abs(got - model.predict_proba(Xt)[:, 1]).max() <= 1e-12


def test_other_models_are_left_to_their_own_predict_proba():
    X, y, _ = _slots(20, 4)
    bare = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    assert SlotForest.of(bare) is None
    assert SlotForest.of(Pipeline([("forest", bare)])) is None
    fast = SlotForest.of(make_pipeline(ForestParams(n_estimators=3, n_jobs=1), list(X.columns)).fit(X, y))
    with pytest.raises(ValueError, match="expected"):
        fast.predict(np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="groups"):
        fast.predict(X.to_numpy(np.float32)[:10], np.array([2, 5]))
    varies = np.isin(X.columns, ["hour", "act", "noise", "act_sq"])
    with pytest.raises(ValueError, match=r"expected \(4, rows\) and \(groups, 3\)"):
        fast.predict_split(np.zeros((4, 336), np.float32), np.zeros((3, 3), np.float32), 168, varies)


def test_the_champions_score_table_is_predict_proba_s(trained):
    from sendtime.serving.model_store import load_scorer

    settings, _ = trained
    scorer, _ = load_scorer(replace(settings, use_score_table=False))  # the features, not the serving table
    fast = scorer.full_table()
    scorer.compiled = False
    slow = scorer.full_table()
    assert fast.shape == (len(scorer.features.table), 168)
    assert np.abs(fast - slow).max() <= 1e-6  # float32 tables: the float sums' order at most
    np.testing.assert_array_equal(fast.argmax(1), slow.argmax(1))
    # per request: unknown users and a window of 24 slots score the same both ways
    rows = np.repeat(np.arange(40), 24)
    how = np.tile(np.arange(30, 54), 40)
    scorer.compiled = True
    a = scorer.score_model(scorer.features, rows, how)
    scorer.compiled = False
    b = scorer.score_model(scorer.features, rows, how)
    assert np.abs(a - b).max() <= 1e-12


def test_users_the_snapshot_does_not_know_get_their_zones_prior(trained):
    """One row per zone, looked up: the same P(open) as building each such user's features
    from the prior and running the model on them (what every request did before)."""
    from sendtime.features.engagement import build_user_features
    from sendtime.serving.model_store import load_scorer
    from sendtime.serving.scoring import _empty_messages

    settings, _ = trained
    zones = ["Asia/Tokyo", "America/New_York", "Asia/Tokyo", "Pacific/Chatham"]  # Chatham: not in the snapshot
    ids = [f"brand-new-{i}" for i in range(len(zones))]
    # the serving table's (scored by the nightly run, compiled) and the features' (at load)
    for use_table in (True, False):
        scorer, _ = load_scorer(replace(settings, use_score_table=use_table))
        assert (scorer.served is not None) == use_table
        cold, req = scorer.users(ids, zones)
        assert req.cold.all() and len(cold.scores) == 3 and (req.source == "prior").all()
        how = np.tile(np.arange(168), (len(ids), 1))
        got = scorer.score_requested(cold, req, how)
        users = pd.DataFrame({"user_id": ids, "segment": "unknown", "timezone": zones})
        uf = build_user_features(_empty_messages(), users, scorer.as_of, prior=scorer.prior)
        X = uf.model_frame(np.repeat(np.arange(len(ids)), 168), np.tile(np.arange(168), len(ids)))[scorer.input_columns]
        want = scorer.model.predict_proba(X)[:, 1].reshape(len(ids), 168)
        assert np.abs(got - want).max() <= (1e-6 if use_table else 1e-12)  # published as float32
        np.testing.assert_array_equal(got[0], got[2])  # two users, one zone: one prior


def test_the_table_scored_into_a_file_and_the_chunked_predictions_are_the_in_memory_ones(trained, tmp_path):
    """The nightly scores into the snapshot's file and writes the predictions a chunk of users
    at a time (ten million users' would not fit in memory): the same numbers, the same rows."""
    from sendtime.serving.model_store import load_scorer

    settings, _ = trained
    scorer, _ = load_scorer(replace(settings, use_score_table=False))
    want = scorer.full_table()
    mm = np.lib.format.open_memmap(tmp_path / "scores.npy", mode="w+", dtype=np.float32, shape=want.shape)
    scorer.full_table(chunk_users=97, out=mm)  # chunks that do not divide the users
    del mm
    np.testing.assert_array_equal(np.load(tmp_path / "scores.npy"), want)
    with pytest.raises(ValueError, match="168 slots"):
        scorer.full_table(out=np.zeros((3, 168), np.float32))
    scorer.table = np.load(tmp_path / "scores.npy", mmap_mode="r")
    day = scorer.as_of.date()
    counts = scorer.write_predictions(day, tmp_path / "predictions.parquet", chunk_users=333)
    got = pd.read_parquet(tmp_path / "predictions.parquet")
    ref = scorer.predict_day(day)
    assert counts == {"users": len(ref), "prior": int((ref["source"] == "prior").sum())} and len(ref) > 333
    pd.testing.assert_frame_equal(got.drop(columns="hour_scores"), ref.drop(columns="hour_scores"), check_dtype=False)
    np.testing.assert_array_equal(np.stack(got["hour_scores"]), np.stack(ref["hour_scores"]))
