"""Where the service and batch predictions get their model and features from.

The model comes from the MLflow registry by alias (never a copied file); its input columns come
from the registered signature. Features come from the published snapshot the nightly run
pointed ``published/CURRENT`` at (:mod:`sendtime.serving.snapshots` owns their layout).
"""

from __future__ import annotations

import threading

import numpy as np
import mlflow
from mlflow import MlflowClient

from sendtime.features.profiles import ShrinkageParams
from sendtime.serving.scoring import PROFILE_POLICY, ProfilePolicy, Scorer, forests_in
from sendtime.serving.snapshots import (
    NotReady,
    current_name,
    current_snapshot,
    read_features,
    read_manifest,
    read_order_values,
    read_scores,
    read_serving,
)

def load_champion(tracking_uri: str, registry_uri: str, model_name: str, alias: str = "champion",
                  version: str | None = None):
    """(model, version, input columns) of the aliased registered model (or of ``version``).

    The alias is resolved once and that exact version is loaded (an alias moved meanwhile cannot
    pair one version's number with another's weights), through an explicit client: a service
    thread checking for a new champion never changes the process-wide MLflow settings.
    """
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    try:
        mv = client.get_model_version(model_name, version) if version else client.get_model_version_by_alias(model_name, alias)
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
    way the model's training rows were. Defaults when the run chose none (or no model yet); no
    activity (strength inf) unless the run used it."""
    from dataclasses import replace

    base = ShrinkageParams(horizon_hours=settings.horizon_hours)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    try:
        mv = client.get_model_version_by_alias(settings.model_name, alias)
        run = client.get_run(mv.run_id) if mv.run_id else None
    except Exception:
        return base
    params = run.data.params if run is not None else {}
    # a champion trained without activity is served without it (its rows never saw it)
    used = run is not None and run.data.tags.get("activity_used") == "true"
    return replace(base,
                   shape_strength=float(params.get("chosen_shape_strength", base.shape_strength)),
                   smooth_hours=float(params.get("chosen_smooth_hours", base.smooth_hours)),
                   mixture_k=int(float(params.get("chosen_mixture_k", base.mixture_k))),
                   activity_strength=float(params.get("chosen_activity_strength", base.activity_strength)) if used
                   else float("inf"))


class DeferredModel:
    """A registered model version loaded the first time anything of it is used: a service that
    answers from a serving table never needs the forest (a quarter of a GiB and three seconds
    per worker at start), only for a zone the table has no answer for."""

    def __init__(self, settings, version: str) -> None:
        self._settings, self._version, self._model = settings, version, None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self):
        with self._lock:
            if self._model is None:
                s = self._settings
                model = load_champion(s.tracking_uri, s.registry_uri, s.model_name, version=self._version)[0]
                for forest in forests_in(model):
                    forest.n_jobs = 1  # small batches: thread start-up costs more than it saves
                self._model = model
        return self._model

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_settings", "_version", "_model", "_lock"):
            raise AttributeError(name)
        return getattr(self.get(), name)


def _alias_version(settings) -> str | None:
    """The champion's version number (None if there is none or the registry cannot say)."""
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    try:
        return str(client.get_model_version_by_alias(settings.model_name, "champion").version)
    except Exception:
        return None


def _served_scorer(settings, folder, manifest: dict, compiled: bool) -> tuple[Scorer, dict] | None:
    """The Scorer on the snapshot's serving table with the champion deferred, if the table was
    scored by the champion (or the prior-only policy) and names the model's input columns."""
    version = _alias_version(settings)
    if version is None and manifest.get("policy") == PROFILE_POLICY:
        version = PROFILE_POLICY
    if version is None:
        return None
    try:
        served = read_serving(folder, version, manifest)
    except (OSError, ValueError, KeyError) as exc:
        raise NotReady(f"published snapshot {folder.name} has an unusable serving table: {exc}") from None
    if served is None or not served.meta.get("input_columns"):
        return None
    model = ProfilePolicy() if version == PROFILE_POLICY else DeferredModel(settings, version)
    manifest = {**manifest, "snapshot": folder.name, "table": True, "serving_table": True}
    value = manifest.get("objective") == "value"
    return Scorer(model=model, model_version=version, input_columns=list(served.meta["input_columns"]), features=None,
                  served=served, negative_risk=_risk(manifest),
                  order_value_prior=float(manifest.get("order_value_population", 0.0)) if value else None,
                  compiled=compiled), manifest


def load_scorer(settings, serving_table: bool = True) -> tuple[Scorer, dict]:
    """The champion model with the currently published snapshot: its serving table when it has
    one scored by the champion (memory-mapped; the feature snapshot is not read), else (or with
    ``serving_table=False``) the features and float score table."""
    folder = current_snapshot(settings.published_dir)
    try:
        manifest = read_manifest(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise NotReady(f"published snapshot {folder.name} is unusable: {exc}") from None
    compiled = bool(getattr(settings, "compiled_scoring", True))
    if serving_table and getattr(settings, "use_score_table", True):
        got = _served_scorer(settings, folder, manifest, compiled)
        if got is not None:
            return got
    try:
        model, version, columns = load_champion(settings.tracking_uri, settings.registry_uri, settings.model_name)
    except NotReady:
        if manifest.get("policy") != PROFILE_POLICY:
            raise
        # the nightly could not train yet and said so: the profiles' own probabilities
        model, version, columns = ProfilePolicy(), PROFILE_POLICY, ["p_struct"]
    try:
        features = read_features(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise NotReady(f"published snapshot {folder.name} is unusable: {exc}") from None
    table = read_scores(folder, version, manifest) if getattr(settings, "use_score_table", True) else None
    manifest = {**manifest, "snapshot": folder.name, "table": table is not None}
    try:
        values = read_order_values(folder, features, manifest)
    except (OSError, ValueError, KeyError) as exc:
        raise NotReady(f"published snapshot {folder.name} has no usable order values: {exc}") from None
    scorer = Scorer(model=model, model_version=version, input_columns=columns, features=features, table=table,
                    negative_risk=_risk(manifest), order_value=None if values is None else values[0],
                    order_value_prior=None if values is None else values[1],
                    compiled=compiled)
    scorer.warm_cold_priors(getattr(settings, "default_timezone", "UTC"))  # users the snapshot does not know: scored per zone now, looked up per request
    return scorer, manifest


def _risk(manifest: dict) -> np.ndarray | None:
    risk = manifest.get("negative_risk_by_local_hour")
    return np.asarray(risk, dtype=np.float64) if risk is not None and len(risk) == 24 else None


def snapshot_key(settings) -> tuple[str, str]:
    """(published snapshot name, champion version): what a replica should be serving now."""
    name = current_name(settings.published_dir)
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
