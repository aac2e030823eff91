"""The DuckDB engine agrees with the pandas reference on the contract, the messages and the
features, on clean and on dirty typed Parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sendtime.features.contract import read_events, read_users
from sendtime.features.duckdb_engine import build_messages_duckdb, usable
from sendtime.features.engagement import build_user_features
from sendtime.features.messages import OUTCOME_COLUMNS, build_messages

AS_OF = pd.Timestamp("2026-04-13", tz="UTC")
NOW = pd.Timestamp("2026-04-20", tz="UTC")


def _pandas_reference(events_path, users, as_of=AS_OF):
    ev = read_events(events_path, now=NOW)
    msgs = build_messages(ev.accepted.loc[ev.accepted["timestamp"] < as_of], users)
    return ev, msgs


def _dirty(world_dir, out):
    """The tiny world's events with one row of every kind the contract rejects, spread about."""
    ev = pd.read_parquet(world_dir / "events.parquet")
    send = ev.loc[ev["event_type"] == "send"].iloc[5]
    opened = ev.loc[ev["event_type"] == "open"].iloc[3]
    t = pd.Timestamp("2026-03-01 10:00", tz="UTC")

    def row(**kw):
        base = {"event_id": "x", "user_id": send["user_id"], "message_id": send["message_id"], "event_type": "open",
                "timestamp": send["timestamp"] + pd.Timedelta(hours=2), "machine_open": False, "propensity": np.nan}
        return {**base, **kw}

    bad = pd.DataFrame([
        row(event_id=None),
        row(event_id="b1", user_id="  "),
        row(event_id="b2", message_id=None),
        row(event_id="b3", event_type="forward"),
        row(event_id="b4", event_type=" OPEN "),  # accepted: trimmed and lower-cased
        row(event_id="b5", timestamp=pd.NaT),
        row(event_id="b6", timestamp=pd.Timestamp("1985-01-01", tz="UTC")),
        row(event_id="b7", timestamp=pd.Timestamp("2027-01-01", tz="UTC")),
        row(event_id="b8", event_type="send", message_id="m-new", propensity=1.5),
        opened.to_dict(),  # the same event again: kept once
        {**opened.to_dict(), "timestamp": opened["timestamp"] + pd.Timedelta(minutes=5)},  # same id, other contents
        row(event_id="b9", message_id="no-such-message"),
        row(event_id="b10", timestamp=send["timestamp"] - pd.Timedelta(hours=1)),  # before its send
        row(event_id="b11", event_type="send", timestamp=t),  # a second send of the message
        row(event_id="b12", event_type="click", timestamp=AS_OF + pd.Timedelta(hours=1)),  # after the cutoff
    ])
    bad["timestamp"] = pd.to_datetime(bad["timestamp"], utc=True).astype("datetime64[us, UTC]")
    bad["machine_open"] = bad["machine_open"].astype(bool)
    mixed = pd.concat([ev.iloc[:2000], bad, ev.iloc[2000:]], ignore_index=True)
    mixed.to_parquet(out, index=False)
    return out


def test_clean_world_gives_identical_messages_and_features(world_dir):
    users = read_users(world_dir / "users.parquet").accepted
    ev, ref = _pandas_reference(world_dir / "events.parquet", users)
    res = build_messages_duckdb(world_dir / "events.parquet", users, AS_OF, now=NOW)
    assert (res.read, res.n_accepted, res.n_rejected) == (ev.read, ev.n_accepted, ev.n_rejected)
    assert len(ref) > 1000
    pd.testing.assert_frame_equal(ref, res.messages, check_dtype=False)
    assert res.status_quo_utc_hour == int(ref["send_ts"].dt.hour.mode().iloc[0])
    a = build_user_features(ref, users, AS_OF)
    b = build_user_features(res.messages, users, AS_OF)
    pd.testing.assert_frame_equal(a.table, b.table)
    np.testing.assert_array_equal(a.lam, b.lam)


