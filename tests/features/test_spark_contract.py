"""Dirty input never crashes the Spark engine, and it judges every row as the pandas contract
does: the same accepted rows, the same rejects (by global source row) for the same reasons, the
same message table, and a rejects file with the DuckDB engine's text. Degenerate inputs (every
row rejected, no sends, nothing before the cutoff, one user, no rows) give an empty message
table, never an exception. One local[2] session bound to loopback for the whole module."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("pyspark")
if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
    pytest.skip("the Spark engine needs a Java runtime", allow_module_level=True)

from sendtime.features import inputs as I  # noqa: E402
from sendtime.features.contract import ContractError, read_events  # noqa: E402
from sendtime.features.messages import build_messages  # noqa: E402
from sendtime.features.spark import (  # noqa: E402
    MESSAGE_COLUMNS,
    messages_spark,
    read_events_spark,
    spark_session,
    stop_spark,
)

AS_OF = pd.Timestamp("2026-04-13", tz="UTC")
NOW = pd.Timestamp("2026-04-20", tz="UTC")
T = pd.Timestamp("2026-03-02 10:00", tz="UTC")
H = pd.Timedelta(hours=1)
MIN = pd.Timedelta(minutes=1)
SPARK_ENV = ("SPARK_LOCAL_IP", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")
USERS = pd.DataFrame({"user_id": pd.Series(["u1", "7", "u2"], dtype=object),
                      "timezone": pd.Series(["Europe/Berlin", "America/New_York", "Asia/Tokyo"], dtype=object)})


@pytest.fixture(scope="module")
def spark():
    before = {k: os.environ.get(k) for k in SPARK_ENV}
    session = spark_session("sendtime-contract-tests", master="local[2]", shuffle_partitions=4)
    yield session
    stop_spark(session)
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# --------------------------------------------------------------------------- the dirty input


def _text_rows() -> tuple[list[dict], list[str | None]]:
    """Events with text ids and every kind of problem; beside each, the reason the contract's
    rules give it (None: accepted), written out by hand from the rules."""
    rows, expect = [], []

    def add(eid, uid, mid, kind, ts, flag=None, prop=None, why=None):
        rows.append({"event_id": eid, "user_id": uid, "message_id": mid, "event_type": kind,
                     "timestamp": ts, "machine_open": flag, "propensity": prop})
        expect.append(why)

    # clean messages; ids padded with tabs, non-breaking and ideographic spaces
    add("e01", "u1", "m1", "send", T, prop=0.25)
    add("e02", "\tu1\xa0", "m1", "open", T + 5 * MIN)  # unflagged, within the machine window
    add("e03", "u1", " m1\u3000", "OPEN", T + 2 * H, True)  # flagged machine open
    add("e04", "u1", "m1", " Click ", T + 3 * H, True)  # a flag on a click does not count
    add("e05", "u2", "m2", "send", T, prop=float("nan"))  # NaN propensity: missing, accepted
    add("e05", "u2", "m2", "send", T, prop=0.3, why=I.DUPLICATE_EVENT)  # same key, other propensity
    add("e06", "u2", "m2", "open", T + 20 * MIN, False)
    add("e06", "u2", "m2", "click", T + 21 * MIN, why=I.CONFLICTING_EVENT_ID)
    # row-level rules, first match wins
    add(None, "u3", "m3", "send", T, why=I.MISSING.format("event_id"))
    add("NULL", "u3", "m3", "send", T, why=I.MISSING.format("event_id"))
    add("", "u3", "m3", "send", T, prop=1e-5, why=I.MISSING.format("event_id"))
    add("e07", " None ", "m3", "send", T, why=I.MISSING.format("user_id"))
    add("e08", "u3", "nan", "send", pd.NaT, why=I.MISSING.format("message_id"))  # wins over the time
    add("e09", "u3", "m3", "<NA>", T, why=I.MISSING.format("event_type"))
    add("e10", "u3", "m3", "forward", pd.NaT, why=I.UNKNOWN_EVENT_TYPE)  # wins over the time
    add("e30", "u3", "m3", "bogus", T, True, prop=float("nan"), why=I.UNKNOWN_EVENT_TYPE)
    add("e11", "u3", "m3", "send", pd.NaT, why=I.MISSING_TIMESTAMP)
    add("e12", "u3", "m3", "send", pd.Timestamp("1985-06-01", tz="UTC"), prop=5.0, why=I.BEFORE_1990)
    add("e13", "u3", "m3", "send", NOW + pd.Timedelta(days=2), why=I.IN_THE_FUTURE)
    add("e14", "u3", "m3", "send", T, prop=1.5, why=I.BAD_PROPENSITY)
    add("e15", "u3", "m3", "send", T, prop=0.0, why=I.BAD_PROPENSITY)
    add("e18", "u3", "m3", "send", T, prop=float("inf"), why=I.BAD_PROPENSITY)
    add("e16", "u3", "m3", "send", T + H, prop=1.0)  # m3's first accepted send
    add("e17", "\t \xa0", "m3", "open", T + 2 * H, why=I.MISSING.format("user_id"))  # blank
    # an id first seen on a rejected row: the reference counts it, so this one conflicts
    add("e13", "u3", "m3", "send", T + 2 * H, why=I.CONFLICTING_EVENT_ID)
    # the send rules: a message's send is its first accepted send in source order
    add("e20", "u4", "m4", "send", T + 5 * H)
    add("e21", "u4", "m4", "send", T + 4 * H, why=I.SECOND_SEND)  # earlier in time, later in rows
    add("e22", "u4", "m4", "open", T + 4.5 * H, why=I.BEFORE_SEND)  # after e21, before e20
    add("e23", "u4", "m4", "open", T + 6 * H)
    add("e24", "u5", "m-none", "open", T, why=I.NO_SEND)
    add("e31", "u5", "m-none", "click", T + pd.Timedelta(microseconds=123456), True, why=I.NO_SEND)
    add("e32", 'u,"9"', "m-none", "open", T, why=I.NO_SEND)
    add("e25", "u5", "m5", "click", T, why=I.BEFORE_SEND)  # listed above its send
    add("e26", "u5", "m5", "send", T + H)
    add("e27", "u5", "m5", "bounce", T + H)
    add("e28", "u5", "m5", "unsubscribe", T - H)  # needs no send
    add("e29", "u6", "m-none", "complaint", T)
    add("nat", "u6", "m6", "send", T, why=I.MISSING.format("event_id"))
    # equal send times: ordered by the send's event id, not by row
    add("e41", "u6", "m7", "send", T + 10 * H)
    add("e40", "\u200bu7", "m8", "send", T + 10 * H)  # a zero-width space is not blank
    add("e42", "u6", "m7", "open", AS_OF + H)  # after the cutoff
    add("e43", "u6", "m9", "send", AS_OF + H)  # a send after the cutoff
    add("e44", "u8", "m10", "send", T + pd.Timedelta(microseconds=123456), prop=0.5)
    add("e45", "u8", "m10", "open", T + 3 * H)
    add("e46", "u8", "m10", "open", T + 5 * MIN + pd.Timedelta(microseconds=1))
    add("e47", "7", "501", "click", T + 10 * H)  # the send is in the next file, with integer ids
    return rows, expect


def _text_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for c in ("event_id", "user_id", "message_id", "event_type"):
        df[c] = df[c].astype(object)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).astype("datetime64[us, UTC]")
    df["machine_open"] = df["machine_open"].astype("boolean")
    # objects: None (missing) and NaN stay apart for :func:`_to_parquet`
    df["propensity"] = pd.Series([None if r["propensity"] is None else float(r["propensity"]) for r in rows],
                                 dtype=object, index=df.index)
    return df


def _to_parquet(df: pd.DataFrame, path, **kw) -> None:
    """Write as pandas does, but with NaN propensities stored as NaN (pandas stores them as nulls)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if "propensity" in df.columns:
        values = [None if v is None else float(v) for v in df["propensity"]]
        i = table.schema.get_field_index("propensity")
        table = table.set_column(i, "propensity", pa.array(values, pa.float64(), from_pandas=False))
    pq.write_table(table, path, **kw)


