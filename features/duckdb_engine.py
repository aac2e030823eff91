"""The event-scale part of the feature build on DuckDB: Parquet events in, one row per message out.

The same contract and the same message definition as :mod:`features.contract` and
:func:`features.messages.build_messages`, written as SQL so that DuckDB streams the Parquet
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

from features.contract import EARLIEST, EVENT_COLUMNS, EVENT_TYPES, ContractError
from features.messages import MACHINE_OPEN_WINDOW

_ID_TYPES = ("VARCHAR", "BIGINT", "INTEGER", "UBIGINT", "UINTEGER", "SMALLINT", "HUGEINT")


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

    return int(sum(pq.ParquetFile(f).metadata.num_rows for f in _files(Path(events_path))))


def usable(events_path: str | Path) -> str | None:
    """None when this engine can read ``events_path``, else why not (one line)."""
    try:
        files = _files(Path(events_path))
        con = connect(threads=1)
        try:
            _check_schema(con, files)
        finally:
            con.close()
    except (NotForThisEngine, ContractError) as exc:
        return str(exc)
    except Exception as exc:  # unreadable Parquet: the pandas reader gives the contract's message
        return f"cannot read with DuckDB: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return None


def _files(path: Path) -> list[str]:
    if not path.exists():
        raise ContractError(f"events file not found: {path}")
    files = sorted(str(p) for p in path.rglob("*.parquet")) if path.is_dir() else [str(path)]
    if not files or not all(f.lower().endswith((".parquet", ".pq")) for f in files):
        raise NotForThisEngine(f"{path}: the DuckDB engine reads Parquet only")
    return files


def connect(threads: int | None = None, memory_limit: str | None = None, temp_dir: str | Path | None = None):
    """A DuckDB connection with bounded memory (it spills to ``temp_dir`` beyond the limit)."""
    import duckdb

    con = duckdb.connect(config={"threads": threads or os.cpu_count() or 1})
    limit = memory_limit or "6GB"
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", limit):
        raise ValueError(f"memory limit must look like '6GB', got {limit!r}")
    con.execute(f"SET memory_limit = '{limit}'")
    con.execute("SET preserve_insertion_order = false")
    if temp_dir is not None:
        con.execute("SET temp_directory = '" + Path(temp_dir).as_posix().replace("'", "''") + "'")
    con.execute("SET TimeZone = 'UTC'")
    return con


def _check_schema(con, files: list[str]) -> dict[str, str]:
    cols = {r[0]: r[1] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?, union_by_name=true)", [files]).fetchall()}
    missing = [c for c in EVENT_COLUMNS if c not in cols]
    if missing:
        raise ContractError(f"events file lacks required column(s): {', '.join(missing)}")
    if cols["timestamp"] != "TIMESTAMP WITH TIME ZONE":
        raise NotForThisEngine(f"timestamp column is {cols['timestamp']}, not a time-zone-aware timestamp")
    for c in ("event_id", "user_id", "message_id", "event_type"):
        if cols[c] not in _ID_TYPES:
            raise NotForThisEngine(f"{c} column is {cols[c]}")
    if "machine_open" in cols and cols["machine_open"] != "BOOLEAN":
        raise NotForThisEngine(f"machine_open column is {cols['machine_open']}, not BOOLEAN")
    if "propensity" in cols and cols["propensity"] not in ("DOUBLE", "FLOAT"):
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
) -> EngineResult:
    """Validate events (as :func:`features.contract.validate_events`) and build the message
    table of the events before ``as_of`` (as :func:`features.messages.build_messages`).

    With ``buckets`` > 0 the messages are not returned but written to ``bucket_dir`` as that
    many Parquet files split by a hash of the user id (every user's messages in one file), for
    :func:`features.engagement.build_user_features_bucketed`; see :func:`bucket_loaders`."""
    import time

    say = progress or (lambda _msg: None)
    files = _files(Path(events_path))
    own = con is None
    con = con or connect(temp_dir=temp_dir)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        cols = _check_schema(con, files)
        now = pd.Timestamp.now(tz="UTC") if now is None else now
        # every value the statements use is bound as a DuckDB variable: the SQL text is fixed
        _bind(con, files=files, earliest=EARLIEST.isoformat(), future=(now + pd.Timedelta(days=1)).isoformat(),
              event_types=list(EVENT_TYPES))
        con.execute(_OFFSETS)
        con.execute(_EV_VIEW[("machine_open" in cols, "propensity" in cols)])
        con.execute(_R1_VIEW)
        timings["read_and_check"] = time.perf_counter() - t0
        say(f"events read and checked in {timings['read_and_check']:.1f} s")
        for statement in (_DUP, _R2_VIEW, _FIRST_SEND, _CHECKED):
            con.execute(statement)
        counts = dict(con.execute("SELECT coalesce(reason, ''), count(*) FROM _checked GROUP BY ALL").fetchall())
        read = int(sum(counts.values()))
        accepted = int(counts.pop("", 0))
        timings["contract"] = time.perf_counter() - t0
        say(f"contract: read {read:,} = accepted {accepted:,} + rejected {read - accepted:,}")
        if rejects_path is not None and read > accepted:
            Path(rejects_path).parent.mkdir(parents=True, exist_ok=True)
            raw = con.sql(_RAW_ROWS).set_alias("r")
            bad = con.sql("SELECT src AS source_row, reason FROM _checked WHERE reason IS NOT NULL").set_alias("c")
            text = [duckdb_cast_text(c) for c in cols]
            bad.join(raw, "c.source_row = r.src").project(", ".join(["c.source_row"] + text + ["c.reason"])) \
                .order("source_row").write_csv(str(rejects_path), header=True)
        msgs, before, sq = _messages(con, users, as_of, default_tz, buckets, bucket_dir)
        timings["messages"] = time.perf_counter() - t0
        say(f"{before:,} events before the cutoff made into messages in {timings['messages']:.1f} s")
        return EngineResult(read=read, n_accepted=accepted, n_rejected=read - accepted, reasons=counts, messages=msgs,
                            events_before_cutoff=before, status_quo_utc_hour=sq, timings=timings,
                            rejects_path=Path(rejects_path) if rejects_path is not None and read > accepted else None)
    finally:
        for statement in _CLEAN_UP:
            con.execute(statement)
        if own:
            con.close()


def _messages(con, users: pd.DataFrame, as_of: pd.Timestamp, default_tz: str, buckets: int = 0,
              bucket_dir: str | Path | None = None) -> tuple[pd.DataFrame | None, int, int | None]:
    from features.contract import known_timezone

    if not known_timezone(default_tz):
        raise ValueError(f"default time zone {default_tz!r} is not an IANA time zone")
    u = pd.DataFrame({"user_id": users["user_id"].astype(str).to_numpy(dtype=object),
                      "timezone": users["timezone"].astype(object).to_numpy()}) if len(users) else \
        pd.DataFrame({"user_id": pd.Series([], dtype=object), "timezone": pd.Series([], dtype=object)})
    con.register("_users_df", u)
    con.execute("CREATE OR REPLACE TEMP TABLE _users AS SELECT user_id, timezone FROM _users_df")
    con.unregister("_users_df")
    _bind(con, cut=as_of.isoformat(), fast_us=int(MACHINE_OPEN_WINDOW.total_seconds() * 1_000_000),
          default_tz=default_tz, buckets=int(max(buckets, 1)))
    before = con.execute("SELECT count(*) FROM _checked WHERE reason IS NULL AND ts < getvariable('cut')::TIMESTAMPTZ").fetchall()[0][0]
    sq_row = con.execute("SELECT hour(ts) AS h FROM _checked WHERE reason IS NULL AND event_type = 'send' "
                         "AND ts < getvariable('cut')::TIMESTAMPTZ GROUP BY h ORDER BY count(*) DESC, h LIMIT 1").fetchall()
    sq = int(sq_row[0][0]) if sq_row else None
    rel = con.sql(_MESSAGES)
    if buckets > 0:
        out = Path(bucket_dir)
        out.mkdir(parents=True, exist_ok=True)
        rel.project("*, CAST(hash(user_id) % getvariable('buckets') AS INTEGER) AS bucket") \
            .write_parquet(str(out), partition_by=["bucket"], overwrite=True)
        return None, int(before), sq
    rel = rel.order("send_ts, send_event")
    table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
    return _to_pandas(table), int(before), sq


def _bind(con, **values) -> None:
    """Values for the fixed statements below, as DuckDB variables (never spliced into SQL)."""
    for name, value in values.items():
        con.execute(f"SET VARIABLE {name} = ?", [value])  # the name is one of ours, the value bound


def duckdb_cast_text(column: str) -> str:
    """``CAST(r."col" AS VARCHAR) AS "col"`` for a column name from the file, quoted safely."""
    q = '"' + column.replace('"', '""') + '"'
    return f"CAST(r.{q} AS VARCHAR) AS {q}"


_OFFSETS = """
    CREATE OR REPLACE TEMP TABLE _offsets AS
    SELECT file_name AS filename,
           sum(num_rows) OVER (ORDER BY file_name ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS off
    FROM (SELECT file_name, max(num_rows) AS num_rows FROM parquet_file_metadata(getvariable('files')) GROUP BY file_name)
"""
# global source row numbers across files, as the pandas reader concatenates them
_RAW_ROWS = """
    SELECT coalesce(o.off, 0) + r.file_row_number AS src, r.*
    FROM read_parquet(getvariable('files'), file_row_number=true, filename=true, union_by_name=true) r
    LEFT JOIN _offsets o ON o.filename = r.filename
"""
_EV_TEMPLATE = """
    CREATE OR REPLACE TEMP VIEW _ev AS
    SELECT src,
           NULLIF(trim(CAST(event_id AS VARCHAR)), '') AS event_id,
           NULLIF(trim(CAST(user_id AS VARCHAR)), '') AS user_id,
           NULLIF(trim(CAST(message_id AS VARCHAR)), '') AS message_id,
           lower(NULLIF(trim(CAST(event_type AS VARCHAR)), '')) AS event_type,
           "timestamp" AS ts, MACHINE_OPEN AS machine_open,
           CASE WHEN isnan(PROPENSITY) THEN NULL ELSE PROPENSITY END AS propensity,
           PROPENSITY AS raw_propensity
    FROM (RAW_ROWS)
"""
# one fixed statement per combination of the two optional columns
_EV_VIEW = {
    (has_mo, has_prop): _EV_TEMPLATE.replace("MACHINE_OPEN", "machine_open" if has_mo else "CAST(NULL AS BOOLEAN)")
    .replace("PROPENSITY", "CAST(propensity AS DOUBLE)" if has_prop else "CAST(NULL AS DOUBLE)")
    .replace("RAW_ROWS", _RAW_ROWS)
    for has_mo in (True, False) for has_prop in (True, False)
}
_R1_VIEW = """
    CREATE OR REPLACE TEMP VIEW _r1 AS
    SELECT *, CASE
        WHEN event_id IS NULL THEN 'missing event_id'
        WHEN user_id IS NULL THEN 'missing user_id'
        WHEN message_id IS NULL THEN 'missing message_id'
        WHEN event_type IS NULL THEN 'missing event_type'
        WHEN NOT list_contains(getvariable('event_types'), event_type) THEN 'unknown event_type'
        WHEN ts IS NULL THEN 'missing timestamp'
        WHEN ts < getvariable('earliest')::TIMESTAMPTZ THEN 'timestamp before 1990'
        WHEN ts > getvariable('future')::TIMESTAMPTZ THEN 'timestamp in the future'
        WHEN raw_propensity IS NOT NULL AND NOT isnan(raw_propensity)
             AND (raw_propensity <= 0 OR raw_propensity > 1) THEN 'propensity is not a probability in (0, 1]'
        END AS reason
    FROM _ev
"""
# repeated event ids: rare, so the window runs over the repeated ids only
_DUP = """
    CREATE OR REPLACE TEMP TABLE _dup AS
    WITH ids AS (SELECT event_id FROM _r1 WHERE event_id IS NOT NULL GROUP BY event_id HAVING count(*) > 1),
    rows AS (SELECT r.* FROM _r1 r SEMI JOIN ids USING (event_id))
    SELECT src,
           row_number() OVER (PARTITION BY event_id ORDER BY src) > 1 AS dup_any,
           row_number() OVER (PARTITION BY event_id, user_id, message_id, event_type, ts ORDER BY src) > 1 AS same
    FROM rows
"""
_R2_VIEW = """
    CREATE OR REPLACE TEMP VIEW _r2 AS
    SELECT r.* REPLACE (CASE
        WHEN r.reason IS NOT NULL THEN r.reason
        WHEN d.dup_any AND d.same THEN 'duplicate event (kept once)'
        WHEN d.dup_any THEN 'duplicate event_id with different contents'
        END AS reason)
    FROM _r1 r LEFT JOIN _dup d USING (src)
"""
_FIRST_SEND = """
    CREATE OR REPLACE TEMP TABLE _first_send AS
    SELECT message_id, arg_min(ts, src) AS send_ts, min(src) AS first_src
    FROM _r2 WHERE reason IS NULL AND event_type = 'send' GROUP BY message_id
"""
_CHECKED = """
    CREATE OR REPLACE TEMP TABLE _checked AS
    SELECT r.* REPLACE (CASE
        WHEN r.reason IS NOT NULL THEN r.reason
        WHEN r.event_type IN ('open', 'click', 'bounce') AND f.send_ts IS NULL THEN 'no send for message_id'
        WHEN r.event_type IN ('open', 'click', 'bounce') AND r.ts < f.send_ts THEN 'before its send'
        WHEN r.event_type = 'send' AND r.src <> f.first_src THEN 'second send for message_id'
        END AS reason)
    FROM _r2 r LEFT JOIN _first_send f USING (message_id)
"""
_MESSAGES = """
    WITH ok AS (SELECT * FROM _checked WHERE reason IS NULL AND ts < getvariable('cut')::TIMESTAMPTZ),
    sends AS (SELECT message_id, user_id, ts AS send_ts, propensity, event_id AS send_event FROM ok WHERE event_type = 'send'),
    outcomes AS (
        SELECT o.message_id,
            min(o.ts) FILTER (WHERE o.event_type = 'open' AND o.machine_open) AS t_open_machine_flag,
            min(o.ts) FILTER (WHERE o.event_type = 'open' AND NOT o.machine_open) AS t_open_human_flag,
            min(o.ts) FILTER (WHERE o.event_type = 'open' AND o.machine_open IS NULL
                              AND epoch_us(o.ts) - epoch_us(s.send_ts) <= getvariable('fast_us')) AS t_open_unk_fast,
            min(o.ts) FILTER (WHERE o.event_type = 'open' AND o.machine_open IS NULL
                              AND epoch_us(o.ts) - epoch_us(s.send_ts) > getvariable('fast_us')) AS t_open_unk_slow,
            min(o.ts) FILTER (WHERE o.event_type = 'click') AS t_click,
            min(o.ts) FILTER (WHERE o.event_type = 'bounce') AS t_bounce
        FROM ok o JOIN sends s USING (message_id)
        WHERE o.event_type IN ('open', 'click', 'bounce')
        GROUP BY o.message_id
    ),
    joined AS (
        SELECT s.message_id, s.user_id, s.send_ts, s.propensity,
               t_open_machine_flag, t_open_human_flag, t_open_unk_fast, t_open_unk_slow, t_click, t_bounce,
               coalesce(u.timezone, getvariable('default_tz')) AS timezone, s.send_event
        FROM sends s LEFT JOIN outcomes USING (message_id) LEFT JOIN _users u ON u.user_id = s.user_id
    )
    SELECT message_id, user_id, send_ts, propensity, t_open_machine_flag, t_open_human_flag,
           t_open_unk_fast, t_open_unk_slow, t_click, t_bounce, timezone,
           CAST((isodow(local_ts) - 1) * 24 + hour(local_ts) AS SMALLINT) AS send_how, send_event
    FROM (SELECT *, timezone(timezone, send_ts) AS local_ts FROM joined)
"""
_CLEAN_UP = ["DROP VIEW IF EXISTS _r2", "DROP VIEW IF EXISTS _r1", "DROP VIEW IF EXISTS _ev"] + [
    f"DROP TABLE IF EXISTS {t}" for t in ("_dup", "_first_send", "_checked", "_offsets", "_users")]


def bucket_loaders(bucket_dir: str | Path) -> list:
    """One loader per bucket written by ``build_messages_duckdb(..., buckets=N)``."""
    import pyarrow.parquet as pq

    def loader(folder: Path):
        return lambda: _to_pandas(pq.read_table(folder, columns=list(MESSAGE_COLUMNS)))

    return [loader(d) for d in sorted(Path(bucket_dir).glob("bucket=*"))]


MESSAGE_COLUMNS = ("message_id", "user_id", "send_ts", "propensity", "t_open_machine_flag", "t_open_human_flag",
                   "t_open_unk_fast", "t_open_unk_slow", "t_click", "t_bounce", "timezone", "send_how")


def _to_pandas(table) -> pd.DataFrame:
    """Arrow result -> the dtypes :func:`features.messages.build_messages` produces."""
    df = table.select(list(MESSAGE_COLUMNS)).to_pandas()
    for c in ("message_id", "user_id", "timezone"):
        df[c] = df[c].astype(str)
    for c in ("send_ts", "t_open_machine_flag", "t_open_human_flag", "t_open_unk_fast", "t_open_unk_slow", "t_click", "t_bounce"):
        df[c] = df[c].astype("datetime64[us, UTC]")
    df["propensity"] = df["propensity"].astype("float64")
    df["send_how"] = df["send_how"].to_numpy(dtype=np.int16)
    return df