def test_dirty_parquet_rejects_the_same_rows_for_the_same_reasons(world_dir, tmp_path):
    path = _dirty(world_dir, tmp_path / "dirty.parquet")
    users = read_users(world_dir / "users.parquet").accepted
    ev, ref = _pandas_reference(path, users)
    res = build_messages_duckdb(path, users, AS_OF, now=NOW, rejects_path=tmp_path / "rejects.csv")
    assert res.read == ev.read and res.n_accepted + res.n_rejected == res.read
    assert res.reasons == ev.reasons()
    assert len(res.reasons) >= 10  # every kind of problem above was seen
    ours = pd.read_csv(tmp_path / "rejects.csv")
    assert ours["source_row"].tolist() == ev.rejects["source_row"].tolist()
    assert ours["reason"].tolist() == ev.rejects["reason"].tolist()
    pd.testing.assert_frame_equal(ref, res.messages, check_dtype=False)


def test_folder_of_parquet_files_numbers_rows_across_files(world_dir, tmp_path):
    ev = pd.read_parquet(world_dir / "events.parquet")
    folder = tmp_path / "events"
    folder.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(ev)), 3)):
        ev.iloc[part].to_parquet(folder / f"part-{i}.parquet", index=False)
    dup = ev.iloc[[10]].assign(timestamp=ev["timestamp"].iloc[10] + pd.Timedelta(seconds=1))
    dup.to_parquet(folder / "part-9.parquet", index=False)
    users = read_users(world_dir / "users.parquet").accepted
    ref_ev, ref = _pandas_reference(folder, users)
    res = build_messages_duckdb(folder, users, AS_OF, now=NOW, rejects_path=tmp_path / "r.csv")
    assert pd.read_csv(tmp_path / "r.csv")["source_row"].tolist() == ref_ev.rejects["source_row"].tolist() == [len(ev)]
    pd.testing.assert_frame_equal(ref, res.messages, check_dtype=False)


@pytest.mark.parametrize("name", ["events_corpus.csv"])
def test_inputs_this_engine_does_not_read_say_why(name):
    from pathlib import Path

    why = usable(Path(__file__).parent / "bad_inputs" / name)
    assert why is not None and "Parquet" in why


def test_text_timestamps_go_to_the_pandas_contract(tmp_path):
    pd.DataFrame({"event_id": ["1"], "user_id": ["u"], "message_id": ["m"], "event_type": ["send"],
                  "timestamp": ["2026-04-01T10:00:00Z"]}).to_parquet(tmp_path / "e.parquet")
    assert "timestamp column is VARCHAR" in usable(tmp_path / "e.parquet")


def test_nightly_auto_engine_uses_duckdb_and_logs_it(trained):
    import mlflow

    settings, result = trained
    run = mlflow.MlflowClient(settings.tracking_uri).get_run(result.run_id)
    assert run.data.tags["feature_engine"] == "duckdb"
    assert run.data.metrics["engine_messages_seconds"] > 0


@pytest.mark.parametrize("n_buckets", [pytest.param(1, marks=pytest.mark.slow), 4])
def test_bucketed_features_equal_the_in_memory_build(world_dir, tmp_path, n_buckets):
    """Messages split by user into buckets, features built bucket by bucket: the same table,
    the same profiles, the same prior; also with users that have no sends and users missing
    from the users table."""
    from sendtime.features.duckdb_engine import bucket_loaders
    from sendtime.features.engagement import build_user_features_bucketed

    users = read_users(world_dir / "users.parquet").accepted
    users = pd.concat([users.iloc[25:], pd.DataFrame({"user_id": ["never-sent"], "timezone": ["Asia/Tokyo"],
                                                      "segment": ["x"]})], ignore_index=True)  # 25 users only in events
    ref = build_messages_duckdb(world_dir / "events.parquet", users, AS_OF, now=NOW).messages
    res = build_messages_duckdb(world_dir / "events.parquet", users, AS_OF, now=NOW, buckets=n_buckets,
                                bucket_dir=tmp_path / "buckets")
    assert res.messages is None
    loaders = bucket_loaders(tmp_path / "buckets")
    assert len(loaders) == n_buckets
    parts = [load() for load in loaders]
    assert sum(len(p) for p in parts) == len(ref)
    assert not set.intersection(*[set(p["user_id"]) for p in parts]) if n_buckets > 1 else True
    a = build_user_features(ref, users, AS_OF)
    b = build_user_features_bucketed(loaders, users, AS_OF)
    assert "never-sent" in b.table.index and b.table.loc["never-sent", "n_sends"] == 0
    pd.testing.assert_frame_equal(a.table, b.table)
    np.testing.assert_array_equal(a.lam, b.lam)
    assert a.prior.decay == b.prior.decay and a.prior.open_rate == b.prior.open_rate
    np.testing.assert_array_equal(a.prior.mixture.components, b.prior.mixture.components)