def _integer_frame() -> tuple[pd.DataFrame, list[str | None]]:
    """A second file whose ids are integers: its events and the first file's refer to each other."""
    df = pd.DataFrame({
        "event_id": np.array([1001, 1002, 1003, 1004, 1001], dtype=np.int64),
        "user_id": np.array([7, 7, 7, 8, 7], dtype=np.int64),
        "message_id": np.array([501, 501, 501, 502, 501], dtype=np.int64),
        "event_type": ["send", "open", "send", "open", "send"],
        "timestamp": pd.to_datetime([T + 7 * H, T + 8 * H, T + 9 * H, T + 8 * H, T + 7 * H], utc=True)
        .astype("datetime64[us, UTC]"),
        "machine_open": pd.array([None, False, None, None, None], dtype="boolean"),
        "propensity": [0.5, np.nan, 0.5, np.nan, 0.5],
    })
    return df, [None, None, I.SECOND_SEND, I.NO_SEND, I.DUPLICATE_EVENT]


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    """Two part files in a folder, with a ``_SUCCESS`` and a ``.crc`` file beside them (a stale
    checksum: its part file was rewritten). Returns (folder, expected reason per source row)."""
    folder = tmp_path_factory.mktemp("dirty") / "events"
    folder.mkdir()
    rows, expect = _text_rows()
    _to_parquet(_text_frame(rows), folder / "part-00000.parquet")
    import pyarrow.compute as pc

    assert pc.sum(pc.is_nan(pq.read_table(folder / "part-00000.parquet")["propensity"])).as_py() == 2
    ints, expect_ints = _integer_frame()
    ints.to_parquet(folder / "part-00001.parquet", index=False)
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-00000.parquet.crc").write_bytes(b"stale")
    return folder, expect + expect_ints


