"""Fit, evaluate, log, register and gate one model: the training half of the nightly run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from sendtime.features.definitions import FEATURE_SET_VERSION, MODEL_FEATURES, HOUR_BLIND_FEATURES
from sendtime.training.dataset import HistoryTooShort, NothingToLearn, TrainingSet  # noqa: F401 (NothingToLearn: raised here too)
from sendtime.training.model import (
    ForestParams,
    blend,
    choose_hour_weight,
    choose_level_weight,
    classification_metrics,
    level_blend,
    make_blind_pipeline,
    make_pipeline,
    make_rate_pipeline,
)
from sendtime.training.offpolicy import OffPolicyReport
from sendtime.training.plots import hour_profile_figure, importance_figure, reliability_figure
from sendtime.training.registry import GateDecision, gate, log_model, log_twin


def refit_wanted(setting: str, validation_used: pd.Timedelta, validation_days: int) -> bool:
    """Whether the registered model is refitted on the validation weeks too: always, never, or
    (auto) when the history was too short for the configured windows, where the validation
    weeks are a third of the evidence and the training snapshots saw only the early part of it.
    On a long history the twin alone is registered: a refit would double the training time
    for a few per cent more rows."""
    if setting == "auto":
        return pd.Timedelta(validation_used) < pd.Timedelta(days=validation_days)
    return setting == "always"


@dataclass
class TrainResult:
    run_id: str
    model_version: str
    metrics: dict[str, float]
    decision: GateDecision


def train_and_register(
    ts: TrainingSet,
    forest: ForestParams,
    model_name: str,
    gate_tolerance: float,
    extra_params: dict | None = None,
    progress: Callable[[str], None] | None = None,
    off_policy: Callable[[object], "OffPolicyReport | None"] | None = None,
    refit: bool = False,
) -> TrainResult:
    """Must be called inside an active MLflow run.

    Every choice and every validation figure comes from the forests fitted before the
    validation weeks (the *validation twin*). With ``refit`` the registered model is the same
    blend refitted on all labelled rows, validation weeks included: on a short history those
    weeks are a third of the evidence, and the latest weeks are the most telling."""
    say = progress or (lambda _m: None)
    X_tr, y_tr = ts.X[ts.train_mask], ts.y[ts.train_mask]
    X_va, y_va = ts.X[ts.val_mask], ts.y[ts.val_mask]
    if len(X_tr) == 0 or len(X_va) == 0:
        raise HistoryTooShort(
            f"time split left {len(X_tr)} training and {len(X_va)} validation rows: need more history than the validation window"
        )
    if y_tr.min() == y_tr.max():
        what = "opened or clicked" if y_tr.min() == 0 else "missed"
        raise NothingToLearn(f"none of the {len(y_tr):,} training sends was {what} within the horizon: "
                             "a model needs both outcomes (does the history hold the opens and clicks?)")
    mlflow.log_params({**asdict(forest), **(extra_params or {}), "feature_set_version": FEATURE_SET_VERSION,
                       "train_rows": len(X_tr), "validation_rows": len(X_va),
                       "validation_start": ts.validation_start.isoformat(),
                       "validation_hours_used": ts.validation_window / pd.Timedelta(hours=1),
                       "snapshot_hours_used": ts.snapshot_every / pd.Timedelta(hours=1)})
    say(f"fitting RandomForest on {len(X_tr):,} rows x {X_tr.shape[1]} features")
    full = make_pipeline(forest, list(MODEL_FEATURES)).fit(X_tr[list(MODEL_FEATURES)], y_tr)
    say("fitting the hour-blind level (a forest and a rate model) and weighing the hour effect on the validation weeks")
    groups = ts.meta.loc[ts.val_mask, "user_id"].to_numpy()
    blind_forest = make_blind_pipeline(forest, list(HOUR_BLIND_FEATURES)).fit(X_tr[list(MODEL_FEATURES)], y_tr)
    rate = make_rate_pipeline().fit(X_tr[list(MODEL_FEATURES)], y_tr)
    p_forest = blind_forest.predict_proba(X_va[list(MODEL_FEATURES)])[:, 1]
    level_weight, by_level = choose_level_weight(y_va, p_forest, rate.predict_proba(X_va[list(MODEL_FEATURES)])[:, 1], groups)
    blind = level_blend(blind_forest, rate, level_weight, y_tr)
    # the hour effect is weighed against the hour-blind forest, its like-for-like twin: how much
    # the candidate hour adds to the same forest. Weighed against the better level instead, a
    # real hour effect lost its weight to the rate model's level (the hour-aware forest's own
    # level is the forest's) and a person's hours stopped counting
    p_full = full.predict_proba(X_va[list(MODEL_FEATURES)])[:, 1]
    hour_weight, by_weight = choose_hour_weight(y_va, p_full, p_forest, groups)
    twin = blend(full, blind, hour_weight, y_tr)
    p_va = twin.predict_proba(X_va[list(MODEL_FEATURES)])[:, 1]
    metrics = classification_metrics(y_va, p_va)
    metrics["hour_weight"] = hour_weight
    metrics["level_weight"] = level_weight  # the hour-blind forest's share of the level (the rest: the rate model)
    metrics["log_loss_level_rate"] = by_level[0.0]
    metrics["log_loss_level_forest"] = by_level[1.0]
    metrics["log_loss_hour_blind"] = by_weight[0.0]
    metrics["log_loss_full_hours"] = by_weight[1.0]
    say(f"level: forest weight {level_weight:.1f} (validation log loss: rate model {by_level[0.0]:.4f}, "
        f"hour-blind forest {by_level[1.0]:.4f}, chosen {by_level[level_weight]:.4f})")
    say(f"hour effect weight {hour_weight:.1f} (validation log loss: hour-blind {by_weight[0.0]:.4f}, "
        f"full {by_weight[1.0]:.4f}, chosen {by_weight[hour_weight]:.4f})")
    p_tr = twin.predict_proba(X_tr[list(MODEL_FEATURES)].head(50_000))[:, 1]
    metrics["train_log_loss"] = classification_metrics(y_tr[:50_000], p_tr)["log_loss"]
    mlflow.log_metrics({f"val_{k}" if not k.startswith("train") else k: v for k, v in metrics.items() if np.isfinite(v)})
    for name, fig in (
        ("plots/reliability.png", reliability_figure(y_va, p_va)),
        ("plots/feature_importance.png", importance_figure(full, list(MODEL_FEATURES))),
        ("plots/validation_by_hour.png", hour_profile_figure(X_va["cand_hour"].to_numpy(), y_va, p_va)),
    ):
        mlflow.log_figure(fig, name)
        plt.close(fig)
    new_ope = off_policy(twin) if off_policy else None
    if new_ope is not None:
        mlflow.log_metrics(new_ope.as_metrics("val_ope_"))
        metrics["ope_snips"] = new_ope.snips
        say("off-policy on validation weeks: " + " | ".join(new_ope.lines()[1:]))
    model = twin
    if refit:
        say(f"refitting both forests on all {len(ts.y):,} labelled rows (validation weeks included)")
        X_all = ts.X[list(MODEL_FEATURES)]
        level = level_blend(make_blind_pipeline(forest, list(HOUR_BLIND_FEATURES)).fit(X_all, ts.y),
                            make_rate_pipeline().fit(X_all, ts.y), level_weight, ts.y)
        model = blend(make_pipeline(forest, list(MODEL_FEATURES)).fit(X_all, ts.y), level, hour_weight, ts.y)
    mlflow.log_param("refit_on_validation", refit)
    say("logging and registering the model")
    _, version = log_model(model, X_tr[list(MODEL_FEATURES)], model_name)
    if refit:
        log_twin(twin, model_name, version)
    decision = gate(
        MlflowClient(), model_name, version, metrics, X_va[list(MODEL_FEATURES)], y_va, gate_tolerance,
        off_policy=(lambda m: off_policy(m).snips) if new_ope is not None else None,
        new_off_policy=new_ope.snips if new_ope is not None else None,
    )
    mlflow.set_tags({"promoted": str(decision.promoted).lower(), "gate_reason": decision.reason, "model_version": version})
    return TrainResult(run_id=mlflow.active_run().info.run_id, model_version=version, metrics=metrics, decision=decision)
