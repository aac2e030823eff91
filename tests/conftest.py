"""Shared fixtures: a tiny generated world, a private SENDTIME_HOME with a real SQLite MLflow
store, and one nightly run that the training, prediction and serving tests all read."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from sendtime.settings import TELEMETRY_OFF

# generated examples are the same on every run (CI failures reproduce); HYPOTHESIS_PROFILE=explore
# draws fresh ones, as a developer hunting for new cases would
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

for _k, _v in TELEMETRY_OFF.items():
    os.environ.setdefault(_k, _v)
# `bentoml serve` sets up Prometheus' multiprocess folder itself; the in-process ASGI app needs
# one too, before prometheus_client is first imported, or /metrics cannot answer.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="sendtime-prometheus-"))

AS_OF = "2026-04-13"
FAST_FOREST = {"SENDTIME_N_ESTIMATORS": "30", "SENDTIME_MAX_DEPTH": "10", "SENDTIME_MIN_SAMPLES_LEAF": "20", "SENDTIME_N_JOBS": "2"}


def make_env(home: Path) -> dict[str, str]:
    """The variables that point sendtime at ``home`` (to lay over an environment)."""
    return {"SENDTIME_HOME": str(home), **FAST_FOREST}


def home_env(home: Path) -> dict[str, str]:
    """This process's environment pointed at ``home``, without the MLFLOW_TRACKING_URI that an
    earlier ``mlflow.set_tracking_uri`` in this process (a fixture's nightly run) exported: it
    would send the run into that other store."""
    env = {**os.environ, **make_env(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    return env


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    from sendtime.simulation.simulate import simulate_world, world_config, write_world

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
    env = {**home_env(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    settings = Settings.from_env(env)
    result = run_nightly(settings, world_dir / "events.parquet", world_dir / "users.parquet",
                         pd.Timestamp(AS_OF, tz="UTC"), say=lambda m: None)
    return settings, result


@pytest.fixture(scope="module")
def private_home(trained, tmp_path_factory):
    """A private copy of the trained state for one test module: what it writes or swaps stays
    there (the copied MLflow DB points at the original artifact folder, which stays in place)."""
    import shutil

    settings, _ = trained
    dst = tmp_path_factory.mktemp("private") / "home"
    shutil.copytree(settings.home, dst)
    return dst


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
    """Forget sendtime's and BentoML's metrics before building another in-process app
    (test-only): each app registers them once per process, and a second registration is refused."""
    from sendtime.serving.metrics import forget

    forget(("sendtime_", "bentoml_"))


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


@contextmanager
def in_process_service(home: Path, **env):
    """The BentoML app in this process, through its ASGI app, on the state in ``home``.

    ``env`` entries set (or, with None, remove) environment variables for the service's settings;
    everything is restored afterwards. The reload watcher is off unless asked for.
    """
    from starlette.testclient import TestClient

    values = {"SENDTIME_HOME": str(home), "SENDTIME_RELOAD_SECONDS": "0",
              # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI; drop it so Settings reads this home
              "MLFLOW_TRACKING_URI": None, "MLFLOW_REGISTRY_URI": None, **env}
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    try:
        from sendtime.serving.service import SendTime

        fresh_service_metrics()
        with TestClient(SendTime.to_asgi()) as c:
            yield c
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc, base: str, log: Path, timeout: float = 120) -> None:
    """Wait until the server at ``base`` answers /readyz, failing the test (with the end of its
    log) when it exits first or is not ready in ``timeout`` seconds."""
    import time

    import httpx

    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            pytest.fail(f"server not ready in {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


@contextmanager
def real_server(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None, timeout: float = 120):
    """A real server process on 127.0.0.1 (``cmd`` gets ``--port``); yields (base URL, process)
    once /readyz answers, and stops the whole process group afterwards."""
    import signal
    import subprocess

    port = free_port()
    with open(log, "w") as fh:
        proc = subprocess.Popen([*cmd, "--port", str(port)], env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base, log, timeout)
        yield base, proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def assert_batch_output_is_the_snapshot(out: Path, result) -> None:
    """A Spark batch step's output folder holds what the nightly ``result`` published: the same
    champion version, features (to float noise), profiles and 168-slot scores (to 1e-6)."""
    import numpy as np
    import pandas as pd

    from sendtime.features.store import load_features

    manifest = pd.read_json(out / "manifest.json", typ="series")
    assert str(manifest["model_version"]) == result.champion_version and manifest["engine"] == "spark"
    ours, published = load_features(out / "features"), load_features(result.published / "features")
    pd.testing.assert_frame_equal(ours.table, published.table, check_exact=False, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(ours.lam, published.lam)
    np.testing.assert_allclose(np.load(out / "scores.npy"), np.load(result.published / "scores.npy"), rtol=0, atol=1e-6)


def rewrite_scores(folder: Path, table) -> None:
    """Give a copied snapshot another float score table, and its serving table the same
    (quantized from it, the published answers for unknown users kept)."""
    import numpy as np

    from sendtime.features.store import load_features
    from sendtime.serving.serving_table import SERVING, ServingTable, write_serving_table

    np.save(folder / "scores.npy", np.asarray(table, dtype=np.float32))
    served = ServingTable(folder / SERVING)
    uf = load_features(folder / "features")
    write_serving_table(folder / SERVING, uf.table, np.asarray(table, dtype=np.float32), model_version=served.model_version,
                        as_of=served.as_of, priors=served.prior_scores(), prior=served.meta.get("prior"),
                        input_columns=served.meta.get("input_columns"))


def processes() -> dict[int, int]:
    """Live (not zombie) PIDs and their parents."""
    from pathlib import Path

    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid ...
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (BentoML's workers run in sessions of their own, so
    the process group does not find them)."""
    parents, found, frontier = processes(), set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found
