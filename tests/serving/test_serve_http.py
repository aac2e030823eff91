"""`sendtime serve` for real: a `bentoml serve` process on 127.0.0.1, called over HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import free_port, home_env, real_server


@pytest.fixture(scope="module")
def server(trained, private_home, tmp_path_factory):
    """A real server on a private copy of the trained state (the fuzzed /events writes there)."""
    settings, result = trained
    env = {**home_env(private_home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with real_server([sys.executable, "-m", "sendtime.cli", "serve"], env, log) as (base, _proc):
        yield base, result


def test_best_send_time_over_http(server):
    base, result = server
    users = list(result.users.accepted["user_id"].head(20)) + ["never-seen"]
    r = httpx.post(f"{base}/best_send_time", timeout=30, json={
        "users": [{"user_id": u} for u in users],
        "window_start": "2026-04-14T06:00:00+02:00", "window_end": "2026-04-15T06:00:00+02:00"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == result.champion_version
    assert [a["user_id"] for a in body["results"]] == users
    assert body["results"][-1]["source"] == "prior"
    assert all(a["send_at"].endswith(":00:00Z") for a in body["results"])


def test_bad_body_over_http_is_400_not_500(server):
    base, _ = server
    r = httpx.post(f"{base}/best_send_time", timeout=30, json={"users": [], "window_start": "x", "window_end": "y"})
    assert r.status_code == 400


def test_binds_loopback_only(server):
    base, _ = server
    port = int(base.rsplit(":", 1)[1])
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("ss not available")
    local = [line.split()[3] for line in out.stdout.splitlines() if line.strip()]
    assert local and all(addr.startswith("127.0.0.1:") for addr in local), local


def test_python_client_batches_and_keeps_order(server):
    from sendtime.serving.client import SendTimeClient

    base, result = server
    users = list(result.users.accepted["user_id"].head(23))
    with SendTimeClient(base, batch_size=7, timeout=30) as c:
        answers = c.best_send_time(users, "2026-04-14T06:00:00Z", "2026-04-14T22:00:00Z", quiet_hours="22:00-07:00")
        assert [a["user_id"] for a in answers] == users
        plan = c.plan_campaign(users, "2026-04-14T06:00:00Z", "2026-04-14T22:00:00Z", hourly_cap=2)
        assert plan["summary"]["users_planned"] == 23
        assert c.info()["model_version"] == result.champion_version


def test_python_client_reports_4xx_and_gives_up_on_a_dead_server(server):
    import time

    from sendtime.serving.client import SendTimeClient, SendTimeError

    base, _ = server
    with SendTimeClient(base) as c:
        with pytest.raises(SendTimeError) as err:
            c.best_send_time(["a"], "2026-04-14T06:00:00Z", "2026-04-14T06:30:00Z")
        assert err.value.status == 400 and "one hour" in str(err.value)
    with SendTimeClient(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.05) as dead:
        t = time.time()
        with pytest.raises(SendTimeError, match="cannot reach"):
            dead.best_send_time(["a"], "2026-04-14T06:00:00Z", "2026-04-14T22:00:00Z")
        assert time.time() - t < 5


def test_metrics_over_http(server):
    base, _ = server
    httpx.post(f"{base}/best_send_time", timeout=30, json={"users": [{"user_id": "x"}], "window_start": "2026-04-14T06:00:00Z", "window_end": "2026-04-14T22:00:00Z"})
    text = httpx.get(f"{base}/metrics", timeout=10).text
    assert "sendtime_answers_total" in text and "bentoml_service_request_duration_seconds" in text


def test_generated_requests_never_get_a_5xx(server):
    """Schemathesis: requests generated from the service's own OpenAPI document, against the
    real server. No 5xx, and every 4xx says which field is wrong."""
    import re

    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings

    EXAMPLES = 120  # per operation
    base, _ = server
    schema = schemathesis.openapi.from_url(f"{base}/docs.json")
    counts = {"total": 0}
    field_words = re.compile(r"users|window|quiet_hours|hourly_cap|min_lead_minutes|objective|timezone|user_id|loc|JSON|body|event|timestamp|sg_|email|\[\d+\]", re.I)
    ops = [r.ok() for r in schema.get_all_operations()]
    posts = [op for op in ops if op.method.upper() == "POST" and op.path in ("/best_send_time", "/plan_campaign", "/info", "/events")]
    assert len(posts) == 4
    for op in posts:
        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            r = case.call(base_url=base, timeout=30)
            counts["total"] += 1
            assert r.status_code < 500, (case.body, r.text[:500])
            if 400 <= r.status_code < 500:
                assert field_words.search(r.text), r.text[:500]

        check()
    assert counts["total"] >= 0.8 * EXAMPLES * len(posts)  # the requests were really generated and sent


def test_hostile_bodies_and_slow_clients_are_refused_cleanly(server):
    base, result = server
    port = int(base.rsplit(":", 1)[1])
    deep = '{"users": ' + "[" * 20_000 + "]" * 20_000 + ', "window_start": "2026-04-14T06:00:00Z", "window_end": "2026-04-14T22:00:00Z"}'
    r = httpx.post(f"{base}/best_send_time", content=deep, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400
    huge = '{"users": [' + ",".join(['{"user_id": "u"}'] * 400_000) + "]}"
    r = httpx.post(f"{base}/best_send_time", content=huge, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413 and "limit" in r.text
    over = {"users": [{"user_id": f"u{i}"} for i in range(10_001)], "window_start": "2026-04-14T06:00:00Z", "window_end": "2026-04-14T22:00:00Z"}
    r = httpx.post(f"{base}/best_send_time", json=over, timeout=30)
    assert r.status_code == 400 and "users" in r.text
    # a client that sends half a request and stalls does not hold up everyone else
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    try:
        for s in slow:
            s.sendall(b"POST /best_send_time HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"us")
        t = time.time()
        ok = httpx.post(f"{base}/best_send_time", timeout=10, json={"users": [{"user_id": "a"}], "window_start": "2026-04-14T06:00:00Z", "window_end": "2026-04-14T22:00:00Z"})
        assert ok.status_code == 200 and time.time() - t < 5
    finally:
        for s in slow:
            s.close()
