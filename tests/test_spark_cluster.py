"""The Spark batch step on a real standalone cluster: a master and two workers started as their
own processes on 127.0.0.1, the job sent with ``spark-submit --master spark://127.0.0.1:PORT``
(what docs/spark.md tells a user to run), its features and 168-slot scores equal to what the
nightly run published. Loopback only: every daemon, the driver and the web UIs bind 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import assert_batch_output_is_the_snapshot, free_port, home_env

pytest.importorskip("pyspark")
if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
    pytest.skip("the Spark cluster needs a Java runtime", allow_module_level=True)

pytestmark = pytest.mark.slow  # about two minutes: three JVMs start before the job's own

ROOT = Path(__file__).resolve().parent.parent


def _spark_bin(name: str) -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / name)


def _env(tmp: Path) -> dict[str, str]:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(tmp / "logs"),
           "SPARK_WORKER_DIR": str(tmp / "work"), "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_NO_DAEMONIZE": "1"}
    env.pop("SPARK_HOME", None)
    return env


@contextmanager
def standalone_cluster(tmp: Path, workers: int = 2):
    """(master URL, master web UI URL): a master and ``workers`` one-core workers, stopped after."""
    env = _env(tmp)
    port, ui = free_port(), free_port()
    procs = []
    logs = []

    def start(args: list[str], name: str) -> None:
        log = open(tmp / f"{name}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen([_spark_bin("spark-class"), *args], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))

    try:
        start(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
               "--webui-port", str(ui)], "master")
        url = f"spark://127.0.0.1:{port}"
        for i in range(workers):
            start(["org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", "1",
                   "--memory", "1g", "--webui-port", str(free_port()), "--work-dir", str(tmp / f"work{i}")], f"worker{i}")
        ui_url = f"http://127.0.0.1:{ui}"
        state = _wait_for(lambda: _alive(ui_url) >= workers, 120, tmp)
        assert state
        yield url, ui_url
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        for log in logs:
            log.close()


def _master_state(ui_url: str) -> dict:
    import httpx

    return httpx.get(f"{ui_url}/json/", timeout=5).json()


def _alive(ui_url: str) -> int:
    try:
        return int(_master_state(ui_url).get("aliveworkers", 0))
    except Exception:  # noqa: BLE001 - not up yet
        return 0


def _wait_for(ok, timeout: float, tmp: Path) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ok():
            return True
        time.sleep(0.5)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp.glob("*.log")))
    raise AssertionError(f"the standalone cluster did not come up in {timeout:.0f} s\n{logs}")


def test_spark_submit_to_a_standalone_cluster_reproduces_the_published_snapshot(trained, world_dir, tmp_path):
    settings, result = trained
    out = tmp_path / "spark_out"
    with standalone_cluster(tmp_path) as (master, ui_url):
        cmd = [_spark_bin("spark-submit"), "--master", master,
               "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
               "--conf", "spark.ui.enabled=false", "--conf", f"spark.pyspark.python={sys.executable}",
               "--conf", f"spark.pyspark.driver.python={sys.executable}",
               "--conf", "spark.executor.cores=1", "--conf", "spark.executor.memory=1g",
               "--conf", "spark.cores.max=2", "--conf", "spark.sql.shuffle.partitions=4",
               str(ROOT / "serving" / "spark_scoring.py"),
               "--events", str(world_dir / "events.parquet"), "--users", str(world_dir / "users.parquet"),
               "--as-of", "2026-04-13", "--out", str(out)]
        env = {**_env(tmp_path), **home_env(settings.home)}
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("MLFLOW_REGISTRY_URI", None)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
        assert "scored" in done.stdout
        state = _master_state(ui_url)
    # the application ran on the cluster, with both workers' cores, and finished
    apps = [a for a in state.get("completedapps", []) + state.get("activeapps", []) if a["name"] == "sendtime-nightly-spark"]
    assert len(apps) == 1 and apps[0]["state"] == "FINISHED" and int(apps[0]["cores"]) == 2, state
    assert int(state["aliveworkers"]) == 2 and sum(int(w["cores"]) for w in state["workers"]) == 2
    assert_batch_output_is_the_snapshot(out, result)
