"""The message table on Apache Spark: the same definitions as ``sendtime.features.messages``, at cluster scale.

The embedded engine (pandas) reads every event into one process. This module does the
event-scale work, billions of event rows reduced to one row per sent message, with PySpark, so it
runs on a cluster; the per-user features are then computed from the collected message table by
the one shared function, :func:`sendtime.features.engagement.build_user_features`. The message table is
what every downstream feature is computed from, so it is the parity contract between the two
engines: :func:`build_messages_spark` returns the same columns, values and row order as
:func:`sendtime.features.messages.build_messages` (``tests/features/test_spark.py`` checks it, around DST changes
and for users with no time zone too).

The events go through the input contract on the cluster too (:func:`check_events_spark`): the
same accepted rows, the same rejects by global source row and the same reasons as the pandas
reference, :func:`sendtime.features.contract.validate_events`, and a rejects file with the DuckDB engine's
text (``tests/features/test_spark_contract.py``). Dirty or degenerate input never raises;
:func:`messages_spark` returns an empty message table when nothing is left.

PySpark is an optional dependency (``pip install 'sendtime[spark]'``); nothing else in the
project imports this module.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sendtime.features.contract import EARLIEST, EVENT_TYPES, ContractError, known_timezone, read_users
from sendtime.features.messages import MACHINE_OPEN_WINDOW, status_quo_hour

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from sendtime.features.engagement import UserFeatures
    from sendtime.features.profiles import ShrinkageParams

#: Columns of the message table, in ``sendtime.features.messages.build_messages`` order.
MESSAGE_COLUMNS = (
    "message_id", "user_id", "send_ts", "propensity",
    "t_open_machine_flag", "t_open_human_flag", "t_open_unk_fast", "t_open_unk_slow",
    "t_click", "t_bounce", "timezone", "send_how",
)
TIME_COLUMNS = ("send_ts", "t_open_machine_flag", "t_open_human_flag", "t_open_unk_fast",
                "t_open_unk_slow", "t_click", "t_bounce")
LOOPBACK = "127.0.0.1"
_WINDOW_US = int(MACHINE_OPEN_WINDOW / pd.Timedelta(microseconds=1))


def spark_session(app_name: str = "sendtime", master: str | None = "local[2]",
                  shuffle_partitions: int | None = None, conf: dict[str, str] | None = None) -> "SparkSession":
    """A Spark session set up for sendtime: UTC session time zone, Arrow transfers.

    With a ``local[...]`` master (the default) the session is a private one on this machine: the
    driver binds loopback only (``SPARK_LOCAL_IP``, ``spark.driver.host`` and
    ``spark.driver.bindAddress`` = 127.0.0.1), the web UI is off, and Python workers run this
    interpreter (``PYSPARK_PYTHON`` / ``PYSPARK_DRIVER_PYTHON`` = ``sys.executable``) so they see
    the same installed packages. The environment is set before the JVM starts; a JVM already
    running in this process keeps the settings it was started with.

    With ``master=None`` (under ``spark-submit``) the master, addresses and Python executables
    come from ``spark-submit`` / ``spark-defaults.conf`` and are left alone; only the time zone,
    Arrow and the given ``conf`` are set.

    ``shuffle_partitions`` sets ``spark.sql.shuffle.partitions``; unset, it is 4 for a local
    master (small machines, small data) and Spark's own setting otherwise.
    """
    from pyspark.sql import SparkSession

    # PySpark 4.x warns on every Arrow transfer that pandas 3 is "not yet fully supported"; the
    # conversions used here are checked by tests/features/test_spark.py
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    local = master is not None and master.startswith("local")
    if local:
        os.environ["SPARK_LOCAL_IP"] = LOOPBACK
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
        builder = (
            builder.config("spark.driver.host", LOOPBACK)
            .config("spark.driver.bindAddress", LOOPBACK)
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.pyspark.python", sys.executable)
            .config("spark.pyspark.driver.python", sys.executable)
        )
    builder = (
        builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.pyspark.fallback.enabled", "false")
    )
    if shuffle_partitions is None and local:
        shuffle_partitions = 4
    if shuffle_partitions is not None:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    # settings a reused session must still honour
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    if local:
        spark.sparkContext.setLogLevel("ERROR")
    return spark


def stop_spark(spark: "SparkSession", stop_jvm: bool = True) -> None:
    """Stop the session and, with ``stop_jvm``, the local JVM this process launched for it.

    ``SparkSession.stop()`` leaves the py4j gateway's JVM running until the Python process
    exits; closing its stdin ends it (it exits when the pipe closes). A later
    :func:`spark_session` starts a fresh one.
    """
    from pyspark import SparkContext

    spark.stop()
    gateway = SparkContext._gateway
    if not stop_jvm or gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    try:
        gateway.shutdown()
    except Exception:  # noqa: BLE001 - already gone
        pass
    if proc is not None:
        try:
            proc.stdin.close()
            proc.wait(timeout=30)
        except Exception:  # noqa: BLE001 - a JVM that does not exit on EOF
            proc.kill()
            proc.wait(timeout=10)
    SparkContext._gateway = None
    SparkContext._jvm = None


# --------------------------------------------------------------------------- events and users


def events_to_spark(spark: "SparkSession", events: pd.DataFrame) -> "DataFrame":
    """An accepted events frame (``read_events(path).accepted``) as a Spark DataFrame.

    Keeps the frame's row order as ``_pos`` (the embedded engine's tie-break between equal
    timestamps), nulls for missing ``machine_open`` / ``propensity``.
    """
    from pyspark.sql import types as T

    schema = T.StructType([
        T.StructField("event_id", T.StringType()),
        T.StructField("user_id", T.StringType()),
        T.StructField("message_id", T.StringType()),
        T.StructField("event_type", T.StringType()),
        T.StructField("timestamp", T.TimestampType()),
        T.StructField("machine_open", T.BooleanType()),
        T.StructField("propensity", T.DoubleType()),
        T.StructField("_pos", T.LongType()),
    ])
    pdf = pd.DataFrame({
        "event_id": events["event_id"].astype(object),
        "user_id": events["user_id"].astype(object),
        "message_id": events["message_id"].astype(object),
        "event_type": events["event_type"].astype(object),
        "timestamp": pd.to_datetime(events["timestamp"], utc=True),
        "machine_open": events["machine_open"].astype("boolean") if "machine_open" in events
        else pd.Series(pd.NA, index=events.index, dtype="boolean"),
        "propensity": events["propensity"].astype("float64") if "propensity" in events else np.nan,
        "_pos": np.arange(len(events), dtype=np.int64),
    })
    sdf = spark.createDataFrame(pdf, schema=schema)
    from pyspark.sql import functions as F

    # Arrow turns a float NaN into a Spark NaN, not a null: missing means null here
    return sdf.withColumn("propensity", F.when(F.isnan("propensity"), None).otherwise(F.col("propensity")))


def users_to_spark(spark: "SparkSession", users: pd.DataFrame) -> "DataFrame":
    """``user_id, timezone`` of an accepted users frame as a Spark DataFrame (timezone may be null)."""
    from pyspark.sql import types as T

    schema = T.StructType([T.StructField("user_id", T.StringType()), T.StructField("timezone", T.StringType())])
    pdf = pd.DataFrame({
        "user_id": users["user_id"].astype(object) if len(users) else pd.Series([], dtype=object),
        "timezone": users["timezone"].astype(object).where(users["timezone"].notna(), None)
        if len(users) else pd.Series([], dtype=object),
    })
    return spark.createDataFrame(pdf, schema=schema)


# --------------------------------------------------------------------------- the message table


def build_messages_spark(events_sdf: "DataFrame", users_sdf: "DataFrame", default_tz: str = "UTC") -> "DataFrame":
    """One row per sent message, as :func:`sendtime.features.messages.build_messages`, on Spark.

    ``events_sdf`` has the accepted events' columns (``event_id, user_id, message_id,
    event_type, timestamp, machine_open, propensity``; see :func:`events_to_spark` and
    :func:`read_events_spark`), ``users_sdf`` has ``user_id, timezone`` with unique user ids
    (the contract's accepted users; a null zone means the default). Per message: its first
    send (the user, send time and propensity), the first open flagged as machine, the first
    flagged human, the first unflagged open within ``MACHINE_OPEN_WINDOW`` of the send and the
    first later one, the first click and the first bounce; the user's time zone (users table,
    else ``default_tz``) and the send's local hour-of-week (Monday 00:00 = 0, DST-correct).

    Rows are ordered as the embedded engine orders them: by send time, ties by the send's
    position in the events (``_pos`` when present, else its ``event_id``).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not known_timezone(default_tz):
        raise ValueError(f"default time zone {default_tz!r} is not an IANA time zone")
    ev = events_sdf
    if "_pos" not in ev.columns:
        # accepted events are ordered by (timestamp, event_id): the same tie-break
        ev = ev.withColumn("_pos", F.lit(0).cast("long"))
    if "propensity" not in ev.columns:
        ev = ev.withColumn("propensity", F.lit(None).cast("double"))
    if "machine_open" not in ev.columns:
        ev = ev.withColumn("machine_open", F.lit(None).cast("boolean"))

    # the embedded engine keeps a message's first send in frame order (``_pos``); events read
    # from files have none and fall back to the contract's order, (timestamp, event_id)
    first_send = Window.partitionBy("message_id").orderBy("_send_pos", "send_ts", "_send_eid")
    sends = (
        ev.where(F.col("event_type") == "send")
        .select("message_id", "user_id", F.col("timestamp").alias("send_ts"),
                F.col("propensity").cast("double").alias("propensity"),
                F.col("_pos").alias("_send_pos"), F.col("event_id").alias("_send_eid"))
        .withColumn("_rn", F.row_number().over(first_send))
        .where(F.col("_rn") == 1)
        .drop("_rn")
    )

    # opens, clicks and bounces of sent messages; one pass, six conditional minimums
    out = (
        ev.where(F.col("event_type").isin("open", "click", "bounce"))
        .select("message_id", "event_type", "timestamp", "machine_open")
        .join(sends.select("message_id", "send_ts"), "message_id", "inner")
    )
    is_open = F.col("event_type") == "open"
    flag = F.col("machine_open")
    fast = (F.unix_micros("timestamp") - F.unix_micros("send_ts")) <= F.lit(_WINDOW_US)

    def first(cond):
        return F.min(F.when(cond, F.col("timestamp")))

    outcomes = out.groupBy("message_id").agg(
        first(is_open & (flag == F.lit(True))).alias("t_open_machine_flag"),
        first(is_open & (flag == F.lit(False))).alias("t_open_human_flag"),
        first(is_open & flag.isNull() & fast).alias("t_open_unk_fast"),
        first(is_open & flag.isNull() & ~fast).alias("t_open_unk_slow"),
        first(F.col("event_type") == "click").alias("t_click"),
        first(F.col("event_type") == "bounce").alias("t_bounce"),
    )

    zones = users_sdf.select(F.col("user_id").alias("_uid"), F.col("timezone").alias("_tz"))
    msgs = (
        sends.join(outcomes, "message_id", "left")
        .join(zones, F.col("user_id") == F.col("_uid"), "left")
        .withColumn("timezone", F.coalesce(F.col("_tz"), F.lit(default_tz)))
    )
    # from_utc_timestamp shifts the instant to the row's zone's wall clock (java.time rules, so
    # DST-correct); with the session time zone at UTC, dayofweek/hour then read local time.
    local = F.from_utc_timestamp(F.col("send_ts"), F.col("timezone"))
    weekday = (F.dayofweek(local) + F.lit(5)) % F.lit(7)  # dayofweek: Sunday = 1 ... Saturday = 7
    msgs = msgs.withColumn("send_how", (weekday * F.lit(24) + F.hour(local)).cast("smallint"))
    return msgs.orderBy("send_ts", "_send_pos", "_send_eid").select(*MESSAGE_COLUMNS)


