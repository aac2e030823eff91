"""Scheduler-grade serving in-process: score table, quiet hours, lead time, capacity plans,
API keys, size limits, metrics, and swapping a snapshot under traffic."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest


from tests.conftest import in_process_service, rewrite_scores

DAY = {"window_start": "2026-04-14T00:00:00Z", "window_end": "2026-04-15T00:00:00Z"}


def service(home: Path, **env):
    return in_process_service(home, **{"SENDTIME_EXPLORATION_RATE": "0", "SENDTIME_HOLDOUT_SHARE": "0", **env})


@pytest.fixture(scope="module")
def home(private_home):
    return private_home


@pytest.fixture(scope="module")
def client(home):
    with service(home) as c:
        yield c


def _metric(text: str, series: str) -> float:
    return float(next(l.split()[-1] for l in text.splitlines() if l.startswith(series)))


def _ids(trained, n=50, zone=None):
    us = trained[1].users.accepted
    if zone:
        us = us[us["timezone"] == zone]
    return list(us["user_id"].head(n))


def test_known_users_come_from_the_table_and_new_ones_from_their_zones_prior(client, trained):
    ids = _ids(trained, 30) + ["new-a", "new-b"]
    r = client.post("/best_send_time", json={"users": [{"user_id": u} for u in ids], **DAY})
    assert r.status_code == 200
    metrics = client.get("/metrics").text
    table = float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith('sendtime_answers_total{source="table"}')))
    prior = float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith('sendtime_answers_total{source="prior"}')))
    model = float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith('sendtime_answers_total{source="model"}')))
    # 25 whole hours in the window; the new users are answered from their zone's prior, no forest per request
    assert table >= 30 * 25 and prior >= 2 and model == 0
    info = next(l for l in metrics.splitlines() if l.startswith("sendtime_model_info{"))
    assert 'model="sendtime-open-model"' in info and 'version="1"' in info and 'table="true"' in info
    assert float(info.split()[-1]) == 1.0


def test_table_answers_equal_model_scoring(client, trained, home):
    """The precomputed table is the model's own scores, not an approximation."""
    from sendtime.features.store import load_features
    from sendtime.serving.model_store import load_champion
    from sendtime.serving.snapshots import current_snapshot

    folder = current_snapshot(home / "published")
    table = np.load(folder / "scores.npy")
    uf = load_features(folder / "features")
    settings, _ = trained
    model, _, cols = load_champion(f"sqlite:///{home / 'mlflow.db'}", f"sqlite:///{home / 'mlflow.db'}", settings.model_name)
    rows = np.arange(0, len(uf.table), 37)
    how = (rows * 11) % 168
    p = model.predict_proba(uf.model_frame(rows, how)[cols])[:, 1]
    np.testing.assert_allclose(table[rows, how], p, rtol=1e-5)


def test_quiet_hours_hold_in_local_time_across_dst(client, trained):
    ids = _ids(trained, 20, "America/New_York") + _ids(trained, 20, "Europe/London")
    body = {"users": [{"user_id": u} for u in ids], "window_start": "2026-03-07T12:00:00Z",
            "window_end": "2026-03-09T12:00:00Z", "quiet_hours": "21:00-08:00"}
    r = client.post("/best_send_time", json=body)
    assert r.status_code == 200, r.text
    for a in r.json()["results"]:
        local = pd.Timestamp(a["send_at"]).to_pydatetime().astimezone(ZoneInfo(a["timezone"]))
        assert 8 <= local.hour < 21, a
        assert a["local_hour"] == local.hour


def test_no_allowed_hour_gives_a_reason_not_an_error(client, trained):
    ids = _ids(trained, 3, "America/New_York")
    # 02:00-04:00 UTC is 22:00-00:00 in New York (EDT): all inside the quiet hours
    body = {"users": [{"user_id": u} for u in ids], "window_start": "2026-04-14T02:00:00Z",
            "window_end": "2026-04-14T04:00:00Z", "quiet_hours": "21:00-08:00"}
    r = client.post("/best_send_time", json=body)
    assert r.status_code == 200
    for a in r.json()["results"]:
        assert a["send_at"] is None and a["p_open"] is None and "quiet hours" in a["reason"]


def test_lead_time_moves_the_answer_past_now(client, trained):
    now = pd.Timestamp.now(tz="UTC")
    ids = _ids(trained, 10)
    body = {"users": [{"user_id": u} for u in ids], "window_start": now.isoformat(),
            "window_end": (now + pd.Timedelta(hours=6)).isoformat(), "min_lead_minutes": 180}
    r = client.post("/best_send_time", json=body)
    assert r.status_code == 200
    for a in r.json()["results"]:
        assert pd.Timestamp(a["send_at"]) >= now + pd.Timedelta(minutes=180)


