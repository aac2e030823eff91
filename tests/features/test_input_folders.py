"""Event folders as pipelines write them: Spark / Hive / Dask part files, bookkeeping and
temporary files, ``key=value`` partition folders, and files whose schemas drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sendtime.features.contract import ContractError, read_events
from sendtime.features.duckdb_engine import build_messages_duckdb, usable
from sendtime.features.inputs import data_files
from sendtime.features.messages import build_messages
from sendtime.features.engines import choose_engine

AS_OF = pd.Timestamp("2026-04-13", tz="UTC")
NOW = pd.Timestamp("2026-04-20", tz="UTC")


def _events(n_messages: int, first: int = 0, day: str = "2026-04-01") -> pd.DataFrame:
    rows = []
    for m in range(first, first + n_messages):
        sent = pd.Timestamp(f"{day} 08:00", tz="UTC") + pd.Timedelta(hours=m)
        rows.append((f"s{m}", f"u{m % 3}", f"m{m}", "send", sent, None))
        rows.append((f"o{m}", f"u{m % 3}", f"m{m}", "open", sent + pd.Timedelta(hours=2), False))
    df = pd.DataFrame(rows, columns=["event_id", "user_id", "message_id", "event_type", "timestamp", "machine_open"])
    df["timestamp"] = df["timestamp"].astype("datetime64[us, UTC]")
    df["machine_open"] = df["machine_open"].astype("boolean")
    return df


def _spark_like(root: Path) -> Path:
    """Two Hive partitions of part files, with everything else such a job leaves behind."""
    for i, day in enumerate(["2026-04-01", "2026-04-02"]):
        part = root / f"dt={day}"
        part.mkdir(parents=True)
        _events(4, first=10 * i, day=day).to_parquet(part / f"part-0000{i}-abc.snappy.parquet", index=False)
        (part / f".part-0000{i}-abc.snappy.parquet.crc").write_bytes(b"\x00crc")
    (root / "_SUCCESS").write_bytes(b"")
    (root / "_temporary" / "0").mkdir(parents=True)
    _events(2, first=90).to_parquet(root / "_temporary" / "0" / "part-99.parquet", index=False)  # an unfinished task
    (root / ".hidden.parquet").write_bytes(b"not parquet")
    (root / "part-00002.parquet.tmp").write_bytes(b"half written")
    (root / "README.txt").write_text("exported by the warehouse\n")
    return root


def test_folder_lists_the_data_and_names_what_it_ignored(tmp_path):
    root = _spark_like(tmp_path / "events")
    found = data_files(root)
    assert [f.name for f in found.files] == ["part-00000-abc.snappy.parquet", "part-00001-abc.snappy.parquet"]
    assert {p.name for p in found.ignored} == {"_SUCCESS", "part-99.parquet", ".hidden.parquet", "part-00002.parquet.tmp",
                                                "README.txt", ".part-00000-abc.snappy.parquet.crc",
                                                ".part-00001-abc.snappy.parquet.crc"}
    assert found.partitions(found.files[1]) == {"dt": "2026-04-02"}
    line = found.ignored_summary()
    assert line.startswith("ignored 7 file(s)") and "_SUCCESS" in line and "\n" not in line


def test_spark_folder_reads_the_same_through_pandas_and_duckdb(tmp_path):
    root = _spark_like(tmp_path / "events")
    ref = read_events(root, now=NOW)
    assert ref.read == ref.n_accepted == 16 and ref.n_rejected == 0  # 2 files x 4 messages x 2 events
    assert usable(root) is None and choose_engine("auto", root) == "duckdb"
    users = pd.DataFrame({"user_id": ["u0", "u1", "u2"], "timezone": ["UTC", "Europe/Berlin", "Asia/Tokyo"], "segment": "s"})
    got = build_messages_duckdb(root, users, AS_OF, now=NOW)
    assert got.read == 16 and got.n_rejected == 0
    want = build_messages(ref.accepted, users)
    pd.testing.assert_frame_equal(got.messages, want, check_dtype=False)


def test_partition_folder_that_names_a_contract_column_gives_it_to_the_rows(tmp_path):
    """``event_type=send/`` and ``event_type=open/``: the files lack the column; the folder has it."""
    ev = _events(3)
    for kind in ("send", "open"):
        (tmp_path / "ev" / f"event_type={kind}").mkdir(parents=True)
        ev.loc[ev["event_type"] == kind].drop(columns="event_type").to_parquet(
            tmp_path / "ev" / f"event_type={kind}" / "part-0.parquet", index=False)
    ref = read_events(tmp_path / "ev", now=NOW)
    assert ref.n_rejected == 0 and sorted(ref.accepted["event_type"]) == ["open"] * 3 + ["send"] * 3
    users = pd.DataFrame({"user_id": ["u0", "u1", "u2"], "timezone": ["UTC"] * 3, "segment": "s"})
    got = build_messages_duckdb(tmp_path / "ev", users, AS_OF, now=NOW)
    assert got.n_rejected == 0 and len(got.messages) == 3 and got.messages["t_open_human_flag"].notna().all()


def test_schemas_that_drift_between_files_are_united_and_judged_row_by_row(tmp_path):
    """One file lacks machine_open, one has integer ids, one has text timestamps (one of them
    naive), one lacks user_id altogether: every row is accounted for, nothing raises."""
    root = tmp_path / "drift"
    root.mkdir()
    a = _events(2)
    a.to_parquet(root / "part-0.parquet", index=False)
    b = _events(2, first=2).drop(columns="machine_open")
    b.to_parquet(root / "part-1.parquet", index=False)
    c = pd.DataFrame({"event_id": [501, 502], "user_id": [7, 7], "message_id": [77, 77], "event_type": ["send", "click"],
                      "timestamp": pd.to_datetime(["2026-04-03 08:00", "2026-04-03 09:00"], utc=True).astype("datetime64[us, UTC]")})
    c.to_parquet(root / "part-2.parquet", index=False)
    d = pd.DataFrame({"event_id": ["t1", "t2", "t3"], "user_id": ["u9"] * 3, "message_id": ["m9", "m9", "m10"],
                      "event_type": ["send", "open", "send"],
                      "timestamp": ["2026-04-04T08:00:00Z", "2026-04-04T11:30:00+02:00", "2026-04-04 08:00"]})
    d.to_parquet(root / "part-3.parquet", index=False)
    e = pd.DataFrame({"event_id": ["x1"], "message_id": ["m0"], "event_type": ["click"],
                      "timestamp": pd.to_datetime(["2026-04-01 12:00"], utc=True).astype("datetime64[us, UTC]")})
    e.to_parquet(root / "part-4.parquet", index=False)
    res = read_events(root, now=NOW)
    assert res.read == 8 + 2 + 3 + 1 and res.read == res.n_accepted + res.n_rejected
    assert res.reasons() == {"timestamp has no UTC offset (naive)": 1, "missing user_id": 1}
    acc = res.accepted.set_index("event_id")
    assert acc.loc["501", "user_id"] == "7" and acc.loc["502", "message_id"] == "77"  # integers as their text
    assert acc.loc["t2", "timestamp"] == pd.Timestamp("2026-04-04 09:30", tz="UTC")
    # text timestamps in one file: not the typed Parquet DuckDB reads, so auto takes the reference
    assert usable(root) is not None and choose_engine("auto", root) == "pandas"
    with pytest.raises(ValueError, match="cannot read"):
        choose_engine("duckdb", root)


def test_integer_ids_in_one_file_and_text_in_another_meet_in_duckdb(tmp_path):
    root = tmp_path / "ids"
    root.mkdir()
    _events(2).to_parquet(root / "a.parquet", index=False)
    c = pd.DataFrame({"event_id": np.array([501, 502]), "user_id": [7, 7], "message_id": [77, 77],
                      "event_type": ["send", "open"], "machine_open": pd.array([None, True], dtype="boolean"),
                      "timestamp": pd.to_datetime(["2026-04-03 08:00", "2026-04-03 08:00:05"], format="ISO8601", utc=True).astype("datetime64[us, UTC]")})
    c.to_parquet(root / "b.parquet", index=False)
    ref = read_events(root, now=NOW)
    users = pd.DataFrame({"user_id": ["u0", "u1", "7"], "timezone": ["UTC"] * 3, "segment": "s"})
    assert usable(root) is None
    got = build_messages_duckdb(root, users, AS_OF, now=NOW)
    assert got.read == ref.read == 6 and got.reasons == ref.reasons() == {}
    pd.testing.assert_frame_equal(got.messages, build_messages(ref.accepted, users), check_dtype=False)


def test_folder_with_nothing_but_bookkeeping_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").write_bytes(b"")
    with pytest.raises(ContractError, match=r"holds no \.parquet or \.csv files \(ignored 1 file"):
        read_events(tmp_path / "empty")


def test_folder_of_csv_exports_keeps_each_files_malformed_lines(tmp_path):
    root = tmp_path / "csv"
    root.mkdir()
    head = "event_id,user_id,message_id,event_type,timestamp\n"
    (root / "part-0.csv").write_text(head + "s1,u1,m1,send,2026-04-01T08:00:00Z\n"
                                     "o1,u1,m1,open,2026-04-01T09:00:00Z,extra\n")
    (root / "part-1.csv").write_bytes((head + "s2,u2,m2,send,2026-04-01T08:00:00Z\n").encode()
                                      + b"o2,u\xff2,m2,open,2026-04-01T09:00:00Z\n")
    (root / "_SUCCESS").write_bytes(b"")
    res = read_events(root, now=NOW)
    assert (res.read, res.n_accepted, res.n_rejected) == (4, 2, 2)
    bad = res.rejects.sort_values("source_row")
    assert bad["source_row"].tolist() == [1, 3] and bad["line"].tolist() == [3, 3]
    assert bad["reason"].tolist() == ["malformed line: expected 5 fields, saw 6", "malformed line: not valid UTF-8"]
    assert [Path(f).name for f in bad["file"]] == ["part-0.csv", "part-1.csv"]
