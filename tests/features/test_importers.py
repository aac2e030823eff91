"""Importers of the email platforms' exports (features/importers/) on the samples in
tests/formats/: exact counts, types, known timestamps, the machine-open flag, and malformed
input either rejected row by row with a reason or stopped with a one-line ContractError."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sendtime.features.contract import EVENT_TYPES, ContractError, read_events
from sendtime.features.importers import (
    import_csv,
    import_events,
    import_file,
    import_mailchimp,
    import_sendgrid,
    import_ses,
    sendgrid_message_id,
)

FORMATS = Path(__file__).resolve().parents[1] / "formats"
GENERIC = dict(
    columns={"event_id": "Event Id", "user_id": "Recipient", "message_id": "Mailing", "event_type": "Action",
             "timestamp": "When (local)", "machine_open": "Apple MPP"},
    event_types={"SENT": "send", "OPENED": "open", "CLICKED": "click", "BOUNCED": "bounce",
                 "UNSUBSCRIBED": "unsubscribe", "SOFT_BOUNCE": None},
    timestamp_format="%d.%m.%Y %H:%M",
    timezone="Europe/Berlin",
)


def _types(res) -> dict[str, int]:
    return res.events["event_type"].value_counts().to_dict()


def _one(res, **match) -> pd.Series:
    ev = res.events
    mask = pd.Series(True, index=ev.index)
    for k, v in match.items():
        mask &= ev[k] == v
    rows = ev[mask]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def _check_contract_frame(res) -> None:
    ev = res.events
    assert list(ev.columns) == ["event_id", "user_id", "message_id", "event_type", "timestamp", "machine_open", "propensity"]
    assert str(ev["timestamp"].dt.tz) == "UTC"
    assert set(ev["event_type"]) <= set(EVENT_TYPES)
    assert res.n_accepted + res.n_rejected == res.read
    assert list(res.rejects.columns) == ["source_row", "record", "reason"]
    assert res.rejects["reason"].notna().all() and res.rejects["record"].map(lambda t: isinstance(t, str) and t != "").all()


# -- SendGrid ---------------------------------------------------------------------------------
def test_sendgrid_sample():
    res = import_sendgrid(FORMATS / "sendgrid_events.json")
    _check_contract_frame(res)
    assert (res.read, res.n_accepted, res.n_rejected) == (15, 11, 4)
    assert _types(res) == {"send": 4, "open": 3, "click": 1, "bounce": 1, "unsubscribe": 1, "complaint": 1}
    assert res.reasons() == {"not used: 'processed' (the message's 'delivered' event is its send)": 3,
                             "not used: SendGrid 'deferred' event (no contract equivalent)": 1}
    assert res.rejects["source_row"].tolist() == [0, 1, 5, 12]

    human = _one(res, event_id="b3Blbi1hbGljZS1odW1hbi0x")
    assert human["timestamp"] == pd.Timestamp("2026-03-03T17:12:40Z")
    assert human["user_id"] == "alice@example.com"
    # the .filter suffix goes; one API call went to alice and bob, so the recipient is part of the id
    assert human["message_id"] == "Gk2hR7dTQ1yKc9mB0xWzLw:alice@example.com"
    assert not pd.isna(human["machine_open"]) and not bool(human["machine_open"])
    mpp = _one(res, event_id="b3Blbi1hbGljZS1tcHAtMQ")
    assert bool(mpp["machine_open"]) is True
    assert res.events.loc[res.events["event_type"] != "open", "machine_open"].isna().all()

    bob = res.events[res.events["user_id"] == "bob@example.com"]  # "Bob@Example.com" in the file
    assert set(bob["event_type"]) == {"send", "open", "unsubscribe"}
    assert set(bob["message_id"]) == {"Gk2hR7dTQ1yKc9mB0xWzLw:bob@example.com"}
    # carol's message bounced: no 'delivered', so 'processed' is its send
    carol_send = _one(res, user_id="carol@example.org", event_type="send")
    assert carol_send["event_id"] == "cHJvY2Vzc2VkLWNhcm9sLTE"
    assert _one(res, user_id="alice@example.com", event_type="send")["timestamp"] == pd.Timestamp("2026-03-03T14:00:04Z")
    # a dave message id ended in '.recvd…' rather than '.filter…'
    assert _one(res, user_id="dave@example.net", event_type="complaint")["message_id"] == "Zt5uY2wQS8aBn1cD4eFgHi:dave@example.net"


def test_sendgrid_message_id_keeps_the_x_message_id():
    assert sendgrid_message_id("14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0") == "14c5d75ce93.dfd.64b469"
    assert sendgrid_message_id("XBg2anf2TqCy6WXKQFhieQ.filter0905p1mdw1-4434-59E0C6FF-3.0") == "XBg2anf2TqCy6WXKQFhieQ"
    assert sendgrid_message_id("Ua9z9lSTSaqYBWJe_Xfc-Q.recvd-6b7b8-abcd-1-65E3F1A3-9.0") == "Ua9z9lSTSaqYBWJe_Xfc-Q"
    assert sendgrid_message_id(" Ua9z9lSTSaqYBWJe_Xfc-Q ") == "Ua9z9lSTSaqYBWJe_Xfc-Q"


def test_sendgrid_hashed_user_ids_keep_addresses_out():
    res = import_sendgrid(FORMATS / "sendgrid_events.json", user_ids="sha256", salt="pepper")
    assert res.n_accepted == 11
    text = res.events.astype(str).to_csv()
    assert "@" not in text
    assert res.events["user_id"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert res.events["user_id"].nunique() == 4
    other = import_sendgrid(FORMATS / "sendgrid_events.json", user_ids="sha256", salt="salt")
    assert set(other.events["user_id"]).isdisjoint(res.events["user_id"])
    with pytest.raises(ContractError, match="user_ids must be one of"):
        import_sendgrid(FORMATS / "sendgrid_events.json", user_ids="md5")


def test_sendgrid_malformed_rows_are_rejected_with_reasons():
    res = import_sendgrid(FORMATS / "sendgrid_malformed.json")
    _check_contract_frame(res)
    assert (res.read, res.n_accepted, res.n_rejected) == (10, 1, 9)
    assert dict(zip(res.rejects["source_row"], res.rejects["reason"])) == {
        1: "timestamp is not a unix time in seconds",
        2: "unknown SendGrid event 'teleport'",
        3: "missing email",
        4: "missing sg_event_id",
        5: "no send for message_id",
        6: "record is not a JSON object",
        7: "machine_open is not a boolean",
        8: "before its send",
        9: "timestamp in the future",
    }
    # the original content comes back as text
    assert json.loads(res.rejects.loc[res.rejects["source_row"] == 2, "record"].iloc[0])["event"] == "teleport"


def test_sendgrid_bad_json_is_a_one_line_contract_error():
    with pytest.raises(ContractError) as e:
        import_sendgrid(FORMATS / "sendgrid_bad_json.json")
    msg = str(e.value)
    assert "\n" not in msg and "not valid JSON" in msg and "line 21" in msg


def test_sendgrid_webhook_batch_defers_the_send_check():
    """Passed as a parsed list with require_sends=False (the route's way), an open whose send is
    not in the batch is kept; one whose send is in the batch must still come after it."""
    events = json.loads((FORMATS / "sendgrid_events.json").read_text())
    opens_only = [e for e in events if e["event"] == "open"]
    assert import_sendgrid(opens_only).n_accepted == 0
    assert import_sendgrid(opens_only, require_sends=False).n_accepted == 3
    early = dict(events[3], event="open", sg_event_id="early", timestamp=events[3]["timestamp"] - 60)
    res = import_sendgrid([events[3], early], require_sends=False)
    assert res.reasons() == {"before its send": 1}


# -- Mailchimp --------------------------------------------------------------------------------
def test_mailchimp_json_sample():
    res = import_mailchimp(FORMATS / "mailchimp_activity.json")
    _check_contract_frame(res)
    assert (res.read, res.n_accepted, res.n_rejected) == (9, 9, 0)
    assert _types(res) == {"send": 4, "open": 3, "click": 1, "bounce": 1}
    sends = res.events[res.events["event_type"] == "send"]
    assert (sends["timestamp"] == pd.Timestamp("2026-03-05T15:00:00Z")).all()
    assert set(sends["message_id"]) == {f"42694e9e57:{u}" for u in ("alice@example.com", "bob@example.com", "carol@example.org", "dave@example.net")}
    alice_opens = res.events[(res.events["user_id"] == "alice@example.com") & (res.events["event_type"] == "open")]
    assert pd.Timestamp("2026-03-05T19:45:03Z") in set(alice_opens["timestamp"])
    assert _one(res, user_id="dave@example.net", event_type="open")["timestamp"] == pd.Timestamp("2026-03-06T07:30:00Z")  # +01:00 in the file
    assert res.events["machine_open"].isna().all()  # Mailchimp reports no machine-open flag
    # ids are stable: importing twice gives the same event ids (re-imports deduplicate)
    assert import_mailchimp(FORMATS / "mailchimp_activity.json").events["event_id"].tolist() == res.events["event_id"].tolist()


def test_mailchimp_csv_sample():
    res = import_mailchimp(FORMATS / "mailchimp_activity.csv")
    _check_contract_frame(res)
    assert (res.read, res.n_accepted, res.n_rejected) == (6, 6, 0)
    assert _types(res) == {"send": 3, "open": 1, "click": 1, "bounce": 1}
    assert set(res.events.loc[res.events["user_id"] == "bob@example.com", "event_type"]) == {"send"}
    assert _one(res, user_id="alice@example.com", event_type="open")["timestamp"] == pd.Timestamp("2026-03-12T16:05:00Z")


def test_mailchimp_send_time_comes_from_the_option_when_the_file_lacks_it(tmp_path):
    rep = json.loads((FORMATS / "mailchimp_activity.json").read_text())
    del rep["send_time"]
    path = tmp_path / "activity.json"
    path.write_text(json.dumps(rep))
    with pytest.raises(ContractError) as e:
        import_mailchimp(path)
    assert "\n" not in str(e.value) and "42694e9e57 has no send_time" in str(e.value)
    res = import_mailchimp(path, send_time={"42694e9e57": "2026-03-05T16:00:00+01:00"})
    assert res.n_accepted == 9
    assert set(res.events.loc[res.events["event_type"] == "send", "timestamp"]) == {pd.Timestamp("2026-03-05T15:00:00Z")}
    with pytest.raises(ContractError, match="no UTC offset"):
        import_mailchimp(path, send_time="2026-03-05T15:00:00")


def test_mailchimp_malformed_rows_are_rejected_with_reasons():
    res = import_mailchimp(FORMATS / "mailchimp_malformed.json")
    _check_contract_frame(res)
    assert (res.read, res.n_accepted, res.n_rejected) == (7, 1, 6)
    assert res.reasons() == {"missing email_address": 2, "unknown Mailchimp action 'forward'": 1, "unparseable timestamp": 1,
                             "timestamp has no UTC offset (naive)": 1, "before its send": 1}


def test_mailchimp_bad_json_is_a_one_line_contract_error():
    with pytest.raises(ContractError) as e:
        import_mailchimp(FORMATS / "mailchimp_bad_json.json")
    assert "\n" not in str(e.value) and "not valid JSON" in str(e.value)


# -- Amazon SES -------------------------------------------------------------------------------
def test_ses_sample():
    res = import_ses(FORMATS / "ses_events.json")
    _check_contract_frame(res)
    assert (res.read, res.n_accepted, res.n_rejected) == (14, 9, 5)
    assert _types(res) == {"send": 5, "open": 1, "click": 1, "bounce": 1, "complaint": 1}
    assert res.reasons() == {"not used: 'Send' (the message's Delivery event is its send)": 4,
                             "open of a message with 2 recipients: cannot tell whose": 1}
    alice = "0102018e0a1b2c3d-1f2e3d4c-aaaa-4b5c-9d8e-7f6a5b4c3d2e-000000:alice@example.com"
    assert _one(res, message_id=alice, event_type="open")["timestamp"] == pd.Timestamp("2026-03-10T13:45:10Z")
    assert _one(res, message_id=alice, event_type="send")["timestamp"] == pd.Timestamp("2026-03-10T13:00:02.511Z")  # the Delivery
    # bob's message bounced: no Delivery, so the Send (mail.timestamp) is its send
    assert _one(res, user_id="bob@example.com", event_type="send")["timestamp"] == pd.Timestamp("2026-03-10T13:00:00Z")
    # the complaint came wrapped in an SNS notification
    assert _one(res, event_type="complaint")["user_id"] == "carol@example.org"
    # one message to two recipients: one send each
    assert set(res.events.loc[res.events["message_id"].str.startswith("0102018e0a1b2c40"), "user_id"]) == {"dave@example.net", "erin@example.com"}
    assert res.events["machine_open"].isna().all()


def test_ses_malformed_lines_are_rejected_one_by_one():
    res = import_ses(FORMATS / "ses_malformed.jsonl")
    _check_contract_frame(res)
    assert (res.read, res.n_accepted, res.n_rejected) == (7, 1, 6)
    assert dict(zip(res.rejects["source_row"], res.rejects["reason"])) == {
        1: "not valid JSON: Expecting ',' delimiter at column 145",
        2: "missing mail.messageId",
        3: "unknown SES eventType 'teleport'",
        4: "unparseable timestamp in delivery.timestamp",
        5: "not used: SES 'DeliveryDelay' event (no contract equivalent)",
        6: "missing open.timestamp",
    }
    # the Delivery with a bad time does not displace the message's Send
    assert _types(res) == {"send": 1}


def test_ses_array_with_trailing_garbage_is_a_contract_error(tmp_path):
    path = tmp_path / "ses.json"
    path.write_text((FORMATS / "ses_events.json").read_text() + "\n]")
    with pytest.raises(ContractError, match="not valid JSON"):
        import_ses(path)


# -- generic CSV ------------------------------------------------------------------------------
def test_generic_csv_with_mapping_format_and_zone():
    res = import_csv(FORMATS / "generic_events.csv", **GENERIC)
    _check_contract_frame(res)
    assert (res.read, res.n_accepted, res.n_rejected) == (10, 9, 1)
    assert res.reasons() == {"not used: event type 'SOFT_BOUNCE'": 1}
    assert _types(res) == {"send": 3, "open": 3, "click": 1, "bounce": 1, "unsubscribe": 1}
    assert _one(res, event_id="e03")["timestamp"] == pd.Timestamp("2026-03-02T11:30:00Z")  # 12:30 CET
    assert _one(res, event_id="e08")["timestamp"] == pd.Timestamp("2026-03-30T07:00:00Z")  # 09:00 CEST, after the change
    assert bool(_one(res, event_id="e02")["machine_open"]) is True
    assert _one(res, event_id="e09")["machine_open"] is pd.NA


def test_generic_csv_malformed_rows_are_rejected_with_reasons():
    res = import_csv(FORMATS / "generic_malformed.csv", **GENERIC)
    _check_contract_frame(res)
    assert (res.read, res.n_accepted, res.n_rejected) == (7, 1, 6)
    assert dict(zip(res.rejects["source_row"], res.rejects["reason"])) == {
        1: "unknown event_type",
        2: "missing user_id",
        3: "timestamp does not match format %d.%m.%Y %H:%M",
        4: "local time does not exist or is ambiguous in Europe/Berlin (DST change)",
        5: "machine_open is not a boolean",
        6: "no send for message_id",
    }
    assert json.loads(res.rejects["record"].iloc[0])["Action"] == "FORWARDED"


def test_generic_csv_without_a_zone_leaves_naive_times_to_the_contract():
    opts = {k: v for k, v in GENERIC.items() if k not in ("timezone", "timestamp_format")}
    res = import_csv(FORMATS / "generic_events.csv", **opts)
    assert res.n_accepted == 0 and set(res.reasons()) == {"not used: event type 'SOFT_BOUNCE'", "unparseable timestamp"}


def test_generic_csv_unix_times_and_generated_ids(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("uid,mid,kind,at\nu1,m1,send,1772546400\nu1,m1,open,1772550000\nu1,m1,open,1772550000\nu1,m1,open,soon\n")
    res = import_csv(path, columns={"user_id": "uid", "message_id": "mid", "event_type": "kind", "timestamp": "at"},
                     timestamp_format="unix")
    assert (res.read, res.n_accepted) == (4, 2)
    assert res.reasons() == {"duplicate event (kept once)": 1, "timestamp is not a unix time in seconds": 1}
    assert res.events["event_id"].str.startswith("csv-").all()
    assert _one(res, event_type="open")["timestamp"] == pd.Timestamp("2026-03-03T15:00:00Z")


@pytest.mark.parametrize("options, words", [
    ({"columns": {"message_id": "Mailing", "user_id": "Recipient", "event_type": "Action", "timestamp": "When (local)"}}, "Mailing (for message_id)"),
    ({"columns": {"campaign": "Mailing"}}, "'campaign' is not a contract column"),
    ({"event_types": {"SENT": "delivered"}}, "event_types maps to delivered"),
    ({"timezone": "Mars/Olympus"}, "not an IANA time zone"),
])
def test_generic_csv_bad_options_and_missing_columns_are_one_line_errors(options, words):
    with pytest.raises(ContractError) as e:
        import_csv(FORMATS / "generic_missing_column.csv", **options)
    assert words in str(e.value) and "\n" not in str(e.value)


# -- dispatcher and the CLI-facing writer -----------------------------------------------------
def test_dispatcher_checks_format_and_options():
    assert import_file("SendGrid", FORMATS / "sendgrid_events.json").n_accepted == 11
    with pytest.raises(ContractError, match="unknown format 'mailgun'"):
        import_file("mailgun", FORMATS / "sendgrid_events.json")
    with pytest.raises(ContractError, match="format ses has no option timezone"):
        import_file("ses", FORMATS / "ses_events.json", timezone="UTC")
    with pytest.raises(ContractError, match="file not found"):
        import_file("sendgrid", FORMATS / "nope.json")


@pytest.mark.parametrize("fmt, name, options", [
    ("sendgrid", "sendgrid_events.json", {}),
    ("mailchimp", "mailchimp_activity.json", {}),
    ("mailchimp", "mailchimp_activity.csv", {}),
    ("ses", "ses_events.json", {}),
    ("csv", "generic_events.csv", GENERIC),
])
def test_import_events_writes_contract_parquet_and_rejects(fmt, name, options, tmp_path):
    from sendtime.features.duckdb_engine import usable

    out = tmp_path / "out" / "events.parquet"
    counts = import_events(fmt, FORMATS / name, out, **options)
    assert counts["read"] == counts["accepted"] + counts["rejected"]
    assert counts["events"] == str(out) and counts["rejects"] == str(tmp_path / "out" / "events_rejects.csv")
    back = read_events(out)  # the nightly run's reader
    assert back.n_accepted == counts["accepted"] and back.n_rejected == 0
    assert usable(out) is None  # typed Parquet: the DuckDB engine reads it as is
    rejects = pd.read_csv(counts["rejects"])
    assert list(rejects.columns) == ["source_row", "record", "reason"] and len(rejects) == counts["rejected"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["events.parquet", "events_rejects.csv"]  # no temp files left


def test_import_events_with_nothing_accepted_still_writes_a_typed_file(tmp_path):
    from sendtime.features.duckdb_engine import usable

    out = tmp_path / "none.parquet"
    counts = import_events("sendgrid", FORMATS / "sendgrid_malformed.json", out, now=pd.Timestamp("1999-01-01", tz="UTC"))
    assert counts["accepted"] == 0 and counts["rejected"] == 10
    assert len(pd.read_parquet(out)) == 0 and usable(out) is None
