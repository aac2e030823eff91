"""The nightly run's Spark step: the contract's accounting and the message table, as the DuckDB
engine's result type (:class:`sendtime.features.duckdb_engine.EngineResult`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from sendtime.features.contract import known_timezone
from sendtime.features.duckdb_engine import EngineResult
from sendtime.features.messages import empty_messages, status_quo_hour
from sendtime.features.spark.contract import SparkEvents, check_events_spark, write_rejects_spark
from sendtime.features.spark.messages import (
    build_messages_spark,
    messages_to_pandas,
    ts_literal,
    users_to_spark,
)

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession


def messages_spark(
    spark: "SparkSession",
    events_path: str | Path,
    users: pd.DataFrame,
    as_of: pd.Timestamp,
    default_tz: str = "UTC",
    now: pd.Timestamp | None = None,
    rejects_path: str | Path | None = None,
) -> EngineResult:
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
        before_cut = F.col("reason").isNull() & (F.col("ts") < ts_literal(as_of))
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
            before = events.accepted.where(F.col("timestamp") < ts_literal(as_of))
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