def _ts_literal(ts: pd.Timestamp):
    """A UTC instant as a Spark timestamp literal (exact, independent of any time zone setting)."""
    from pyspark.sql import functions as F

    ts = pd.Timestamp(ts)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return F.timestamp_micros(F.lit(int((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1))))


def messages_to_pandas(msgs_sdf: "DataFrame") -> pd.DataFrame:
    """Collect a Spark message table with the embedded engine's dtypes (Arrow transfer)."""
    pdf = msgs_sdf.toPandas().reset_index(drop=True)
    cols: dict[str, pd.Series] = {}
    for c in MESSAGE_COLUMNS:
        s = pdf[c]
        if c in TIME_COLUMNS:
            # Arrow hands over session-time-zone (UTC) wall clocks, naive
            s = pd.to_datetime(s)
            s = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
            s = s.astype("datetime64[us, UTC]")
        elif c == "propensity":
            s = s.astype("float64")
        elif c == "send_how":
            s = s.astype(np.int16)
        else:
            s = s.astype(str)
        cols[c] = s
    return pd.DataFrame(cols, columns=list(MESSAGE_COLUMNS))


# --------------------------------------------------------------------------- reading the events
#
# The contract (``sendtime.features.contract.validate_events``, the reference) on Spark: the same files in
# the same order (``sendtime.features.inputs.data_files``), the same global source row numbers, the same
# row rules in the same order of precedence and the same reasons. The driver reads the files'
# footers only (schemas and row counts); every row is judged on the cluster.