def test_nightly_in_user_buckets_publishes_the_same_features(world_dir, trained, tmp_path, monkeypatch):
    """A history above the bucket threshold goes through user buckets; the served features are
    the ones the in-memory build publishes."""
    import sendtime.features.engines as engines
    import sendtime.nightly as nightly
    from sendtime.settings import Settings
    from tests.conftest import make_env

    monkeypatch.setattr(engines, "BUCKET_ABOVE_EVENTS", 1000)
    monkeypatch.setattr(engines, "EVENTS_PER_BUCKET", 6000)
    said = []
    settings = Settings.from_env({**make_env(tmp_path / "home")})
    result = nightly.run_nightly(settings, world_dir / "events.parquet", world_dir / "users.parquet", AS_OF, say=said.append)
    assert any("user buckets" in m for m in said) and any("training messages from" in m for m in said)
    ref_settings, ref = trained
    a = pd.read_parquet(result.published / "features" / "user_features.parquet")
    b = pd.read_parquet(ref.published / "features" / "user_features.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert not list((settings.runs_dir).glob("buckets_*"))  # the buckets are cleaned up
    # the profiles were built into a work file and moved into the snapshot: the same numbers
    np.testing.assert_array_equal(np.load(result.published / "features" / "profiles.npy"),
                                  np.load(ref.published / "features" / "profiles.npy"))
    assert not list(settings.runs_dir.glob("*.profiles.npy"))
    assert np.load(result.published / "scores.npy").shape == (len(a), 168)


def test_aggregation_in_several_passes_gives_the_same_messages(world_dir, tmp_path, monkeypatch):
    """Message ids split over passes by hash (as at 100M events): the same messages, rejects
    and reasons, on dirty input too."""
    import sendtime.features.duckdb_engine as engine

    monkeypatch.setattr(engine, "AGG_PART_EVENTS", 2000)
    path = _dirty(world_dir, tmp_path / "dirty.parquet")
    users = read_users(world_dir / "users.parquet").accepted
    ev, ref = _pandas_reference(path, users)
    res = build_messages_duckdb(path, users, AS_OF, now=NOW, rejects_path=tmp_path / "rejects.csv")
    assert ev.read > 3 * 2000  # four passes or more
    assert res.reasons == ev.reasons() and res.n_rejected == ev.n_rejected
    pd.testing.assert_frame_equal(ref, res.messages, check_dtype=False)
    clean = build_messages_duckdb(world_dir / "events.parquet", users, AS_OF, now=NOW)
    _, clean_ref = _pandas_reference(world_dir / "events.parquet", users)
    pd.testing.assert_frame_equal(clean_ref, clean.messages, check_dtype=False)


def test_buckets_hold_the_same_messages_as_the_table_on_dirty_input(world_dir, tmp_path):
    """Dirty input split into user buckets, two of four written with text: the frames of those
    two and the integer arrays of all four hold exactly the messages of the in-memory table,
    the rebuilt (irregular) ones included; the numbers-only buckets refuse to give a frame."""
    from sendtime.features.duckdb_engine import bucket_loaders
    from sendtime.features.messages import MessageArrays

    path = _dirty(world_dir, tmp_path / "dirty.parquet")
    users = read_users(world_dir / "users.parquet").accepted.iloc[10:]  # some users only in events
    in_memory = build_messages_duckdb(path, users, AS_OF, now=NOW)
    ref = in_memory.messages
    res = build_messages_duckdb(path, users, AS_OF, now=NOW, buckets=4, bucket_dir=tmp_path / "b", string_buckets=2)
    assert list((tmp_path / "b" / "fix").glob("bucket=*"))  # some messages were rebuilt row by row
    loaders = bucket_loaders(tmp_path / "b")
    assert [b.number for b in loaders] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="without text columns"):
        loaders[3]()
    frames = pd.concat([b() for b in loaders[:2]])
    expected = ref.loc[ref["user_id"].isin(frames["user_id"])]
    key = ["message_id"]
    pd.testing.assert_frame_equal(frames.sort_values(key).reset_index(drop=True),
                                  expected.sort_values(key).reset_index(drop=True), check_dtype=False)
    index = pd.Index(users["user_id"].astype(str))
    arrays = [b.arrays(index) for b in loaders]
    whole = MessageArrays.from_frame(ref, index)
    assert sum(len(a.send_us) for a in arrays) == len(whole.send_us) == len(ref)

    def rows(a):  # every message as a tuple of its numbers (and its user's id where unknown)
        ids = np.full(len(a.uidx), None, dtype=object)
        ids[a.uidx < 0] = a.unknown_ids
        return sorted(zip(a.uidx.tolist(), ids.tolist(), a.send_us.tolist(), a.how.tolist(),
                          *[getattr(a, c).tolist() for c in OUTCOME_COLUMNS]))

    assert sorted(r for a in arrays for r in rows(a)) == rows(whole)
    assert (res.events_before_cutoff, res.status_quo_utc_hour, res.reasons) == \
        (in_memory.events_before_cutoff, in_memory.status_quo_utc_hour, in_memory.reasons)


