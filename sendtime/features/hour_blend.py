"""How P(open) is composed: each person's level, moved by the hour effect as far as it was weighed.

The model the nightly registers and the service scores. It lives below training and serving
because both need it: training builds and fits it, serving unpickles it and scores its
hour-blind parts once per user instead of once per slot.

    logit P = logit(level) + w * (logit(hours) - logit(twin))

``hours`` is the hour-aware forest, ``twin`` its hour-blind twin (the same forest without the
candidate hour's columns) and ``level`` the weighed hour-blind level. The difference of the two
forests is the hour modulation alone, so the hour-aware forest's own idea of a person's level
never enters: the level is the one the validation weeks preferred. Within one person every
hour keeps the hour-aware forest's order for any ``w > 0``, and in logit space the result
stays a probability however the parts differ.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def combine(p_hours: np.ndarray, p_twin: np.ndarray, p_level: np.ndarray, hour_weight: float) -> np.ndarray:
    """P(open) from the three parts' probabilities (broadcasting: the hour-blind parts may be
    one column per user against 168 slots)."""
    z = logit(p_level) + hour_weight * (logit(p_hours) - logit(p_twin))
    return 1.0 / (1.0 + np.exp(-z))


class HourModulation(ClassifierMixin, BaseEstimator):
    """The level with the hour modulation on top (see the module docstring).

    ``twin=None`` takes the level's first estimator (its hour-blind forest) as the twin, so
    that forest is fitted and stored once."""

    def __init__(self, hours, level, hour_weight: float = 1.0, twin=None) -> None:
        self.hours = hours
        self.level = level
        self.hour_weight = hour_weight
        self.twin = twin

    def fit(self, X, y) -> "HourModulation":
        hours, level = clone(self.hours).fit(X, y), clone(self.level).fit(X, y)
        twin = clone(self.twin).fit(X, y) if self.twin is not None else level.estimators_[0]
        return self._set_fitted(hours, level, twin, np.unique(y))

    @classmethod
    def from_fitted(cls, hours, level, hour_weight: float, twin=None, classes=(0, 1)) -> "HourModulation":
        """The model of parts fitted already (the validation twin is built so)."""
        model = cls(hours, level, hour_weight, twin)
        return model._set_fitted(hours, level, twin if twin is not None else level.estimators_[0], np.asarray(classes))

    def _set_fitted(self, hours, level, twin, classes) -> "HourModulation":
        self.hours_, self.level_, self.twin_ = hours, level, twin
        inside = getattr(level, "estimators_", None) or [None]
        self.estimators_ = [hours, level] if twin is inside[0] or twin is level else [hours, level, twin]
        self.classes_ = classes
        return self

    def hour_blind_proba(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(P twin, P level): the same at every slot of a user, so scored once per user."""
        return self.twin_.predict_proba(X)[:, 1], self.level_.predict_proba(X)[:, 1]

    def combine(self, p_hours: np.ndarray, p_twin: np.ndarray, p_level: np.ndarray) -> np.ndarray:
        return combine(p_hours, p_twin, p_level, self.hour_weight)

    def predict_proba(self, X) -> np.ndarray:
        p_twin, p_level = self.hour_blind_proba(X)
        p = self.combine(self.hours_.predict_proba(X)[:, 1], p_twin, p_level)
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]
