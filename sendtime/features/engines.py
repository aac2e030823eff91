"""One door to the feature engines: events in, one :class:`MessageTable` out.

The engine is a setting (``SENDTIME_ENGINE``: ``auto`` picks DuckDB for typed Parquet, where it
was measured faster, else pandas; or ``duckdb``, ``pandas``, ``spark``). Whichever runs, the
nightly gets the same result type: the read summary, the messages the training sample uses,
the user buckets the serving features are built from (large DuckDB histories), the rejects,
and what each engine measured. The nightly never branches on the engine.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from sendtime.features.contract import ReadResult, read_events, write_rejects
from sendtime.features.messages import build_messages, status_quo_hour
from sendtime.settings import Settings

BUCKET_ABOVE_EVENTS = 5_000_000  # larger histories are processed in user buckets (DuckDB engine)
EVENTS_PER_BUCKET = 5_000_000


class NoSends(ValueError):
    """No send before the cutoff: nothing to learn from."""


@dataclass
class MessageTable:
    """What every engine hands the nightly."""

    engine: str
    events: object  # the read summary: read, n_accepted, n_rejected, summary(), rejects
    messages: pd.DataFrame  # the training messages: all of them, or the sampled user buckets'
    ignored: int  # accepted events at or after the cutoff, not used
    buckets: list | None = None  # user-bucket loaders (the serving features read them); None: messages is all
    bucket_dir: Path | None = None
    status_quo_utc_hour: int | None = None  # the most frequent send hour of the history (messages.status_quo_hour)
    timings: dict[str, float] = field(default_factory=dict)

    def save_rejects(self, path: Path) -> Path | None:
        """The rejected events' CSV at ``path`` (None if every event was accepted)."""
        ev = self.events
        if not ev.n_rejected:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(ev, ReadResult):
            return write_rejects(ev, path)
        return Path(shutil.move(str(ev.rejects_path), path))  # DuckDB and Spark stream theirs to a file

    def close(self) -> None:
        """Remove the engine's temporary user buckets."""
        if self.bucket_dir is not None:
            shutil.rmtree(self.bucket_dir, ignore_errors=True)


def choose_engine(setting: str, events_path: str | Path) -> str:
    """The feature engine for these inputs: DuckDB for typed Parquet (measured faster), else pandas."""
    if setting in ("pandas", "spark"):
        return setting
    from sendtime.features.duckdb_engine import usable

    why_not = usable(events_path)
    if why_not is None:
        return "duckdb"
    if setting == "duckdb":
        raise ValueError(f"SENDTIME_ENGINE=duckdb cannot read {events_path}: {why_not}")
    return "pandas"


def text_buckets(n_buckets: int, n_users: int, max_users: int) -> int:
    """How many user buckets to write with their text columns: enough to hold the training
    sample's ``max_users`` users (buckets are random shares of users, so one spare)."""
    per_bucket = max(n_users, 1) / max(n_buckets, 1)
    return int(min(n_buckets, np.ceil(max_users / max(per_bucket, 1.0)) + 1))


def training_messages(buckets: list, max_users: int, say: Callable[[str], None]) -> pd.DataFrame:
    """Messages of whole user buckets (each a random share of users, by hash) until they hold
    ``max_users`` users: the training sample, without ever loading the whole history. Only the
    buckets written with text columns (:func:`text_buckets`) are read."""
    parts, n = [], 0
    for load in buckets:
        part = load()
        parts.append(part)
        n += part["user_id"].nunique()
        if n >= max_users:
            break
    say(f"training messages from {len(parts)} of {len(buckets)} user buckets ({n:,} users)")
    # ordered by send time, then message id (unique): the same sample and the same model for the
    # same inputs, whatever order the engine's threads wrote the rows in
    return pd.concat(parts, ignore_index=True).sort_values(["send_ts", "message_id"], kind="stable").reset_index(drop=True)


