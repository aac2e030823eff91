"""Channels, conversions and unsubscribes: the contract's optional columns and the message extras."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sendtime.features.contract import validate_events
from sendtime.features.message_extras import attach_extras, build_extras, split_channel
from sendtime.features.messages import build_messages

NOW = pd.Timestamp("2026-02-01", tz="UTC")


def _events(rows):
    cols = ["event_id", "user_id", "message_id", "event_type", "timestamp", "channel", "value", "currency"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows], columns=cols)


def test_channel_value_and_currency_are_judged_row_by_row():
    raw = _events([
        ("1", "a", "m1", "send", "2026-01-01T10:00:00Z", " Push ", None, None),
        ("2", "a", "m1", "conversion", "2026-01-01T12:00:00Z", None, "12.5", "usd"),
        ("3", "a", "m2", "conversion", "2026-01-01T12:00:00Z", None, "3", "USD"),     # no send
        ("4", "a", "m1", "conversion", "2026-01-01T12:05:00Z", None, "-1", "USD"),    # negative value
        ("5", "a", "m1", "conversion", "2026-01-01T12:06:00Z", None, "lots", "USD"),  # not a number
        ("6", "a", "m1", "conversion", "2026-01-01T12:07:00Z", None, "4", "EURO"),    # not ISO 4217
        ("7", "b", "m3", "send", "2026-01-01T10:00:00Z", "fax", None, None),          # unknown channel
        ("8", "b", "m4", "send", "2026-01-01T10:00:00Z", None, None, None),           # no channel: email
    ])
    r = validate_events(raw, now=NOW)
    assert r.read == 8 and r.n_accepted == 3 and r.n_rejected == 5
    acc = r.accepted.set_index("event_id")
    assert acc.loc["1", "channel"] == "push" and acc.loc["8", "channel"] == "email"
    assert acc.loc["2", "value"] == 12.5 and acc.loc["2", "currency"] == "USD"
    assert r.rejects.set_index("event_id")["reason"].to_dict() == {
        "3": "no send for message_id", "4": "value is not a non-negative number",
        "5": "value is not a non-negative number", "6": "currency is not a three-letter ISO 4217 code",
        "7": "unknown channel (use email, push or sms)"}


def _history():
    raw = _events([
        ("1", "a", "e1", "send", "2026-01-05T10:00:00Z", "email", None, None),
        ("2", "a", "e1", "click", "2026-01-05T11:00:00Z", None, None, None),
        ("3", "a", "e1", "conversion", "2026-01-05T11:30:00Z", None, 20.0, "USD"),
        ("4", "a", "e1", "conversion", "2026-01-07T11:30:00Z", None, 99.0, "USD"),   # after the 24 h horizon
        ("5", "a", "e1", "conversion", "2026-01-05T12:00:00Z", None, 5.0, "EUR"),    # another currency
        ("6", "a", "p1", "send", "2026-01-05T18:00:00Z", "push", None, None),
        ("7", "a", "p1", "open", "2026-01-05T18:00:40Z", None, None, None),          # a tap 40 s after
        ("8", "b", "e2", "send", "2026-01-05T23:00:00Z", "email", None, None),
        ("9", "b", "e2", "unsubscribe", "2026-01-06T00:10:00Z", None, None, None),
        ("10", "b", "e3", "send", "2026-01-06T10:00:00Z", "email", None, None),
        ("11", "b", "e3", "open", "2026-01-06T10:00:05Z", None, None, None),         # unflagged e-mail open
    ])
    ev = validate_events(raw, now=NOW).accepted
    users = pd.DataFrame({"user_id": ["a", "b"], "timezone": ["UTC", "UTC"], "segment": ["x", "x"]})
    return ev, build_messages(ev, users)


def test_extras_carry_channel_conversions_within_the_horizon_and_the_first_unsubscribe():
    ev, msgs = _history()
    extras = build_extras(ev, msgs, horizon_hours=24)
    assert extras.currency == "USD" and "1 conversions in currencies other than USD" in extras.note
    m = attach_extras(msgs, extras).set_index("message_id")
    assert m.loc["e1", "conversion_value"] == 20.0  # the later one is past the horizon, the EUR one not valued
    assert m.loc["e1", "t_conversion"] == pd.Timestamp("2026-01-05T11:30:00Z")
    assert m.loc["p1", "channel"] == "push" and m.loc["e2", "channel"] == "email"
    assert m.loc["e2", "t_negative"] == pd.Timestamp("2026-01-06T00:10:00Z") and pd.isna(m.loc["e3", "t_negative"])
    assert extras.channels == {"email": 3, "push": 1}


def test_a_channel_learns_from_its_sends_and_takes_the_others_certain_human_opens_as_activity():
    ev, msgs = _history()
    m = attach_extras(msgs, build_extras(ev, msgs, 24))
    push, evidence = split_channel(m, "push")
    assert push["message_id"].tolist() == ["p1"]
    # the fast tap is a human open on the push channel (a proxy never taps)
    assert push["t_open_human_flag"].iloc[0] == pd.Timestamp("2026-01-05T18:00:40Z")
    assert push[["t_open_unk_fast", "t_open_unk_slow", "t_open_machine_flag"]].isna().all(axis=None)
    # e-mail evidence: the click (certain), not the unflagged 5-second open (maybe a proxy)
    assert evidence[["user_id", "event_type"]].values.tolist() == [["a", "email_open"]]
    assert evidence["timestamp"].iloc[0] == pd.Timestamp("2026-01-05T11:00:00Z")
    email, evidence = split_channel(m, "email")
    assert set(email["message_id"]) == {"e1", "e2", "e3"}
    assert evidence["event_type"].tolist() == ["push_open"]
    assert np.isnat(email["t_open_human_flag"].to_numpy(dtype="datetime64[us]")).all()  # e-mail columns untouched


def test_the_duckdb_engine_rejects_conversions_without_their_send_as_pandas_does(tmp_path):
    from sendtime.features.contract import read_events
    from sendtime.features.duckdb_engine import build_messages_duckdb

    ev = pd.DataFrame({"event_id": ["1", "2", "3", "4"], "user_id": ["a"] * 4, "message_id": ["m", "m", "x", "m"],
                       "event_type": ["send", "conversion", "conversion", "conversion"],
                       "timestamp": pd.to_datetime(["2026-01-01T10:00Z", "2026-01-01T11:00Z", "2026-01-01T11:00Z",
                                                    "2026-01-01T09:00Z"], utc=True),
                       "machine_open": pd.array([None] * 4, dtype="boolean"), "propensity": np.nan})
    ev.to_parquet(tmp_path / "e.parquet", index=False)
    users = pd.DataFrame({"user_id": ["a"], "timezone": ["UTC"], "segment": ["x"]})
    pandas_rejects = read_events(tmp_path / "e.parquet").rejects.set_index("event_id")["reason"].to_dict()
    r = build_messages_duckdb(tmp_path / "e.parquet", users, NOW, "UTC", rejects_path=tmp_path / "rej.csv")
    duck = pd.read_csv(tmp_path / "rej.csv", dtype=str).set_index("event_id")["reason"].to_dict()
    assert duck == pandas_rejects == {"3": "no send for message_id", "4": "before its send"}
    assert (r.n_accepted, r.n_rejected) == (2, 2)
