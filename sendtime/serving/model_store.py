"""Where the service and batch predictions get their model and features from.

The model comes from the MLflow registry by alias (never a copied file); its input columns come
from the registered signature. Features come from the published snapshot the nightly run
pointed ``published/CURRENT`` at, written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient

from sendtime.features.store import load_features
from sendtime.serving.scoring import PROFILE_POLICY, ProfilePolicy, Scorer

CURRENT = "CURRENT"


class NotReady(RuntimeError):
    """Nothing has been trained or published yet, or what is there cannot be used."""


def publish_pointer(published_dir: Path, folder_name: str) -> None:
    """Point CURRENT at a finished snapshot folder, atomically (write a temp file, rename)."""
    tmp = published_dir / f".{CURRENT}.{os.getpid()}.tmp"
    tmp.write_text(folder_name + "\n")
    os.replace(tmp, published_dir / CURRENT)


def current_snapshot(published_dir: Path) -> Path:
    pointer = published_dir / CURRENT
    if not pointer.exists():
        raise NotReady(f"no published snapshot in {published_dir}: run `sendtime nightly` first")
    folder = published_dir / pointer.read_text().strip()
    if not folder.is_dir():
        raise NotReady(f"published snapshot {folder} is missing")
    return folder


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def load_champion(tracking_uri: str, registry_uri: str, model_name: str, alias: str = "champion"):
    """(model, version, input columns) of the aliased registered model.

    The alias is resolved once and that exact version is loaded (an alias moved meanwhile cannot
    pair one version's number with another's weights), through an explicit client: a service
    thread checking for a new champion never changes the process-wide MLflow settings.
    """
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    try:
        mv = client.get_model_version_by_alias(model_name, alias)
        uri = client.get_model_version_download_uri(model_name, mv.version)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise NotReady(f"no '{alias}' version of model {model_name!r} in the registry: {first}") from None
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
    info = mlflow.models.Model.load(local)
    if info.signature is None:
        raise NotReady(f"model {model_name} v{mv.version} has no signature")
    columns = info.signature.inputs.input_names()
    model = mlflow.sklearn.load_model(local)
    return model, str(mv.version), columns


def champion_profile_params(settings, alias: str = "champion"):
    """The profile hyperparameters the aliased model was trained with (its run's
    ``chosen_*`` params, see sendtime.training.shrinkage_search): serving features must be built the
    way the model's training rows were. Defaults when the run chose none (or no model yet)."""
    from dataclasses import replace

    from sendtime.features.profiles import ShrinkageParams

    base = ShrinkageParams(horizon_hours=settings.horizon_hours)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    try:
        mv = client.get_model_version_by_alias(settings.model_name, alias)
        params = client.get_run(mv.run_id).data.params if mv.run_id else {}
    except Exception:
        return base
    return replace(base,
                   shape_strength=float(params.get("chosen_shape_strength", base.shape_strength)),
                   smooth_hours=float(params.get("chosen_smooth_hours", base.smooth_hours)),
                   mixture_k=int(float(params.get("chosen_mixture_k", base.mixture_k))))


SCORES = "scores.npy"


def load_table(folder: Path, model_version: str, manifest: dict):
    """The snapshot's 168-slot score table, if it was scored by ``model_version``."""
    path = folder / SCORES
    if not path.exists() or str(manifest.get("model_version")) != str(model_version):
        return None
    return np.load(path, mmap_mode="r")


def load_scorer(settings) -> tuple[Scorer, dict]:
    """The champion model with the currently published features and score table."""
    folder = current_snapshot(settings.published_dir)
    try:
        manifest = read_manifest(folder)
        features = load_features(folder / "features")
    except (OSError, ValueError, KeyError) as exc:
        raise NotReady(f"published snapshot {folder.name} is unusable: {exc}") from None
    try:
        model, version, columns = load_champion(settings.tracking_uri, settings.registry_uri, settings.model_name)
    except NotReady:
        if manifest.get("policy") != PROFILE_POLICY:
            raise
        # the nightly could not train yet and said so: the profiles' own probabilities
        model, version, columns = ProfilePolicy(), PROFILE_POLICY, ["p_struct"]
    table = load_table(folder, version, manifest) if getattr(settings, "use_score_table", True) else None
    manifest = {**manifest, "snapshot": folder.name, "table": table is not None}
    return Scorer(model=model, model_version=version, input_columns=columns, features=features, table=table), manifest


def snapshot_key(settings) -> tuple[str, str]:
    """(published snapshot name, champion version): what a replica should be serving now."""
    pointer = settings.published_dir / CURRENT
    name = pointer.read_text().strip() if pointer.exists() else ""
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)  # no global state
    try:
        version = str(client.get_model_version_by_alias(settings.model_name, "champion").version)
    except Exception:
        version = ""
    return name, version


def snapshot_model_version(settings, snapshot: str) -> str | None:
    """The model version a published snapshot was scored with (None if unreadable)."""
    try:
        return str(read_manifest(settings.published_dir / snapshot)["model_version"])
    except (OSError, ValueError, KeyError):
        return None