#: a URI's scheme and authority (``file:``, ``file://``, ``hdfs://namenode:8020``): Spark names a
#: file ``file:///x`` in ``inputFiles()`` and ``file:/x`` in ``_metadata.file_path``
_URI_HEAD = r"^[A-Za-z][A-Za-z0-9+.\-]*:(//[^/]*)?"
_GLOB_CHARS = re.compile(r"([\\\[\]{}*?])")
_ID_COLUMNS = ("event_id", "user_id", "message_id", "event_type")
_TYPED_COLUMNS = (*_ID_COLUMNS, "timestamp", "machine_open", "propensity")
_NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"
_LOCAL_RAW = {"fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem", "fs.file.impl.disable.cache": "true"}


@dataclass
class EventFiles:
    """What the driver knows about the events before Spark reads a row: the data files in the
    order the contract concatenates them, their rows (from the footers), each file's Arrow
    schema, and the original columns in the contract reader's order."""

    root: Path
    files: list[Path]
    rows: list[int]
    schemas: list  # pyarrow.Schema per file
    columns: list[str]
    partitions: list[dict[str, str]]  # per file: Hive folder values of the columns it lacks
    ignored: list[Path] = field(default_factory=list)

    @property
    def read(self) -> int:
        return int(sum(self.rows))

    @property
    def offsets(self) -> list[int]:
        return [int(x) for x in np.cumsum([0] + self.rows[:-1])] if self.rows else []


