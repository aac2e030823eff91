"""Input contract: good rows kept, bad rows rejected with a reason, every row accounted for."""

from __future__ import annotations

import pandas as pd
import pytest

from sendtime.features.contract import ContractError, read_events, read_users, validate_events


def _events() -> pd.DataFrame:
    rows = [
        ("e1", "u1", "m1", "send", "2026-03-01T14:00:00Z", None),
        ("e2", "u1", "m1", "open", "2026-03-01T15:10:00+00:00", "false"),
        ("e3", "u1", "m1", "click", "2026-03-01T15:12:00Z", None),
        ("e4", "u2", "m2", "send", "2026-03-01T14:00:00Z", None),
        ("e5", "u2", "m2", "open", "2026-03-01T14:00:30Z", "true"),
        ("e6", "u2", "m2", "open", "2026-03-01T09:00:30-05:00", None),  # offset form, same instant + 30s
        ("e1", "u1", "m1", "send", "2026-03-01T14:00:00Z", None),  # exact repeat: kept once
        ("e1", "u9", "m1", "send", "2026-03-02T14:00:00Z", None),  # same id, other contents
        ("e7", "u1", "m9", "open", "2026-03-01T15:00:00Z", None),  # no send for m9
        ("e8", "u1", "m1", "open", "2026-03-01T13:00:00Z", None),  # before its send
        ("e9", "u1", "m1", "view", "2026-03-01T15:00:00Z", None),  # unknown type
        ("e10", "u1", "m1", "open", "2026-03-01 15:00:00", None),  # naive
        ("e11", "u1", "m1", "open", "yesterday-ish+00:00", None),  # unparseable
        ("e12", "u1", "m1", "open", "1985-03-01T15:00:00Z", None),  # before 1990
        ("e13", "u1", "m1", "open", "2099-03-01T15:00:00Z", None),  # future
        ("e14", None, "m1", "open", "2026-03-01T15:00:00Z", None),  # no user
        ("e15", "u1", "m1", "open", "2026-03-01T16:00:00Z", "maybe"),  # bad flag
    ]
    return pd.DataFrame(rows, columns=["event_id", "user_id", "message_id", "event_type", "timestamp", "machine_open"])


def test_good_and_bad_rows_are_accounted_for():
    res = validate_events(_events())
    assert res.read == 17
    assert res.n_accepted + res.n_rejected == res.read
    assert sorted(res.accepted["event_id"]) == ["e1", "e2", "e3", "e4", "e5", "e6"]
    reasons = dict(zip(res.rejects["event_id"], res.rejects["reason"]))
    assert reasons["e7"] == "no send for message_id"
    assert reasons["e8"] == "before its send"
    assert reasons["e9"] == "unknown event_type"
    assert reasons["e10"] == "timestamp has no UTC offset (naive)"
    assert reasons["e11"] == "unparseable timestamp"
    assert reasons["e12"] == "timestamp before 1990"
    assert reasons["e13"] == "timestamp in the future"
    assert reasons["e14"] == "missing user_id"
    assert reasons["e15"] == "machine_open is not a boolean"
    assert sorted(res.rejects.loc[res.rejects["event_id"] == "e1", "reason"]) == [
        "duplicate event (kept once)",
        "duplicate event_id with different contents",
    ]


def test_timestamps_become_utc_and_flags_booleans():
    acc = validate_events(_events()).accepted.set_index("event_id")
    assert str(acc["timestamp"].dtype) == "datetime64[us, UTC]"
    assert acc.loc["e6", "timestamp"] == pd.Timestamp("2026-03-01T14:00:30Z")
    assert acc.loc["e5", "machine_open"] is True or bool(acc.loc["e5", "machine_open"]) is True
    assert bool(acc.loc["e2", "machine_open"]) is False
    assert pd.isna(acc.loc["e6", "machine_open"]) and pd.isna(acc.loc["e1", "machine_open"])


def test_csv_and_parquet_folder_read_alike(tmp_path):
    ev = _events()
    ev.to_csv(tmp_path / "ev.csv", index=False)
    (tmp_path / "pq").mkdir()
    ev.iloc[:8].astype(str).replace("None", None).to_parquet(tmp_path / "pq" / "a.parquet")
    ev.iloc[8:].astype(str).replace("None", None).to_parquet(tmp_path / "pq" / "b.parquet")
    a, b = read_events(tmp_path / "ev.csv"), read_events(tmp_path / "pq")
    assert a.read == b.read == 17
    assert list(a.accepted["event_id"]) == list(b.accepted["event_id"])


def test_missing_column_and_unreadable_files_stop_with_one_line(tmp_path):
    _events().drop(columns=["message_id"]).to_csv(tmp_path / "no_msg.csv", index=False)
    with pytest.raises(ContractError, match="lacks required column.*message_id"):
        read_events(tmp_path / "no_msg.csv")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ContractError) as err:
        read_events(tmp_path / "broken.parquet")
    assert "\n" not in str(err.value)
    with pytest.raises(ContractError, match="not found"):
        read_events(tmp_path / "nope.parquet")
    (tmp_path / "latin1.csv").write_bytes("event_id,user_id\n\xe9,\xff\n".encode("latin-1"))
    with pytest.raises(ContractError, match="UTF-8"):
        read_events(tmp_path / "latin1.csv")


def test_users_validation(tmp_path):
    pd.DataFrame({
        "user_id": ["u1", "u2", "u3", "u1", None],
        "timezone": ["Europe/Berlin", "Europe/Berlinn", None, "UTC", "UTC"],
    }).to_csv(tmp_path / "users.csv", index=False)
    res = read_users(tmp_path / "users.csv")
    assert res.read == 5 and res.n_accepted == 2 and res.n_rejected == 3
    assert set(res.rejects["reason"]) == {"unknown timezone", "duplicate user_id", "missing user_id"}
    assert pd.isna(res.accepted.set_index("user_id").loc["u3", "timezone"])


def test_shipped_sample_csv_meets_the_contract():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "data" / "sample"
    ev, us = read_events(root / "events.csv"), read_users(root / "users.csv")
    assert ev.n_rejected == 0 and ev.n_accepted == ev.read > 500
    assert us.n_rejected == 0 and set(ev.accepted["user_id"]) <= set(us.accepted["user_id"])
    assert set(ev.accepted["event_type"]) >= {"send", "open", "click"}
