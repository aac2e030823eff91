"""POST /events (SendGrid webhook batches) in-process through the ASGI app, and the event store
behind it: idempotent replays, overlapping batches, bad bodies, the API key, concurrent
appends, and the nightly run reading the inbox."""

from __future__ import annotations

import copy
import json
import threading
import uuid
from pathlib import Path

import pandas as pd
import pytest

from sendtime.features.contract import read_events
from sendtime.serving.event_store import SECOND_SEND, EventStore
from tests.conftest import in_process_service

SAMPLE = json.loads((Path(__file__).resolve().parents[1] / "formats" / "sendgrid_events.json").read_text())


def service(home: Path, **env):
    return in_process_service(home, **{"SENDTIME_API_KEY": None, **env})


@pytest.fixture(scope="module")
def home(private_home):
    return private_home


@pytest.fixture(scope="module")
def client(home):
    with service(home) as c:
        yield c


def fresh(batch: list[dict]) -> list[dict]:
    """The batch with event and message ids no other test uses (tests share one store)."""
    tag = uuid.uuid4().hex[:8]
    out = copy.deepcopy(batch)
    for e in out:
        if isinstance(e, dict):
            e["sg_event_id"] = f"{tag}-{e['sg_event_id']}"
            e["sg_message_id"] = f"{tag}{e['sg_message_id']}"
    return out


def event(kind: str, email: str, eid: str, msg: str, at: str, **kw) -> dict:
    return {"email": email, "timestamp": int(pd.Timestamp(at).timestamp()), "event": kind, "sg_event_id": eid,
            "sg_message_id": f"{msg}.filter0001p3las1-1-1-1.0", **kw}


def inbox_files(home: Path) -> list[Path]:
    return sorted((home / "events" / "inbox").rglob("*.parquet"))


def rolled(client) -> dict:
    """Move the service's event log into the inbox now (POST /admin/roll)."""
    r = client.post("/admin/roll")
    assert r.status_code == 200, r.text
    return r.json()


def test_a_batch_is_stored_with_counts_and_reasons(client, home):
    before = set(inbox_files(home))
    r = client.post("/events", json=fresh(SAMPLE))
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("received", "accepted", "duplicates", "rejected")} == {"received": 15, "accepted": 11, "duplicates": 0, "rejected": 4}
    assert body["reasons"] == {"not used: 'processed' (the message's 'delivered' event is its send)": 3,
                               "not used: SendGrid 'deferred' event (no contract equivalent)": 1}
    assert [x["index"] for x in body["rejects"]] == [0, 1, 5, 12]
    assert "@" not in r.text  # no addresses in the answer
    roll = rolled(client)
    assert roll["rolled"] and roll["written"] == 11 and roll["doubled"] == 0
    new = set(inbox_files(home)) - before
    assert len(new) == 2 and {p.parent.name for p in new} == {"2026-03-03", "2026-03-04"}  # by the events' UTC day
    stored = pd.concat([pd.read_parquet(p) for p in sorted(new)])
    assert len(stored) == 11 and str(stored["timestamp"].dt.tz) == "UTC"
    mpp = stored[stored["event_id"].str.endswith("b3Blbi1hbGljZS1tcHAtMQ")]
    assert len(mpp) == 1 and bool(mpp["machine_open"].iloc[0]) is True


def test_a_replayed_batch_adds_nothing(client, home):
    batch = fresh(SAMPLE)
    first = client.post("/events", json=batch).json()
    again = client.post("/events", json=batch).json()  # the replay comes before the roll
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, first["accepted"], first["rejected"])
    rolled(client)
    files, count = inbox_files(home), EventStore(home / "events").count()
    late = client.post("/events", json=batch).json()  # and after it: the index knows the ids
    assert (late["accepted"], late["duplicates"]) == (0, first["accepted"])
    assert rolled(client)["written"] == 0
    assert inbox_files(home) == files and EventStore(home / "events").count() == count


