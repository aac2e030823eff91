"""Shared fixtures: a tiny generated world, a private SENDTIME_HOME with a real SQLite MLflow
store, and one nightly run that the training, prediction and serving tests all read."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from sendtime.settings import TELEMETRY_OFF

for _k, _v in TELEMETRY_OFF.items():
    os.environ.setdefault(_k, _v)
# `bentoml serve` sets up Prometheus' multiprocess folder itself; the in-process ASGI app needs
# one too, before prometheus_client is first imported, or /metrics cannot answer.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="sendtime-prometheus-"))

AS_OF = "2026-04-13"
FAST_FOREST = {"SENDTIME_N_ESTIMATORS": "30", "SENDTIME_MAX_DEPTH": "10", "SENDTIME_MIN_SAMPLES_LEAF": "20", "SENDTIME_N_JOBS": "2"}


def make_env(home: Path) -> dict[str, str]:
    env = {"SENDTIME_HOME": str(home), **FAST_FOREST}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    return env


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    from sendtime.simulate import simulate_world, world_config, write_world

    out = tmp_path_factory.mktemp("world")
    write_world(simulate_world(world_config("default", n_users=400, days=56, seed=7, end=AS_OF)), out)
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory, world_dir):
    """One real nightly run into a fresh state folder: (settings, result)."""
    import pandas as pd

    from sendtime.nightly import run_nightly
    from sendtime.settings import Settings

    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, **make_env(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    settings = Settings.from_env(env)
    result = run_nightly(settings, world_dir / "events.parquet", world_dir / "users.parquet",
                         pd.Timestamp(AS_OF, tz="UTC"), say=lambda m: None)
    return settings, result


@pytest.fixture()
def served_env(trained, monkeypatch):
    """Point the process environment at the trained state (for the in-process service)."""
    settings, _ = trained
    monkeypatch.setenv("SENDTIME_HOME", str(settings.home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    for k, v in FAST_FOREST.items():
        monkeypatch.setenv(k, v)
    return settings


def fresh_service_metrics() -> None:
    """Forget BentoML's request metrics before building another in-process app (test-only):
    each app registers them once per process, and a second registration is refused."""
    import prometheus_client

    registry = prometheus_client.REGISTRY
    for name, collector in list(registry._names_to_collectors.items()):
        if name.startswith("bentoml_"):
            try:
                registry.unregister(collector)
            except KeyError:
                pass


@pytest.fixture(autouse=True)
def _no_exported_tracking_uri():
    """mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI into os.environ; undo it after each
    test so no test silently reads another test's MLflow store through Settings.from_env()."""
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {k: os.environ.get(k) for k in keys}
    yield
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
