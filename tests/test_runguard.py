"""The nightly run's guards: one run at a time, and a dead tracking server fails fast."""

from __future__ import annotations

import socket
import time

import pytest

from sendtime.runguard import RunLocked, input_fingerprint, nightly_lock
from tests.test_cli import run


def test_second_run_cannot_take_the_lock(tmp_path):
    with nightly_lock(tmp_path):
        with pytest.raises(RunLocked, match="another nightly run"):
            with nightly_lock(tmp_path):
                pass
    with nightly_lock(tmp_path):  # released: the next run goes ahead
        pass


def test_overlapping_cli_run_exits_with_the_lock_code(tmp_path, world_dir):
    home = tmp_path / "home"
    with nightly_lock(home):
        r = run(["nightly", "--events", str(world_dir / "events.parquet"), "--users", str(world_dir / "users.parquet"),
                 "--as-of", "2026-04-13"], {"SENDTIME_HOME": str(home)})
    assert r.returncode == 5
    assert "another nightly run holds" in r.stderr and "Traceback" not in r.stderr
    assert not (home / "published" / "CURRENT").exists()


def test_unreachable_tracking_server_fails_fast(tmp_path, world_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.time()
    r = run(["nightly", "--events", str(world_dir / "events.parquet"), "--users", str(world_dir / "users.parquet"),
             "--as-of", "2026-04-13"], {"SENDTIME_HOME": str(tmp_path / "h"), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    assert r.returncode == 4, r.stderr
    assert "unavailable" in r.stderr and "Traceback" not in r.stderr
    assert time.time() - t < 60


def test_fingerprint_changes_with_inputs_and_settings(tmp_path, world_dir):
    from sendtime.settings import Settings

    s = Settings.from_env({"SENDTIME_HOME": str(tmp_path)})
    ev, us = world_dir / "events.parquet", world_dir / "users.parquet"
    a = input_fingerprint(ev, us, "2026-04-13", s)
    assert a == input_fingerprint(ev, us, "2026-04-13", s)
    assert a != input_fingerprint(ev, us, "2026-04-12", s)
    assert a != input_fingerprint(ev, us, "2026-04-13", Settings.from_env({"SENDTIME_HOME": str(tmp_path), "SENDTIME_N_ESTIMATORS": "7"}))
