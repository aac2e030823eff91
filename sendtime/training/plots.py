"""Figures logged with each training run (and reused by the analyst notebooks)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: the nightly run has no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def reliability_figure(y: np.ndarray, p: np.ndarray, bins: int = 15):
    order = np.argsort(p)
    chunks = [c for c in np.array_split(order, bins) if len(c)]
    pred = [p[c].mean() for c in chunks]
    obs = [y[c].mean() for c in chunks]
    fig, ax = plt.subplots(figsize=(5, 5))
    hi = max(max(pred), max(obs)) * 1.05
    ax.plot([0, hi], [0, hi], "--", color="grey", label="perfect")
    ax.plot(pred, obs, "o-", label="model")
    ax.set_xlabel("predicted P(open)")
    ax.set_ylabel("observed open rate")
    ax.set_title("Reliability on validation weeks")
    ax.legend()
    fig.tight_layout()
    return fig


def importance_figure(model, columns: list[str]):
    """Impurity importances of the hour-aware forest (of a blend: its ``hours`` part, with
    the weight the validation weeks gave the hour effect in the title)."""
    parts = getattr(model, "estimators_", None)
    weight = None
    if parts:  # the blend of sendtime.training.model.blend: (hour-aware, hour-blind)
        model, weight = parts[0], model.weights[0]
    forest = model.named_steps["forest"]
    imp = pd.Series(forest.feature_importances_, index=columns).sort_values()
    fig, ax = plt.subplots(figsize=(6, 0.28 * len(imp) + 1))
    imp.plot.barh(ax=ax, color="#3b7dd8")
    ax.set_xlabel("impurity importance")
    ax.set_title("Feature importances" + (f" (hour-aware forest, weight {weight:.1f})" if weight is not None else ""))
    fig.tight_layout()
    return fig


def hour_profile_figure(hours: np.ndarray, y: np.ndarray, p: np.ndarray):
    df = pd.DataFrame({"hour": hours, "y": y, "p": p})
    g = df.groupby("hour").agg(observed=("y", "mean"), predicted=("p", "mean"), n=("y", "size"))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(g.index, g["observed"], color="#cfd8e3", label="observed open rate")
    ax.plot(g.index, g["predicted"], "o-", color="#d8613b", label="mean prediction")
    ax.set_xlabel("local send hour")
    ax.set_ylabel("open rate")
    ax.set_title("Validation sends by local hour")
    ax.legend()
    fig.tight_layout()
    return fig