def _reference(path, users=USERS, as_of=AS_OF):
    """The pandas reference: the contract's rejects and the message table of what it accepts."""
    ev = read_events(path, now=NOW)
    msgs = build_messages(ev.accepted.loc[ev.accepted["timestamp"] < as_of], users)
    return ev, msgs


def _pairs(frame: pd.DataFrame) -> list[tuple[int, str]]:
    return [(int(s), str(r)) for s, r in zip(frame["source_row"], frame["reason"])]


def _assert_empty_table(msgs: pd.DataFrame) -> None:
    assert msgs.empty and list(msgs.columns) == list(MESSAGE_COLUMNS)
    full = build_messages(read_events(_one_send_file(), now=NOW).accepted, USERS)
    assert (msgs.dtypes == full.dtypes).all(), (msgs.dtypes, full.dtypes)


_ONE_SEND: list = []


def _one_send_file():
    """A one-event file (for the dtypes of a non-empty message table)."""
    if not _ONE_SEND:
        import tempfile
        from pathlib import Path

        p = Path(tempfile.mkdtemp(prefix="sendtime-one-send-")) / "e.parquet"
        _text_frame([{"event_id": "s", "user_id": "u1", "message_id": "m", "event_type": "send", "timestamp": T,
                      "machine_open": None, "propensity": 0.5}]).to_parquet(p, index=False)
        _ONE_SEND.append(p)
    return _ONE_SEND[0]


# --------------------------------------------------------------------------- the dirty folder