@pytest.mark.parametrize("quiet", ["25:00-08:00", "21:00", "08:00-08:00", "9-17"])
def test_bad_quiet_hours_are_a_400(client, quiet):
    r = client.post("/best_send_time", json={"users": [{"user_id": "a"}], **DAY, "quiet_hours": quiet})
    assert r.status_code == 400 and "quiet_hours" in r.text


def test_campaign_plan_respects_caps_and_reports_the_alternatives(client, trained):
    ids = _ids(trained, 240)
    r = client.post("/plan_campaign", json={"users": [{"user_id": u} for u in ids], **DAY, "hourly_cap": 12})
    assert r.status_code == 200, r.text
    body = r.json()
    s = body["summary"]
    loads = pd.Series([a["send_at"] for a in body["results"] if a["send_at"]]).value_counts()
    assert loads.max() <= 12
    assert s["users_planned"] == 240 and s["users_unplanned"] == 0
    assert sum(h["planned"] for h in s["hourly"]) == 240 and all(h["planned"] <= h["cap"] for h in s["hourly"])
    assert s["expected_opens_status_quo"] < s["expected_opens_plan"] <= s["expected_opens_uncapped"] + 1e-9
    assert s["expected_opens_plan"] == pytest.approx(sum(a["p_open"] for a in body["results"]), rel=1e-6)
    assert {a["policy"] for a in body["results"]} == {"planned"}
    # without binding caps the plan is everyone's best hour
    free = client.post("/plan_campaign", json={"users": [{"user_id": u} for u in ids], **DAY, "hourly_cap": 10_000}).json()
    assert free["summary"]["expected_opens_plan"] == pytest.approx(free["summary"]["expected_opens_uncapped"])


def test_campaign_plan_with_per_hour_caps_and_bad_caps(client, trained):
    ids = _ids(trained, 60)
    caps = [0] * 12 + [10] * 13  # nothing in the first 12 hours
    r = client.post("/plan_campaign", json={"users": [{"user_id": u} for u in ids], **DAY, "hourly_cap": caps})
    assert r.status_code == 200
    for a in r.json()["results"]:
        assert pd.Timestamp(a["send_at"]) >= pd.Timestamp("2026-04-14T12:00:00Z")
    r = client.post("/plan_campaign", json={"users": [{"user_id": "a"}], **DAY, "hourly_cap": [1, 2]})
    assert r.status_code == 400 and "25 whole hours" in r.text
    r = client.post("/plan_campaign", json={"users": [{"user_id": "a"}], **DAY, "hourly_cap": -1})
    assert r.status_code == 400 and "hourly_cap" in r.text
    r = client.post("/plan_campaign", json={"users": [{"user_id": "a"}], **DAY, "hourly_cap": 10**20})  # found by schemathesis
    assert r.status_code == 400 and "hourly_cap" in r.text


