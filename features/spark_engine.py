"""The message table on Apache Spark: the same definitions as ``features.messages``, at cluster scale.

The embedded engine (pandas) reads every event into one process. This module does the
event-scale work, billions of event rows reduced to one row per sent message, with PySpark, so it
runs on a cluster; the per-user features are then computed from the collected message table by
the one shared function, :func:`features.engagement.build_user_features`. The message table is
what every downstream feature is computed from, so it is the parity contract between the two
engines: :func:`build_messages_spark` returns the same columns, values and row order as
:func:`features.messages.build_messages` (``tests/test_spark.py`` checks it, around DST changes
and for users with no time zone too).

PySpark is an optional dependency (``pip install 'sendtime[spark]'``); nothing else in the
project imports this module.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.contract import EARLIEST, EVENT_TYPES, ContractError, known_timezone, read_users
from features.messages import MACHINE_OPEN_WINDOW

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from features.engagement import UserFeatures
    from features.profiles import ShrinkageParams

#: Columns of the message table, in ``features.messages.build_messages`` order.
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
    # conversions used here are checked by tests/test_spark.py
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
    """One row per sent message, as :func:`features.messages.build_messages`, on Spark.

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


def read_events_spark(spark: "SparkSession", path: str | Path, now: pd.Timestamp | None = None) -> "DataFrame":
    """Events from Parquet (a file or a folder of files) with the contract's accept rules that
    decide which rows reach the message table.

    Applied: ids and event type trimmed (type lower-cased); rows with a missing id, an unknown
    type, no timestamp, a timestamp before 1990 or more than a day in the future are dropped; a
    repeated ``event_id`` is kept once (its first occurrence by time); ``machine_open`` only
    counts on opens; a second send of a message is dropped, and so are opens, clicks and bounces
    with no send or before it. Timestamps must be Parquet instants (``TIMESTAMP`` with UTC
    adjustment), as the contract requires. Not applied here (run ``sendtime nightly`` or
    :func:`features.contract.read_events` for the accounting and the rejects file): text
    timestamps, non-boolean ``machine_open``, propensities outside (0, 1], and telling identical
    from conflicting duplicates.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    p = Path(path)
    if not p.exists():
        raise ContractError(f"events file not found: {p}")
    raw = spark.read.parquet(str(p))
    missing = [c for c in ("event_id", "user_id", "message_id", "event_type", "timestamp") if c not in raw.columns]
    if missing:
        raise ContractError(f"events file {p} lacks required column(s): {', '.join(missing)}")
    if not isinstance(raw.schema["timestamp"].dataType, (T.TimestampType,)):
        raise ContractError(f"events file {p}: the Spark engine needs a Parquet timestamp column "
                            f"(got {raw.schema['timestamp'].dataType.simpleString()}); use the embedded engine")
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)

    def text(c: str):
        t = F.trim(F.col(c).cast("string"))
        return F.when(t == "", None).otherwise(t)

    ev = raw.select(
        text("event_id").alias("event_id"),
        text("user_id").alias("user_id"),
        text("message_id").alias("message_id"),
        F.lower(text("event_type")).alias("event_type"),
        F.col("timestamp"),
        (F.col("machine_open").cast("boolean") if "machine_open" in raw.columns else F.lit(None).cast("boolean")).alias("machine_open"),
        (F.col("propensity").cast("double") if "propensity" in raw.columns else F.lit(None).cast("double")).alias("propensity"),
    )
    ev = ev.where(
        F.col("event_id").isNotNull() & F.col("user_id").isNotNull() & F.col("message_id").isNotNull()
        & F.col("event_type").isin(*EVENT_TYPES) & F.col("timestamp").isNotNull()
        & (F.col("timestamp") >= _ts_literal(EARLIEST))
        & (F.col("timestamp") <= _ts_literal(now + pd.Timedelta(days=1)))
    )
    ev = ev.withColumn("machine_open", F.when(F.col("event_type") == "open", F.col("machine_open")))
    once = Window.partitionBy("event_id").orderBy("timestamp", "message_id", "event_type")
    ev = ev.withColumn("_k", F.row_number().over(once)).where(F.col("_k") == 1).drop("_k")
    first_send = Window.partitionBy("message_id").orderBy("timestamp", "event_id")
    sends = (
        ev.where(F.col("event_type") == "send")
        .withColumn("_k", F.row_number().over(first_send)).where(F.col("_k") == 1)
        .select("message_id", F.col("timestamp").alias("_send_ts"), F.col("event_id").alias("_send_id"))
    )
    ev = ev.join(sends, "message_id", "left").where(
        ((F.col("event_type") == "send") & (F.col("event_id") == F.col("_send_id")))
        | (F.col("event_type").isin("unsubscribe", "complaint"))
        | (F.col("_send_ts").isNotNull() & (F.col("timestamp") >= F.col("_send_ts")))
    )
    return ev.select("event_id", "user_id", "message_id", "event_type", "timestamp", "machine_open", "propensity")


def user_aggregates_spark(msgs_sdf: "DataFrame") -> "DataFrame":
    """Per-user counts of the message table (sends, first and last send), on the cluster.

    A cheap summary for monitoring a run at scale; the model's features come from
    :func:`features.engagement.build_user_features`.
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
    :func:`features.engagement.build_user_features` the embedded engine, training and serving
    use, so both engines give the same features. The users table is read through the contract
    (:func:`features.contract.read_users`) on the driver: it has one row per user, like the
    feature table itself.
    """
    from features.engagement import build_user_features

    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    users = read_users(users_path).accepted
    events = read_events_spark(spark, events_path, now=now)
    from pyspark.sql import functions as F

    events = events.where(F.col("timestamp") < _ts_literal(as_of))
    msgs = messages_to_pandas(build_messages_spark(events, users_to_spark(spark, users), default_tz))
    return build_user_features(msgs, users, as_of, params=params, default_tz=default_tz)



def messages_spark(
    spark: "SparkSession",
    events_path: str | Path,
    users: pd.DataFrame,
    as_of: pd.Timestamp,
    default_tz: str = "UTC",
    now: pd.Timestamp | None = None,
):
    """The nightly run's Spark step: the message table of the events before ``as_of``, collected
    to the driver, with the row accounting (an ``EngineResult``; no rejects file on Spark)."""
    from pyspark.sql import functions as F

    from features.duckdb_engine import EngineResult

    read = spark.read.parquet(str(events_path)).count()
    events = read_events_spark(spark, events_path, now=now).cache()
    accepted = events.count()
    before = events.where(F.col("timestamp") < _ts_literal(as_of))
    n_before = before.count()
    msgs = messages_to_pandas(build_messages_spark(before, users_to_spark(spark, users), default_tz))
    events.unpersist()
    return EngineResult(read=read, n_accepted=accepted, n_rejected=read - accepted,
                        reasons={"dropped by the Spark accept rules": read - accepted} if read > accepted else {},
                        messages=msgs, events_before_cutoff=n_before)
