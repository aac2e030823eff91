"""The input contract on Spark: the same accepted rows, rejects by global source row and reasons
as :func:`sendtime.features.contract.validate_events`, and a rejects file with the DuckDB engine's text
(``tests/features/test_spark_contract.py``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sendtime.features import inputs as I
from sendtime.features.contract import EARLIEST, EVENT_COLUMNS, EVENT_TYPES, FOLLOWS_SEND, ContractError
from sendtime.features.duckdb_engine import NotForThisEngine
from sendtime.features.inputs import MISSING_TEXT, WHITESPACE, data_files, is_parquet
from sendtime.features.spark.messages import ts_literal

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession


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
        .when(c("ts") < ts_literal(EARLIEST), I.BEFORE_1990)
        .when(c("ts") > ts_literal(now + pd.Timedelta(days=1)), I.IN_THE_FUTURE)
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
    follow = ok & c("event_type").isin(*FOLLOWS_SEND)
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
