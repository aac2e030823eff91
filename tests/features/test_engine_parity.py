"""Differential tests: generated dirty event logs through every engine.

The pandas contract is the reference; the DuckDB engine (in memory, and in user buckets with
a tiny bucket size) must accept the same rows, reject the same rows for the same reasons, and
build the same messages and features, and no engine may raise, whatever share of the rows is
dirty (up to all of them), including logs where filtering leaves no regular message, no send,
no user, or a single user. The Spark engine is held to the same rules in
``tests/features/test_spark_contract.py`` (its JVM costs seconds per example, so it runs fewer).

Examples that ever failed are kept below as explicit ``@example`` regression cases.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sendtime.features.contract import read_events
from sendtime.features.duckdb_engine import bucket_loaders, build_messages_duckdb
from sendtime.features.engagement import build_user_features, build_user_features_bucketed
from sendtime.features.messages import build_messages

AS_OF = pd.Timestamp("2026-04-13", tz="UTC")
NOW = pd.Timestamp("2026-04-20", tz="UTC")
T0 = pd.Timestamp("2026-03-30 08:00", tz="UTC")
MISSING_IDS = [None, "", "nan", " NULL ", "\t", "None", "\xa0"]
#: every way a row can break the contract (and a few ways it may look odd but is fine)
DIRT = ["clean", "missing_event_id", "missing_user_id", "missing_message_id", "missing_event_type",
        "unknown_type", "missing_ts", "before_1990", "future", "bad_propensity", "nan_propensity",
        "duplicate", "conflicting_id", "orphan", "padded_ids", "shouting_type", "after_cutoff", "second_send"]


@st.composite
def event_logs(draw, max_messages: int = 6):
    """A small history (a few users, a few messages with their outcomes), then dirt on any
    share of the rows, in any order."""
    n_users = draw(st.integers(1, 3))
    rows = []
    for m in range(draw(st.integers(0, max_messages))):
        user = f"u{draw(st.integers(0, n_users - 1))}"
        sent = T0 + pd.Timedelta(hours=draw(st.integers(0, 14 * 24)))
        prop = draw(st.sampled_from([np.nan, 0.05, 1.0]))
        rows.append(dict(user_id=user, message_id=f"m{m}", event_type="send", timestamp=sent, machine_open=None,
                         propensity=prop))
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(["open", "open", "click", "bounce", "unsubscribe", "complaint"]))
            # seconds after the send: around the machine-open window, hours later, or before the send
            delay = draw(st.sampled_from([-3600, 2, 30, 590, 610, 3600, 7 * 3600, 2 * 86400]))
            flag = draw(st.sampled_from([None, True, False])) if kind == "open" else None
            rows.append(dict(user_id=user, message_id=f"m{m}", event_type=kind,
                             timestamp=sent + pd.Timedelta(seconds=delay), machine_open=flag, propensity=np.nan))
    for i, r in enumerate(rows):
        r["event_id"] = f"e{i}"
    share = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    out = []
    for r in rows:
        if not draw(st.booleans()) and share < 1.0 or draw(st.floats(0, 1)) > share:
            out.append(r)
            continue
        out.extend(_dirty(draw, r, out))
    order = draw(st.permutations(range(len(out)))) if len(out) <= 12 else range(len(out))
    return [out[i] for i in order], n_users


def _dirty(draw, r: dict, earlier: list[dict]) -> list[dict]:
    kind = draw(st.sampled_from(DIRT))
    r = dict(r)
    if kind.startswith("missing_") and kind != "missing_ts":
        r[kind.removeprefix("missing_")] = draw(st.sampled_from(MISSING_IDS))
    elif kind == "unknown_type":
        r["event_type"] = "forward"
    elif kind == "missing_ts":
        r["timestamp"] = None
    elif kind == "before_1990":
        r["timestamp"] = pd.Timestamp("1985-06-01", tz="UTC")
    elif kind == "future":
        r["timestamp"] = pd.Timestamp("2031-01-01", tz="UTC")
    elif kind == "bad_propensity":
        r["propensity"] = draw(st.sampled_from([0.0, 1.5, -0.2]))
    elif kind == "nan_propensity":
        r["propensity"] = np.nan
    elif kind == "duplicate":
        return [r, dict(r)]
    elif kind == "conflicting_id":
        other = dict(r, timestamp=r["timestamp"] + pd.Timedelta(minutes=5))
        return [r, other]
    elif kind == "orphan":
        r["message_id"] = "never-sent"
        r["event_type"] = "open" if r["event_type"] == "send" else r["event_type"]
    elif kind == "padded_ids":
        r["user_id"] = f" \t{r['user_id']}\xa0"
        r["message_id"] = f"\u3000{r['message_id']} "
    elif kind == "shouting_type":
        r["event_type"] = f" {r['event_type'].upper()}\t"
    elif kind == "after_cutoff":
        r["timestamp"] = AS_OF + pd.Timedelta(hours=3)
    elif kind == "second_send":
        return [r, dict(r, event_id=r["event_id"] + "-again", event_type="send",
                        timestamp=r["timestamp"] + pd.Timedelta(hours=1), machine_open=None)]
    return [r]


def _write(rows: list[dict], path: Path) -> Path:
    cols = ["event_id", "user_id", "message_id", "event_type", "timestamp", "machine_open", "propensity"]
    df = pd.DataFrame(rows, columns=cols)
    for c in cols[:4]:
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).astype("datetime64[us, UTC]")
    df["machine_open"] = df["machine_open"].astype("boolean")
    df["propensity"] = df["propensity"].astype("float64")
    df.to_parquet(path, index=False)
    return path


def _users(n_users: int) -> pd.DataFrame:
    # one user is missing from the users table (default zone), one is in a DST zone
    zones = ["Europe/Berlin", "America/New_York", "Asia/Kolkata"]
    ids = [f"u{i}" for i in range(n_users) if i != 1]
    return pd.DataFrame({"user_id": ids, "timezone": [zones[int(u[1:]) % 3] for u in ids],
                         "segment": "s"}).astype({"user_id": str})


def _rejects(path: Path | None) -> list[tuple[int, str]]:
    if path is None:
        return []
    r = pd.read_csv(path, dtype=str, keep_default_na=False)
    return sorted(zip(r["source_row"].astype(int), r["reason"]))


def _by_id(msgs: pd.DataFrame) -> pd.DataFrame:
    return msgs.sort_values("message_id").reset_index(drop=True)


def check_engines_agree(rows: list[dict], n_users: int, tmp: Path) -> None:
    path = _write(rows, tmp / "events.parquet")
    users = _users(n_users)
    ref = read_events(path, now=NOW)
    assert ref.read == ref.n_accepted + ref.n_rejected == len(rows)
    ref_msgs = build_messages(ref.accepted.loc[ref.accepted["timestamp"] < AS_OF], users)

    mem = build_messages_duckdb(path, users, AS_OF, now=NOW, rejects_path=tmp / "rejects.csv")
    assert (mem.read, mem.n_accepted, mem.n_rejected) == (ref.read, ref.n_accepted, ref.n_rejected)
    assert mem.reasons == ref.reasons()
    assert _rejects(mem.rejects_path) == sorted(zip(ref.rejects["source_row"].astype(int), ref.rejects["reason"]))
    pd.testing.assert_frame_equal(_by_id(mem.messages), _by_id(ref_msgs), check_dtype=False)
    before = int((ref.accepted["timestamp"] < AS_OF).sum())
    assert mem.events_before_cutoff == before

    bucketed = build_messages_duckdb(path, users, AS_OF, now=NOW, buckets=3, bucket_dir=tmp / "buckets")
    assert bucketed.reasons == ref.reasons() and bucketed.events_before_cutoff == before
    assert bucketed.status_quo_utc_hour == mem.status_quo_utc_hour
    loaders = bucket_loaders(tmp / "buckets")
    frames = [load() for load in loaders]
    got = pd.concat(frames, ignore_index=True) if frames else ref_msgs.iloc[:0]
    pd.testing.assert_frame_equal(_by_id(got), _by_id(ref_msgs), check_dtype=False)

    # the features from each, whatever was left (nothing, one user, users without sends)
    a = build_user_features(ref_msgs, users, AS_OF)
    b = build_user_features_bucketed(loaders, users, AS_OF)
    pd.testing.assert_frame_equal(a.table, b.table)
    np.testing.assert_array_equal(a.lam, b.lam)
    assert np.isfinite(a.lam).all()


S = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# regression cases: inputs that once crashed an engine or split them
ORPHANS_ONLY = ([dict(event_id="e0", user_id="u0", message_id="gone", event_type="open",
                      timestamp=T0, machine_open=None, propensity=np.nan)], 1)  # DuckDB: "read_parquet needs a file"
NULL_USER_SEND = ([dict(event_id="e0", user_id=None, message_id="m0", event_type="send", timestamp=T0,
                        machine_open=None, propensity=np.nan),
                   dict(event_id="e1", user_id="u0", message_id="m0", event_type="open",
                        timestamp=T0 + pd.Timedelta(hours=1), machine_open=None, propensity=np.nan)], 1)
FUTURE_SEND = ([dict(event_id="e0", user_id="u0", message_id="m0", event_type="send",
                     timestamp=pd.Timestamp("2031-01-01", tz="UTC"), machine_open=None, propensity=np.nan),
                dict(event_id="e1", user_id="u0", message_id="m0", event_type="click",
                     timestamp=pd.Timestamp("2031-01-01 01:00", tz="UTC"), machine_open=None, propensity=np.nan)], 1)
# found by the generator: an unsubscribe before the cutoff whose send comes after it
LATE_SEND_EARLY_UNSUB = ([dict(event_id="e0", user_id="u0", message_id="m0", event_type="send",
                               timestamp=pd.Timestamp("2026-04-13 03:00", tz="UTC"), machine_open=None, propensity=0.05),
                          dict(event_id="e1", user_id="u0", message_id="m0", event_type="unsubscribe",
                               timestamp=pd.Timestamp("2026-04-01 08:09:50", tz="UTC"), machine_open=None,
                               propensity=np.nan)], 1)


@settings(max_examples=25, **S)
@given(log=event_logs())
@example(log=ORPHANS_ONLY)
@example(log=NULL_USER_SEND)
@example(log=FUTURE_SEND)
@example(log=([], 1))
@example(log=LATE_SEND_EARLY_UNSUB)
def test_engines_agree_on_generated_dirty_logs(log, tmp_path_factory):
    rows, n_users = log
    check_engines_agree(rows, n_users, tmp_path_factory.mktemp("log"))


@pytest.mark.slow
@settings(max_examples=400, **S)
@given(log=event_logs(max_messages=12))
def test_engines_agree_on_many_more_generated_logs(log, tmp_path_factory):
    rows, n_users = log
    check_engines_agree(rows, n_users, tmp_path_factory.mktemp("log"))


@pytest.mark.parametrize("kind", [k for k in DIRT if k != "clean"])
def test_every_row_dirty_in_one_way(kind, tmp_path):
    """Each kind of dirt alone, on every row of a small history (so filtering may leave nothing)."""
    import random

    rnd = random.Random(kind)
    rows = []
    for m in range(4):
        sent = T0 + pd.Timedelta(hours=5 * m)
        for r in (dict(event_id=f"s{m}", user_id=f"u{m % 2}", message_id=f"m{m}", event_type="send",
                       timestamp=sent, machine_open=None, propensity=0.5),
                  dict(event_id=f"o{m}", user_id=f"u{m % 2}", message_id=f"m{m}", event_type="open",
                       timestamp=sent + pd.Timedelta(minutes=40), machine_open=None, propensity=np.nan)):
            rows.extend(_apply(kind, r, rnd))
    check_engines_agree(rows, 2, tmp_path)


def _apply(kind: str, r: dict, rnd) -> list[dict]:
    """:func:`_dirty` with the kind fixed and its other choices from a seeded generator."""
    choices = iter([kind])

    def draw(strategy):
        return next(choices, None) or rnd.choice(list(strategy.elements))

    return _dirty(draw, r, [])


def test_users_with_a_missing_time_zone_get_the_default_in_every_engine(tmp_path):
    """A null zone in a Parquet users table reads as NaN (pandas 3): the default zone, not a crash."""
    from sendtime.features.contract import read_users

    rows = [dict(event_id="s0", user_id="u0", message_id="m0", event_type="send", timestamp=T0,
                 machine_open=None, propensity=np.nan)]
    path = _write(rows, tmp_path / "events.parquet")
    pd.DataFrame({"user_id": ["u0"], "timezone": pd.array([None], dtype="str")}).to_parquet(tmp_path / "u.parquet")
    users = read_users(tmp_path / "u.parquet").accepted
    got = build_messages_duckdb(path, users, AS_OF, now=NOW, default_tz="Asia/Tokyo")
    want = build_messages(read_events(path, now=NOW).accepted, users, default_tz="Asia/Tokyo")
    assert got.messages["timezone"].tolist() == want["timezone"].tolist() == ["Asia/Tokyo"]


def test_typed_parquet_variants_read_the_same_in_both_engines(tmp_path):
    """What other writers produce: dictionary-encoded text, unsigned and 32-bit integer ids,
    nanosecond instants in a local zone (floored to microseconds, as pandas), large strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ts = pd.to_datetime(["2026-04-01 08:00:00.0000009", "2026-04-01 09:00", "2026-04-02 08:00", "2026-04-02 10:00"], format="ISO8601",
                        utc=True).astype("datetime64[ns, UTC]")
    table = pa.table({
        "event_id": pa.array([1, 2, 3, 4], pa.int32()),
        "user_id": pa.array(["u0", "u0", "u2", "u2"]).dictionary_encode(),
        "message_id": pa.array([10, 10, 20, 20], pa.uint64()),
        "event_type": pa.array(["send", "open", "send", "click"], pa.large_string()).dictionary_encode(),
        "timestamp": pa.array(ts).cast(pa.timestamp("ns", tz="Europe/Berlin")),
    })
    pq.write_table(table, tmp_path / "e.parquet")
    users = _users(3)
    ref = read_events(tmp_path / "e.parquet", now=NOW)
    assert ref.n_accepted == 4 and ref.accepted["timestamp"].iloc[0] == pd.Timestamp("2026-04-01 08:00", tz="UTC")
    got = build_messages_duckdb(tmp_path / "e.parquet", users, AS_OF, now=NOW)
    pd.testing.assert_frame_equal(_by_id(got.messages), _by_id(build_messages(ref.accepted, users)), check_dtype=False)


def test_machine_open_as_0_1_integers_is_a_flag(tmp_path):
    """An integer 0/1 flag column with nulls (read back as 1.0 / 0.0 / NaN) means what it says;
    any other number is not a boolean."""
    df = pd.DataFrame({"event_id": ["s", "a", "b", "c"], "user_id": "u0", "message_id": "m0",
                       "event_type": ["send", "open", "open", "open"],
                       "timestamp": pd.to_datetime(["2026-04-01 08:00", "2026-04-01 08:01", "2026-04-01 09:00",
                                                    "2026-04-01 10:00"], utc=True).astype("datetime64[us, UTC]"),
                       "machine_open": pd.array([None, 1, 0, 2], dtype="Int8")})
    df.to_parquet(tmp_path / "e.parquet", index=False)
    res = read_events(tmp_path / "e.parquet", now=NOW)
    assert res.reasons() == {"machine_open is not a boolean": 1}
    assert res.accepted.set_index("event_id").loc[["a", "b"], "machine_open"].tolist() == [True, False]
