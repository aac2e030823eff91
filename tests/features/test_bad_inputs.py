"""A corpus of bad inputs, each with its expected outcome.

Every input ends in exactly one of three ways, and never in any other exception type:

* accepted (the row is in ``accepted``),
* rejected into ``rejects`` with a specific ``reason`` (and ``accepted + rejected == read``),
* a :class:`ContractError` whose message is one line naming the problem (the file cannot be used).

Decisions documented here:

* A 0-byte file is a ContractError ("... is empty (0 bytes)"): there is not even a header, so
  nothing says it is an events or users table.
* A header-only CSV (or a 0-row Parquet file) is a valid, empty table: ``read == 0`` and an empty
  accepted frame with the usual columns and dtypes. ``sendtime nightly`` then stops with exit 2
  and "no sends before the as-of date".
* A CSV line with MORE fields than the header (a stray delimiter) is rejected on its own,
  "malformed line: expected 5 fields, saw 6", with its ``line`` number and its columns empty:
  the columns of that line can no longer be trusted, and guessing which field is extra would
  silently corrupt data. The rest of the file is used. A line with FEWER fields is padded with
  blanks by the reader, so it is rejected row by row ("missing event_type" ...).
* Bytes that are not UTF-8 make their line a reject ("malformed line: not valid UTF-8"); a file
  where MOST records are malformed (not UTF-8, or the wrong field count: the wrong file,
  delimiter or encoding) is a ContractError naming the first bad line. The CSV rules are in
  ``features/csv_reader.py`` and ``tests/features/test_csv_reader.py``.
* Extra columns are ignored (the corpus files carry an ``expect`` column and one more).
* Numbers as ids are fine and read as text; an integer id column with a null in it (which pandas
  turns into float64) still gives "42", not "42.0".

Committed inputs live in ``tests/features/bad_inputs/`` (see its README); Parquet cases are generated here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sendtime.features.contract import ContractError, ReadResult, read_events, read_users, validate_events
from sendtime.features.engagement import build_user_features
from sendtime.features.messages import build_messages

HERE = Path(__file__).resolve().parent
BAD = HERE / "bad_inputs"
ROOT = HERE.parent
NOW = pd.Timestamp("2026-04-01", tz="UTC")  # "now" for the future-timestamp check


def accounted(res: ReadResult) -> ReadResult:
    assert isinstance(res, ReadResult)
    assert res.n_accepted + res.n_rejected == res.read
    assert "reason" in res.rejects.columns
    assert res.rejects["reason"].notna().all()
    if res.n_rejected:
        assert res.rejects["source_row"].is_unique
    return res


def contract_error(fn, *words: str) -> str:
    """Run ``fn``; it must raise ContractError (and nothing else) with a one-line message."""
    with pytest.raises(ContractError) as err:
        fn()
    msg = str(err.value)
    assert msg and "\n" not in msg and "\r" not in msg, msg
    assert "Traceback" not in msg
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in {msg!r}"
    return msg


def _good_events(n: int = 3) -> pd.DataFrame:
    t = pd.Timestamp("2026-03-01T14:00:00Z")
    rows = []
    for i in range(n):
        rows.append((f"s{i}", f"u{i}", f"m{i}", "send", t + pd.Timedelta(hours=i)))
        rows.append((f"o{i}", f"u{i}", f"m{i}", "open", t + pd.Timedelta(hours=i, minutes=30)))
    ev = pd.DataFrame(rows, columns=["event_id", "user_id", "message_id", "event_type", "timestamp"])
    ev["timestamp"] = pd.to_datetime(ev["timestamp"], utc=True)
    return ev


# --------------------------------------------------------------------------- row-level corpora


def test_events_corpus_every_row_has_its_expected_outcome():
    raw = pd.read_csv(BAD / "events_corpus.csv", dtype=str, keep_default_na=False)
    res = accounted(read_events(BAD / "events_corpus.csv", now=NOW))
    assert res.read == len(raw)
    got = pd.Series("accepted", index=range(len(raw)), dtype=object)
    got[res.rejects["source_row"].to_numpy()] = res.rejects["reason"].to_numpy()
    mismatched = raw.assign(got=got.to_numpy()).loc[lambda d: d["got"] != d["expect"]]
    assert mismatched.empty, "\n" + mismatched[["event_id", "timestamp", "expect", "got"]].to_string()
    # the extra columns are ignored, not an error, and do not leak into the accepted table
    assert "campaign" not in res.accepted.columns and "expect" not in res.accepted.columns
    # rejects keep the original row as text, extra columns included
    assert {"campaign", "expect", "timestamp"} <= set(res.rejects.columns)
    acc = res.accepted.set_index("event_id")
    assert acc.loc["s1", "user_id"] == "1001"  # numbers as ids are text
    assert acc.loc["o2", "event_type"] == "open"  # "OPEN" is normalised, not rejected
    assert acc.loc["o1", "timestamp"] == pd.Timestamp("2026-03-02T10:30:00Z")
    assert acc.loc["of2", "timestamp"] == pd.Timestamp("2026-03-02T10:40:00.123456Z")
    assert str(res.accepted["timestamp"].dtype) == "datetime64[us, UTC]"


def test_users_corpus_every_row_has_its_expected_outcome():
    raw = pd.read_csv(BAD / "users_corpus.csv", dtype=str, keep_default_na=False)
    res = accounted(read_users(BAD / "users_corpus.csv"))
    got = pd.Series("accepted", index=range(len(raw)), dtype=object)
    got[res.rejects["source_row"].to_numpy()] = res.rejects["reason"].to_numpy()
    mismatched = raw.assign(got=got.to_numpy()).loc[lambda d: d["got"] != d["expect"]]
    assert mismatched.empty, "\n" + mismatched.to_string()
    acc = res.accepted.set_index("user_id")
    assert acc.loc["1002", "timezone"] == "America/New_York"  # blanks stripped
    assert pd.isna(acc.loc["1004", "timezone"])  # no zone: accepted, the default applies later
    assert acc.loc["1003", "segment"] == "unknown"
    assert "signup_channel" not in res.accepted.columns


def test_duplicate_event_id_with_different_contents_keeps_the_first():
    ev = _good_events(1)
    clash = ev.iloc[[0]].assign(user_id="someone-else")
    res = accounted(validate_events(pd.concat([ev, clash], ignore_index=True), now=NOW))
    assert res.reasons() == {"duplicate event_id with different contents": 1}
    assert res.accepted.set_index("event_id").loc["s0", "user_id"] == "u0"


def test_opens_and_clicks_without_any_send_are_rejected_not_a_crash():
    # Bug found: with no valid send at all, the send lookup crashed with
    # "TypeError: Cannot cast DatetimeArray to dtype float64".
    ev = _good_events(2)
    only_opens = ev.loc[ev["event_type"] == "open"].reset_index(drop=True)
    res = accounted(validate_events(only_opens, now=NOW))
    assert res.n_accepted == 0 and res.reasons() == {"no send for message_id": 2}
    # every send rejected (here: naive), so their opens have no send either
    naive = ev.assign(timestamp=ev["timestamp"].dt.tz_localize(None).astype(str))
    res = accounted(validate_events(naive, now=NOW))
    assert res.reasons() == {"timestamp has no UTC offset (naive)": 4}
    # a single unparseable send and nothing else
    res = accounted(validate_events(ev.iloc[[0]].assign(timestamp="soon"), now=NOW))
    assert res.reasons() == {"unparseable timestamp": 1}


def test_an_open_listed_above_its_send_is_not_a_second_send():
    # Bug found (by the shuffle property test): "second send for message_id" looked for repeated
    # message ids among ALL rows, so a send listed below its own open was rejected while the open
    # was accepted -- an accepted open without a send, and row order changed the result.
    ev = _good_events(2).iloc[::-1].reset_index(drop=True)  # opens first
    res = accounted(validate_events(ev, now=NOW))
    assert res.n_rejected == 0 and sorted(res.accepted["event_id"]) == ["o0", "o1", "s0", "s1"]
    # a real second send is still caught, whatever the order
    again = ev.loc[ev["event_id"] == "s0"].assign(event_id="s0-again", timestamp=pd.Timestamp("2026-03-01T18:00Z"))
    res = accounted(validate_events(pd.concat([ev, again], ignore_index=True), now=NOW))
    assert res.reasons() == {"second send for message_id": 1}
    assert res.rejects["event_id"].tolist() == ["s0-again"]


def test_timestamps_future_and_before_1990_are_judged_against_now():
    ev = _good_events(1)
    ev.loc[0, "timestamp"] = pd.Timestamp("1970-01-01T00:00:00Z")  # an epoch-zero default
    ev = pd.concat([ev, ev.iloc[[1]].assign(event_id="late", timestamp=NOW + pd.Timedelta(days=3))])
    res = accounted(validate_events(ev.reset_index(drop=True), now=NOW))
    reasons = dict(zip(res.rejects["event_id"], res.rejects["reason"]))
    assert reasons["s0"] == "timestamp before 1990"
    assert reasons["late"] == "timestamp in the future"
    assert reasons["o0"] == "no send for message_id"  # its send was rejected
    # within a day of "now" is clock skew, not the future
    res = accounted(validate_events(_good_events(1).assign(timestamp=NOW + pd.Timedelta(hours=12)), now=NOW))
    assert res.n_rejected == 0


# --------------------------------------------------------------------------- Parquet inputs


def test_parquet_naive_and_numeric_timestamps_are_rejected_with_the_right_reason(tmp_path):
    ev = _good_events(2)
    ev.assign(timestamp=ev["timestamp"].dt.tz_localize(None)).to_parquet(tmp_path / "naive.parquet")
    res = accounted(read_events(tmp_path / "naive.parquet", now=NOW))
    assert res.reasons() == {"timestamp has no UTC offset (naive)": 4}
    # epoch numbers are not "naive timestamps": they are not date-times at all (was misreported)
    ev.assign(timestamp=ev["timestamp"].astype("int64") // 10**6).to_parquet(tmp_path / "epoch.parquet")
    res = accounted(read_events(tmp_path / "epoch.parquet", now=NOW))
    assert res.reasons() == {"unparseable timestamp": 4}
    # other zones are fine: an aware timestamp is an instant
    ev.assign(timestamp=ev["timestamp"].dt.tz_convert("Asia/Kolkata")).to_parquet(tmp_path / "ist.parquet")
    res = accounted(read_events(tmp_path / "ist.parquet", now=NOW))
    assert res.n_rejected == 0 and res.accepted["timestamp"].min() == pd.Timestamp("2026-03-01T14:00:00Z")


def test_parquet_integer_ids_with_nulls_are_not_written_as_floats(tmp_path):
    # Bug found: an int64 id column with a null arrives as float64 and ids became "42.0", so
    # they no longer matched the users table ("42") and users silently lost their time zone.
    t = pa.table({
        "event_id": pa.array([1, 2, 3], pa.int64()),
        "user_id": pa.array([42, 42, None], pa.int64()),
        "message_id": pa.array([7, 7, 8], pa.int64()),
        "event_type": ["send", "open", "send"],
        "timestamp": pa.array(pd.to_datetime(["2026-03-01T14:00Z", "2026-03-01T15:00Z", "2026-03-01T16:00Z"])),
    })
    pq.write_table(t, tmp_path / "ev.parquet")
    res = accounted(read_events(tmp_path / "ev.parquet", now=NOW))
    assert res.reasons() == {"missing user_id": 1}
    assert set(res.accepted["user_id"]) == {"42"} and set(res.accepted["event_id"]) == {"1", "2"}
    pq.write_table(pa.table({"user_id": pa.array([42, None], pa.int64()), "timezone": ["Asia/Tokyo", "UTC"]}),
                   tmp_path / "us.parquet")
    us = accounted(read_users(tmp_path / "us.parquet"))
    assert list(us.accepted["user_id"]) == ["42"]
    uf = build_user_features(build_messages(res.accepted, us.accepted), us.accepted, NOW)
    assert uf.table.loc["42", "timezone"] == "Asia/Tokyo" and uf.table.loc["42", "n_sends"] == 1


def test_truncated_parquet_is_a_one_line_contract_error(tmp_path):
    _good_events(50).to_parquet(tmp_path / "good.parquet")
    data = (tmp_path / "good.parquet").read_bytes()
    (tmp_path / "half.parquet").write_bytes(data[: len(data) // 2])
    contract_error(lambda: read_events(tmp_path / "half.parquet"), "cannot read events file", "half.parquet")
    # inside a folder, the message names the broken file
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.parquet").write_bytes(data)
    (tmp_path / "folder" / "b.parquet").write_bytes(data[: len(data) // 2])
    contract_error(lambda: read_events(tmp_path / "folder"), "b.parquet")
    # a file that is only the magic bytes, and a 0-byte Parquet file
    (tmp_path / "magic.parquet").write_bytes(b"PAR1")
    contract_error(lambda: read_events(tmp_path / "magic.parquet"), "magic.parquet")
    (tmp_path / "zero.parquet").write_bytes(b"")
    contract_error(lambda: read_users(tmp_path / "zero.parquet"), "users file", "empty")


def test_zero_row_parquet_is_an_empty_table(tmp_path):
    _good_events(1).iloc[:0].to_parquet(tmp_path / "none.parquet")
    res = accounted(read_events(tmp_path / "none.parquet", now=NOW))
    assert res.read == 0 and res.accepted.empty


def test_folder_with_a_file_lacking_a_column_rejects_those_rows(tmp_path):
    ev = _good_events(2)
    ev.iloc[:2].to_parquet(tmp_path / "a.parquet")
    ev.iloc[2:].drop(columns=["message_id"]).to_parquet(tmp_path / "b.parquet")
    res = accounted(read_events(tmp_path, now=NOW))
    assert res.read == 4 and res.reasons() == {"missing message_id": 2}
    (tmp_path / "empty").mkdir()
    contract_error(lambda: read_events(tmp_path / "empty"), "holds no .parquet or .csv")


# --------------------------------------------------------------------------- whole-file problems


def test_empty_file_is_a_contract_error_and_header_only_is_an_empty_table():
    contract_error(lambda: read_events(BAD / "events_empty.csv"), "events_empty.csv", "empty (0 bytes)")
    res = accounted(read_events(BAD / "events_header_only.csv", now=NOW))
    assert res.read == 0 and res.accepted.empty and res.rejects.empty
    assert {"event_id", "user_id", "timestamp", "machine_open"} <= set(res.accepted.columns)
    assert str(res.accepted["timestamp"].dtype) == "datetime64[us, UTC]"
    us = accounted(read_users(BAD / "users_header_only.csv"))
    assert us.read == 0 and list(us.accepted.columns) == ["user_id", "timezone", "segment"]
    # NB: sendtime.features.messages.build_messages() itself fails on a 0-row events table ("'message_id' is
    # both an index level and a column label"); `sendtime nightly` stops before that with "no sends
    # before the as-of date" (see the CLI test), so it is not reached from the command line.


def test_missing_required_columns_name_the_column():
    contract_error(lambda: read_events(BAD / "events_missing_column.csv"), "lacks required column", "message_id")
    contract_error(lambda: read_users(BAD / "users_missing_column.csv"), "lacks required column", "timezone")
    # an events file given as users (and vice versa)
    contract_error(lambda: read_users(BAD / "events_corpus.csv"), "timezone")
    contract_error(lambda: read_events(BAD / "users_corpus.csv"), "event_id", "message_id")


def test_stray_delimiter_rejects_that_line_with_its_number_and_keeps_the_rest():
    res = accounted(read_events(BAD / "events_stray_delimiter.csv", now=NOW))
    assert (res.read, res.n_accepted, res.n_rejected) == (3, 2, 1)
    assert sorted(res.accepted["event_id"]) == ["e1", "e3"]
    assert res.rejects[["source_row", "line", "reason"]].values.tolist() == [
        [1, 3, "malformed line: expected 5 fields, saw 6"]]
    assert res.rejects.loc[0, "event_id"] == "" and res.rejects.loc[0, "timestamp"] == ""
    # every line wrong (unquoted "Mar 1, 2026" dates): the file is refused, naming the first line
    contract_error(lambda: read_events(BAD / "events_unquoted_commas.csv"), "events_unquoted_commas.csv",
                   "3 of 3", "line 2", "expected 5 fields, saw 6")


def test_short_line_is_padded_and_rejected_row_by_row():
    res = accounted(read_events(BAD / "events_short_line.csv", now=NOW))
    assert res.read == 2 and res.reasons() == {"missing event_type": 1}


def test_non_utf8_lines_are_rejected_and_a_mostly_non_utf8_file_is_refused():
    # the one data line is Latin-1: the whole file is not UTF-8
    contract_error(lambda: read_events(BAD / "events_latin1.csv"), "events file", "not valid UTF-8", "1 of 1", "line 2")
    # one line of two: that line is rejected, the other used
    us = accounted(read_users(BAD / "users_latin1.csv"))
    assert (us.read, us.n_accepted) == (2, 1) and us.accepted["user_id"].tolist() == ["1001"]
    assert us.rejects[["source_row", "line", "reason"]].values.tolist() == [[1, 3, "malformed line: not valid UTF-8"]]
    contract_error(lambda: read_users(BAD / "users_latin1_mostly.csv"), "users file", "not valid UTF-8", "2 of 3", "line 2")


def test_utf8_bom_and_crlf_are_fine():
    res = accounted(read_events(BAD / "events_bom_crlf.csv", now=NOW))
    assert res.n_accepted == 1 and res.accepted["event_id"].tolist() == ["e1"]


def test_other_unusable_paths(tmp_path):
    contract_error(lambda: read_events(tmp_path / "missing.csv"), "not found")
    (tmp_path / "ev.json").write_text("{}")
    contract_error(lambda: read_events(tmp_path / "ev.json"), "must be .parquet or .csv")
    (tmp_path / "quote.csv").write_text('event_id,user_id,message_id,event_type,timestamp\ne1,u1,m1,send,"2026\n')
    contract_error(lambda: read_events(tmp_path / "quote.csv"), "quote.csv")
    (tmp_path / "noise.csv").write_bytes(bytes(range(256)) * 8)
    contract_error(lambda: read_events(tmp_path / "noise.csv"), "noise.csv")


# --------------------------------------------------------------------------- scale


def test_one_user_with_300k_events(tmp_path):
    n = 100_000  # sends; each gets an open and a click: 300,000 rows for one user
    t0 = time.perf_counter()
    start = pd.Timestamp("2025-12-01", tz="UTC")
    send = start + pd.to_timedelta(np.arange(n) * 60, unit="s")
    ids = np.arange(n).astype(str)
    base = pd.DataFrame({"user_id": "heavy", "message_id": np.char.add("m", ids)})
    parts = []
    for kind, prefix, delay in (("send", "s", 0), ("open", "o", 30), ("click", "c", 31)):
        ts = (send + pd.Timedelta(minutes=delay)).strftime("%Y-%m-%dT%H:%M:%SZ")
        parts.append(base.assign(event_id=np.char.add(prefix, ids), event_type=kind, timestamp=ts))
    ev = pd.concat(parts, ignore_index=True)[["event_id", "user_id", "message_id", "event_type", "timestamp"]]
    # a few bad rows mixed in, far apart
    ev.loc[5, "timestamp"] = "2026-01-01 00:00:00"  # naive send: its open and click lose their send
    ev.loc[150_000, "message_id"] = "m-unknown"  # an open of a message never sent
    ev.to_csv(tmp_path / "heavy.csv", index=False)
    pd.DataFrame({"user_id": ["heavy"], "timezone": ["Australia/Adelaide"]}).to_csv(tmp_path / "us.csv", index=False)

    res = accounted(read_events(tmp_path / "heavy.csv", now=NOW))
    assert res.read == 3 * n
    assert res.reasons() == {"timestamp has no UTC offset (naive)": 1, "no send for message_id": 3}
    us = accounted(read_users(tmp_path / "us.csv"))
    msgs = build_messages(res.accepted, us.accepted)
    assert len(msgs) == n - 1
    uf = build_user_features(msgs, us.accepted, pd.Timestamp("2026-01-20", tz="UTC"))
    assert uf.table.loc["heavy", "n_sends"] > 50_000
    assert np.isfinite(uf.lam).all() and (uf.lam >= 0).all()
    assert np.isfinite(uf.table.select_dtypes("number").to_numpy(dtype=float)).all()
    frame = uf.model_frame(np.zeros(168, dtype=np.int64), np.arange(168))
    assert np.isfinite(frame.to_numpy(dtype=float)).all()
    assert time.perf_counter() - t0 < 15


# --------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("sendtime_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") or k == "MLFLOW_DISABLE_TELEMETRY"}
    env.update({"SENDTIME_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
                "BENTOML_DO_NOT_TRACK": "true", "PYTHONPATH": str(ROOT)})
    return env


@pytest.fixture(scope="module")
def good_users(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("users") / "users.csv"
    pd.DataFrame({"user_id": ["u0", "u1"], "timezone": ["Europe/Berlin", "UTC"]}).to_csv(p, index=False)
    return p


def _nightly(env: dict[str, str], events: Path, users: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sendtime.cli", "nightly", "--events", str(events), "--users", str(users),
         "--as-of", "2026-03-30"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def _truncated(tmp: Path) -> Path:
    _good_events(50).to_parquet(tmp / "good.parquet")
    data = (tmp / "good.parquet").read_bytes()
    (tmp / "half.parquet").write_bytes(data[: len(data) // 2])
    return tmp / "half.parquet"


@pytest.mark.parametrize(
    "case, words",
    [
        ("truncated_parquet_events", ["cannot read events file", "half.parquet"]),
        ("empty_events", ["events_empty.csv", "empty"]),
        ("mostly_malformed_events", ["events_unquoted_commas.csv", "line 2"]),
        ("latin1_users", ["users file", "UTF-8"]),
    ],
)
def test_cli_stops_with_exit_2_and_one_error_line(case, words, cli_home, good_users, tmp_path):
    events, users = {
        "truncated_parquet_events": (_truncated(tmp_path), good_users),
        "empty_events": (BAD / "events_empty.csv", good_users),
        "mostly_malformed_events": (BAD / "events_unquoted_commas.csv", good_users),
        "latin1_users": (BAD / "events_header_only.csv", BAD / "users_latin1_mostly.csv"),
    }[case]
    if case == "latin1_users":  # events must be fine so that the users file is reached
        _good_events(2).to_csv(tmp_path / "ev.csv", index=False)
        events = tmp_path / "ev.csv"
    r = _nightly(cli_home, events, users)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    # progress lines (and MLflow's first-run log lines) go to stderr too; the error is one line, last
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    for w in words:
        assert w.lower() in errors[0].lower(), errors[0]
