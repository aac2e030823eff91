"""Segment / RudderStack calls -> the activity table and the users' device zones (docs/importers.md)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sendtime.features.contract import ContractError
from sendtime.features.importers.segment import import_segment

FORMATS = Path(__file__).resolve().parents[1] / "formats"


def test_segment_calls_become_activity_users_and_rejects_with_nothing_lost():
    res = import_segment(FORMATS / "segment_calls.jsonl")
    assert res.read == 13 and res.not_activity == 1
    assert res.read == len(res.activity) + res.not_activity + len(res.rejects)
    a = res.activity.set_index("event_id")
    assert a.loc["m-1", "event_type"] == "app_open" and a.loc["m-2", "event_type"] == "page_view"
    assert a.loc["m-3", "event_type"] == "purchase" and a.loc["m-3", "value"] == 42.5 and a.loc["m-3", "currency"] == "EUR"
    assert a.loc["m-4", "timestamp"] == pd.Timestamp("2026-03-03T12:05:00Z")  # originalTimestamp, its offset honoured
    assert a.loc["m-5", "event_type"] == "session" and a.loc["m-9", "event_type"] == "session"
    why = dict(zip(res.rejects["source_row"], res.rejects["reason"]))
    assert why[6] == "duplicate event (kept once)"
    assert why[7].startswith("missing user_id")
    assert why[8] == "unparseable timestamp" and why[9] == "value is not a number"
    assert why[11].startswith("malformed line: not valid JSON") and why[12] == "malformed line: not a JSON object"
    assert res.users.set_index("user_id")["timezone"].to_dict() == {"u1": "Europe/Berlin", "u2": "Asia/Tokyo"}


def test_segment_user_ids_can_be_the_recipients_address_as_the_mail_importers_write_it():
    res = import_segment(FORMATS / "segment_calls.jsonl", user_ids="email")
    # only the identify carries an address: its own call is not activity, so every activity line is rejected
    assert res.activity.empty and res.users["user_id"].tolist() == ["ann@example.com"]
    with pytest.raises(ContractError, match="user_ids must be one of"):
        import_segment(FORMATS / "segment_calls.jsonl", user_ids="phone")


def test_an_empty_or_missing_segment_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    for path in (tmp_path / "empty.jsonl", tmp_path / "nope.jsonl"):
        with pytest.raises(ContractError) as e:
            import_segment(path)
        assert "\n" not in str(e.value)


def test_the_latest_zone_is_the_latest_instant_not_the_latest_text(tmp_path):
    """'2026-03-02T09:30:00Z' is later than '2026-03-02T10:00:00+02:00' (08:00 UTC), though its text sorts first."""
    import json

    from sendtime.features.importers.segment import import_segment

    calls = [{"type": "identify", "userId": "u1", "timestamp": "2026-03-02T09:30:00Z", "context": {"timezone": "Europe/London"}},
             {"type": "identify", "userId": "u1", "timestamp": "2026-03-02T10:00:00+02:00", "context": {"timezone": "Europe/Berlin"}}]
    p = tmp_path / "calls.jsonl"
    p.write_text("\n".join(json.dumps(c) for c in calls) + "\n")
    res = import_segment(p)
    assert res.users.set_index("user_id")["timezone"].to_dict() == {"u1": "Europe/London"}