def test_training_messages_do_not_depend_on_the_row_order_of_the_buckets(world_dir):
    """The engine's threads write bucket rows in any order; the training sample (and so the
    model) must come out the same."""
    from sendtime.features.engines import training_messages

    msgs = build_messages_duckdb(world_dir / "events.parquet", read_users(world_dir / "users.parquet").accepted,
                                 AS_OF, now=NOW).messages
    msgs["send_ts"] = msgs["send_ts"].dt.floor("h")  # ties in send time, as campaign sends have
    halves = [msgs.iloc[::2], msgs.iloc[1::2]]
    a = training_messages([lambda h=h: h for h in halves], 10**9, lambda _m: None)
    b = training_messages([lambda h=h: h.sample(frac=1.0, random_state=3) for h in halves], 10**9, lambda _m: None)
    assert a["send_ts"].duplicated().any()
    pd.testing.assert_frame_equal(a, b)


def test_bucketed_features_with_the_rhythm_em_on_a_sample_equal_the_in_memory_build(world_dir, tmp_path):
    """Where the rhythm EM sees a sample of users (every large history), the bucketed build
    keeps only the sample's 48-slot counts and every user's responsibilities: still the same
    mixture, profiles and table as the in-memory build that holds all the counts."""
    from sendtime.features.duckdb_engine import bucket_loaders
    from sendtime.features.engagement import build_user_features_bucketed
    from sendtime.features.profiles import ShrinkageParams

    users = read_users(world_dir / "users.parquet").accepted
    ref = build_messages_duckdb(world_dir / "events.parquet", users, AS_OF, now=NOW).messages
    build_messages_duckdb(world_dir / "events.parquet", users, AS_OF, now=NOW, buckets=3, bucket_dir=tmp_path / "b")
    params = ShrinkageParams(mixture_fit_users=len(users) // 2, mixture_k=3)
    a = build_user_features(ref, users, AS_OF, params=params)
    b = build_user_features_bucketed(bucket_loaders(tmp_path / "b"), users, AS_OF, params=params)
    assert len(a.prior.mixture.components) > 1  # the EM ran (not the one-rhythm fallback)
    np.testing.assert_array_equal(a.prior.mixture.components, b.prior.mixture.components)
    for seg, w in a.prior.mixture.weights.items():
        np.testing.assert_array_equal(w, b.prior.mixture.weights[seg])
    np.testing.assert_array_equal(a.lam, b.lam)
    pd.testing.assert_frame_equal(a.table, b.table)
