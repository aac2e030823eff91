"""The OneSignal Event Streams importer: push, e-mail and SMS receipts into the event contract."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sendtime.features.contract import ContractError, read_events
from sendtime.features.importers import import_events, import_file

SAMPLE = Path(__file__).parents[1] / "formats" / "onesignal_events.jsonl"


def test_every_record_ends_as_an_event_or_a_reject_with_its_channel():
    res = import_file("onesignal", SAMPLE)
    assert (res.read, res.n_accepted, res.n_rejected) == (17, 10, 7)
    ev = res.events.set_index("event_id")
    # a push send and its tap: the tap is the push's open, and flagged human
    assert ev.loc["e01", ["event_type", "channel"]].tolist() == ["send", "push"]
    assert ev.loc["e03", "event_type"] == "open" and ev.loc["e03", "machine_open"] == False  # noqa: E712
    # e-mail opens stay unflagged (OneSignal does not say which are a proxy's), clicks are clicks
    assert ev.loc["e05", "channel"] == "email" and pd.isna(ev.loc["e05", "machine_open"])
    assert ev.loc["e06", "event_type"] == "click" and ev.loc["e10", "event_type"] == "complaint"
    assert ev.loc["e08", "event_type"] == "bounce" and ev.loc["e09", "event_type"] == "unsubscribe"
    assert ev.loc["e15", ["event_type", "channel", "message_id"]].tolist() == ["send", "sms", "sms-3:u4"]
    assert ev.loc["e07", "timestamp"] == pd.Timestamp(1772460010, unit="s", tz="UTC")  # Unix seconds as a fallback
    reasons = res.rejects.set_index("source_row")["reason"]
    assert reasons[1].startswith("not used: OneSignal 'message.push.received'")
    assert reasons[10].startswith("not used: OneSignal 'message.iam.displayed'")
    assert reasons[11] == "missing event.external_id"
    assert reasons[12].startswith("not valid JSON")
    assert reasons[13] == "no send for message_id"
    assert reasons[15] == "event.datetime has no UTC offset (naive)"
    assert reasons[16] == "duplicate event (kept once)"


def test_the_written_parquet_keeps_the_channel_and_reads_back_through_the_contract(tmp_path):
    out = tmp_path / "push.parquet"
    counts = import_events("onesignal", SAMPLE, out)
    assert counts["accepted"] == 10 and Path(counts["rejects"]).exists()
    back = read_events(out)
    assert back.n_accepted == 10 and back.n_rejected == 0
    sends = back.accepted.loc[back.accepted["event_type"] == "send"].set_index("message_id")["channel"]
    assert sends.to_dict() == {"n-100:u1": "push", "n-100:u3": "push", "em-7:u2": "email", "sms-3:u4": "sms"}


def test_onesignal_ids_and_unknown_kinds(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"event": {"id": "a", "kind": "message.push.sent", "datetime": "2026-03-02T14:00:00Z", '
                 '"onesignal_id": "os-1"}, "message": {"id": "n"}}\n'
                 '{"event": {"id": "b", "kind": "message.fax.sent", "datetime": "2026-03-02T14:00:00Z", "onesignal_id": "os-1"}, "message": {"id": "n"}}\n')
    res = import_file("onesignal", p, user_ids="onesignal_id")
    assert res.events["user_id"].tolist() == ["os-1"]
    assert res.rejects["reason"].tolist() == ["unknown OneSignal event kind 'message.fax.sent'"]
    with pytest.raises(ContractError, match="external_id, onesignal_id"):
        import_file("onesignal", p, user_ids="email")


def test_the_import_command_takes_the_onesignal_format(tmp_path):
    from typer.testing import CliRunner

    from sendtime.cli import app

    out = tmp_path / "ev.parquet"
    r = CliRunner().invoke(app, ["import", "--format", "onesignal", "--in", str(SAMPLE), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "read 17 = accepted 10 + rejected 7" in r.output and out.exists()
