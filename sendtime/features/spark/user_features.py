"""Per-user features from a Spark message table: the event-scale reduction on the cluster, the
features by the one shared function, :func:`sendtime.features.engagement.build_user_features`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from sendtime.features.contract import read_users
from sendtime.features.engagement import build_user_features
from sendtime.features.spark.contract import read_events_spark
from sendtime.features.spark.messages import (
    build_messages_spark,
    messages_to_pandas,
    ts_literal,
    users_to_spark,
)

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from sendtime.features.engagement import UserFeatures
    from sendtime.features.profiles import ShrinkageParams


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

    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    users = read_users(users_path).accepted
    events = read_events_spark(spark, events_path, now=now)
    from pyspark.sql import functions as F

    events = events.where(F.col("timestamp") < ts_literal(as_of))
    msgs = messages_to_pandas(build_messages_spark(events, users_to_spark(spark, users), default_tz))
    return build_user_features(msgs, users, as_of, params=params, default_tz=default_tz)