def test_api_key_guards_predictions_but_not_health(home, trained):
    with service(home, SENDTIME_API_KEY="s3cret") as c:
        body = {"users": [{"user_id": "a"}], **DAY}
        assert c.post("/best_send_time", json=body).status_code == 401
        assert c.post("/best_send_time", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/best_send_time", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/plan_campaign", json={**body, "hourly_cap": 1}, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.post("/admin/reload").status_code == 401
        for path in ("/readyz", "/livez", "/metrics"):
            assert c.get(path).status_code == 200


def test_request_size_limit_is_a_413(home):
    with service(home, SENDTIME_MAX_BODY_BYTES="5000") as c:
        users = [{"user_id": f"user-{i:06d}"} for i in range(400)]
        r = c.post("/best_send_time", json={"users": users, **DAY})
        assert r.status_code == 413 and "limit" in r.json()["error"]
        ok = c.post("/best_send_time", json={"users": users[:5], **DAY})
        assert ok.status_code == 200


def _publish_copy(home: Path, transform) -> str:
    """A new snapshot folder: the current one with its score table transformed."""
    from sendtime.serving.snapshots import current_snapshot, publish_pointer

    src = current_snapshot(home / "published")
    name = f"{src.name}-swap{np.random.default_rng().integers(1e9)}"
    dst = home / "published" / name
    shutil.copytree(src, dst)
    rewrite_scores(dst, transform(np.load(dst / "scores.npy")))
    publish_pointer(home / "published", name)
    return name


def test_snapshot_swap_under_traffic_drops_nothing(home, trained):
    ids = _ids(trained, 40)
    body = {"users": [{"user_id": u} for u in ids], **DAY}
    with service(home) as c:
        before = c.post("/best_send_time", json=body).json()["results"]
        errors, seen = [], []
        stop = threading.Event()

        def traffic():
            while not stop.is_set():
                r = c.post("/best_send_time", json=body)
                if r.status_code != 200:
                    errors.append(r.status_code)
                seen.append(r.json()["results"][0]["local_hour"])

        threads = [threading.Thread(target=traffic) for _ in range(3)]
        def wait_for(n: int) -> None:
            deadline = time.time() + 60
            while len(seen) < n and time.time() < deadline and not errors:
                time.sleep(0.01)

        for t in threads:
            t.start()
        wait_for(5)  # traffic is flowing before the swap
        name = _publish_copy(home, lambda t: t[:, ::-1].copy())  # a different table: reversed slots
        swap = c.post("/admin/reload").json()
        wait_for(len(seen) + 5)  # and keeps flowing after it
        stop.set()
        for t in threads:
            t.join()
        assert swap["reloaded"] and swap["snapshot"] == name
        assert not errors and len(seen) >= 10
        after = c.post("/best_send_time", json=body).json()["results"]
        assert c.post("/info").json()["snapshot"] == name
        assert [a["local_hour"] for a in after] != [a["local_hour"] for a in before]


def test_corrupt_snapshot_is_refused_and_the_last_good_one_kept(home, trained):
    from sendtime.serving.snapshots import publish_pointer

    body = {"users": [{"user_id": u} for u in _ids(trained, 5)], **DAY}
    with service(home) as c:
        good = c.post("/info").json()["snapshot"]
        bad = home / "published" / "broken-snapshot"
        shutil.copytree(home / "published" / good, bad)
        np.save(bad / "serving" / "scores.npy", np.zeros((3, 168), dtype=np.uint8))  # wrong shape
        publish_pointer(home / "published", bad.name)
        r = c.post("/admin/reload").json()
        assert not r["reloaded"] and "refused" in r["message"] and r["snapshot"] == good
        assert c.post("/best_send_time", json=body).status_code == 200
        assert _metric(c.get("/metrics").text, 'sendtime_reloads_total{result="refused"}') == 1.0
        publish_pointer(home / "published", good)  # leave the good one published


def test_first_start_without_a_snapshot_fails_with_a_message(tmp_path):
    from sendtime.serving.snapshots import NotReady

    with pytest.raises(NotReady, match="run `sendtime nightly` first"):
        with service(tmp_path / "empty-home"):
            pass


def test_champion_without_its_snapshot_is_not_swapped_in(home, trained):
    """A run that died between promotion and publish: replicas keep the consistent pair."""
    import mlflow
    from mlflow import MlflowClient

    settings, _ = trained
    uri = f"sqlite:///{home / 'mlflow.db'}"
    with service(home) as c:
        served = c.post("/info").json()["model_version"]
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        client = MlflowClient()
        src = client.get_model_version(settings.model_name, served).source
        new = client.create_model_version(settings.model_name, src).version
        client.set_registered_model_alias(settings.model_name, "champion", new)
        try:
            r = c.post("/admin/reload").json()
            assert not r["reloaded"] and "no published snapshot yet" in r["message"]
            assert c.post("/info").json()["model_version"] == served
        finally:
            client.set_registered_model_alias(settings.model_name, "champion", served)


def test_user_ids_never_reach_the_logs_in_clear(client):
    import io
    import logging

    secret = "alice.wonder@example.com-7731"
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ["", "bentoml", "bentoml.serve", "sendtime.service"]]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        assert client.post("/best_send_time", json={"users": [{"user_id": secret}], **DAY}).status_code == 200
        bad = client.post("/best_send_time", json={"users": [{"user_id": secret * 20}], **DAY})  # too long: rejected
        assert bad.status_code == 400
        assert client.post("/best_send_time", json={"users": [{"user_id": secret, "timezone": "Nowhere/Land"}], **DAY}).status_code == 400
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    text = buf.getvalue()
    assert "rejected request" in text  # the rejections are logged...
    assert secret not in text  # ...without the user id


def test_missing_model_artifact_is_refused_and_the_last_good_pair_kept(home, trained, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from sendtime.serving.snapshots import current_snapshot, publish_pointer

    settings, _ = trained
    uri = f"sqlite:///{home / 'mlflow.db'}"
    with service(home) as c:
        before = c.post("/info").json()
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        client = MlflowClient()
        gone = tmp_path / "deleted-model"
        gone.mkdir()
        bad = str(client.create_model_version(settings.model_name, gone.as_uri()).version)
        src = current_snapshot(home / "published")
        snap = home / "published" / f"{src.name}-badmodel"
        shutil.copytree(src, snap)
        manifest = json.loads((snap / "manifest.json").read_text())
        (snap / "manifest.json").write_text(json.dumps({**manifest, "model_version": bad}))
        client.set_registered_model_alias(settings.model_name, "champion", bad)
        publish_pointer(home / "published", snap.name)
        try:
            r = c.post("/admin/reload").json()
            assert not r["reloaded"] and "refused" in r["message"], r
            assert c.post("/info").json() == before
            assert c.post("/best_send_time", json={"users": [{"user_id": "x"}], **DAY}).status_code == 200
        finally:
            client.set_registered_model_alias(settings.model_name, "champion", before["model_version"])
            publish_pointer(home / "published", src.name)