def build_message_table(engine: str, events_path: str | Path, users: pd.DataFrame, as_of: pd.Timestamp,
                        settings: Settings, work_name: str, say: Callable[[str], None]) -> MessageTable:
    """Validate the events and build the message table of the sends before ``as_of`` with
    ``engine``. ``work_name`` names the engine's temporary files under the runs folder.
    Raises :class:`NoSends` when no send precedes the cutoff."""
    build = {"spark": _spark, "duckdb": _duckdb, "pandas": _pandas}[engine]
    tab = build(events_path, users, as_of, settings, work_name, say)
    if tab.messages.empty:
        tab.close()
        raise NoSends(f"no sends before the as-of date {as_of.date()}: nothing to learn from")
    return tab


def _spark(events_path, users, as_of, settings: Settings, work_name: str, say) -> MessageTable:
    from sendtime.features.spark import messages_spark, spark_session, stop_spark

    say(f"reading events from {events_path} (Spark engine, master {settings.spark_master})")
    spark = spark_session(master=settings.spark_master)
    try:
        ev = messages_spark(spark, events_path, users, as_of, settings.default_timezone,
                            rejects_path=settings.runs_dir / f"rejects_events_{work_name}.csv")
    finally:
        stop_spark(spark)
    msgs = ev.messages if ev.events_before_cutoff else ev.messages.iloc[:0]
    return MessageTable("spark", ev, msgs, ev.n_accepted - ev.events_before_cutoff,
                        status_quo_utc_hour=getattr(ev, "status_quo_utc_hour", None))


def _duckdb(events_path, users, as_of, settings: Settings, work_name: str, say) -> MessageTable:
    from sendtime.features.duckdb_engine import bucket_loaders, build_messages_duckdb, count_rows

    say(f"reading events from {events_path} (DuckDB engine)")
    bucket_dir, n_buckets = None, 0
    n_rows = count_rows(events_path)
    if n_rows > BUCKET_ABOVE_EVENTS:  # features bucket by bucket: memory bounded by one bucket
        bucket_dir = settings.runs_dir / f"buckets_{work_name}"
        shutil.rmtree(bucket_dir, ignore_errors=True)
        n_buckets = int(np.ceil(n_rows / EVENTS_PER_BUCKET))
        say(f"{n_rows:,} events: messages split into {n_buckets} user buckets")
    with_text = text_buckets(n_buckets, len(users), settings.max_train_users)
    ev = build_messages_duckdb(events_path, users, as_of, settings.default_timezone,
                               rejects_path=settings.runs_dir / f"rejects_events_{work_name}.csv", progress=say,
                               temp_dir=settings.runs_dir / "duckdb-tmp", buckets=n_buckets, bucket_dir=bucket_dir,
                               string_buckets=with_text)
    buckets = None
    if bucket_dir is not None:
        buckets = bucket_loaders(bucket_dir)
        msgs = training_messages([b for b in buckets if b.number < with_text], settings.max_train_users, say)
    else:
        msgs = ev.messages
    if not ev.events_before_cutoff:
        msgs = msgs.iloc[:0]
    return MessageTable("duckdb", ev, msgs, ev.n_accepted - ev.events_before_cutoff, buckets=buckets,
                        bucket_dir=bucket_dir, status_quo_utc_hour=getattr(ev, "status_quo_utc_hour", None),
                        timings=dict(getattr(ev, "timings", {}) or {}))


def _pandas(events_path, users, as_of, settings: Settings, work_name: str, say) -> MessageTable:
    say(f"reading events from {events_path}")
    ev = read_events(events_path)
    events = ev.accepted.loc[ev.accepted["timestamp"] < as_of]
    if events.empty or not (events["event_type"] == "send").any():
        return MessageTable("pandas", ev, pd.DataFrame(), len(ev.accepted) - len(events))
    say("building messages (pandas reference engine)")
    msgs = build_messages(events, users, settings.default_timezone)
    return MessageTable("pandas", ev, msgs, len(ev.accepted) - len(events), status_quo_utc_hour=status_quo_hour(msgs))
