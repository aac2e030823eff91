"""CSV as exports really are (features/csv_reader.py): malformed lines become rejects with their
line number and reason, everything else is read, and ``read == accepted + rejected`` holds.

Line numbers are physical and 1-based (the header is line 1); a record with a quoted newline
takes up several lines, and so does a malformed record."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sendtime.features.contract import ContractError, _read_table, read_events, read_users, validate_events, write_rejects
from sendtime.features.csv_reader import (
    FIELD_COUNT,
    NOT_UTF8,
    UNCLOSED_QUOTE,
    concat_records,
    csv_source,
    mark_rejects,
    read_csv_records,
)

NOW = pd.Timestamp("2026-04-01", tz="UTC")
HEADER = "event_id,user_id,message_id,event_type,timestamp,machine_open"
BAD = Path(__file__).resolve().parent / "bad_inputs"
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


def send(i: int, extra: str = "") -> str:
    ts = (pd.Timestamp("2026-01-01T00:00:00Z") + pd.Timedelta(seconds=20 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"s{i},u{i % 997},m{i},send,{ts},{extra}"


def write(path: Path, lines: list[str] | list[bytes], end: bytes = b"\n") -> Path:
    raw = [ln if isinstance(ln, bytes) else ln.encode("utf-8") for ln in lines]
    path.write_bytes(end.join(raw) + end)
    return path


def one_line(fn) -> str:
    with pytest.raises(ContractError) as err:
        fn()
    msg = str(err.value)
    assert msg and "\n" not in msg and "\r" not in msg, msg
    return msg


def by_line(t) -> dict[int, str]:
    """The event_id of each well-formed record, by the line it starts on."""
    return dict(zip(t.lines.tolist(), t.frame["event_id"].tolist()))


# --------------------------------------------------------------------------- the case


def test_200k_lines_with_50_malformed_reject_those_50_and_use_the_rest(tmp_path):
    n = 200_000
    lines = [HEADER] + [send(i) for i in range(n)]
    rng = np.random.default_rng(7)
    picked = np.sort(rng.choice(np.arange(1, n + 1), size=50, replace=False))  # positions in `lines`
    expected = {}
    for k, pos in enumerate(picked.tolist()):
        if k % 2:
            lines[pos] = lines[pos] + ",oops"  # a stray delimiter: one field too many
            expected[pos + 1] = FIELD_COUNT.format(6, 7)
        else:
            lines[pos] = lines[pos].encode("utf-8").replace(b",u", b",R\xe9n\xe9e-u", 1)  # Latin-1 bytes
            expected[pos + 1] = NOT_UTF8
    path = write(tmp_path / "events.csv", lines)

    table = read_csv_records(path, "events")
    assert len(table.frame) == n - 50 and len(table.bad) == 50
    assert dict(zip(table.bad["line"], table.bad["reason"])) == expected
    assert table.bad["text"].str.len().max() <= 203
    assert table.bad.loc[table.bad["reason"] == NOT_UTF8, "text"].str.contains("R\ufffdn\ufffde-u").all()
    # every good record is on the line where its id says it is (s<i> is on line i + 2)
    assert (table.lines == table.frame["event_id"].str[1:].astype(np.int64).to_numpy() + 2).all()
    assert (table.frame.index.to_numpy() == table.lines - 2).all()  # record numbers count the malformed too

    res = read_events(path, now=NOW)
    assert res.read == n and res.n_accepted == n - 50 and res.n_rejected == 50
    assert res.n_accepted + res.n_rejected == res.read
    rej = res.rejects
    assert list(rej.columns[:2]) == ["source_row", "line"]
    assert dict(zip(rej["line"], rej["reason"])) == expected
    assert (rej["source_row"] == rej["line"] - 2).all()  # one record per line here
    assert (rej[["event_id", "user_id", "timestamp"]] == "").all().all()  # malformed: columns empty
    assert res.reasons() == {NOT_UTF8: 25, FIELD_COUNT.format(6, 7): 25}

    out = write_rejects(res, tmp_path / "rejects.csv")
    back = pd.read_csv(out, dtype={"line": "int64"}, keep_default_na=False)
    assert list(back.columns[:2]) == ["source_row", "line"]
    assert dict(zip(back["line"], back["reason"])) == expected


# --------------------------------------------------------------------------- what is read as data


@pytest.mark.parametrize("end", [b"\n", b"\r\n"])
def test_bom_and_crlf_are_read_and_line_numbers_still_count(tmp_path, end):
    lines = ["\ufeff" + HEADER, send(0), send(1) + ",extra", send(2, "true"), "", send(3)]
    t = read_csv_records(write(tmp_path / "ev.csv", lines, end=end), "events")
    assert list(t.frame.columns) == HEADER.split(",")  # no BOM in the first name
    assert by_line(t) == {2: "s0", 4: "s2", 6: "s3"}  # the blank line 5 is no record
    assert not t.frame.map(lambda v: isinstance(v, str) and "\r" in v).any().any()
    assert t.frame.loc[t.frame["event_id"] == "s2", "machine_open"].item() == "true"
    assert t.bad[["record", "line", "reason"]].values.tolist() == [[1, 3, FIELD_COUNT.format(6, 7)]]


def test_quoted_commas_quotes_and_newlines_are_values_and_later_lines_are_still_right(tmp_path):
    header = HEADER + ",subject"
    lines = [
        header,
        send(0, ',"Hello, world"'),                    # line 2
        send(1, ',"first line\nsecond, line"'),        # lines 3-4
        send(2, ',"say ""hi""\r\n\nbye"'),             # lines 5-7 (CRLF and an empty line inside)
        send(3, ",plain") + ",extra",                  # line 8: malformed
        send(4, ',"a\nb\nc"') + ",extra",              # lines 9-11: malformed, spans three lines
        send(5, ",last"),                              # line 12
    ]
    t = read_csv_records(write(tmp_path / "ev.csv", lines), "events")
    assert by_line(t) == {2: "s0", 3: "s1", 5: "s2", 12: "s5"}
    subj = dict(zip(t.frame["event_id"], t.frame["subject"]))
    assert subj == {"s0": "Hello, world", "s1": "first line\nsecond, line", "s2": 'say "hi"\r\n\nbye', "s5": "last"}
    assert t.bad[["record", "line", "reason"]].values.tolist() == [
        [3, 8, FIELD_COUNT.format(7, 8)], [4, 9, FIELD_COUNT.format(7, 8)]]
    assert t.bad["text"].iloc[1].endswith('"a\nb\nc",extra')
    res = read_events(tmp_path / "ev.csv", now=NOW)
    assert (res.read, res.n_accepted, res.n_rejected) == (6, 4, 2)
    assert res.rejects["source_row"].tolist() == [3, 4] and res.rejects["line"].tolist() == [8, 9]


# --------------------------------------------------------------------------- unclosed quotes


def test_an_unclosed_quote_in_the_middle_loses_no_line_after_it(tmp_path):
    lines = [HEADER] + [send(i) for i in range(10)]
    lines[4] = lines[4].replace(",u", ',"u', 1)  # line 5: a quote that never closes
    lines[8] = send(7, '"true"')  # line 9: the next quote in the file
    t = read_csv_records(write(tmp_path / "ev.csv", lines), "events")
    assert t.bad[["line", "reason"]].values.tolist() == [[5, UNCLOSED_QUOTE]]
    assert t.bad["text"].item() == lines[4]
    assert by_line(t) == {i + 2: f"s{i}" for i in range(10) if i != 3}
    assert t.frame.loc[t.frame["event_id"] == "s7", "machine_open"].item() == "true"
    res = read_events(tmp_path / "ev.csv", now=NOW)
    assert (res.read, res.n_accepted, res.n_rejected) == (10, 9, 1)
    assert res.rejects[["source_row", "line", "reason"]].values.tolist() == [[3, 5, UNCLOSED_QUOTE]]


def test_an_unclosed_quote_that_runs_to_the_end_of_the_file(tmp_path):
    lines = [HEADER] + [send(i) for i in range(6)]
    lines[2] = send(1, '"tru')  # line 3: the last field opens a quote, nothing closes it
    t = read_csv_records(write(tmp_path / "ev.csv", lines), "events")
    assert t.bad[["line", "reason"]].values.tolist() == [[3, UNCLOSED_QUOTE]]
    assert by_line(t) == {2: "s0", 4: "s2", 5: "s3", 6: "s4", 7: "s5"}


def test_several_unclosed_quotes_and_a_good_multiline_value_between_them(tmp_path):
    header = HEADER + ",subject"
    lines = [header] + [send(i, ",x") for i in range(12)]
    lines[2] = send(1, ',"oops')                   # line 3
    lines[5] = send(4, ',"two\nlines"')             # lines 6-7: a real quoted newline
    lines[8] = send(7, ',"again')                  # line 10 (one line later: line 6 took two)
    lines[11] = send(10, ',"closed"')             # line 13
    t = read_csv_records(write(tmp_path / "ev.csv", lines), "events")
    assert t.bad[["line", "reason"]].values.tolist() == [[3, UNCLOSED_QUOTE], [10, UNCLOSED_QUOTE]]
    expect = {2: "s0", 4: "s2", 5: "s3", 6: "s4", 8: "s5", 9: "s6", 11: "s8", 12: "s9", 13: "s10", 14: "s11"}
    assert by_line(t) == expect
    assert t.frame.set_index("event_id").loc["s4", "subject"] == "two\nlines"


def test_a_file_of_one_unclosed_quote_is_refused(tmp_path):
    write(tmp_path / "quote.csv", [HEADER, 'e1,u1,m1,send,"2026'])
    msg = one_line(lambda: read_events(tmp_path / "quote.csv"))
    assert "quote.csv" in msg and "line 2" in msg and "unclosed quote" in msg


# --------------------------------------------------------------------------- short lines, blanks


def test_a_short_line_is_padded_and_judged_row_by_row(tmp_path):
    lines = [HEADER, send(0), "s1,u1,m1", send(2).rsplit(",", 1)[0], '"s3","u3"']
    t = read_csv_records(write(tmp_path / "ev.csv", lines), "events")
    assert t.bad.empty and by_line(t) == {2: "s0", 3: "s1", 4: "s2", 5: "s3"}
    assert t.frame.loc[t.frame["event_id"] == "s1", ["event_type", "timestamp", "machine_open"]].isna().all(axis=None)
    res = read_events(tmp_path / "ev.csv", now=NOW)
    # s2 lacks only the optional machine_open: accepted, as pandas' padding did
    assert (res.read, res.n_accepted) == (4, 2)
    assert res.reasons() == {"missing event_type": 1, "missing message_id": 1}
    assert res.rejects[["source_row", "line", "event_id"]].values.tolist() == [[1, 3, "s1"], [3, 5, "s3"]]


def test_blank_lines_are_skipped_and_lines_of_commas_are_records(tmp_path):
    lines = ["", HEADER, "", send(0), "   ", ",,,,,", "", send(1), ""]
    t = read_csv_records(write(tmp_path / "ev.csv", lines), "events")
    assert t.bad.empty and len(t.frame) == 3
    assert t.lines.tolist() == [4, 6, 8]
    res = read_events(tmp_path / "ev.csv", now=NOW)
    assert (res.read, res.n_accepted) == (3, 2) and res.rejects["line"].tolist() == [6]


def test_header_only_and_gzip(tmp_path):
    t = read_csv_records(write(tmp_path / "h.csv", [HEADER]), "events")
    assert t.frame.empty and list(t.frame.columns) == HEADER.split(",") and len(t.lines) == 0
    res = read_events(tmp_path / "h.csv", now=NOW)
    assert res.read == 0 and str(res.accepted["timestamp"].dtype) == "datetime64[us, UTC]"
    lines = [HEADER, send(0), send(1) + ",x", send(2)]
    (tmp_path / "ev.csv.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    res = read_events(tmp_path / "ev.csv.gz", now=NOW)
    assert (res.read, res.n_accepted) == (3, 2) and res.rejects[["line", "reason"]].values.tolist() == [
        [3, FIELD_COUNT.format(6, 7)]]


def test_duplicate_and_blank_header_names_are_named_as_pandas_names_them(tmp_path):
    write(tmp_path / "d.csv", ["a,a,,b", "1,2,3,4"])
    t = read_csv_records(tmp_path / "d.csv", "events")
    assert list(t.frame.columns) == list(pd.read_csv(tmp_path / "d.csv").columns) == ["a", "a.1", "Unnamed: 2", "b"]


# --------------------------------------------------------------------------- whole-file problems


def test_a_mostly_malformed_file_is_refused_naming_its_first_bad_line(tmp_path):
    # unquoted "Mar 1, 2026" dates: every line has a field too many -> the wrong file or format
    lines = [HEADER] + [f"s{i},u{i},m{i},send,Mar {i + 1}, 2026 10:00," for i in range(5)]
    msg = one_line(lambda: read_events(write(tmp_path / "ev.csv", lines)))
    assert "ev.csv" in msg and "5 of 5" in msg and "line 2" in msg and "expected 6 fields, saw 7" in msg
    # half malformed is still read
    res = read_events(write(tmp_path / "half.csv", [HEADER, send(0), send(1) + ",x"]), now=NOW)
    assert (res.read, res.n_accepted, res.n_rejected) == (2, 1, 1)


def test_a_latin1_file_is_refused_when_most_records_are_not_utf8(tmp_path):
    rows = [f"{1000 + i},Europe/Berlin,caf\xe9" for i in range(4)] + ["1009,UTC,plain"]
    (tmp_path / "us.csv").write_bytes(("user_id,timezone,segment\n" + "\n".join(rows) + "\n").encode("latin-1"))
    msg = one_line(lambda: read_users(tmp_path / "us.csv"))
    assert "users file" in msg and "not valid UTF-8" in msg and "4 of 5" in msg and "line 2" in msg
    # a few Latin-1 rows among UTF-8 ones: those rows are rejected, the UTF-8 "café" is fine
    good = [f"{2000 + i},Europe/Berlin,café".encode() for i in range(4)]
    write(tmp_path / "mixed.csv", [b"user_id,timezone,segment", *good, "1009,UTC,caf\xe9".encode("latin-1")])
    res = read_users(tmp_path / "mixed.csv")
    assert (res.read, res.n_accepted) == (5, 4) and res.reasons() == {NOT_UTF8: 1}
    assert set(res.accepted["segment"]) == {"café"} and res.rejects["line"].tolist() == [6]


def test_same_frame_as_the_old_pandas_reader_on_clean_files():
    for path in [BAD / "events_corpus.csv", BAD / "users_corpus.csv", BAD / "events_bom_crlf.csv",
                 BAD / "events_short_line.csv", SAMPLE / "events.csv", SAMPLE / "users.csv"]:
        old = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
        pd.testing.assert_frame_equal(_read_table(path, "events"), old, check_index_type=False)


# --------------------------------------------------------------------------- folders


def test_per_file_frames_concatenate_with_their_lines_and_malformed_records(tmp_path):
    a = write(tmp_path / "a.csv", [HEADER, send(0), send(1) + ",x", send(2)])
    b = write(tmp_path / "b.csv", [HEADER, send(3) + ",x", send(4)])
    frames = [_read_table(a, "events"), _read_table(b, "events")]
    raw = concat_records(frames)
    src = csv_source(raw)
    assert src is not None and src.lines.tolist() == [2, 3, 4, 2, 3]
    res = mark_rejects(validate_events(raw, now=NOW), raw)
    assert res.read == 5 and res.n_accepted == 3
    assert res.rejects[["source_row", "file", "line", "reason"]].values.tolist() == [
        [1, str(a), 3, FIELD_COUNT.format(6, 7)], [3, str(b), 2, FIELD_COUNT.format(6, 7)]]
    # a plain pd.concat (no line numbers) still accounts for every record
    plain = pd.concat(frames, ignore_index=True)
    res = validate_events(plain, now=NOW)
    assert res.read == 5 and res.n_accepted == 3 and res.rejects["source_row"].tolist() == [1, 3]


def test_hundreds_of_unclosed_quotes_cost_little_and_lose_nothing(tmp_path):
    # each stray quote swallows lines up to the next one (or up to a quoted field a few lines on),
    # so the whole-file parse is out of step for long stretches: only windows are parsed again
    n = 50_000
    lines = [HEADER] + [send(i) for i in range(n)]
    rng = np.random.default_rng(3)
    stray = np.sort(rng.choice(np.arange(1, n - 5), size=300, replace=False))
    stray = stray[np.diff(stray, prepend=-10) > 4]  # far enough apart that the closing quote below is not one of them
    for k, pos in enumerate(stray.tolist()):
        lines[pos] = lines[pos].replace(",u", ',"u', 1)
        if k % 2:
            lines[pos + 3] = lines[pos + 3].replace(",m", ',"m', 1).replace(",send", '",send', 1)
    t = read_csv_records(write(tmp_path / "ev.csv", lines), "events")
    assert t.bad["line"].tolist() == (stray + 1).tolist() and set(t.bad["reason"]) == {UNCLOSED_QUOTE}
    assert len(t.frame) == n - len(stray)
    assert (t.lines == t.frame["event_id"].str[1:].astype(np.int64).to_numpy() + 2).all()