def _not_for_spark(message: str) -> Exception:
    from sendtime.features.duckdb_engine import NotForThisEngine

    return NotForThisEngine(message)


def _type_ok(column: str, t) -> bool:
    import pyarrow as pa

    if pa.types.is_null(t):
        return True  # a column with no values at all: every row lacks it
    if column in _ID_COLUMNS:
        if pa.types.is_dictionary(t):
            t = t.value_type
        return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
    if column == "timestamp":
        return pa.types.is_timestamp(t) and t.tz is not None
    if column == "machine_open":
        return pa.types.is_boolean(t)
    if column == "propensity":
        return pa.types.is_float32(t) or pa.types.is_float64(t) or pa.types.is_integer(t)
    return True


def event_files(path: str | Path) -> EventFiles:
    """The Parquet event files under ``path`` as the contract reads them, checked for the typed
    form this engine reads: ids as text or integers, a time-zone-aware ``timestamp``, a boolean
    ``machine_open`` and a numeric ``propensity`` (as the DuckDB engine). Raises
    :class:`ContractError` (no such path, a required column missing, an unreadable file) or
    ``NotForThisEngine`` (a ``ValueError``: CSV, text or naive timestamps, ...), one line each."""
    import pyarrow.parquet as pq

    from sendtime.features.contract import EVENT_COLUMNS
    from sendtime.features.inputs import data_files, is_parquet

    p = Path(path)
    if not p.exists():
        raise ContractError(f"events file not found: {p}")
    found = data_files(p)
    if not found.files:
        why = f" ({found.ignored_summary()})" if found.ignored else ""
        raise ContractError(f"events folder {p} holds no .parquet or .csv files{why}")
    if not all(is_parquet(f) for f in found.files):
        raise _not_for_spark(f"{p}: the Spark engine reads Parquet only; use the embedded engine")
    rows, schemas, parts, columns = [], [], [], {}
    for f in found.files:
        if f.stat().st_size == 0:
            raise ContractError(f"events file {f} is empty (0 bytes)")
        try:
            pf = pq.ParquetFile(f)
            schema, n = pf.schema_arrow, int(pf.metadata.num_rows)
        except Exception as exc:  # pyarrow raises many types for corrupt input
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ContractError(f"cannot read events file {f}: {first}") from None
        lacking = {k: v for k, v in found.partitions(f).items() if k not in schema.names}
        for c in [*schema.names, *lacking]:
            columns.setdefault(c, None)
        rows.append(n)
        schemas.append(schema)
        parts.append(lacking)
    missing = [c for c in EVENT_COLUMNS if c not in columns]
    if missing:
        raise ContractError(f"events file {p} lacks required column(s): {', '.join(missing)}")
    for f, schema, lacking in zip(found.files, schemas, parts):
        for c in _TYPED_COLUMNS:
            if c in schema.names and not _type_ok(c, schema.field(c).type):
                raise _not_for_spark(
                    f"events file {f}: the {c} column is {schema.field(c).type}; the Spark engine reads ids as "
                    "text or integers, a time-zone-aware timestamp, a boolean machine_open and a numeric "
                    "propensity (use the embedded engine)")
            if c in lacking and c in ("timestamp", "machine_open", "propensity"):
                raise _not_for_spark(f"events file {f}: {c} comes from a folder name (text); use the embedded engine")
    return EventFiles(root=p, files=list(found.files), rows=rows, schemas=schemas, columns=list(columns),
                      partitions=parts, ignored=list(found.ignored))


def _col(name: str):
    """A column by its name in the file, whatever characters the name holds."""
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def _is_nanos(t) -> bool:
    import pyarrow as pa

    return pa.types.is_timestamp(t) and t.unit == "ns"


@dataclass
class _Group:
    """Files with one schema, read by one Spark scan: every row with its global source row
    number ``_src``, and the Hive folder value of each column its files lack."""

    schema: object  # pyarrow.Schema of its files
    frame: "DataFrame"


