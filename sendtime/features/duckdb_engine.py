"""The event-scale part of the feature build on DuckDB: Parquet events in, one row per message out.

The same contract and the same message definition as :mod:`sendtime.features.contract` and
:func:`sendtime.features.messages.build_messages`, written as SQL so that DuckDB streams the Parquet
files over both cores and spills to disk instead of holding the history in memory. Everything
after the message table (outcomes, profiles, user features) is the shared numpy code, so the two
engines agree on every feature as long as they agree on the messages (tested).

Only typed Parquet input takes this path: ids as text or integers, ``timestamp`` as a
time-zone-aware timestamp. Anything else (CSV, text timestamps) goes through the pandas
contract, whose parsing rules for text are the reference.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sendtime.features import inputs as I
from sendtime.features.contract import (
    EARLIEST,
    EVENT_COLUMNS,
    EVENT_TYPES,
    OPTIONAL_EVENT_COLUMNS,
    ContractError,
    known_timezone,
)
from sendtime.features.inputs import MISSING_TEXT, WHITESPACE, data_files
from sendtime.features.message_buckets import BucketWriter, MessageBucket, bucket_loaders, load_frame  # noqa: F401 (re-exported)
from sendtime.features.messages import (
    EPOCH_HOUR_OF_WEEK,
    HOURS_PER_WEEK,
    MACHINE_OPEN_WINDOW,
    OUTCOME_COLUMNS,
    US_PER_HOUR,
)
from sendtime.features.repeats import repeated_values

# "NULL": a column that holds only nulls (written from an all-missing object column)
_ID_TYPES = ("VARCHAR", "BIGINT", "INTEGER", "UBIGINT", "UINTEGER", "SMALLINT", "HUGEINT", "NULL")



#: the contract's reject reasons (sendtime.features.inputs), bound as DuckDB variables for the
#: statements below (``getvariable('reason_...')``): one wording, no copies in the SQL
REASONS = {
    "reason_missing_event_id": I.MISSING.format("event_id"), "reason_missing_user_id": I.MISSING.format("user_id"),
    "reason_missing_message_id": I.MISSING.format("message_id"), "reason_missing_event_type": I.MISSING.format("event_type"),
    "reason_unknown_event_type": I.UNKNOWN_EVENT_TYPE, "reason_missing_timestamp": I.MISSING_TIMESTAMP,
    "reason_before_1990": I.BEFORE_1990, "reason_in_the_future": I.IN_THE_FUTURE, "reason_bad_propensity": I.BAD_PROPENSITY,
    "reason_duplicate_event": I.DUPLICATE_EVENT, "reason_conflicting_event_id": I.CONFLICTING_EVENT_ID,
    "reason_no_send": I.NO_SEND, "reason_before_send": I.BEFORE_SEND, "reason_second_send": I.SECOND_SEND,
}


class NotForThisEngine(ValueError):
    """The input is valid for the contract but not in the typed form this engine reads."""


@dataclass
class EngineResult:
    """What the engine read, and the message table the features are built from."""

    read: int
    n_accepted: int
    n_rejected: int
    reasons: dict[str, int]
    messages: pd.DataFrame
    events_before_cutoff: int
    status_quo_utc_hour: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    rejects_path: Path | None = None

    def summary(self, what: str = "events") -> str:
        return f"{what}: read {self.read:,} = accepted {self.n_accepted:,} + rejected {self.n_rejected:,}"


def count_rows(events_path: str | Path) -> int:
    """Rows in the Parquet events (from the files' metadata, without reading them)."""
    import pyarrow.parquet as pq

    return int(sum(pq.ParquetFile(f).metadata.num_rows for f in _files(Path(events_path))[0]))


def usable(events_path: str | Path) -> str | None:
    """None when this engine can read ``events_path``, else why not (one line)."""
    try:
        files, hive = _files(Path(events_path))
        con = connect(threads=1)
        try:
            _check_schema(con, files, hive)
        finally:
            con.close()
    except (NotForThisEngine, ContractError) as exc:
        return str(exc)
    except Exception as exc:  # unreadable Parquet: the pandas reader gives the contract's message
        return f"cannot read with DuckDB: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return None


def _files(path: Path) -> tuple[list[str], bool]:
    """The Parquet data files (:func:`sendtime.features.inputs.data_files`, the pandas reader's list and
    order) and whether to read their Hive ``key=value`` folders as columns (as pandas does)."""
    if not path.exists():
        raise ContractError(f"events file not found: {path}")
    found = data_files(path)
    if not found.all_parquet:
        raise NotForThisEngine(f"{path}: the DuckDB engine reads Parquet only")
    keys = {tuple(sorted(found.partitions(f))) for f in found.files}
    if len(keys) > 1:
        named = {k for ks in keys for k in ks} & set(EVENT_COLUMNS + OPTIONAL_EVENT_COLUMNS)
        if named:
            raise NotForThisEngine(f"{path}: partition folders name {', '.join(sorted(named))} in some files only")
    return [str(f) for f in found.files], len(keys) == 1 and keys != {()}


def connect(threads: int | None = None, memory_limit: str | None = None, temp_dir: str | Path | None = None):
    """A DuckDB connection with bounded memory (it spills to ``temp_dir`` beyond the limit)."""
    import duckdb

    con = duckdb.connect(config={"threads": threads or os.cpu_count() or 1})
    limit = memory_limit or "6GB"
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", limit):
        raise ValueError(f"memory limit must look like '6GB', got {limit!r}")
    con.execute(f"SET memory_limit = '{limit}'")
    # keep freed blocks for reuse instead of handing them back to the OS and faulting them in
    # again (the aggregation churns through gigabytes): a third less system time
    con.execute(f"SET block_allocator_memory = '{limit}'")
    con.execute("SET preserve_insertion_order = false")
    if temp_dir is not None:
        con.execute("SET temp_directory = '" + Path(temp_dir).as_posix().replace("'", "''") + "'")
    con.execute("SET TimeZone = 'UTC'")
    return con


def _check_schema(con, files: list[str], hive: bool) -> dict[str, str]:
    _bind(con, files=files, hive=hive)
    cols = {r[0]: r[1].strip('"') for r in con.execute(f"DESCRIBE {_PLAIN_ROWS}").fetchall()}
    missing = [c for c in EVENT_COLUMNS if c not in cols]
    if missing:
        raise ContractError(f"events file lacks required column(s): {', '.join(missing)}")
    if cols["timestamp"] not in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ_NS"):  # nanoseconds: floored to microseconds, as pandas
        raise NotForThisEngine(f"timestamp column is {cols['timestamp']}, not a time-zone-aware timestamp")
    for c in ("event_id", "user_id", "message_id", "event_type"):
        if cols[c] not in _ID_TYPES:
            raise NotForThisEngine(f"{c} column is {cols[c]}")
    if "machine_open" in cols and cols["machine_open"] not in ("BOOLEAN", "NULL"):
        raise NotForThisEngine(f"machine_open column is {cols['machine_open']}, not BOOLEAN")
    if "propensity" in cols and cols["propensity"] not in ("DOUBLE", "FLOAT", "NULL"):
        raise NotForThisEngine(f"propensity column is {cols['propensity']}")
    return cols


def build_messages_duckdb(
    events_path: str | Path,
    users: pd.DataFrame,
    as_of: pd.Timestamp,
    default_tz: str = "UTC",
    now: pd.Timestamp | None = None,
    rejects_path: str | Path | None = None,
    con=None,
    progress=None,
    temp_dir: str | Path | None = None,
    buckets: int = 0,
    bucket_dir: str | Path | None = None,
    string_buckets: int | None = None,
) -> EngineResult:
    """Validate events (as :func:`sendtime.features.contract.validate_events`) and build the message
    table of the events before ``as_of`` (as :func:`sendtime.features.messages.build_messages`).

    With ``buckets`` > 0 the messages are not returned but written to ``bucket_dir`` as that
    many user buckets split by a hash of the user id (every user's messages in one bucket), for
    :func:`sendtime.features.engagement.build_user_features_bucketed`; see
    :mod:`sendtime.features.message_buckets`. Only the first ``string_buckets`` buckets (default: all)
    also get the text columns (message id, user id, time zone) that a full message table needs;
    every bucket has the numbers the features need, plus the user id of users missing from the
    users table.

    How it stays fast and exact: repeated event ids are found from their 64-bit hashes in
    numpy and confirmed on the ids; one aggregation per message (grouped by a hash of its id)
    computes the send, its outcomes and a ``regular`` flag (one send, no outcome before it, no
    ambiguity between a machine and a later human open), streamed out as Arrow. The rare
    irregular messages are re-checked row by row, by their real ids, with the contract's rules,
    so every reject gets its exact reason.
    """
    import shutil
    import tempfile
    import time

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    say = progress or (lambda _msg: None)
    files, hive = _files(Path(events_path))
    own = con is None
    con = con or connect(temp_dir=temp_dir)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    scratch = None
    if buckets > 0:
        if bucket_dir is None:
            raise ValueError("buckets > 0 needs a bucket_dir")
        out = Path(bucket_dir)
    else:
        scratch = Path(tempfile.mkdtemp(prefix="sendtime-msgs-", dir=temp_dir if temp_dir and Path(temp_dir).exists() else None))
        out = scratch
    n_buckets = max(int(buckets), 1)
    string_buckets = n_buckets if string_buckets is None or buckets <= 0 else int(string_buckets)
    try:
        cols = _check_schema(con, files, hive)
        now = pd.Timestamp.now(tz="UTC") if now is None else now

        if not known_timezone(default_tz):
            raise ValueError(f"default time zone {default_tz!r} is not an IANA time zone")
        # every value the statements use is bound as a DuckDB variable: the SQL text is fixed
        _bind(con, files=files, earliest=EARLIEST.isoformat(), future=(now + pd.Timedelta(days=1)).isoformat(),
              event_types=list(EVENT_TYPES), cut=as_of.isoformat(),
              fast_us=int(MACHINE_OPEN_WINDOW.total_seconds() * 1_000_000), default_tz=default_tz,
              buckets=n_buckets,
              string_buckets=string_buckets, ws=WHITESPACE, missing=list(MISSING_TEXT), **REASONS)
        _register_users(con, users)
        n_rows = _register_offsets(con, files)
        optional = ("machine_open" in cols, "propensity" in cols, cols["timestamp"] == "TIMESTAMPTZ_NS")
        for view in (_EV_VIEW, _EV_PLAIN_VIEW):
            con.execute(view[(*optional, False)])
        con.execute(_R1_VIEW)

        # 1. event ids seen more than once (by a 64-bit hash, confirmed exactly below), and
        # whether any row breaks a row-level rule at all: clean input never pays for the breakdown
        hashes = np.empty(n_rows, dtype=np.uint64)
        for exact in (False, True):
            n_ids = n_bad = n_padded = 0
            for batch in con.sql(_ID_HASHES).to_arrow_reader(_BATCH_ROWS):
                h = pc.drop_null(batch.column("h")).to_numpy()
                hashes[n_ids:n_ids + len(h)] = h
                n_ids += len(h)
                n_bad += int(pc.sum(batch.column("bad")).as_py() or 0)
                n_padded += int(pc.sum(batch.column("padded")).as_py() or 0)
            if exact or not n_padded:
                break
            say(f"{n_padded:,} rows with padded ids or text that means missing: ids read with the exact rule")
            for view in (_EV_VIEW, _EV_PLAIN_VIEW):
                con.execute(view[(*optional, True)])
            con.execute(_R1_VIEW)
        repeated = repeated_values(hashes[:n_ids])
        del hashes
        n_cand = len(repeated)
        _temp_table(con, "_h", pa.table({"h": pa.array(repeated, type=pa.uint64())}))
        reasons: dict[str, int] = {}
        if n_bad:
            reasons.update({r: int(c) for r, c in con.execute(_R1_REASONS).fetchall()})
        con.execute(_DUP_REJ if n_cand else _NO_DUP)
        for r, c in con.execute("SELECT reason, count(*) FROM _dup_rej GROUP BY ALL").fetchall():
            reasons[r] = reasons.get(r, 0) + int(c)
        timings["contract"] = time.perf_counter() - t0

        # 2. one row per message (grouped by a hash of its id): regular messages are done here,
        # streamed out of DuckDB into the bucket files
        out.mkdir(parents=True, exist_ok=True)
        for sub in ("main", "text", "fix"):
            shutil.rmtree(out / sub, ignore_errors=True)
        # clean input (no row-level reject, no repeated id): the aggregation reads the rows as
        # they are, and never decodes the event ids it does not need
        clean = not n_bad and not con.execute("SELECT count(*) FROM _dup_rej").fetchall()[0][0]
        parts = max(1, int(np.ceil(n_rows / AGG_PART_EVENTS)))
        zone_of_user = users["timezone"] if len(users) else pd.Series([], dtype=object)
        writer = BucketWriter(out, zone_of_user, default_tz) if buckets > 0 else None
        irregular = []
        # the regular rows of the text buckets, kept on disk (not in memory) for the join below
        text_path, text_out = out / "text_rows.parquet", None
        utc_hours = np.zeros(24, dtype=np.int64)
        before = 0
        cut_us = int(as_of.value // 1000)
        for part in range(parts):  # message ids split by hash: each pass's aggregation fits in memory
            _bind(con, parts=parts, part=part)
            for batch in con.sql(_AGG[clean]).to_arrow_reader(_BATCH_ROWS):
                regular = pc.fill_null(batch.column("regular"), False).to_numpy(zero_copy_only=False)
                if not regular.all():
                    irregular.append(batch.column("mh").to_numpy()[~regular])
                    batch = batch.filter(pa.array(regular))
                before += int(batch.column("n_before").to_numpy().sum())
                # a message sent after the cutoff counts its earlier events (an unsubscribe before
                # its send), and is not a message yet
                sent_us = batch.column("send_ts").cast(pa.int64()).to_numpy()  # never null: regular messages
                if (sent_us >= cut_us).any():
                    batch = batch.filter(pa.array(sent_us < cut_us))
                    sent_us = sent_us[sent_us < cut_us]
                utc_hours += np.bincount(sent_us // 3_600_000_000 % 24, minlength=24)
                if writer is not None:
                    writer.add(batch)
                text = batch.column("bucket").to_numpy() < string_buckets
                if text.any():
                    rows = batch.filter(pa.array(text)).select(_TEXT_ROW_COLUMNS)
                    if text_out is None:
                        text_out = pq.ParquetWriter(str(text_path), rows.schema)
                    text_out.write_batch(rows)
            say(f"messages: pass {part + 1}/{parts} aggregated in {time.perf_counter() - t0:.1f} s")
        if writer is not None:
            writer.close()
        irr = np.unique(np.concatenate(irregular)) if irregular else np.zeros(0, dtype=np.uint64)
        n_irr = len(irr)
        if text_out is not None:  # the text columns of the buckets that need them: message and send event ids
            text_out.close()
            _bind(con, parts=1, part=0, text_rows=str(text_path))
            con.sql(_TEXT_MESSAGES[clean]).write_parquet(str(out / "text"), partition_by=["bucket"], overwrite=True)
            text_path.unlink()
        timings["messages"] = time.perf_counter() - t0
        say(f"messages aggregated in {timings['messages']:.1f} s; {n_irr:,} message ids to check row by row")

        # 3. irregular messages: the contract's row rules, exactly
        fix = out / "fix"
        if n_irr:
            _temp_table(con, "_irr", pa.table({"mh": pa.array(irr, type=pa.uint64())}))
            for statement in (_SUB, _SUB_CHECKED):
                con.execute(statement)
            for r, c in con.execute("SELECT late_reason, count(*) FROM _checked WHERE late_reason IS NOT NULL GROUP BY ALL").fetchall():
                reasons[r] = reasons.get(r, 0) + int(c)
            before += con.execute("SELECT count(*) FROM _checked WHERE reason IS NULL AND late_reason IS NULL "
                                  "AND ts < getvariable('cut')::TIMESTAMPTZ").fetchall()[0][0]
            # the rebuilt messages (none when every irregular message was rejected: orphan opens)
            con.execute(f"CREATE OR REPLACE TEMP TABLE _fix AS {_FIX_MESSAGES}")
            for h, c in con.execute("SELECT hour(send_ts), count(*) FROM _fix GROUP BY ALL").fetchall():
                utc_hours[int(h)] += int(c)
            if con.execute("SELECT count(*) FROM _fix").fetchall()[0][0]:
                con.sql("SELECT * FROM _fix").write_parquet(str(fix), partition_by=["bucket"], overwrite=True)
        sq = int(np.argmax(utc_hours)) if utc_hours.sum() else None  # the most common hour, the earliest on ties
        read = n_rows
        rejected = int(sum(reasons.values()))
        timings["checked"] = time.perf_counter() - t0
        say(f"contract: read {read:,} = accepted {read - rejected:,} + rejected {rejected:,}")
        if rejects_path is not None and rejected:
            _write_rejects(con, cols, rejects_path, n_bad, n_irr)
        msgs = None
        if buckets <= 0:
            msgs = load_frame(_parquet_files(out / "text") + _parquet_files(out / "fix"))
            msgs = msgs.sort_values(["send_ts", "send_event"], kind="stable")
            msgs = msgs.drop(columns="send_event").reset_index(drop=True)
        say(f"{before:,} events before the cutoff made into messages in {time.perf_counter() - t0:.1f} s")
        return EngineResult(read=read, n_accepted=read - rejected, n_rejected=rejected, reasons=reasons, messages=msgs,
                            events_before_cutoff=int(before), status_quo_utc_hour=sq, timings=timings,
                            rejects_path=Path(rejects_path) if rejects_path is not None and rejected else None)
    finally:
        for statement in _CLEAN_UP:
            con.execute(statement)
        if own:
            con.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _register_offsets(con, files: list[str]) -> int:
    """Rows before each file (from the files' metadata), for global source row numbers; returns
    the rows of all files."""
    import pyarrow.parquet as pq

    rows = [pq.ParquetFile(f).metadata.num_rows for f in files]
    off = pd.DataFrame({"fi": np.arange(len(files), dtype=np.int64), "off": np.cumsum([0] + rows[:-1]).astype(np.int64)})
    _temp_table(con, "_offsets", off)
    return int(sum(rows))


def _register_users(con, users: pd.DataFrame) -> None:
    """The users table with each user's row number (``uidx``): the features' user index."""
    import pyarrow as pa

    n = len(users)
    u = pa.table({
        "user_id": pa.array(users["user_id"].astype(str).to_numpy(dtype=object) if n else [], type=pa.string()),
        # a missing zone may come as NaN (pandas 3 reads a null text value so): the default zone
        "timezone": pa.array(users["timezone"].astype(object).where(users["timezone"].notna(), None).to_numpy()
                             if n else [], type=pa.string()),
        "uidx": pa.array(np.arange(n, dtype=np.int32)),
    })
    _temp_table(con, "_users", u)


# our temporary tables made from Python data (fixed statements: the names are ours)
_FROM_ARROW = {
    "_h": "CREATE OR REPLACE TEMP TABLE _h AS SELECT * FROM _arrow_in",
    "_irr": "CREATE OR REPLACE TEMP TABLE _irr AS SELECT * FROM _arrow_in",
    "_offsets": "CREATE OR REPLACE TEMP TABLE _offsets AS SELECT * FROM _arrow_in",
    "_users": "CREATE OR REPLACE TEMP TABLE _users AS SELECT * FROM _arrow_in",
}


def _temp_table(con, name: str, data) -> None:
    """A DuckDB temporary table holding ``data`` (an Arrow table or a DataFrame)."""
    con.register("_arrow_in", data)
    try:
        con.execute(_FROM_ARROW[name])
    finally:
        con.unregister("_arrow_in")


def _parquet_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in Path(folder).rglob("*.parquet"))


def _write_rejects(con, cols, rejects_path, n_bad: int, n_irr: int) -> None:
    """Every rejected row as it was read (as text), with its reason, in source order."""
    Path(rejects_path).parent.mkdir(parents=True, exist_ok=True)
    parts = ["SELECT src, reason FROM _dup_rej"]
    if n_bad:
        parts.append("SELECT src, reason FROM _r1 WHERE reason IS NOT NULL")
    if n_irr:
        parts.append("SELECT src, late_reason AS reason FROM _checked WHERE late_reason IS NOT NULL")
    con.execute("CREATE OR REPLACE TEMP TABLE _bad AS " + " UNION ALL ".join(parts))  # fixed pieces, no values
    raw = con.sql(_RAW_ROWS).set_alias("r")
    bad = con.sql("SELECT src AS source_row, reason FROM _bad").set_alias("c")
    text = [duckdb_cast_text(c) for c in cols]
    bad.join(raw, "c.source_row = r.src").project(", ".join(["c.source_row"] + text + ["c.reason"])) \
        .order("source_row").write_csv(str(rejects_path), header=True)


def _bind(con, **values) -> None:
    """Values for the fixed statements below, as DuckDB variables (never spliced into SQL)."""
    for name, value in values.items():
        con.execute(f"SET VARIABLE {name} = ?", [value])  # the name is one of ours, the value bound


def duckdb_cast_text(column: str) -> str:
    """``CAST(r."col" AS VARCHAR) AS "col"`` for a column name from the file, quoted safely."""
    q = '"' + column.replace('"', '""') + '"'
    return f"CAST(r.{q} AS VARCHAR) AS {q}"


# global source row numbers across files, as the pandas reader concatenates them (``_offsets``:
# rows before each file, from the files' metadata)
_RAW_ROWS = """
    SELECT coalesce(o.off, 0) + r.file_row_number AS src, r.*
    FROM read_parquet(getvariable('files'), file_row_number=true, union_by_name=true,
                      hive_partitioning=getvariable('hive'), hive_types_autocast=false) r
    LEFT JOIN _offsets o ON o.fi = r.file_index
"""
_EV_TEMPLATE = """
    CREATE OR REPLACE TEMP VIEW _ev AS
    SELECT src,
           TRIMMED(event_id) AS event_id,
           TRIMMED(user_id) AS user_id,
           TRIMMED(message_id) AS message_id,
           lower(TRIMMED(event_type)) AS event_type,
           TS AS ts, MACHINE_OPEN AS machine_open,
           CASE WHEN isnan(PROPENSITY) THEN NULL ELSE PROPENSITY END AS propensity,
           PROPENSITY AS raw_propensity, PADDED AS padded
    FROM (RAW_ROWS)
"""
# ids stripped of what Python's str.strip removes (``ws``: DuckDB's one-argument trim removes
# spaces only), and null when they are text that means missing (``missing``: "", "nan", "NULL",
# ...). Only ids of at most 5 bytes (the longest such text), or that begin or end with a
# character that may be blank (code point <= 32 or >= 133: every whitespace character is), take
# the slow path; the check on a length and two code points is nearly free, trimming every id is not.
_SLOW = ("strlen(V) <= LEN OR ord(V) <= 32 OR ord(V) >= 133 OR ord(V[-1]) <= 32 OR ord(V[-1]) >= 133")
_TRIMMED = ("CASE WHEN SLOW THEN (CASE WHEN list_contains(getvariable('missing'), lower(trim(V, getvariable('ws')))) "
            "THEN NULL ELSE trim(V, getvariable('ws')) END) ELSE V END").replace("SLOW", _SLOW) \
    .replace("LEN", str(max(map(len, MISSING_TEXT)))).replace("V", "CAST(X AS VARCHAR)")
# whether the exact rule may change an id of the row (it begins or ends with a character that
# may be blank, or is short text that means missing): the first pass reads the ids as they are
# and counts these rows; only when there are some (dirty input) is every pass run again with
# the exact rule, so clean input never pays for trimming
_MAY_CHANGE = " OR ".join(_SLOW.replace("strlen(V) <= LEN", "(strlen(V) <= LEN AND list_contains(getvariable('missing'), lower(V)))")
                          .replace("LEN", str(max(map(len, MISSING_TEXT)))).replace("V", f"CAST({c} AS VARCHAR)")
                          for c in ("event_id", "user_id", "message_id", "event_type"))
_EV_EXACT = re.sub(r"TRIMMED\((\w+)\)", lambda m: _TRIMMED.replace("X", m.group(1)),
                   _EV_TEMPLATE.replace("PADDED", "false"))
_EV_AS_IS = re.sub(r"TRIMMED\((\w+)\)", lambda m: f"CAST({m.group(1)} AS VARCHAR)",
                   _EV_TEMPLATE.replace("PADDED", f"({_MAY_CHANGE})"))
# nanosecond instants floored to microseconds, as pandas does (DuckDB's cast rounds)
_TS_NS = 'CAST(make_timestamp(epoch_ns("timestamp") // 1000) AS TIMESTAMPTZ)'
# one fixed statement per combination of the two optional columns, nanosecond timestamps, and
# exact or as-is ids
_EV_VIEW = {
    (has_mo, has_prop, ns, exact): (_EV_EXACT if exact else _EV_AS_IS)
    .replace("MACHINE_OPEN", "CAST(machine_open AS BOOLEAN)" if has_mo else "CAST(NULL AS BOOLEAN)")
    .replace("PROPENSITY", "CAST(propensity AS DOUBLE)" if has_prop else "CAST(NULL AS DOUBLE)")
    .replace("TS AS ts", (_TS_NS if ns else '"timestamp"') + " AS ts")
    .replace("RAW_ROWS", _RAW_ROWS)
    for has_mo in (True, False) for has_prop in (True, False) for ns in (True, False) for exact in (True, False)
}
# the same rows without source row numbers, for the passes that do not need them
_PLAIN_ROWS = ("SELECT * FROM read_parquet(getvariable('files'), union_by_name=true, "
               "hive_partitioning=getvariable('hive'), hive_types_autocast=false)")
_EV_PLAIN_VIEW = {k: v.replace("CREATE OR REPLACE TEMP VIEW _ev AS", "CREATE OR REPLACE TEMP VIEW _ev_plain AS")
                  .replace("SELECT src,", "SELECT").replace(_RAW_ROWS, _PLAIN_ROWS) for k, v in _EV_VIEW.items()}
_R1_VIEW = """
    CREATE OR REPLACE TEMP VIEW _r1 AS
    SELECT *, CASE
        WHEN event_id IS NULL THEN getvariable('reason_missing_event_id')
        WHEN user_id IS NULL THEN getvariable('reason_missing_user_id')
        WHEN message_id IS NULL THEN getvariable('reason_missing_message_id')
        WHEN event_type IS NULL THEN getvariable('reason_missing_event_type')
        WHEN NOT list_contains(getvariable('event_types'), event_type) THEN getvariable('reason_unknown_event_type')
        WHEN ts IS NULL THEN getvariable('reason_missing_timestamp')
        WHEN ts < getvariable('earliest')::TIMESTAMPTZ THEN getvariable('reason_before_1990')
        WHEN ts > getvariable('future')::TIMESTAMPTZ THEN getvariable('reason_in_the_future')
        WHEN raw_propensity IS NOT NULL AND NOT isnan(raw_propensity)
             AND (raw_propensity <= 0 OR raw_propensity > 1) THEN getvariable('reason_bad_propensity')
        END AS reason
    FROM _ev
"""
# every event id's 64-bit hash (the repeats are found in numpy, :mod:`sendtime.features.repeats`), and
# whether the row breaks a row-level rule (the reasons of _r1, as one condition)
_ID_HASHES = """
    SELECT CASE WHEN event_id IS NOT NULL THEN hash(event_id) END AS h,
           (event_id IS NULL OR user_id IS NULL OR message_id IS NULL OR event_type IS NULL
            OR NOT list_contains(getvariable('event_types'), event_type) OR ts IS NULL
            OR ts < getvariable('earliest')::TIMESTAMPTZ OR ts > getvariable('future')::TIMESTAMPTZ
            OR (raw_propensity IS NOT NULL AND NOT isnan(raw_propensity)
                AND (raw_propensity <= 0 OR raw_propensity > 1))) AS bad,
           padded
    FROM _ev_plain
"""
_R1_REASONS = "SELECT reason, count(*) FROM _r1 WHERE reason IS NOT NULL GROUP BY ALL"
# repeated event ids (a row-level reason wins): the window runs over the candidates only
_DUP_REJ = """
    CREATE OR REPLACE TEMP TABLE _dup_rej AS
    WITH rows AS (SELECT r.* FROM _r1 r
                  WHERE r.event_id IS NOT NULL AND hash(r.event_id) IN (SELECT h FROM _h)),
    w AS (SELECT src, reason,
                 row_number() OVER (PARTITION BY event_id ORDER BY src) > 1 AS dup_any,
                 row_number() OVER (PARTITION BY event_id, user_id, message_id, event_type, ts ORDER BY src) > 1 AS same
          FROM rows)
    SELECT src, CASE WHEN same THEN getvariable('reason_duplicate_event')
                     ELSE getvariable('reason_conflicting_event_id') END AS reason
    FROM w WHERE dup_any AND reason IS NULL
"""
_NO_DUP = "CREATE OR REPLACE TEMP TABLE _dup_rej (src BIGINT, reason VARCHAR)"
_CUT = "getvariable('cut')::TIMESTAMPTZ"
_FAST = "epoch_us(t_unk) - epoch_us(send_ts) <= getvariable('fast_us')"
# one row per message, grouped by a 64-bit hash of its id (``mh``: far cheaper than grouping
# by the text). ``regular``: one send, no outcome before it, and no unflagged open within
# minutes of the send followed by another unflagged open (which one is the "slow" open needs
# the rows). With one send, the send's fields are plain minimums over its one row. Irregular
# groups are rebuilt from their rows, by the real message id, below. Two message ids with the
# same hash are caught when both were sent (two sends: irregular); an outcome whose message id
# was never sent but hashes like a sent one would join that message: about one chance in
# 1.8e19 / (unsent ids x ids) per run. Only what the streaming reader needs comes out: the
# regular messages sent before the cutoff (and those sent after it that have earlier events,
# for the count of events before the cutoff), and the hashes of the irregular ones.
_AGG_TEMPLATE = """
    WITH ok AS (OK_ROWS),
    agg AS (
        SELECT hash(message_id) AS mh,
            count(*) FILTER (WHERE event_type = 'send') AS n_send,
            min(ts) FILTER (WHERE event_type = 'send') AS send_ts,
            min(user_id) FILTER (WHERE event_type = 'send') AS user_id,
            min(propensity) FILTER (WHERE event_type = 'send') AS propensity,
            min(ts) FILTER (WHERE event_type IN ('open', 'click', 'bounce', 'conversion')) AS min_outcome,
            count(*) FILTER (WHERE ts < CUT) AS n_before,
            min(ts) FILTER (WHERE event_type = 'open' AND machine_open AND ts < CUT) AS t_open_machine_flag,
            min(ts) FILTER (WHERE event_type = 'open' AND NOT machine_open AND ts < CUT) AS t_open_human_flag,
            min(ts) FILTER (WHERE event_type = 'open' AND machine_open IS NULL AND ts < CUT) AS t_unk,
            count(*) FILTER (WHERE event_type = 'open' AND machine_open IS NULL AND ts < CUT) AS n_unk,
            (min(ts, 2) FILTER (WHERE event_type = 'open' AND machine_open IS NULL AND ts < CUT))[2] AS t_open_unk_next,
            min(ts) FILTER (WHERE event_type = 'click' AND ts < CUT) AS t_click,
            min(ts) FILTER (WHERE event_type = 'bounce' AND ts < CUT) AS t_bounce
        FROM ok GROUP BY mh),
    flagged AS (
        SELECT a.*, u.uidx, u.timezone,
               a.n_send = 1 AND (a.min_outcome IS NULL OR a.min_outcome >= a.send_ts)
                   AND NOT (a.n_unk > 1 AND FAST) AS regular,
               CAST(hash(a.user_id) % getvariable('buckets') AS INTEGER) AS bucket
        FROM agg a LEFT JOIN _users u ON u.user_id = a.user_id)
    SELECT mh, regular, n_before, bucket, uidx,
           CASE WHEN uidx IS NULL OR bucket < getvariable('string_buckets') THEN user_id END AS user_id,
           send_ts, propensity, t_open_machine_flag, t_open_human_flag,
           CASE WHEN FAST THEN t_unk END AS t_open_unk_fast,
           CASE WHEN NOT (FAST) THEN t_unk END AS t_open_unk_slow,
           t_open_unk_next, t_click, t_bounce,
           CASE WHEN bucket < getvariable('string_buckets') THEN coalesce(timezone, getvariable('default_tz')) END AS timezone
    FROM flagged
    WHERE NOT regular OR send_ts < CUT OR n_before > 0
"""
_OK_ROWS = {
    False: "SELECT r.* FROM _r1 r ANTI JOIN _dup_rej d USING (src) WHERE r.reason IS NULL AND PART",
    True: "SELECT * FROM _ev_plain WHERE PART",  # clean input: every row is accepted
}
_PART = "(getvariable('parts') = 1 OR hash(message_id) % getvariable('parts') = getvariable('part'))"
# key: clean input
_AGG = {clean: _AGG_TEMPLATE.replace("OK_ROWS", _OK_ROWS[clean]).replace("PART", _PART)
        .replace("CUT", _CUT).replace("FAST", _FAST) for clean in (False, True)}
#: events per pass of the message aggregation (more passes re-read the events; fewer spill)
AGG_PART_EVENTS = 60_000_000
#: rows per Arrow batch streamed out of the aggregation
_BATCH_ROWS = 1 << 20
# the columns of the regular messages of the buckets written with text, kept for the join below
# (in a Parquet file: at 50M events they are millions of messages)
_TEXT_ROW_COLUMNS = ["mh", "user_id", "send_ts", "propensity", *OUTCOME_COLUMNS, "timezone", "bucket"]
# their message ids and send event ids, from their send rows (a regular message has one send,
# the only send row with its hash), and their local hour of the week
_TEXT_TEMPLATE = """
    WITH ok AS (OK_ROWS),
    sends AS (SELECT hash(message_id) AS mh, message_id, event_id AS send_event FROM ok
              WHERE event_type = 'send' AND CAST(hash(user_id) % getvariable('buckets') AS INTEGER) < getvariable('string_buckets'))
    SELECT s.message_id, t.user_id, t.send_ts, t.propensity, t.t_open_machine_flag, t.t_open_human_flag,
           t.t_open_unk_fast, t.t_open_unk_slow, t.t_open_unk_next, t.t_click, t.t_bounce, t.timezone,
           HOW AS send_how, s.send_event, t.bucket
    FROM read_parquet(getvariable('text_rows')) t JOIN sends s USING (mh)
"""
# local hour of the week (Monday 00:00 = 0) from one time-zone conversion, by the one rule of
# :func:`sendtime.features.messages.hour_of_week_us` (which computes it for the bucket files)
_HOW = (f"CAST((epoch_us(timezone(timezone, send_ts)) // {US_PER_HOUR} + {EPOCH_HOUR_OF_WEEK}) "
        f"% {HOURS_PER_WEEK} AS SMALLINT)")
_TEXT_MESSAGES = {clean: _TEXT_TEMPLATE.replace("OK_ROWS", _OK_ROWS[clean]).replace("PART", _PART).replace("HOW", _HOW)
                  for clean in (False, True)}
_SUB = """
    CREATE OR REPLACE TEMP TABLE _sub AS
    SELECT r.* FROM _r1 r WHERE r.message_id IS NOT NULL AND hash(r.message_id) IN (SELECT mh FROM _irr)
"""
# the contract's send rules, row by row, over every row of the irregular messages
_SUB_CHECKED = """
    CREATE OR REPLACE TEMP TABLE _checked AS
    WITH r2 AS (SELECT s.* REPLACE (coalesce(s.reason, d.reason) AS reason) FROM _sub s LEFT JOIN _dup_rej d USING (src)),
    first_send AS (SELECT message_id, arg_min(ts, src) AS send_ts, min(src) AS first_src
                   FROM r2 WHERE reason IS NULL AND event_type = 'send' GROUP BY message_id)
    SELECT r.*, CASE
        WHEN r.reason IS NOT NULL THEN NULL
        WHEN r.event_type IN ('open', 'click', 'bounce', 'conversion') AND f.send_ts IS NULL THEN getvariable('reason_no_send')
        WHEN r.event_type IN ('open', 'click', 'bounce', 'conversion') AND r.ts < f.send_ts THEN getvariable('reason_before_send')
        WHEN r.event_type = 'send' AND r.src <> f.first_src THEN getvariable('reason_second_send')
        END AS late_reason
    FROM r2 r LEFT JOIN first_send f USING (message_id)
"""
_FIX_TEMPLATE = """
    WITH ok AS (SELECT * FROM _checked WHERE reason IS NULL AND late_reason IS NULL AND ts < CUT),
    sends AS (SELECT message_id, user_id, ts AS send_ts, propensity, event_id AS send_event FROM ok WHERE event_type = 'send'),
    outcomes AS (
        SELECT o.message_id,
            min(o.ts) FILTER (WHERE o.event_type = 'open' AND o.machine_open) AS t_open_machine_flag,
            min(o.ts) FILTER (WHERE o.event_type = 'open' AND NOT o.machine_open) AS t_open_human_flag,
            min(o.ts) FILTER (WHERE o.event_type = 'open' AND o.machine_open IS NULL
                              AND epoch_us(o.ts) - epoch_us(s.send_ts) <= getvariable('fast_us')) AS t_open_unk_fast,
            min(o.ts) FILTER (WHERE o.event_type = 'open' AND o.machine_open IS NULL
                              AND epoch_us(o.ts) - epoch_us(s.send_ts) > getvariable('fast_us')) AS t_open_unk_slow,
            (min(o.ts, 2) FILTER (WHERE o.event_type = 'open' AND o.machine_open IS NULL))[2] AS t_open_unk_next,
            min(o.ts) FILTER (WHERE o.event_type = 'click') AS t_click,
            min(o.ts) FILTER (WHERE o.event_type = 'bounce') AS t_bounce
        FROM ok o JOIN sends s USING (message_id)
        WHERE o.event_type IN ('open', 'click', 'bounce')
        GROUP BY o.message_id
    ),
    joined AS (
        SELECT s.*, t_open_machine_flag, t_open_human_flag, t_open_unk_fast, t_open_unk_slow, t_open_unk_next, t_click, t_bounce,
               u.uidx, coalesce(u.timezone, getvariable('default_tz')) AS timezone
        FROM sends s LEFT JOIN outcomes USING (message_id) LEFT JOIN _users u ON u.user_id = s.user_id
    )
    SELECT message_id, user_id, send_ts, propensity, t_open_machine_flag, t_open_human_flag,
           t_open_unk_fast, t_open_unk_slow, t_open_unk_next, t_click, t_bounce, timezone,
           HOW AS send_how, send_event, CAST(hash(user_id) % getvariable('buckets') AS INTEGER) AS bucket
    FROM joined
"""
_FIX_MESSAGES = _FIX_TEMPLATE.replace("CUT", _CUT).replace("HOW", _HOW)
_CLEAN_UP = ["DROP VIEW IF EXISTS _r1", "DROP VIEW IF EXISTS _ev", "DROP VIEW IF EXISTS _ev_plain"] + [
    f"DROP TABLE IF EXISTS {t}" for t in ("_h", "_dup_rej", "_irr", "_sub", "_checked", "_fix", "_bad", "_offsets", "_users")]