def test_an_overlapping_batch_adds_only_the_new_events(client, home):
    t = uuid.uuid4().hex[:8]
    one = [event("delivered", "ann@example.com", f"{t}-d1", f"{t}A", "2026-03-03T10:00:00Z"),
           event("open", "ann@example.com", f"{t}-o1", f"{t}A", "2026-03-03T11:00:00Z", sg_machine_open=False),
           event("delivered", "ben@example.com", f"{t}-d2", f"{t}B", "2026-03-03T10:00:01Z")]
    two = [one[1],
           event("click", "ann@example.com", f"{t}-c1", f"{t}A", "2026-03-03T11:01:00Z", url="https://x.example/"),
           event("open", "ben@example.com", f"{t}-o2", f"{t}B", "2026-03-04T08:00:00Z")]  # its send came in batch one
    assert client.post("/events", json=one).json()["accepted"] == 3
    rolled(client)
    count = EventStore(home / "events").count()
    body = client.post("/events", json=two).json()
    assert (body["received"], body["accepted"], body["duplicates"], body["rejected"]) == (3, 2, 1, 0)
    rolled(client)
    assert EventStore(home / "events").count() == count + 2


def test_an_open_before_its_send_arrives_and_a_late_second_send(client):
    t = uuid.uuid4().hex[:8]
    early_open = [event("open", "cy@example.com", f"{t}-o", f"{t}C", "2026-03-03T12:00:00Z")]
    assert client.post("/events", json=early_open).json()["accepted"] == 1  # its send may come later
    processed = [event("processed", "cy@example.com", f"{t}-p", f"{t}C", "2026-03-03T09:59:58Z")]
    assert client.post("/events", json=processed).json()["accepted"] == 1  # no 'delivered' seen: it is the send
    delivered = [event("delivered", "cy@example.com", f"{t}-d", f"{t}C", "2026-03-03T10:00:00Z")]
    body = client.post("/events", json=delivered).json()
    assert (body["accepted"], body["rejected"], body["reasons"]) == (0, 1, {SECOND_SEND: 1})
    assert body["rejects"] == [{"index": 0, "sg_event_id": f"{t}-d", "reason": SECOND_SEND}]
    rolled(client)  # and once the first send is in the index
    late = [event("delivered", "cy@example.com", f"{t}-d2", f"{t}C", "2026-03-03T10:00:01Z")]
    assert client.post("/events", json=late).json()["reasons"] == {SECOND_SEND: 1}


def test_repeats_inside_one_batch_are_duplicates(client):
    t = uuid.uuid4().hex[:8]
    d = event("delivered", "dee@example.com", f"{t}-d", f"{t}D", "2026-03-03T10:00:00Z")
    body = client.post("/events", json=[d, d, dict(d)]).json()
    assert (body["received"], body["accepted"], body["duplicates"], body["rejected"]) == (3, 1, 2, 0)


def test_unknown_keys_are_custom_args_and_unknown_event_types_are_rejected_rows(client):
    t = uuid.uuid4().hex[:8]
    batch = [event("delivered", "eve@example.com", f"{t}-d", f"{t}E", "2026-03-03T10:00:00Z", campaign_ref="spring", tenant={"id": 7}),
             event("teleport", "eve@example.com", f"{t}-x", f"{t}E", "2026-03-03T10:05:00Z")]
    r = client.post("/events", json=batch)
    assert r.status_code == 200
    assert r.json()["accepted"] == 1 and r.json()["reasons"] == {"unknown SendGrid event 'teleport'": 1}