def test_dirty_folder_is_judged_as_the_contract_judges_it(spark, dirty, tmp_path):
    folder, expect = dirty
    res = messages_spark(spark, folder, USERS, AS_OF, now=NOW, rejects_path=tmp_path / "rejects.csv")
    want_pairs = [(i, r) for i, r in enumerate(expect) if r is not None]
    want_reasons = pd.Series([r for _, r in want_pairs]).value_counts().to_dict()

    # the rules as stated (ids stripped of every str.strip character, "NULL" / "nan" / " None "
    # missing, first match wins, source order across the two files)
    assert res.read == len(expect) and res.n_rejected == len(want_pairs) and res.n_accepted + res.n_rejected == res.read
    assert res.reasons == want_reasons
    assert {I.MISSING.format(c) for c in ("event_id", "user_id", "message_id", "event_type")} | {
        I.UNKNOWN_EVENT_TYPE, I.MISSING_TIMESTAMP, I.BEFORE_1990, I.IN_THE_FUTURE, I.BAD_PROPENSITY,
        I.DUPLICATE_EVENT, I.CONFLICTING_EVENT_ID, I.NO_SEND, I.BEFORE_SEND, I.SECOND_SEND} <= set(res.reasons)
    ours = pd.read_csv(res.rejects_path, dtype=str, keep_default_na=False)
    assert res.rejects_path == tmp_path / "rejects.csv"
    assert _pairs(ours) == want_pairs
    assert list(ours.columns) == ["source_row", "event_id", "user_id", "message_id", "event_type", "timestamp",
                                  "machine_open", "propensity", "reason"]
    assert not list(tmp_path.glob(".*spark"))  # Spark's scratch folder is gone

    # and the pandas reference agrees
    ev, ref = _reference(folder)
    assert res.reasons == ev.reasons()
    assert _pairs(ours) == _pairs(ev.rejects)
    assert res.events_before_cutoff == int((ev.accepted["timestamp"] < AS_OF).sum())
    pd.testing.assert_frame_equal(res.messages, ref, check_exact=True)
    assert res.status_quo_utc_hour == int(np.argmax(np.bincount(ref["send_ts"].dt.hour, minlength=24)))
    # the padded ids met their unpadded selves; the zero-width space is kept; ties by send event id
    m1 = res.messages.set_index("message_id").loc["m1"]
    assert m1["t_open_unk_fast"] == T + 5 * MIN and m1["t_open_machine_flag"] == T + 2 * H
    assert m1["t_click"] == T + 3 * H and m1["timezone"] == "Europe/Berlin"
    assert res.messages.set_index("message_id").loc["m4", "send_ts"] == T + 5 * H
    assert res.messages.set_index("message_id").loc["501", "t_click"] == T + 10 * H
    tied = res.messages.loc[res.messages["send_ts"] == T + 10 * H, "message_id"].tolist()
    assert tied == ["m8", "m7"] and "\u200bu7" in set(res.messages["user_id"])

    # read_events_spark gives exactly the accepted rows
    acc = read_events_spark(spark, folder, now=NOW).toPandas()
    assert len(acc) == ev.n_accepted
    key = ["event_id", "event_type", "timestamp"]
    ts = pd.to_datetime(acc["timestamp"])
    a = acc.assign(timestamp=ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")).sort_values(key)
    b = ev.accepted.sort_values(key)
    assert a[key].astype(str).values.tolist() == b[key].astype(str).values.tolist()


def test_rejects_file_has_the_duckdb_engines_text(spark, dirty, tmp_path):
    from sendtime.features.duckdb_engine import build_messages_duckdb

    folder, _ = dirty
    res = messages_spark(spark, folder, USERS, AS_OF, now=NOW, rejects_path=tmp_path / "spark.csv")
    duck = build_messages_duckdb(folder, USERS, AS_OF, now=NOW, rejects_path=tmp_path / "duck.csv")
    assert duck.reasons == res.reasons
    ours, theirs = (tmp_path / "spark.csv").read_text(), (tmp_path / "duck.csv").read_text()
    assert ours == theirs
    # the text of some values, as written
    assert "1985-06-01 00:00:00+00,,5.0,timestamp before 1990" in ours
    assert '"",u3,m3,send,2026-03-02 10:00:00+00,,1e-05,missing event_id' in ours
    assert 'e32,"u,""9""",m-none,open' in ours and ",inf," in ours and ",true,nan," in ours
    assert "2026-03-02 10:00:00.123456+00,true,,no send for message_id" in ours
    pd.testing.assert_frame_equal(res.messages, duck.messages, check_dtype=False)


def test_source_rows_count_across_files_row_groups_and_splits(spark, tmp_path):
    """Source rows are the contract's numbering however Spark splits the files into tasks."""
    folder = tmp_path / "events"
    (folder / "day=2026-03-02").mkdir(parents=True)
    rng = np.random.default_rng(3)
    frames = []
    for f in range(3):
        n = 1500
        ids = np.arange(n) + f * n
        kinds = np.where(ids % 3 == 0, "send", "open")
        df = pd.DataFrame({
            "event_id": [f"e{i}" for i in ids], "user_id": [f"u{i % 50}" for i in ids],
            "message_id": [f"m{(i // 3) * 3}" for i in ids], "event_type": kinds,
            "timestamp": (T + pd.to_timedelta(ids, unit="s") + pd.to_timedelta(np.where(kinds == "send", 0, 60), unit="s")),
            "propensity": np.where(rng.random(n) < 0.01, 2.0, 0.5),
        })
        df["timestamp"] = df["timestamp"].astype("datetime64[us, UTC]")
        df.loc[rng.random(n) < 0.01, "event_id"] = "NULL"
        frames.append(df)
    for c in frames[0].columns:  # an identical event in two files, and two ids reused with other contents
        frames[2].loc[5, c] = frames[0].loc[5, c]
    frames[2].loc[[700, 1499], "event_id"] = frames[0].loc[[700, 1499], "event_id"].to_numpy()
    for f, df in enumerate(frames):
        path = folder / "day=2026-03-02" / f"part-{f}.parquet" if f == 1 else folder / f"part-{f}.parquet"
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=100)
    ev, ref = _reference(folder)
    assert ev.n_rejected > 50
    old = {k: spark.conf.get(k) for k in ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes")}
    spark.conf.set("spark.sql.files.maxPartitionBytes", "8k")  # many splits per file
    spark.conf.set("spark.sql.files.openCostInBytes", "1k")
    try:
        assert spark.read.parquet(str(folder / "part-0.parquet")).rdd.getNumPartitions() > 2
        res = messages_spark(spark, folder, USERS, AS_OF, now=NOW, rejects_path=tmp_path / "r.csv")
    finally:
        for k, v in old.items():
            spark.conf.set(k, v)
    ours = pd.read_csv(tmp_path / "r.csv", dtype=str, keep_default_na=False)
    assert _pairs(ours) == _pairs(ev.rejects) and res.reasons == ev.reasons()
    assert "day" in ours.columns  # the Hive folder value of the file that lacks the column
    assert set(ours["day"]) <= {"", "2026-03-02"} and (ours["day"] == "2026-03-02").any()
    pd.testing.assert_frame_equal(res.messages, ref, check_exact=True)


def test_nanosecond_timestamps_are_read_as_the_contract_reads_them(spark, tmp_path):
    rows, _ = _text_rows()
    df = _text_frame(rows)
    df["timestamp"] = df["timestamp"].astype("datetime64[ns, UTC]") + pd.to_timedelta(
        np.arange(len(df)) % 2 * 789, unit="ns")
    _to_parquet(df, tmp_path / "ns.parquet")
    assert pq.read_schema(tmp_path / "ns.parquet").field("timestamp").type.unit == "ns"
    ev, ref = _reference(tmp_path / "ns.parquet")
    res = messages_spark(spark, tmp_path / "ns.parquet", USERS, AS_OF, now=NOW, rejects_path=tmp_path / "r.csv")
    assert res.reasons == ev.reasons()
    ours = pd.read_csv(tmp_path / "r.csv", dtype=str, keep_default_na=False)
    assert _pairs(ours) == _pairs(ev.rejects)
    assert (ours["propensity"] == "nan").any()  # stored as NaN, not null
    assert ours["timestamp"].str.contains(r"\.000000789\+00$").any()
    pd.testing.assert_frame_equal(res.messages, ref, check_exact=True)


# --------------------------------------------------------------------------- degenerate input


def _write(tmp_path, rows, name="e.parquet"):
    path = tmp_path / name
    _text_frame(rows).to_parquet(path, index=False)
    return path


def _row(eid, kind, ts, uid="u1", mid="m1", prop=None):
    return {"event_id": eid, "user_id": uid, "message_id": mid, "event_type": kind, "timestamp": ts,
            "machine_open": None, "propensity": prop}


def test_every_row_rejected_gives_an_empty_table(spark, tmp_path):
    path = _write(tmp_path, [_row("a", "send", NOW + pd.Timedelta(days=3)), _row(None, "send", T),
                             _row("b", "open", T), _row("c", "teleport", T)])
    ev, _ = _reference(path)
    res = messages_spark(spark, path, USERS, AS_OF, now=NOW, rejects_path=tmp_path / "r.csv")
    assert (res.read, res.n_accepted, res.n_rejected) == (4, 0, 4) == (ev.read, ev.n_accepted, ev.n_rejected)
    assert res.reasons == ev.reasons() == {I.IN_THE_FUTURE: 1, I.MISSING.format("event_id"): 1, I.NO_SEND: 1,
                                           I.UNKNOWN_EVENT_TYPE: 1}
    assert _pairs(pd.read_csv(tmp_path / "r.csv")) == _pairs(ev.rejects)
    assert res.events_before_cutoff == 0 and res.status_quo_utc_hour is None
    _assert_empty_table(res.messages)


def test_no_sends_at_all(spark, tmp_path):
    path = _write(tmp_path, [_row("a", "open", T), _row("b", "unsubscribe", T), _row("c", "complaint", T + H)])
    ev, _ = _reference(path)
    res = messages_spark(spark, path, USERS, AS_OF, now=NOW)
    assert res.reasons == ev.reasons() == {I.NO_SEND: 1}
    assert (res.n_accepted, res.events_before_cutoff, res.rejects_path) == (2, 2, None)
    _assert_empty_table(res.messages)


def test_nothing_before_the_cutoff(spark, tmp_path):
    path = _write(tmp_path, [_row("a", "send", AS_OF), _row("b", "open", AS_OF + H)])
    res = messages_spark(spark, path, USERS, AS_OF, now=NOW, rejects_path=tmp_path / "r.csv")
    assert (res.read, res.n_accepted, res.n_rejected, res.events_before_cutoff) == (2, 2, 0, 0)
    assert res.reasons == {} and res.rejects_path is None and not (tmp_path / "r.csv").exists()
    _assert_empty_table(res.messages)


def test_a_single_user(spark, tmp_path):
    path = _write(tmp_path, [_row("a", "send", T, prop=0.5), _row("b", "open", T + 2 * MIN),
                             _row("c", "send", T + H, mid="m2"), _row("d", "click", T + 2 * H, mid="m2"),
                             _row("e", "send", T + H, mid="m2")])
    ev, ref = _reference(path)
    res = messages_spark(spark, path, USERS, AS_OF, now=NOW)
    assert res.reasons == ev.reasons() == {I.SECOND_SEND: 1}
    pd.testing.assert_frame_equal(res.messages, ref, check_exact=True)
    assert res.status_quo_utc_hour == 10


def test_a_file_with_no_rows(spark, tmp_path):
    path = tmp_path / "empty.parquet"
    _text_frame([_row("a", "send", T)]).iloc[:0].to_parquet(path, index=False)
    assert pq.ParquetFile(path).metadata.num_rows == 0
    res = messages_spark(spark, path, USERS, AS_OF, now=NOW, rejects_path=tmp_path / "r.csv")
    assert (res.read, res.n_accepted, res.n_rejected, res.events_before_cutoff) == (0, 0, 0, 0)
    assert res.reasons == {} and res.rejects_path is None and res.status_quo_utc_hour is None
    _assert_empty_table(res.messages)
    # beside a file with rows, in a folder: numbered from the next file on
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(path, folder / "part-0.parquet")
    _write(folder, [_row("a", "send", T), _row("a", "send", T)], name="part-1.parquet")
    res = messages_spark(spark, folder, USERS, AS_OF, now=NOW, rejects_path=tmp_path / "r2.csv")
    assert _pairs(pd.read_csv(tmp_path / "r2.csv")) == [(1, I.DUPLICATE_EVENT)] == _pairs(_reference(folder)[0].rejects)


def test_columns_with_no_values_at_all(spark, tmp_path):
    """All-missing columns (Arrow's null type, as pandas writes an all-None column)."""
    t = pa.table({"event_id": pa.array(["a", "b"]), "user_id": pa.array([None, None], pa.null()),
                  "message_id": pa.array(["m", "m"]), "event_type": pa.array(["send", "open"]),
                  "timestamp": pa.array([T, T + H], pa.timestamp("us", tz="UTC")),
                  "machine_open": pa.array([None, None], pa.null()), "propensity": pa.array([None, None], pa.null())})
    pq.write_table(t, tmp_path / "e.parquet")
    res = messages_spark(spark, tmp_path / "e.parquet", USERS, AS_OF, now=NOW)
    assert res.reasons == {I.MISSING.format("user_id"): 2} and res.n_accepted == 0
    _assert_empty_table(res.messages)


def test_inputs_the_spark_engine_does_not_read_say_why_in_one_line(spark, tmp_path):
    from sendtime.features.duckdb_engine import NotForThisEngine

    base = _text_frame([_row("a", "send", T)])
    base.to_csv(tmp_path / "e.csv", index=False)
    base.assign(timestamp=base["timestamp"].dt.tz_localize(None)).to_parquet(tmp_path / "naive.parquet")
    base.assign(timestamp="2026-03-02T10:00:00Z").to_parquet(tmp_path / "text.parquet")
    base.drop(columns="message_id").to_parquet(tmp_path / "lacking.parquet")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "_SUCCESS").write_text("")
    cases = {"e.csv": (NotForThisEngine, "Parquet only"), "naive.parquet": (NotForThisEngine, "timestamp column"),
             "text.parquet": (NotForThisEngine, "timestamp column"), "lacking.parquet": (ContractError, "message_id"),
             "nothing": (ContractError, "holds no"), "missing.parquet": (ContractError, "not found")}
    for name, (kind, words) in cases.items():
        with pytest.raises(kind) as err:
            messages_spark(spark, tmp_path / name, USERS, AS_OF, now=NOW)
        assert isinstance(err.value, ValueError) and words in str(err.value) and "\n" not in str(err.value), name


