"""The open-probability model: a RandomForest in a scikit-learn Pipeline, and its metrics."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline

from sendtime.settings import Settings


_DEFAULTS = {f.name: f.default for f in fields(Settings)}  # the defaults are written once, in Settings


@dataclass(frozen=True)
class ForestParams:
    n_estimators: int = _DEFAULTS["n_estimators"]
    max_depth: int = _DEFAULTS["max_depth"]
    min_samples_leaf: int = _DEFAULTS["min_samples_leaf"]
    max_features: float = 0.5
    random_state: int = _DEFAULTS["random_state"]
    n_jobs: int = _DEFAULTS["n_jobs"]

    @classmethod
    def from_settings(cls, settings: Settings) -> "ForestParams":
        """The forest of these settings (every field Settings has; the rest keep their defaults)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)})


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
                n_estimators=p.n_estimators, max_depth=p.max_depth, min_samples_leaf=p.min_samples_leaf,
                max_features=p.max_features, random_state=p.random_state, n_jobs=p.n_jobs)),
        ]
    )


#: the hour-blind columns the rate model reads: each person's own smoothed past rates
RATE_COLUMNS = ("open_rate_28d", "open_rate_90d", "click_rate_90d")


def make_rate_pipeline(columns: tuple[str, ...] = RATE_COLUMNS) -> Pipeline:
    """The simplest level: a logistic regression on the person's own smoothed past rates. It
    ranks people as their past response rates do, which a forest of a few hundred people and
    one or two answers each does not (its leaves mix people whose rates differ)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    return Pipeline([
        ("select", ColumnTransformer([("rates", "passthrough", list(columns))], remainder="drop")),
        ("impute", SimpleImputer(strategy="median")),
        ("scale", StandardScaler()),
        ("logistic", LogisticRegression(max_iter=1000)),
    ])


#: the share of the hour-blind forest in the level (the rest is the rate model); 0 first, so the
#: one-standard-error rule prefers the simpler level
LEVEL_WEIGHTS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))


def choose_level_weight(y: np.ndarray, p_forest: np.ndarray, p_rate: np.ndarray,
                        groups: np.ndarray | None = None) -> tuple[float, dict[float, float]]:
    """The weight b of ``b * p_forest + (1 - b) * p_rate`` (both hour-blind): the smallest whose
    held-out log loss is within one standard error (clustered by user) of the best's, so the
    forest's extra columns (recency, tenure, the profile's level) count only as far as the
    validation weeks show beyond their noise."""
    y = np.asarray(y)
    rows = {float(b): _row_loss(y, b * p_forest + (1 - b) * p_rate) for b in LEVEL_WEIGHTS}
    scores = {b: float(r.mean()) for b, r in rows.items()}
    best = min(scores, key=lambda b: (scores[b], b))
    chosen = min(b for b in scores if scores[b] - scores[best] <= _user_se(rows[b] - rows[best], groups))
    return chosen, scores


def level_blend(forest: Pipeline, rate: Pipeline, level_weight: float, y: np.ndarray):
    """The hour-blind level as one soft-voting classifier: ``b * forest + (1 - b) * rate``."""
    return _voting([("forest", forest), ("rate", rate)], [level_weight, 1.0 - level_weight], y)


def _voting(named: list, weights: list[float], y: np.ndarray):
    """Fitted estimators as one stock soft-voting classifier (it travels through the registry)."""
    from sklearn.ensemble import VotingClassifier
    from sklearn.preprocessing import LabelEncoder

    vc = VotingClassifier(named, voting="soft", weights=weights)
    vc.estimators_ = [e for _, e in named]
    vc.le_ = LabelEncoder().fit(y)
    vc.classes_ = vc.le_.classes_
    return vc


#: the weights the hour effect may get: 1 = the full model's hour modulation; the smallest is
#: above 0, so a user's hours keep the full model's order however weak the evidence (at 0 they
#: would all tie) while their spread, the part that competes with other users' levels, shrinks
HOUR_WEIGHTS = tuple(np.round(np.linspace(0.1, 1.0, 10), 2))


def _user_se(diff: np.ndarray, groups: np.ndarray | None) -> float:
    """Standard error of the mean of per-row differences, clustered by user (rows of one user
    are not independent evidence)."""
    n = len(diff)
    if n < 2:
        return float("inf")
    if groups is None:
        return float(diff.std(ddof=1) / np.sqrt(n))
    codes = np.unique(np.asarray(groups), return_inverse=True)[1]
    per_user = np.bincount(codes, weights=diff - diff.mean())
    return float(np.sqrt((per_user ** 2).sum()) / n) if len(per_user) > 1 else float("inf")


def choose_hour_weight(y: np.ndarray, p_full: np.ndarray, p_blind: np.ndarray,
                       groups: np.ndarray | None = None) -> tuple[float, dict[float, float]]:
    """The weight a of ``a * p_full + (1 - a) * p_blind``: the smallest whose held-out log loss
    is within one standard error (clustered by user, ``groups``) of the best weight's. The hour
    effect is only as strong as the held-out weeks show beyond their noise: a log loss a hair
    better by chance does not buy the full hour modulation."""
    y = np.asarray(y)
    rows = {float(a): _row_loss(y, a * p_full + (1 - a) * p_blind) for a in HOUR_WEIGHTS}
    scores = {a: float(r.mean()) for a, r in rows.items()}
    best = min(scores, key=lambda a: (scores[a], -a))
    chosen = min(a for a in scores if scores[a] - scores[best] <= _user_se(rows[a] - rows[best], groups))
    scores[0.0] = float(_row_loss(y, p_blind).mean())  # reported: the hour-blind model alone
    return chosen, scores


def _row_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def blend(full: Pipeline, blind: Pipeline, hour_weight: float, y: np.ndarray):
    """Both fitted pipelines as one soft-voting classifier (stock scikit-learn, so it travels
    through the registry as one model): P = w * full + (1 - w) * blind."""
    return _voting([("hours", full), ("blind", blind)], [hour_weight, 1.0 - hour_weight], y)

