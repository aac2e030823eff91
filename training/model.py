"""The open-probability model: a RandomForest in a scikit-learn Pipeline, and its metrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline


@dataclass(frozen=True)
class ForestParams:
    n_estimators: int = 120
    max_depth: int = 14
    min_samples_leaf: int = 40
    max_features: float = 0.5
    random_state: int = 0
    n_jobs: int = -1


def make_pipeline(p: ForestParams) -> Pipeline:
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
