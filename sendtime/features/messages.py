"""One row per sent message: when it went out, in whose local time, and what happened after.

Everything downstream (features at any cutoff, training labels) reads this table, so the
expensive joins of opens and clicks onto their sends happen once. Outcome timestamps are kept
as they are; whether an outcome counts is decided later against a cutoff, which keeps every
feature point-in-time correct.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sendtime.features.contract import known_timezone

#: Opens this soon after delivery with no flag are candidates for machine (MPP) opens.
MACHINE_OPEN_WINDOW = pd.Timedelta(minutes=10)
HOURS_PER_WEEK = 168
US_PER_HOUR = 3_600_000_000
#: The epoch (1970-01-01 00:00) was a Thursday: hour 72 of a week that starts on Monday 00:00. Every
#: engine computes the local hour of the week as (local hours since the epoch + this) % 168.
EPOCH_HOUR_OF_WEEK = 72

#: A message's outcomes: its first open of each kind, its second unflagged open (a machine
#: opener's proxy fetch is one of the first two), first click and first bounce (UTC instants).
OUTCOME_COLUMNS = ("t_open_machine_flag", "t_open_human_flag", "t_open_unk_fast", "t_open_unk_slow", "t_open_unk_next",
                   "t_click", "t_bounce")
TIME_COLUMNS = ("send_ts", *OUTCOME_COLUMNS)
#: The message table's columns, in order: every engine (pandas, DuckDB, Spark) writes exactly these.
MESSAGE_COLUMNS = ("message_id", "user_id", "send_ts", "propensity", *OUTCOME_COLUMNS, "timezone", "send_how")


def hour_of_week(ts_utc: pd.Series, tz: pd.Series) -> np.ndarray:
    """Local hour-of-week (Monday 00:00 = 0) of UTC instants, per row time zone, DST-correct."""
    if len(ts_utc) == 0:
        return np.zeros(0, dtype=np.int16)
    codes, zones = pd.factorize(pd.Series(np.asarray(tz, dtype=object)), sort=False)
    return hour_of_week_us(micros(pd.Series(ts_utc)), codes, np.asarray(zones, dtype=object))


def hour_of_week_us(send_us: np.ndarray, zone_code: np.ndarray, zones: np.ndarray) -> np.ndarray:
    """:func:`hour_of_week` of int64 UTC microseconds, the time zone of each row given as a
    code into ``zones``: pandas' own conversion, one call per zone."""
    out = np.zeros(len(send_us), dtype=np.int16)
    if len(send_us) == 0:
        return out
    order = np.argsort(zone_code, kind="stable")  # a radix sort for 8- and 16-bit codes
    ends = np.flatnonzero(np.diff(zone_code[order])) + 1
    for idx in np.split(order, ends):
        utc = pd.DatetimeIndex(send_us[idx].view("datetime64[us]"), tz="UTC")
        local = utc.tz_convert(str(zones[zone_code[idx[0]]])).tz_localize(None).as_unit("us").asi8
        out[idx] = (local // US_PER_HOUR + EPOCH_HOUR_OF_WEEK) % HOURS_PER_WEEK
    return out


def resolve_timezones(user_ids: pd.Series, users: pd.DataFrame, default_tz: str) -> tuple[pd.Series, pd.Series]:
    """Time zone per user id from the users table, else the default. Returns (zone, source)."""
    table = users.set_index("user_id")["timezone"] if len(users) else pd.Series(dtype=object)
    zone = user_ids.map(table)
    source = pd.Series(np.where(zone.notna(), "users_table", "default"), index=user_ids.index)
    zone = zone.where(zone.notna(), default_tz)
    if not known_timezone(default_tz):
        raise ValueError(f"default time zone {default_tz!r} is not an IANA time zone")
    return zone.astype(str), source


def build_messages(events: pd.DataFrame, users: pd.DataFrame, default_tz: str = "UTC") -> pd.DataFrame:
    """Join opens, clicks and bounces onto their sends. One row per message."""
    ev = events
    sends = ev.loc[ev["event_type"] == "send", ["message_id", "user_id", "timestamp", "propensity"]]
    sends = sends.drop_duplicates("message_id").rename(columns={"timestamp": "send_ts"})
    msgs = sends.set_index("message_id")

    opens = ev.loc[ev["event_type"] == "open", ["message_id", "timestamp", "machine_open"]]
    opens = opens.join(msgs["send_ts"], on="message_id", how="inner").rename_axis(None)
    fast = (opens["timestamp"] - opens["send_ts"]) <= MACHINE_OPEN_WINDOW
    flag = opens["machine_open"]

    def first(mask: pd.Series, frame: pd.DataFrame = opens) -> pd.Series:
        return frame.loc[mask.fillna(False).astype(bool)].groupby("message_id")["timestamp"].min()

    msgs["t_open_machine_flag"] = first(flag == True)  # noqa: E712 - nullable boolean
    msgs["t_open_human_flag"] = first(flag == False)  # noqa: E712
    msgs["t_open_unk_fast"] = first(flag.isna() & fast)
    msgs["t_open_unk_slow"] = first(flag.isna() & ~fast)
    unflagged = opens.loc[flag.isna().to_numpy(), ["message_id", "timestamp"]].sort_values(["message_id", "timestamp"])
    second = unflagged[unflagged.groupby("message_id").cumcount().to_numpy() == 1]
    msgs["t_open_unk_next"] = second.set_index("message_id")["timestamp"]
    clicks = ev.loc[ev["event_type"] == "click", ["message_id", "timestamp"]]
    msgs["t_click"] = clicks.groupby("message_id")["timestamp"].min()
    bounces = ev.loc[ev["event_type"] == "bounce", ["message_id", "timestamp"]]
    msgs["t_bounce"] = bounces.groupby("message_id")["timestamp"].min()
    msgs = msgs.reset_index()
    for c in OUTCOME_COLUMNS:
        msgs[c] = msgs[c].astype("datetime64[us, UTC]")

    zone, _ = resolve_timezones(msgs["user_id"], users, default_tz)
    msgs["timezone"] = zone.to_numpy()
    msgs["send_how"] = hour_of_week(msgs["send_ts"], msgs["timezone"])
    return msgs.sort_values("send_ts", kind="stable").reset_index(drop=True)[list(MESSAGE_COLUMNS)]


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


NAT = np.iinfo(np.int64).min  # a missing instant, as pandas stores NaT


def status_quo_hour(msgs: pd.DataFrame) -> int | None:
    """The status quo: the most common UTC hour of the sends (the earliest on ties; the DuckDB
    engine counts it the same way in SQL); None with no sends."""
    if msgs.empty:
        return None
    hours = np.bincount(msgs["send_ts"].dt.hour.to_numpy(dtype=np.int64), minlength=24)
    return int(np.argmax(hours))


def micros(ts: pd.Series) -> np.ndarray:
    """UTC instants as int64 microseconds since the epoch; NaT as :data:`NAT`."""
    return ts.to_numpy(dtype="datetime64[us]").view(np.int64)


def micros_of(ts: pd.Timestamp) -> int:
    return int(pd.Timestamp(ts).to_datetime64().astype("datetime64[us]").astype(np.int64))


@dataclass
class MessageArrays:
    """The message table as the user features read it: integers only, so a bucket of tens of
    millions of messages costs a few hundred megabytes and no Python objects."""

    uidx: np.ndarray  # int64: the user's row in the users table, -1 if the user is not in it
    unknown_ids: np.ndarray  # object: user ids of the rows with uidx -1, in row order
    send_us: np.ndarray  # int64 microseconds since the epoch (as every instant below; NaT = NAT)
    how: np.ndarray  # int16 local hour-of-week of the send
    t_open_machine_flag: np.ndarray
    t_open_human_flag: np.ndarray
    t_open_unk_fast: np.ndarray
    t_open_unk_slow: np.ndarray
    t_open_unk_next: np.ndarray
    t_click: np.ndarray
    t_bounce: np.ndarray

    @classmethod
    def from_frame(cls, msgs: pd.DataFrame, user_index: pd.Index) -> "MessageArrays":
        uidx = user_index.get_indexer(msgs["user_id"]).astype(np.int64)
        return cls(uidx=uidx, unknown_ids=msgs["user_id"].to_numpy(dtype=object)[uidx < 0],
                   send_us=micros(msgs["send_ts"]), how=msgs["send_how"].to_numpy(dtype=np.int16),
                   **{c: micros(msgs[c]) for c in OUTCOME_COLUMNS})