# ------------------------------------------------------------- generated logs (differential)
from hypothesis import HealthCheck, example, given, settings  # noqa: E402

from tests.features.test_engine_parity import (  # noqa: E402
    AS_OF as P_AS_OF, FUTURE_SEND, NOW as P_NOW, NULL_USER_SEND, ORPHANS_ONLY, _by_id, _rejects, _users, _write as _write_log,
    event_logs,
)


def _spark_agrees(spark, rows, n_users, tmp) -> None:
    path = _write_log(rows, tmp / "events.parquet")
    users = _users(n_users)
    ref = read_events(path, now=P_NOW)
    ref_msgs = build_messages(ref.accepted.loc[ref.accepted["timestamp"] < P_AS_OF], users)
    got = messages_spark(spark, path, users, P_AS_OF, now=P_NOW, rejects_path=tmp / "rejects.csv")
    assert (got.read, got.n_accepted, got.n_rejected) == (ref.read, ref.n_accepted, ref.n_rejected)
    assert got.reasons == ref.reasons()
    assert _rejects(got.rejects_path) == sorted(zip(ref.rejects["source_row"].astype(int), ref.rejects["reason"]))
    pd.testing.assert_frame_equal(_by_id(got.messages), _by_id(ref_msgs), check_dtype=False)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(log=event_logs())
@example(log=ORPHANS_ONLY)
@example(log=NULL_USER_SEND)
@example(log=FUTURE_SEND)
def test_spark_agrees_with_the_reference_on_generated_dirty_logs(spark, log, tmp_path_factory):
    """The generator of tests/features/test_engine_parity.py through Spark (fewer examples: each costs
    a few Spark jobs); more under the slow marker there."""
    rows, n_users = log
    _spark_agrees(spark, rows, n_users, tmp_path_factory.mktemp("slog"))


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(log=event_logs(max_messages=10))
def test_spark_agrees_on_many_more_generated_logs(spark, log, tmp_path_factory):
    rows, n_users = log
    _spark_agrees(spark, rows, n_users, tmp_path_factory.mktemp("slog"))
