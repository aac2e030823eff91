"""MLflow tracking, registration and the alias-based promotion gate.

Promotion moves the ``champion`` alias, never a stage. A new version becomes champion only
when it is not worse than the current champion on the *same* validation rows; otherwise it
gets the ``challenger`` alias and the reason is recorded on the run and the version.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version as installed_version
from typing import Callable

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from sendtime.training.model import classification_metrics

CHAMPION = "champion"
CHALLENGER = "challenger"
SKOPS_TRUSTED = ["numpy.dtype", "sklearn.tree._tree.Tree"]
#: What loading and scoring the registered model imports (the skops-serialized forest).
MODEL_DISTRIBUTIONS = ("mlflow", "numpy", "pandas", "scikit-learn", "scipy", "skops")


def model_requirements() -> list[str]:
    """The model's pip requirements, pinned to this environment's versions. Written out rather
    than inferred: MLflow's inference imports the model in a subprocess (8-10 s of every
    nightly) and lists whatever the training process had loaded (pytest, rich, psutil)."""
    return [f"{d}=={installed_version(d)}" for d in MODEL_DISTRIBUTIONS]


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or opened."""


def configure(tracking_uri: str, registry_uri: str, experiment: str, artifact_root: str) -> str:
    """Point MLflow at the configured stores; create the experiment with an explicit artifact root."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    try:
        client = MlflowClient()
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            exp_id = client.create_experiment(experiment, artifact_location=f"{artifact_root.rstrip('/')}/{experiment}")
        else:
            exp_id = exp.experiment_id
    except Exception as exc:  # connection refused, unreadable db, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TrackingUnavailable(f"MLflow tracking store {tracking_uri} is unavailable: {first}") from None
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def log_model(model, X_example: pd.DataFrame, model_name: str) -> tuple[str, str]:
    """Log the pipeline with signature and input example and register it. Returns (uri, version)."""
    sample = X_example.head(5)
    signature = infer_signature(sample, model.predict_proba(sample)[:, 1])
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=signature,
        input_example=sample,
        registered_model_name=model_name,
        serialization_format="skops",
        skops_trusted_types=SKOPS_TRUSTED,
        pyfunc_predict_fn="predict_proba",
        pip_requirements=model_requirements(),
    )
    return info.model_uri, str(info.registered_model_version)


TWIN_TAG = "validation_twin"


def log_twin(twin, model_name: str, version: str) -> str:
    """Log the version's validation twin (the same model fitted without the validation weeks)
    in the active run and tag the version with its URI: tomorrow's gate judges today's
    champion by its twin, on rows the twin never saw."""
    info = mlflow.sklearn.log_model(twin, name=TWIN_TAG, serialization_format="skops", skops_trusted_types=SKOPS_TRUSTED,
                                    pip_requirements=model_requirements())
    MlflowClient().set_model_version_tag(model_name, version, TWIN_TAG, info.model_uri)
    return info.model_uri


def judged_model(client: MlflowClient, model_name: str, version: str):
    """What stands for a version in the gate: its validation twin when it has one (it was
    refitted on weeks that are today's validation), else the version itself."""
    tags = client.get_model_version(model_name, version).tags or {}
    if TWIN_TAG in tags:
        return mlflow.sklearn.load_model(tags[TWIN_TAG]), " (its validation twin)"
    return mlflow.sklearn.load_model(f"models:/{model_name}/{version}"), ""


@dataclass
class GateDecision:
    promoted: bool
    reason: str
    champion_version: str | None
    champion_metrics: dict[str, float] | None


def champion_version(client: MlflowClient, model_name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None


def gate(
    client: MlflowClient,
    model_name: str,
    new_version: str,
    new_metrics: dict[str, float],
    X_val: pd.DataFrame,
    y_val: np.ndarray,
    tolerance: float,
    off_policy: Callable[[object], float] | None = None,
    new_off_policy: float | None = None,
    off_policy_tolerance: float = 0.01,
) -> GateDecision:
    """Promote unless the current champion does better on the same validation rows.

    ``new_metrics`` are the new version's validation twin's; the champion is judged by its
    own twin when it has one (:func:`judged_model`), so neither side has seen these rows.
    Log loss and ROC AUC always count; when the history holds randomized sends,
    ``off_policy(model)`` estimates a model's policy open rate (SNIPS) on the validation logs,
    and the new model must not be worse than the champion there either.
    """
    current = champion_version(client, model_name)
    if current is None:
        decision = GateDecision(True, "no champion yet", None, None)
    elif current == new_version:
        decision = GateDecision(True, "already champion", current, new_metrics)
    else:
        try:
            champ, how = judged_model(client, model_name, current)
            p = champ.predict_proba(X_val)[:, 1]
            cm = classification_metrics(y_val, p)
        except Exception as exc:  # schema changed, artifact gone: cannot compare
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            decision = GateDecision(True, f"champion v{current} cannot score the new validation rows ({first})", current, None)
        else:
            worse = []
            if new_metrics["log_loss"] > cm["log_loss"] + tolerance:
                worse.append(f"log loss {new_metrics['log_loss']:.4f} > champion {cm['log_loss']:.4f}")
            if np.isfinite(cm["roc_auc"]) and new_metrics["roc_auc"] < cm["roc_auc"] - tolerance:
                worse.append(f"ROC AUC {new_metrics['roc_auc']:.4f} < champion {cm['roc_auc']:.4f}")
            if off_policy is not None and new_off_policy is not None and np.isfinite(new_off_policy):
                champ_ope = off_policy(champ)
                cm["ope_snips"] = champ_ope
                if np.isfinite(champ_ope) and new_off_policy < champ_ope - off_policy_tolerance:
                    worse.append(f"off-policy open rate {new_off_policy:.4f} < champion {champ_ope:.4f}")
            if worse:
                decision = GateDecision(False, f"worse than champion v{current}{how}: " + "; ".join(worse), current, cm)
            else:
                decision = GateDecision(
                    True,
                    f"not worse than champion v{current}{how} (log loss {new_metrics['log_loss']:.4f} vs {cm['log_loss']:.4f})",
                    current,
                    cm,
                )
    alias = CHAMPION if decision.promoted else CHALLENGER
    client.set_registered_model_alias(model_name, alias, new_version)
    client.set_model_version_tag(model_name, new_version, "gate", decision.reason)
    return decision