@pytest.mark.parametrize("body, words", [
    (b"[{\"event\": \"open\", ", "Invalid JSON"),
    (b"", "JSON array"),
    (b"{\"events\": []}", "JSON array of SendGrid event objects"),
    (b"null", "JSON array"),
    (b"[]", "at least 1 item"),
    (b"[null]", "object"),
    (b"[\"open\"]", "object"),
    (b"[{\"event\": \"open\", \"timestamp\": \"yesterday\"}]", "timestamp"),
    (b"[{\"event\": \"open\", \"timestamp\": 1772547160000}]", "timestamp"),  # milliseconds
    (b"[{\"event\": \"open\", \"timestamp\": 1e300}]", "timestamp"),
    (b"[{\"event\": \"open\", \"timestamp\": -5}]", "timestamp"),
    (b"[{\"event\": \"open\", \"timestamp\": 1772547160, \"email\": 42}]", "email"),
    (b"[{\"event\": \"open\", \"timestamp\": 1772547160, \"sg_machine_open\": \"maybe\"}]", "sg_machine_open"),
    (b"[{\"event\": \"open\", \"timestamp\": 1772547160, \"sg_event_id\": [1]}]", "sg_event_id"),
    (b"[{\"timestamp\": 1772547160}]", "event"),
    (b"[{\"event\": \"\", \"timestamp\": 1772547160}]", "event"),
])
def test_bad_bodies_get_a_4xx_naming_the_field(client, home, body, words):
    count = EventStore(home / "events").count()
    r = client.post("/events", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert words in r.text
    assert EventStore(home / "events").count() == count


def test_events_route_is_in_the_openapi_document_and_metrics(client):
    doc = client.get("/docs.json").json()
    spec = doc["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert spec["type"] == "array" and spec["maxItems"] == 10_000
    schemas = doc["components"]["schemas"]
    for name in ("SendGridEvent", "EventsResponse", "RejectedEvent"):
        props = next(v for k, v in schemas.items() if k in (name, f"{name}IODescriptor"))["properties"]
        assert all(p.get("description") or p.get("examples") for p in props.values()), name
    metrics = client.get("/metrics").text
    assert 'sendtime_requests_total{route="events"}' in metrics and 'sendtime_events_total{result="accepted"}' in metrics


def test_api_key_is_required_when_set(home):
    batch = fresh(SAMPLE)
    with service(home, SENDTIME_API_KEY="s3cret") as c:
        assert c.post("/events", json=batch).status_code == 401
        assert c.post("/events", json=batch, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.post("/events", json=batch, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["accepted"] == 11
        assert c.post("/events", json=batch, headers={"X-API-Key": "s3cret"}).json()["duplicates"] == 11


def test_hashed_user_ids_keep_addresses_out_of_the_inbox(home):
    batch = fresh(SAMPLE)
    before = set(inbox_files(home))
    with service(home, SENDTIME_EVENTS_USER_IDS="sha256", SENDTIME_EVENTS_SALT="pepper") as c:
        assert c.post("/events", json=batch).json()["accepted"] == 11
        rolled(c)
    stored = pd.concat([pd.read_parquet(p) for p in set(inbox_files(home)) - before])
    assert "@" not in stored.astype(str).to_csv() and stored["user_id"].str.fullmatch(r"[0-9a-f]{64}").all()


# -- the store on its own ---------------------------------------------------------------------
def _frame(ids: list[str], kind: str = "open") -> pd.DataFrame:
    return pd.DataFrame({"event_id": ids, "user_id": "u1", "message_id": [f"m-{i}" for i in ids], "event_type": kind,
                         "timestamp": pd.Timestamp("2026-03-03T10:00:00Z"), "machine_open": pd.NA, "propensity": float("nan")})


def test_concurrent_overlapping_appends_store_each_event_once(tmp_path):
    store = EventStore(tmp_path / "events")
    ids = [f"e{i:05d}" for i in range(3000)]
    batches = [ids[i:i + 1500] for i in range(0, 3000, 500)] * 2  # 12 overlapping batches, each sent twice
    results, errors = [], []

    def post(b):
        try:
            results.append(store.append(_frame(b, "send")))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(r.stored for r in results) == 3000 and store.count() == 3000
    assert store.roll(seal_own=True).written == 3000
    stored = read_events(store.inbox)
    assert stored.read == 3000 and stored.n_rejected == 0 and stored.accepted["event_id"].is_unique
    # separate processes share nothing but the files: a second store object on the same folder agrees
    assert EventStore(tmp_path / "events").append(_frame(ids[:10], "send")).duplicates == 10


def test_a_lost_index_is_rebuilt_from_the_inbox_and_temp_files_are_ignored(tmp_path):
    from sendtime.features.duckdb_engine import usable

    store = EventStore(tmp_path / "events")
    assert store.append(_frame(["a", "b"], "send")).stored == 2
    store.roll(seal_own=True)
    store.close()
    store.index_path.unlink()
    (store.inbox / ".events-crashed.parquet.123.tmp").write_bytes(b"half a file")
    again = EventStore(tmp_path / "events")
    res = again.append(_frame(["b", "c"], "send"))  # no index: "b" is logged again ...
    assert (res.stored, res.duplicates) == (2, 0)
    roll = again.roll(seal_own=True)  # ... and the roll, with the index rebuilt from the inbox, drops it
    assert (roll.written, roll.doubled) == (1, 1)
    # the rebuilt index still knows which messages have their send
    second = again.append(_frame(["z"], "send").assign(message_id="m-a"))
    assert second.stored == 0 and second.refused == ["z"]
    assert read_events(store.inbox).read == 3 and usable(store.inbox) is None


def test_nightly_reads_the_inbox(tmp_path):
    """`sendtime nightly --events $SENDTIME_HOME/events/inbox`: a small world's history arrives
    in overlapping, replayed batches; the nightly run reads the folder (DuckDB engine) and trains."""
    from sendtime.features.duckdb_engine import usable
    from sendtime.features.engines import choose_engine
    from sendtime.nightly import run_nightly
    from sendtime.settings import Settings
    from sendtime.simulation.simulate import simulate_world, world_config
    from tests.conftest import AS_OF, home_env

    world = simulate_world(world_config("default", n_users=150, days=42, seed=5, end=AS_OF))
    home = tmp_path / "home"
    store = EventStore(home / "events")
    ev = world.events.sample(frac=1.0, random_state=1).reset_index(drop=True)  # webhooks arrive out of order
    n = len(ev)
    assert store.append(ev.iloc[: 2 * n // 3]).stored == 2 * n // 3
    overlap = store.append(ev.iloc[n // 3:])
    assert (overlap.stored, overlap.duplicates) == (n - 2 * n // 3, 2 * n // 3 - n // 3)
    assert store.append(ev).stored == 0
    store.seal()  # the events are still in the log: the nightly run rolls them in first
    users = tmp_path / "users.parquet"
    world.users.to_parquet(users)
    env = {**home_env(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    result = run_nightly(Settings.from_env(env), store.inbox, users, pd.Timestamp(AS_OF, tz="UTC"), say=lambda m: None)
    assert result.events.read == n and result.events.n_accepted == n
    assert usable(store.inbox) is None and choose_engine("auto", store.inbox) == "duckdb"
    assert result.champion_version and result.predictions.exists()


def test_signed_webhooks_need_sendgrids_ecdsa_signature(home):
    """SENDTIME_EVENTS_VERIFICATION_KEY set: POST /events takes SendGrid's signature (P-256 ECDSA
    over the timestamp header and the raw body) instead of the API key; nothing else does."""
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    body = json.dumps(fresh(SAMPLE)).encode()
    stamp = "1772547160"

    def signed(payload: bytes, at: str = stamp) -> dict:
        sig = base64.b64encode(private.sign(at.encode() + payload, ec.ECDSA(hashes.SHA256()))).decode()
        return {"content-type": "application/json", "X-Twilio-Email-Event-Webhook-Signature": sig,
                "X-Twilio-Email-Event-Webhook-Timestamp": at}

    with service(home, SENDTIME_API_KEY="s3cret", SENDTIME_EVENTS_VERIFICATION_KEY=public) as c:
        assert c.post("/events", content=body, headers={"content-type": "application/json"}).status_code == 403
        tampered = body.replace(b"alice", b"alicf", 1)
        r = c.post("/events", content=tampered, headers=signed(body))
        assert r.status_code == 403 and "invalid SendGrid webhook signature" in r.text
        other_time = signed(body)
        other_time["X-Twilio-Email-Event-Webhook-Timestamp"] = "1772547161"
        assert c.post("/events", content=body, headers=other_time).status_code == 403
        ok = c.post("/events", content=body, headers=signed(body))
        assert ok.status_code == 200 and ok.json()["accepted"] == 11
        assert c.post("/admin/roll").status_code == 401  # other routes still need the API key
    with pytest.raises(Exception, match="SENDTIME_EVENTS_VERIFICATION_KEY"):
        with service(home, SENDTIME_EVENTS_VERIFICATION_KEY="not-a-key"):
            pass


def test_the_service_rolls_sealed_segments_in_the_background(tmp_path, home):
    """A short segment length: the first batch's segment is sealed when the next batch comes,
    and the worker's roll thread (a `sendtime roll-events` process) moves it into the inbox."""
    import time

    before = set(inbox_files(home))
    with service(home, SENDTIME_EVENTS_SEGMENT_SECONDS="0.3") as c:
        first = fresh(SAMPLE)
        assert c.post("/events", json=first).json()["accepted"] == 11
        time.sleep(0.4)
        assert c.post("/events", json=fresh(SAMPLE)).json()["accepted"] == 11  # starts a new segment
        deadline = time.time() + 60
        while len(set(inbox_files(home)) - before) < 2 and time.time() < deadline:
            time.sleep(0.2)
        new = set(inbox_files(home)) - before
        assert len(new) == 2  # the first batch's two days; the open segment stays in the log
        ids = set(pd.concat([pd.read_parquet(p) for p in new])["event_id"])
        assert ids == {e["sg_event_id"] for e in first} - {first[i]["sg_event_id"] for i in (0, 1, 5, 12)}
