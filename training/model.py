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
