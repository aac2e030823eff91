"""The open-probability model: a RandomForest in a scikit-learn Pipeline, and its metrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline


@dataclass(frozen=True)
class ForestParams:
    n_estimators: int = 120
    max_depth: int = 14
    min_samples_leaf: int = 100
    max_features: float = 0.5
    random_state: int = 0
    n_jobs: int = -1


def monotone_constraints(columns: list[str]) -> list[int]:
    """+1 for the activity features: more expected reading activity never lowers P(open).

    Without it the forest's piecewise-constant output ranks a user's hours noisily, and the
    argmax over a window picks noise; with it the ranking follows the user's profile.
    """
    return [1 if c.startswith("act_") or c == "p_struct" else 0 for c in columns]


def make_pipeline(p: ForestParams, columns: list[str] | None = None) -> Pipeline:
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            (
                "forest",
                RandomForestClassifier(
                    n_estimators=p.n_estimators,
                    max_depth=p.max_depth,
                    min_samples_leaf=p.min_samples_leaf,
                    max_features=p.max_features,
                    random_state=p.random_state,
                    n_jobs=p.n_jobs,
                    monotonic_cst=monotone_constraints(columns) if columns else None,
                ),
            ),
        ]
    )


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """Weighted mean |observed rate - mean prediction| over equal-count bins."""
    order = np.argsort(p)
    err = 0.0
    for chunk in np.array_split(order, bins):
        if len(chunk):
            err += len(chunk) * abs(y[chunk].mean() - p[chunk].mean())
    return float(err / max(len(y), 1))


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    out = {
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "positive_rate": float(y.mean()),
        "mean_prediction": float(p.mean()),
        "rows": float(len(y)),
    }
    out["roc_auc"] = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
    return out


def make_blind_pipeline(p: ForestParams, user_columns: list[str]) -> Pipeline:
    """The hour-blind model: the same forest on the user's own columns only, so its P(open)
    is the same at every hour (each person's level, as the user features know it)."""
    from sklearn.compose import ColumnTransformer

    return Pipeline(
        [
            ("select", ColumnTransformer([("user", "passthrough", list(user_columns))], remainder="drop")),
            ("impute", SimpleImputer(strategy="median")),
            ("forest", RandomForestClassifier(
                n_estimators=max(p.n_estimators // 2, 10), max_depth=p.max_depth, min_samples_leaf=p.min_samples_leaf,
                max_features=p.max_features, random_state=p.random_state, n_jobs=p.n_jobs)),
        ]
    )


#: the weights the hour effect may get: 0 = hour-blind, 1 = the full model's hour modulation
HOUR_WEIGHTS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))


def choose_hour_weight(y: np.ndarray, p_full: np.ndarray, p_blind: np.ndarray) -> tuple[float, dict[float, float]]:
    """The weight a of ``a * p_full + (1 - a) * p_blind`` with the best held-out log loss:
    the hour effect is only as strong as the held-out weeks support (0 where hours are noise)."""
    scores = {float(a): float(log_loss(y, np.clip(a * p_full + (1 - a) * p_blind, 1e-6, 1 - 1e-6), labels=[0, 1]))
              for a in HOUR_WEIGHTS}
    best = min(scores, key=lambda a: (scores[a], -a))
    return best, scores


def blend(full: Pipeline, blind: Pipeline, hour_weight: float, y: np.ndarray):
    """Both fitted pipelines as one soft-voting classifier (stock scikit-learn, so it travels
    through the registry as one model): P = w * full + (1 - w) * blind."""
    from sklearn.ensemble import VotingClassifier
    from sklearn.preprocessing import LabelEncoder

    vc = VotingClassifier([("hours", full), ("blind", blind)], voting="soft", weights=[hour_weight, 1.0 - hour_weight])
    vc.estimators_ = [full, blind]
    vc.le_ = LabelEncoder().fit(y)
    vc.classes_ = vc.le_.classes_
    return vc


def forests_of(model) -> list:
    """Every RandomForest inside a model (a pipeline or the blend)."""
    parts = getattr(model, "estimators_", None) or [model]
    return [p.named_steps["forest"] for p in parts if hasattr(p, "named_steps") and "forest" in p.named_steps]
