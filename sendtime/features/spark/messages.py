"""The message table on Spark: the same columns, values and row order as
:func:`sendtime.features.messages.build_messages` (``tests/features/test_spark.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sendtime.features.contract import known_timezone
from sendtime.features.messages import (
    EPOCH_HOUR_OF_WEEK,
    HOURS_PER_WEEK,
    MACHINE_OPEN_WINDOW,
    MESSAGE_COLUMNS,
    TIME_COLUMNS,
    US_PER_HOUR,
)

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession


_WINDOW_US = int(MACHINE_OPEN_WINDOW / pd.Timedelta(microseconds=1))


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

    # opens, clicks and bounces of sent messages; one pass, conditional minimums (and one second-earliest)
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

    def second(cond):  # the second earliest (collect_list skips the nulls)
        two = F.sort_array(F.collect_list(F.when(cond, F.col("timestamp"))))
        return F.when(F.size(two) >= 2, F.element_at(two, 2))

    outcomes = out.groupBy("message_id").agg(
        first(is_open & (flag == F.lit(True))).alias("t_open_machine_flag"),
        first(is_open & (flag == F.lit(False))).alias("t_open_human_flag"),
        first(is_open & flag.isNull() & fast).alias("t_open_unk_fast"),
        first(is_open & flag.isNull() & ~fast).alias("t_open_unk_slow"),
        second(is_open & flag.isNull()).alias("t_open_unk_next"),
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
    # DST-correct); with the session time zone at UTC, its epoch microseconds are local ones, and
    # the hour of the week follows the one rule of sendtime.features.messages.hour_of_week_us.
    local_hours = F.floor(F.unix_micros(F.from_utc_timestamp(F.col("send_ts"), F.col("timezone"))) / F.lit(US_PER_HOUR))
    how = (local_hours + F.lit(EPOCH_HOUR_OF_WEEK)) % F.lit(HOURS_PER_WEEK)
    msgs = msgs.withColumn("send_how", how.cast("smallint"))
    return msgs.orderBy("send_ts", "_send_pos", "_send_eid").select(*MESSAGE_COLUMNS)


def ts_literal(ts: pd.Timestamp):
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