def _read_groups(spark: "SparkSession", ef: EventFiles) -> list[_Group]:
    """The event files read by Spark, split by schema (one group unless types drift between
    files). A row's source row number is the rows of the files before its own (from the
    footers) plus its row index in its file (Parquet's hidden ``_metadata.row_index``): the
    contract's numbering of the concatenated files."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if any(_is_nanos(f.type) for s in ef.schemas for f in s):
        # Spark has no nanosecond timestamps: read them as integers, converted below
        spark.conf.set(_NANOS_AS_LONG, "true")
    by_schema: dict[tuple, list[int]] = {}
    for i, s in enumerate(ef.schemas):
        by_schema.setdefault(tuple(sorted((f.name, str(f.type)) for f in s)), []).append(i)
    # local files are read without Hadoop's checksum files: the contract ignores ``.crc`` files
    # (as the pandas and DuckDB readers, which never look at them), so a stale one beside a
    # rewritten part file must not fail the read; names escaped: literal file names, not globs
    reader = spark.read.options(**_LOCAL_RAW)
    scans = [(members, reader.parquet(*[_GLOB_CHARS.sub(r"\\\1", str(ef.files[i])) for i in members]))
             for members in by_schema.values()]

    # Spark's own name of each file (the form of ``_metadata.file_path``), matched to ours here
    ours = {os.path.abspath(str(f)): i for i, f in enumerate(ef.files)}
    real = {os.path.realpath(str(f)): i for i, f in enumerate(ef.files)}
    keys: dict[str, int] = {}
    for _, df in scans:
        for name in df.inputFiles():
            key = re.sub(_URI_HEAD, "", name)
            i = ours.get(os.path.abspath(unquote(key)), real.get(os.path.realpath(unquote(key))))
            if i is None:
                raise RuntimeError(f"Spark reads {name}, which is not one of the listed event files")
            keys[key] = i
    part_cols = [c for c in ef.columns if any(c in lacking for lacking in ef.partitions)]
    fields = [T.StructField("_fkey", T.StringType()), T.StructField("_off", T.LongType())]
    fields += [T.StructField(f"_pv{j}", T.StringType()) for j in range(len(part_cols))]
    offsets = ef.offsets
    rows = [(k, offsets[i], *[ef.partitions[i].get(c) for c in part_cols]) for k, i in keys.items()]
    files = F.broadcast(spark.createDataFrame(rows, T.StructType(fields)))

    groups = []
    for members, df in scans:
        schema = ef.schemas[members[0]]
        fkey = F.regexp_replace(F.col("_metadata.file_path"), _URI_HEAD, "")
        df = df.select("*", fkey.alias("_fkey"), F.col("_metadata.row_index").alias("_ri"))
        df = df.join(files, "_fkey", "left").withColumn("_src", F.col("_off") + F.col("_ri"))
        for j, c in enumerate(part_cols):
            if c not in schema.names:
                df = df.withColumn(c, F.col(f"_pv{j}"))
        groups.append(_Group(schema=schema, frame=df.drop("_fkey", "_off", "_ri", *[f"_pv{j}" for j in range(len(part_cols))])))
    return groups


def _floor_div(c, n: int):
    """Integer ``c`` floor-divided by ``n``, exactly (no float on the way)."""
    from pyspark.sql import functions as F

    return F.floor(c.cast("decimal(20,0)") / F.lit(n)).cast("long")


def _typed(g: _Group) -> "DataFrame":
    """The contract's columns of one group in one typed form: ids as read, as text (integers in
    decimal), the timestamp as a Spark (microsecond) instant, ``machine_open`` boolean and the
    raw propensity as a double; null where the files lack a column."""
    import pyarrow as pa
    from pyspark.sql import functions as F

    names = g.frame.columns

    def have(c):
        return c in names

    cols = [F.col("_src")]
    for c in _ID_COLUMNS:
        cols.append((_col(c).cast("string") if have(c) else F.lit(None).cast("string")).alias(c))
    t = g.schema.field("timestamp").type if "timestamp" in g.schema.names else None
    if t is not None and _is_nanos(t):  # read as integer nanoseconds
        ts = F.timestamp_micros(_floor_div(_col("timestamp"), 1000))
    elif t is not None and pa.types.is_timestamp(t):
        ts = _col("timestamp")
    else:  # no such column, or one with no values
        ts = F.lit(None).cast("timestamp")
    cols.append(ts.alias("ts"))
    cols.append((_col("machine_open").cast("boolean") if have("machine_open") else F.lit(None).cast("boolean"))
                .alias("machine_open"))
    cols.append((_col("propensity").cast("double") if have("propensity") else F.lit(None).cast("double"))
                .alias("raw_propensity"))
    return g.frame.select(*cols)


def _clean_text(c):
    """An id as the contract reads it: stripped of every character ``str.strip`` removes
    (:data:`sendtime.features.inputs.WHITESPACE`; Spark's plain ``trim`` removes spaces only), and null
    when it is one of the texts exports write for missing (:data:`sendtime.features.inputs.MISSING_TEXT`)."""
    from pyspark.sql import functions as F

    from sendtime.features.inputs import MISSING_TEXT, WHITESPACE

    t = F.btrim(c, F.lit(WHITESPACE))
    return F.when(F.lower(t).isin(*MISSING_TEXT), F.lit(None).cast("string")).otherwise(t)


@dataclass
class SparkEvents:
    """Every event row with its source row number (``src``), its columns as the contract reads
    them (``event_id, user_id, message_id, event_type, ts, machine_open, propensity``) and its
    reject ``reason`` (null: accepted), with the files it came from."""

    checked: "DataFrame"
    files: EventFiles
    groups: list[_Group]

    @property
    def accepted(self) -> "DataFrame":
        """The accepted events with the columns of ``read_events(path).accepted``."""
        from pyspark.sql import functions as F

        return self.checked.where(F.col("reason").isNull()).select(
            "event_id", "user_id", "message_id", "event_type", F.col("ts").alias("timestamp"),
            "machine_open", "propensity")


def check_events_spark(spark: "SparkSession", path: str | Path, now: pd.Timestamp | None = None) -> SparkEvents:
    """Every event row of ``path`` judged by the contract's rules, as
    :func:`sendtime.features.contract.validate_events` does (lazily: nothing runs until an action).

    First match wins: a missing id or event type (after stripping, ``"NULL"`` / ``"nan"`` /
    ... count as missing), an unknown type, a missing timestamp, one before 1990 or more than a
    day after ``now``, a propensity (not NaN) outside (0, 1]. Then repeated event ids, over all
    rows in source order as the reference counts them: a later row is a duplicate when its id,
    user, message, type and time equal an earlier row's, else a conflict. Then, among the rest,
    opens, clicks and bounces with no accepted send of their message, or before its first
    accepted send (first in source order), and every later send of a message.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from sendtime.features import inputs as I

    ef = event_files(path)
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    groups = _read_groups(spark, ef)
    raw = _typed(groups[0])
    for g in groups[1:]:
        raw = raw.unionByName(_typed(g))

    ev = raw.select(
        "_src", *[_clean_text(F.col(c)).alias(c) for c in ("event_id", "user_id", "message_id")],
        F.lower(_clean_text(F.col("event_type"))).alias("event_type"),
        "ts", "machine_open",
        F.when(F.isnan("raw_propensity"), None).otherwise(F.col("raw_propensity")).alias("propensity"),
        "raw_propensity",
    ).withColumnRenamed("_src", "src")
    c = F.col
    bad_prop = c("raw_propensity").isNotNull() & ~F.isnan("raw_propensity") & (
        (c("raw_propensity") <= 0) | (c("raw_propensity") > 1))
    row_reason = (
        F.when(c("event_id").isNull(), I.MISSING.format("event_id"))
        .when(c("user_id").isNull(), I.MISSING.format("user_id"))
        .when(c("message_id").isNull(), I.MISSING.format("message_id"))
        .when(c("event_type").isNull(), I.MISSING.format("event_type"))
        .when(~c("event_type").isin(*EVENT_TYPES), I.UNKNOWN_EVENT_TYPE)
        .when(c("ts").isNull(), I.MISSING_TIMESTAMP)
        .when(c("ts") < _ts_literal(EARLIEST), I.BEFORE_1990)
        .when(c("ts") > _ts_literal(now + pd.Timedelta(days=1)), I.IN_THE_FUTURE)
        .when(bad_prop, I.BAD_PROPENSITY)
    )
    ev = ev.withColumn("reason", row_reason).drop("raw_propensity")

    # repeated event ids; as the reference, the earlier rows are all rows (a rejected row's id
    # still comes first), and only rows with no reason yet get one here
    by_id = Window.partitionBy("event_id").orderBy("src")
    by_key = Window.partitionBy("event_id", "user_id", "message_id", "event_type", "ts").orderBy("src")
    repeated = c("reason").isNull() & c("event_id").isNotNull() & (F.row_number().over(by_id) > 1)
    same = F.row_number().over(by_key) > 1
    ev = ev.withColumn("reason", F.when(repeated, F.when(same, I.DUPLICATE_EVENT).otherwise(I.CONFLICTING_EVENT_ID))
                       .otherwise(c("reason")))

    # the send rules, among the rows still accepted: a message's send is its first accepted send
    # in source order (the reference's drop_duplicates on the frame)
    ok = c("reason").isNull()
    is_send = ok & (c("event_type") == "send")
    first = F.min(F.when(is_send, F.struct(c("src").alias("src"), c("ts").alias("ts")))).over(
        Window.partitionBy("message_id"))
    ev = ev.withColumn("_first", first)
    follow = ok & c("event_type").isin("open", "click", "bounce")
    late = (
        F.when(follow & c("_first").isNull(), I.NO_SEND)
        .when(follow & (c("ts") < c("_first.ts")), I.BEFORE_SEND)
        .when(is_send & (c("src") != c("_first.src")), I.SECOND_SEND)
    )
    ev = ev.withColumn("reason", F.coalesce(c("reason"), late)).drop("_first")
    ev = ev.withColumn("machine_open", F.when(c("event_type") == "open", c("machine_open")))
    return SparkEvents(checked=ev, files=ef, groups=groups)


def read_events_spark(spark: "SparkSession", path: str | Path, now: pd.Timestamp | None = None) -> "DataFrame":
    """The accepted events of Parquet ``path`` (a file or a folder of files), exactly the rows
    :func:`sendtime.features.contract.read_events` accepts, with its columns (``event_id, user_id,
    message_id, event_type, timestamp, machine_open, propensity``); see
    :func:`check_events_spark` for the rules, and :func:`messages_spark` for the accounting and
    the rejects file."""
    return check_events_spark(spark, path, now=now).accepted


# --------------------------------------------------------------------------- the rejects file


_FLOAT_TEXT: dict[str, object] = {}


def _float_text(c, single: bool):
    """A float column as DuckDB writes it (``CAST(x AS VARCHAR)``: the shortest text that reads
    back the same value, Python's ``repr``: ``0.25``, ``1e-05``, ``nan``); Java's differs
    (``1.0E-5``, ``NaN``). Rejected rows only, through a vectorized Python function."""
    from pyspark.sql import functions as F

    kind = "float" if single else "double"
    if kind not in _FLOAT_TEXT:
        def text(s: pd.Series) -> pd.Series:
            if single:
                return s.map(lambda v: None if pd.isna(v) else str(np.float32(v)))
            return s.map(lambda v: None if pd.isna(v) else repr(float(v)))

        _FLOAT_TEXT[kind] = F.pandas_udf(text, "string")
    return F.when(c.isNull(), F.lit(None).cast("string")).when(F.isnan(c), "nan").otherwise(_FLOAT_TEXT[kind](c))


def _text_of_column(g: _Group, column: str):
    """One original column of a group as text, formatted as the DuckDB engine's rejects file
    formats it (``CAST(col AS VARCHAR)`` in a UTC session): instants as ``2026-03-02
    10:00:00.5+00``, floats as Python's ``repr``, booleans ``true`` / ``false``, null as empty."""
    import pyarrow as pa
    from pyspark.sql import functions as F

    if column not in g.frame.columns:
        return F.lit(None).cast("string")
    c = _col(column)
    t = g.schema.field(column).type if column in g.schema.names else pa.string()
    if pa.types.is_null(t):
        return F.lit(None).cast("string")
    if pa.types.is_timestamp(t):
        zone = F.lit("+00") if t.tz is not None else F.lit("")
        if t.unit == "ns":  # read as integer nanoseconds: seconds, then the digits DuckDB shows
            frac = F.pmod(c, F.lit(1_000_000_000))
            secs = F.timestamp_seconds(_floor_div(c, 1_000_000_000)).cast("string")
            digits = F.regexp_replace(F.lpad(frac.cast("string"), 9, "0"), "0+$", "")
            return F.concat(secs, F.when(frac != 0, F.concat(F.lit("."), digits)).otherwise(F.lit("")), zone)
        return F.concat(c.cast("string"), zone)
    if pa.types.is_floating(t):
        return _float_text(c, single=pa.types.is_float32(t) or pa.types.is_float16(t))
    return c.cast("string")


def write_rejects_spark(events: SparkEvents, rejects_path: str | Path) -> Path:
    """The rejected rows as they were read (every original column as text), with ``source_row``
    first and ``reason`` last, ordered by source row: one CSV file as the DuckDB engine writes
    it. The files are read again for the rejected rows only (joined on the source row)."""
    import shutil
    import uuid

    from pyspark.sql import functions as F

    out = Path(rejects_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    bad = events.checked.where(F.col("reason").isNotNull()).select(F.col("src").alias("_src"), "reason")
    ef = events.files
    parts = []
    for g in events.groups:
        parts.append(g.frame.select("_src", *[_text_of_column(g, c).alias(f"_c{j}") for j, c in enumerate(ef.columns)]))
    raw = parts[0]
    for p in parts[1:]:
        raw = raw.unionByName(p)
    rows = bad.join(raw, "_src", "inner").select(
        F.col("_src").alias("source_row"), *[F.col(f"_c{j}").alias(c) for j, c in enumerate(ef.columns)], "reason")
    scratch = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.spark"
    try:
        (rows.repartition(1).sortWithinPartitions("source_row").write.mode("overwrite")
         .option("header", True).option("escape", '"')
         .option("ignoreLeadingWhiteSpace", False).option("ignoreTrailingWhiteSpace", False)
         .csv(str(scratch)))
        written = sorted(scratch.glob("part-*.csv"))
        if len(written) != 1:
            raise RuntimeError(f"Spark wrote {len(written)} rejects files into {scratch}, not one")
        os.replace(written[0], out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def user_aggregates_spark(msgs_sdf: "DataFrame") -> "DataFrame":
    """Per-user counts of the message table (sends, first and last send), on the cluster.

    A cheap summary for monitoring a run at scale; the model's features come from
    :func:`sendtime.features.engagement.build_user_features`.
    """
    from pyspark.sql import functions as F

    return msgs_sdf.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("n_sends"),
        F.min("send_ts").alias("first_send"),
        F.max("send_ts").alias("last_send"),
        F.count("t_click").alias("n_clicked"),
        F.count("t_bounce").alias("n_bounced"),
    )


def build_user_features_spark(
    spark: "SparkSession",
    events_path: str | Path,
    users_path: str | Path,
    as_of: pd.Timestamp | str,
    params: "ShrinkageParams | None" = None,
    default_tz: str = "UTC",
    now: pd.Timestamp | None = None,
) -> "UserFeatures":
    """User features as of ``as_of`` with the event-scale work on Spark.

    What runs on the cluster is the part that grows with the events: reading the Parquet
    events (billions of rows), the contract's accept rules (:func:`read_events_spark`), the
    as-of cutoff (events at or after ``as_of`` are not used) and the reduction to one row per
    message (:func:`build_messages_spark`). The message table, one row per send, is collected to
    the driver (Arrow) and the per-user features are computed by the same
    :func:`sendtime.features.engagement.build_user_features` the embedded engine, training and serving
    use, so both engines give the same features. The users table is read through the contract
    (:func:`sendtime.features.contract.read_users`) on the driver: it has one row per user, like the
    feature table itself.
    """
    from sendtime.features.engagement import build_user_features

    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    users = read_users(users_path).accepted
    events = read_events_spark(spark, events_path, now=now)
    from pyspark.sql import functions as F

    events = events.where(F.col("timestamp") < _ts_literal(as_of))
    msgs = messages_to_pandas(build_messages_spark(events, users_to_spark(spark, users), default_tz))
    return build_user_features(msgs, users, as_of, params=params, default_tz=default_tz)


def empty_messages() -> pd.DataFrame:
    """A message table with no rows: the columns and dtypes of a full one."""
    cols: dict[str, pd.Series] = {}
    for c in MESSAGE_COLUMNS:
        if c in TIME_COLUMNS:
            cols[c] = pd.Series([], dtype="datetime64[us, UTC]")
        elif c == "propensity":
            cols[c] = pd.Series([], dtype="float64")
        elif c == "send_how":
            cols[c] = pd.Series([], dtype=np.int16)
        else:
            cols[c] = pd.Series([], dtype=object).astype(str)
    return pd.DataFrame(cols, columns=list(MESSAGE_COLUMNS))


def messages_spark(
    spark: "SparkSession",
    events_path: str | Path,
    users: pd.DataFrame,
    as_of: pd.Timestamp,
    default_tz: str = "UTC",
    now: pd.Timestamp | None = None,
    rejects_path: str | Path | None = None,
):
    """The nightly run's Spark step: the contract's accounting of every event row and the
    message table of the accepted events before ``as_of``, collected to the driver, as an
    ``EngineResult`` (the DuckDB engine's): read, accepted and rejected counts, the reasons,
    the rejects file (``rejects_path``, written when a row was rejected), the accepted events
    before the cutoff and the most common UTC send hour.

    Degenerate input never raises here: every row rejected, no sends, nothing before the cutoff
    or a file with no rows give an empty message table (the nightly decides what that means).
    Three Spark jobs over the checked events (persisted between them): the counts, the
    messages, and the rejects file.
    """
    import time

    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from sendtime.features.duckdb_engine import EngineResult

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    if not known_timezone(default_tz):
        raise ValueError(f"default time zone {default_tz!r} is not an IANA time zone")
    events = check_events_spark(spark, events_path, now=now)
    read = events.files.read
    checked = events.checked.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        before_cut = F.col("reason").isNull() & (F.col("ts") < _ts_literal(as_of))
        counts = (checked.groupBy("reason", before_cut.alias("before"), F.col("src").isNull().alias("lost"))
                  .count().collect())
        if any(r["lost"] for r in counts):
            raise RuntimeError("Spark read rows it could not place in the listed event files")
        reasons: dict[str, int] = {}
        for r in counts:
            if r["reason"] is not None:
                reasons[r["reason"]] = reasons.get(r["reason"], 0) + int(r["count"])
        n_before = int(sum(r["count"] for r in counts if r["before"]))
        rejected = int(sum(reasons.values()))
        if sum(int(r["count"]) for r in counts) != read:
            raise RuntimeError(f"Spark read {sum(int(r['count']) for r in counts):,} event rows, "
                               f"the files' footers say {read:,}")
        timings["contract"] = time.perf_counter() - t0

        msgs = empty_messages()
        if n_before:
            before = events.accepted.where(F.col("timestamp") < _ts_literal(as_of))
            got = messages_to_pandas(build_messages_spark(before, users_to_spark(spark, users), default_tz))
            if len(got):
                msgs = got
        timings["messages"] = time.perf_counter() - t0

        written = None
        if rejects_path is not None and rejected:
            written = write_rejects_spark(SparkEvents(checked=checked, files=events.files, groups=events.groups),
                                          rejects_path)
        timings["rejects"] = time.perf_counter() - t0
    finally:
        checked.unpersist()
    return EngineResult(read=read, n_accepted=read - rejected, n_rejected=rejected, reasons=reasons,
                        messages=msgs, events_before_cutoff=n_before, status_quo_utc_hour=status_quo_hour(msgs),
                        timings=timings, rejects_path=written)
