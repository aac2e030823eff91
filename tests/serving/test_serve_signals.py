"""`sendtime serve` stops when told: it becomes the server (exec), so SIGTERM to the PID a
supervisor started reaches the server, in-flight requests finish and the port is freed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import descendants as _descendants, free_port, home_env, processes as _processes, wait_ready

pytestmark = pytest.mark.skipif(os.name != "posix" or not Path("/proc").is_dir(), reason="needs POSIX exec and /proc")

WINDOW = {"window_start": "2026-04-14T00:00:00Z", "window_end": "2026-04-21T00:00:00Z"}


def _alive(pids: set[int]) -> set[int]:
    return pids & set(_processes())


def _listening(port: int) -> list[str]:
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


@pytest.fixture()
def started_server(trained, private_home, tmp_path):
    """`sendtime serve` as a supervisor would start it; yields (process, port, base URL, log,
    the server's worker PIDs). Whatever is left of it is killed afterwards."""
    env = {**home_env(private_home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "sendtime.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    workers: set[int] = set()
    try:
        wait_ready(proc, base, log)
        workers |= _descendants(proc.pid)
        yield proc, port, base, log, workers
    finally:
        for pid in _alive(workers | (_descendants(proc.pid) if proc.poll() is None else set())):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_sigterm_stops_the_server_after_in_flight_requests(started_server, trained):
    proc, port, base, log, workers = started_server
    _, result = trained

    # exec: the PID we started is the BentoML server itself, not a parent waiting on it
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"bentoml" in cmdline and b"serve" in cmdline, cmdline
    assert not any(b"sendtime.cli" in part for part in cmdline), cmdline
    assert "serving on http://127.0.0.1:" in log.read_text()
    assert workers, "no worker processes found under the server"

    known = list(result.users.accepted["user_id"])
    users = [{"user_id": known[i % len(known)] if i % 2 else f"new-{i}"} for i in range(10_000)]
    body = httpx.Request("POST", "/", json={"users": users, **WINDOW}).read()

    # Request A is certainly in flight: headers and half the body are sent before SIGTERM, the
    # rest only after the server began shutting down. Request B is simply a heavy one.
    release = threading.Event()
    answers: dict[str, object] = {}

    def slow_body():
        yield body[: len(body) // 2]
        release.wait(30)
        yield body[len(body) // 2:]

    def post(name: str, content) -> None:
        try:
            r = httpx.post(f"{base}/best_send_time", content=content, timeout=60,
                           headers={"content-type": "application/json"})
            answers[name] = (r.status_code, len(r.json().get("results", [])) if r.status_code == 200 else r.text[:300])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            answers[name] = exc

    threads = [threading.Thread(target=post, args=("slow body", slow_body())),
               threading.Thread(target=post, args=("heavy", body))]
    for t in threads:
        t.start()
    time.sleep(1.0)  # both connections accepted and their requests begun
    t0 = time.time()
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(1.0)  # the server is now shutting down
    release.set()
    for t in threads:
        t.join(60)

    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"server still running 30 s after SIGTERM:\n{log.read_text()[-3000:]}")
    took = time.time() - t0
    assert answers == {"slow body": (200, 10_000), "heavy": (200, 10_000)}, (answers, log.read_text()[-3000:])
    assert took < 30
    assert rc in (0, -signal.SIGTERM, 128 + signal.SIGTERM), rc

    # nothing is left behind: no worker, nobody listening, the port bindable by a new server
    deadline = time.time() + 10
    while _alive(workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(workers), "server workers outlived the server"
    assert _listening(port) == []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR as servers set it: the server closed the connections, so they linger in
        # TIME_WAIT; Linux still refuses this bind while anything listens on the port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/readyz", timeout=2)


def test_fallback_without_exec_forwards_sigterm_to_the_child(tmp_path):
    """Where exec is missing the command runs the server as a child; SIGTERM to the parent must
    reach the child, and the parent waits for it and reports its exit status."""
    marker = tmp_path / "child-got-sigterm"
    child = ("import signal, sys, time, pathlib\n"
             f"def stop(*_):\n    pathlib.Path({str(marker)!r}).write_text('yes')\n    sys.exit(7)\n"
             "signal.signal(signal.SIGTERM, stop)\nprint('ready', flush=True)\ntime.sleep(60)\n")
    parent = ("import sys\nfrom sendtime.cli import _run_forwarding_signals\n"
              f"sys.exit(_run_forwarding_signals([sys.executable, '-c', {child!r}], None, {str(tmp_path)!r}))\n")
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 7
        assert marker.read_text() == "yes"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
