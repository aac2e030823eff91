"""Shipping: the built Bento serves from a clean folder, and two replicas that share one
registry and one published store pick up a nightly promotion without a restart."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import AS_OF, home_env, real_server

BODY = {"users": [{"user_id": "u000001"}, {"user_id": "u000002"}, {"user_id": "nobody-yet"}],
        "window_start": "2026-04-14T00:00:00Z", "window_end": "2026-04-15T00:00:00Z"}


@contextmanager
def serving(cmd: list[str], env: dict[str, str], cwd: Path, log: Path):
    with real_server(cmd, env, log, cwd=cwd) as (base, _proc):
        yield base


def _env(home: Path, **extra) -> dict[str, str]:
    env = {**home_env(home), **extra}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    return env


def test_built_bento_serves_from_a_clean_folder(trained, tmp_path):
    from sendtime.bento import build

    settings, result = trained
    bento_home = tmp_path / "bentoml"
    tag = build(bentoml_home=str(bento_home))
    assert tag.startswith("sendtime:")
    src = next(bento_home.glob("bentos/sendtime/*/src"))
    assert (src / "sendtime" / "serving" / "service.py").exists() and not (src / "tests").exists()
    assert not (src / "sendtime" / "training").exists()  # the service never imports training
    reqs = (next(bento_home.glob("bentos/sendtime/*/env/python/requirements.txt"))).read_text()
    assert "bentoml==" in reqs and "pyspark" not in reqs  # pinned, runtime only
    clean = tmp_path / "clean"
    clean.mkdir()
    bentoml = str(Path(sys.executable).parent / "bentoml")
    env = _env(settings.home, BENTOML_HOME=str(bento_home))
    with serving([bentoml, "serve", tag, "--host", "127.0.0.1"], env, clean, tmp_path / "bento.log") as base:
        r = httpx.post(f"{base}/best_send_time", json=BODY, timeout=30)
        assert r.status_code == 200, r.text
        answers = r.json()["results"]
        assert [a["source"] for a in answers] == ["model", "model", "prior"]
        assert httpx.post(f"{base}/info", timeout=10).json()["model_version"] == result.champion_version
    assert not any(clean.iterdir())  # served from the Bento, nothing written where it ran


@pytest.mark.slow  # one real server following a reload is tested in tests/serving/test_serving_ops.py and test_serve_http.py
def test_two_replicas_follow_a_promotion_without_restart(trained, world_dir, tmp_path):
    """Both replicas read one registry and one published store: after a nightly promotion they
    serve the new champion, and answer identically, before and after."""
    settings, result = trained
    home = tmp_path / "home"
    shutil.copytree(settings.home, home)
    env = _env(home, SENDTIME_RELOAD_SECONDS="1", SENDTIME_EXPLORATION_RATE="0", SENDTIME_HOLDOUT_SHARE="0")
    serve = [sys.executable, "-m", "sendtime.cli", "serve"]
    with serving(serve, env, tmp_path, tmp_path / "a.log") as a, serving(serve, env, tmp_path, tmp_path / "b.log") as b:
        before = [httpx.post(f"{u}/info", timeout=10).json() for u in (a, b)]
        assert before[0] == before[1]
        first = [httpx.post(f"{u}/best_send_time", json=BODY, timeout=30).json() for u in (a, b)]
        assert first[0] == first[1]
        # a forced re-run of the night against the same registry and store: an equal model
        # passes the gate, so a new champion version and a new snapshot are published
        r = subprocess.run([sys.executable, "-m", "sendtime.cli", "nightly", "--events", str(world_dir / "events.parquet"),
                            "--users", str(world_dir / "users.parquet"), "--as-of", AS_OF, "--force"],
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        new = r.stdout
        deadline = time.time() + 60
        while time.time() < deadline:
            infos = [httpx.post(f"{u}/info", timeout=10).json() for u in (a, b)]
            if all(i["snapshot"] != before[0]["snapshot"] for i in infos):
                break
            time.sleep(0.5)
        assert all(i["snapshot"] != before[0]["snapshot"] for i in infos), (infos, new[-1500:])
        assert infos[0] == infos[1]
        after = [httpx.post(f"{u}/best_send_time", json=BODY, timeout=30).json() for u in (a, b)]
        assert after[0] == after[1]
        assert after[0]["model_version"] == infos[0]["model_version"] == str(int(before[0]["model_version"]) + 1)


def test_scheduler_files_call_the_nightly_and_honour_its_lock_exit_code():
    """cron, systemd and Airflow run the same `sendtime nightly` and treat the lock's exit code
    (another run in progress) as 'nothing to do', not as a failure."""
    import ast

    from sendtime.cli import EXIT_LOCKED

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    cron = (deploy / "cron").read_text()
    assert "sendtime nightly" in cron and "--as-of" in cron
    unit = (deploy / "systemd" / "sendtime-nightly.service").read_text()
    assert "sendtime nightly" in unit and f"SuccessExitStatus={EXIT_LOCKED}" in unit
    assert "OnCalendar=" in (deploy / "systemd" / "sendtime-nightly.timer").read_text()
    tree = ast.parse((deploy / "airflow" / "sendtime_nightly_dag.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "BashOperator"]
    assert len(calls) == 1
    kw = {k.arg: k.value for k in calls[0].keywords}
    assert ast.literal_eval(kw["skip_on_exit_code"]) == EXIT_LOCKED
    command = ast.unparse(kw["bash_command"])
    assert "nightly" in command and "--as-of" in command
