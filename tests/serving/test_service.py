"""The BentoML service in-process through its ASGI app: answers, DST, and bad input."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def client(trained):
    import os

    settings, _ = trained
    # deterministic answers here; exploration and holdout have their own tests
    env = {"SENDTIME_HOME": str(settings.home), "SENDTIME_EXPLORATION_RATE": "0", "SENDTIME_HOLDOUT_SHARE": "0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from sendtime.serving.service import SendTime
    from tests.conftest import fresh_service_metrics

    fresh_service_metrics()
    with TestClient(SendTime.to_asgi()) as c:
        yield c
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _users(trained, zone: str, n: int = 3) -> list[str]:
    _, result = trained
    us = result.users.accepted
    return list(us.loc[us["timezone"] == zone, "user_id"].head(n))


def _ask(client, users, start, end):
    return client.post("/best_send_time", json={"users": users, "window_start": start, "window_end": end})


def test_happy_path_answers_inside_the_window(client, trained):
    settings, result = trained
    ids = _users(trained, "America/New_York") + ["brand-new-user"]
    r = _ask(client, [{"user_id": u} for u in ids], "2026-04-14T00:00:00Z", "2026-04-15T00:00:00Z")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == result.champion_version
    assert [a["user_id"] for a in body["results"]] == ids
    for a in body["results"]:
        at = pd.Timestamp(a["send_at"])
        assert pd.Timestamp("2026-04-14T00:00Z") <= at <= pd.Timestamp("2026-04-15T00:00Z")
        assert at.minute == 0 and at.second == 0
        assert 0 < a["p_open"] < 1
        assert a["local_hour"] == at.tz_convert(a["timezone"]).hour
        assert a["policy"] == "optimized" and a["propensity"] == 1.0
    known, new = body["results"][:-1], body["results"][-1]
    assert all(a["source"] == "model" and a["timezone_source"] == "users_table" for a in known)
    assert new["source"] == "prior" and new["confidence"] == 0 and new["timezone_source"] == "default"


def test_answer_matches_batch_scoring_of_the_same_hours(client, trained):
    """CLI and HTTP share one predict path: the service's pick is the batch argmax, up to the
    service's uint8 table (within one quantization step of the user's)."""
    import pyarrow.parquet as pq

    from sendtime.serving.serving_table import ServingTable

    settings, result = trained
    served = ServingTable(result.published / "serving")
    preds = pq.read_table(result.predictions).to_pandas().set_index("user_id")
    day = preds["date"].iloc[0]
    ids = _users(trained, "Europe/Berlin", 5)
    start = pd.Timestamp(day).tz_localize("Europe/Berlin").tz_convert("UTC")
    r = _ask(client, [{"user_id": u} for u in ids], start.isoformat(), (start + pd.Timedelta(hours=23)).isoformat())
    for a in r.json()["results"]:
        step = float(served.quantized.step[served.rows_of([a["user_id"]])[0]])
        assert 0 < step < 0.01
        hours = np.asarray(preds.loc[a["user_id"], "hour_scores"], dtype=np.float64)
        assert hours.max() - hours[a["local_hour"]] <= step  # the batch's best, or one within a step of it
        assert abs(a["p_open"] - hours[a["local_hour"]]) <= step


def test_same_local_hour_across_a_dst_change(client, trained):
    """Thursdays before and after US DST starts (8 March 2026): same local hour, UTC shifts by one."""
    ids = _users(trained, "America/New_York", 4)
    answers = {}
    for day in ("2026-03-05", "2026-03-12"):
        start = pd.Timestamp(day).tz_localize("America/New_York")
        r = _ask(client, [{"user_id": u} for u in ids], start.isoformat(), (start + pd.Timedelta(hours=23)).isoformat())
        assert r.status_code == 200, r.text
        answers[day] = {a["user_id"]: a for a in r.json()["results"]}
    for u in ids:
        before, after = answers["2026-03-05"][u], answers["2026-03-12"][u]
        assert before["local_hour"] == after["local_hour"]
        utc_b = pd.Timestamp(before["send_at"]).hour
        utc_a = pd.Timestamp(after["send_at"]).hour
        assert (utc_b - utc_a) % 24 == 1  # EST (UTC-5) -> EDT (UTC-4)


def test_window_spanning_the_change_uses_the_right_offsets(client, trained):
    ids = _users(trained, "America/New_York", 3)
    r = _ask(client, [{"user_id": u, "timezone": "America/New_York"} for u in ids] + [{"user_id": "x", "timezone": "Europe/London"}],
             "2026-03-07T12:00:00Z", "2026-03-09T12:00:00Z")
    assert r.status_code == 200
    for a in r.json()["results"]:
        at = pd.Timestamp(a["send_at"]).to_pydatetime()
        local = at.astimezone(ZoneInfo(a["timezone"]))
        assert a["local_hour"] == local.hour
        assert pd.Timestamp(a["local_time"]) == pd.Timestamp(at)
        assert a["timezone_source"] == "request"


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"users": [], "window_start": "2026-04-14T00:00:00Z", "window_end": "2026-04-15T00:00:00Z"}, "at least 1 item"),
        ({"users": [{"user_id": "a", "timezone": "Mars/Olympus"}], "window_start": "2026-04-14T00:00:00Z", "window_end": "2026-04-15T00:00:00Z"}, "unknown time zone"),
        ({"users": [{"user_id": "a"}], "window_start": "2026-04-14T00:10:00Z", "window_end": "2026-04-14T00:50:00Z"}, "at least one hour"),
        ({"users": [{"user_id": "a"}], "window_start": "2026-04-15T00:00:00Z", "window_end": "2026-04-14T00:00:00Z"}, "after window_start"),
        ({"users": [{"user_id": "a"}], "window_start": "2026-04-14T00:00:00", "window_end": "2026-04-15T00:00:00"}, "timezone info"),
        ({"users": [{"user_id": "a"}], "window_start": "2026-04-01T00:00:00Z", "window_end": "2026-04-30T00:00:00Z"}, "at most 168 hours"),
        ({"users": [{"user_id": ""}], "window_start": "2026-04-14T00:00:00Z", "window_end": "2026-04-15T00:00:00Z"}, "at least 1 character"),
        ({"users": [{"user_id": "a"}], "window_start": "nan", "window_end": "2026-04-15T00:00:00Z"}, "window_start"),
        ({"window_start": "2026-04-14T00:00:00Z", "window_end": "2026-04-15T00:00:00Z"}, "users"),
    ],
)
def test_bad_requests_get_a_clear_4xx(client, body, fragment):
    r = client.post("/best_send_time", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert fragment in r.text


def test_malformed_json_is_a_4xx(client):
    r = client.post("/best_send_time", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_info_and_health(client, trained):
    settings, result = trained
    assert client.get("/readyz").status_code == 200
    info = client.post("/info").json()
    assert info["model_version"] == result.champion_version and info["users_known"] >= 400


def test_openapi_documents_every_field_with_a_description_or_example(client):
    doc = client.get("/docs.json").json()
    builtin = {"TaskStatusResponse", "InvalidArgument", "NotFound", "InternalServerError"}
    missing = [
        f"{name}.{prop}"
        for name, schema in doc["components"]["schemas"].items() if name not in builtin
        for prop, spec in schema.get("properties", {}).items()
        if not (spec.get("description") or spec.get("examples"))
    ]
    assert not missing
    assert {"/best_send_time", "/plan_campaign", "/info", "/admin/reload"} <= set(doc["paths"])


def test_mixed_zones_in_one_request_each_get_their_own_local_hours(client):
    """The request path groups users by zone; every user must still get their own offsets."""
    zones = ["America/New_York", "Europe/Berlin", "Asia/Kolkata", None, "Australia/Sydney"] * 4
    users = [{"user_id": f"u{i:06d}", **({"timezone": z} if z else {})} for i, z in enumerate(zones)]
    r = client.post("/best_send_time", json={"users": users, "window_start": "2026-04-14T00:00:00Z",
                                             "window_end": "2026-04-15T00:00:00Z", "quiet_hours": "21:00-08:00"})
    assert r.status_code == 200, r.text
    for u, a in zip(users, r.json()["results"]):
        assert a["user_id"] == u["user_id"]
        if "timezone" in u:
            assert a["timezone"] == u["timezone"] and a["timezone_source"] == "request"
        local = pd.Timestamp(a["send_at"]).tz_convert(a["timezone"])
        assert local.hour == a["local_hour"] and 8 <= local.hour < 21
        assert pd.Timestamp(a["local_time"]) == local


def test_version_endpoint_for_deployment_pipelines(client, trained):
    settings, result = trained
    r = client.get("/ops/version")
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["model_version"] == result.champion_version and v["snapshot"] == result.published.name
    assert v["score_table"] is True and v["sendtime"] != "unknown"
    assert client.get("/readyz").status_code == 200 and client.get("/livez").status_code == 200


def test_window_near_year_one_is_a_4xx_naming_the_field(client):
    """Found by schemathesis: year 1 with a +21:00 offset is no instant the scoring can convert."""
    r = client.post("/best_send_time", json={"users": [{"user_id": "x", "timezone": None}],
                                             "window_start": "0001-01-01T01:00:01+21:00",
                                             "window_end": "0001-01-01T11:00:00+21:00"})
    assert 400 <= r.status_code < 500 and "window_start" in r.text, r.text


def test_answers_serialized_in_pieces_are_the_same_bytes():
    """json_body (the route's serializer, a few hundred answers at a time) writes exactly what
    one orjson call over the whole response writes, around every piece boundary."""
    from sendtime.serving.schemas import BestSendTimeResponse, PlanResponse, PlanSummary, json_body

    for n in (0, 1, 255, 256, 257, 1000):
        results = [{"user_id": f"u{i}", "p_open": i / 7, "send_at": None} for i in range(n)]
        m = BestSendTimeResponse.model_construct(model_version="3", objective="open", features_as_of="x", results=results)
        assert json_body(m) == m.model_dump_json().encode()
    summary = PlanSummary.model_construct(expected_opens_plan=1.5, users_planned=2, hourly=[])
    plan = PlanResponse.model_construct(model_version="3", objective="open", features_as_of="x", summary=summary, results=results)
    assert json_body(plan) == plan.model_dump_json().encode()


def test_requests_scored_in_slices_answer_as_in_one_piece(client, trained, monkeypatch):
    """Slices of 7 users (known ones and new ones of several zones, so each slice has its own
    zone priors) give the same answers and the same capped plan as the whole request at once."""
    import sendtime.serving.service as service_module

    known = list(trained[1].users.accepted["user_id"].head(40))
    users = [{"user_id": u} for u in known] + [{"user_id": f"new-{i}", "timezone": z}
                                                for i, z in enumerate(["Europe/Berlin", "Asia/Tokyo", "America/New_York"] * 6)]
    week = {"window_start": "2026-04-14T00:00:00Z", "window_end": "2026-04-16T00:00:00Z"}
    asks = {"/best_send_time": {"users": users, **week}, "/plan_campaign": {"users": users, **week, "hourly_cap": 3}}
    whole = {path: client.post(path, json=body).json() for path, body in asks.items()}
    monkeypatch.setattr(service_module, "CHUNK_USERS", 7)
    sliced = {path: client.post(path, json=body).json() for path, body in asks.items()}
    for path in asks:
        assert sliced[path] == whole[path], path
    assert whole["/plan_campaign"]["summary"]["users_planned"] == len(users)
    assert {a["source"] for a in whole["/best_send_time"]["results"]} >= {"prior"}
