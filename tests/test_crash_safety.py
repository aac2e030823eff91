"""Kill the nightly run at any stage: the previous snapshot and champion keep being served,
and the next run completes normally."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import AS_OF, make_env


def _nightly(home, world, *extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(make_env(home))
    return [sys.executable, "-m", "sendtime.cli", "nightly", "--events", str(world / "events.parquet"),
            "--users", str(world / "users.parquet"), "--as-of", AS_OF, *extra], env


def _kill_when(home, world, marker: str) -> str:
    """Start a forced nightly run and SIGKILL it as soon as ``marker`` appears in its progress."""
    cmd, env = _nightly(home, world, "--force")
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, bufsize=1)
    seen = []
    deadline = time.time() + 240
    for line in proc.stderr:
        seen.append(line)
        if marker in line:
            proc.send_signal(signal.SIGKILL)
            break
        if time.time() > deadline:
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-2000:]
    return "".join(seen)


@pytest.fixture(scope="module")
def state(trained, tmp_path_factory):
    settings, _ = trained
    home = tmp_path_factory.mktemp("crash") / "home"
    shutil.copytree(settings.home, home)
    return home


@pytest.mark.parametrize("marker", [
    pytest.param("building training rows", marks=pytest.mark.slow),  # during feature build (the same guard)
    pytest.param("fitting RandomForest", marks=pytest.mark.slow),  # during training (the same guard)
    "scoring all 168 weekly slots",  # during publish (after the gate)
])
def test_killed_run_leaves_the_served_pair_intact(state, world_dir, marker):
    from mlflow import MlflowClient

    from sendtime.settings import Settings
    from sendtime.serving.model_store import snapshot_key, snapshot_model_version
    from sendtime.serving.snapshots import current_snapshot, read_manifest
    from sendtime.training.registry import configure

    settings = Settings.from_env(make_env(state))
    before_snapshot = current_snapshot(settings.published_dir).name
    before_pinned = read_manifest(settings.published_dir / before_snapshot)["model_version"]
    _kill_when(state, world_dir, marker)
    # the published pointer never moved, and no half-written snapshot is current
    assert current_snapshot(settings.published_dir).name == before_snapshot
    assert read_manifest(settings.published_dir / before_snapshot)["model_version"] == before_pinned
    name, champion = snapshot_key(settings)
    assert name == before_snapshot
    # a replica keeps serving the (snapshot, model) pair it has: if the kill came after the gate
    # moved the alias, the snapshot still pins its own version and reloads wait for a publish
    assert snapshot_model_version(settings, name) == before_pinned
    # the next run completes normally and publishes a consistent pair
    cmd, env = _nightly(state, world_dir, "--force")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    name2, champion2 = snapshot_key(settings)
    assert name2 != before_snapshot
    assert snapshot_model_version(settings, name2) == champion2
    configure(settings.tracking_uri, settings.registry_uri, settings.experiment, settings.artifact_root)
    assert MlflowClient().get_model_version_by_alias(settings.model_name, "champion") is not None
