"""What a message table holds beyond opens and clicks: its channel, its conversions and their
value, and the unsubscribe or complaint it caused.

They live apart from the engines' message table (the pandas, DuckDB and Spark builds all write
the same :data:`sendtime.features.messages.MESSAGE_COLUMNS`) because only some histories carry
them and only some objectives read them: the nightly attaches them to the training messages
with :func:`attach_extras`, read once from the events the contract accepted (the pandas engine)
or from the few rows that carry them (a filtered Parquet read for the other engines).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sendtime.features.contract import MESSAGE_ATTRIBUTE_COLUMNS, ReadResult, validate_events

NEGATIVE_TYPES = ("unsubscribe", "complaint")
EXTRA_TYPES = ("conversion", *NEGATIVE_TYPES)
EXTRA_COLUMNS = ("channel", "t_conversion", "conversion_value", "t_negative")


@dataclass
class MessageExtras:
    """Per message id: ``channel`` of its send, first conversion, value of its conversions within
    the horizon, first unsubscribe or complaint. ``note``: what the run should say about them."""

    frame: pd.DataFrame  # index message_id; columns EXTRA_COLUMNS (plus send_ts for the horizon)
    currency: str | None = None
    note: str = ""

    @property
    def channels(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.frame["channel"].value_counts().items()}


def _filtered_parquet(path: Path) -> pd.DataFrame:
    """The rows of a Parquet history that carry extras: conversions, unsubscribes, complaints,
    and sends on a channel other than e-mail (pyarrow reads only those row groups' matches)."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(str(path), format="parquet", partitioning="hive")
    names = set(dataset.schema.names)
    cols = [c for c in ("event_id", "user_id", "message_id", "event_type", "timestamp", *MESSAGE_ATTRIBUTE_COLUMNS)
            if c in names]
    filt = ds.field("event_type").isin(list(EXTRA_TYPES))
    if "channel" in names:
        filt = filt | (ds.field("channel") != "email")
    return dataset.to_table(columns=cols, filter=filt).to_pandas()


def extras_events(events: ReadResult | object, events_path: str | Path, as_of: pd.Timestamp,
                  say=lambda _m: None) -> pd.DataFrame:
    """The accepted events that carry extras, before ``as_of``: from the pandas engine's
    accepted events, else read again from the Parquet history (only those rows, judged by the
    contract without the send check: their sends were judged by the engine; the DuckDB and Spark
    engines do not judge channel, value and currency, so the rows this check refuses are said)."""
    if isinstance(events, ReadResult):
        ev = events.accepted
    else:
        try:
            raw = _filtered_parquet(Path(events_path))
        except Exception as exc:  # a schema pyarrow cannot filter: nothing beyond opens is read, and it is said
            say(f"channels, conversions and unsubscribes not read ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})")
            return pd.DataFrame(columns=["message_id", "event_type", "timestamp"])
        judged = validate_events(raw.reset_index(drop=True), require_sends=False)
        if judged.n_rejected:
            say(f"{judged.n_rejected:,} rows with conversions, unsubscribes or channels not used: {judged.reasons()}")
        ev = judged.accepted
    ev = ev.loc[ev["timestamp"] < as_of]
    keep = ev["event_type"].isin(EXTRA_TYPES)
    if "channel" in ev.columns:
        keep |= (ev["event_type"] == "send") & (ev["channel"] != "email")
    return ev.loc[keep]


def build_extras(ev: pd.DataFrame, msgs: pd.DataFrame, horizon_hours: int) -> MessageExtras:
    """The extras of every message of ``msgs`` from the events that carry them."""
    out = pd.DataFrame(index=pd.Index(msgs["message_id"], name="message_id"))
    out["send_ts"] = msgs["send_ts"].to_numpy()
    sends = ev.loc[ev["event_type"] == "send"]
    channel = sends.drop_duplicates("message_id").set_index("message_id")["channel"] if "channel" in sends else None
    out["channel"] = channel.reindex(out.index).fillna("email").to_numpy(dtype=object) if channel is not None else "email"
    conv = ev.loc[ev["event_type"] == "conversion"]
    out["t_conversion"] = conv.groupby("message_id")["timestamp"].min().reindex(out.index).astype("datetime64[us, UTC]")
    note, currency = "", None
    if len(conv) and "value" in conv.columns:
        valued = conv.loc[conv["value"].notna()]
        if "currency" in valued.columns and valued["currency"].notna().any():
            counts = valued["currency"].value_counts()
            currency = str(counts.index[0])
            other = valued["currency"].notna() & (valued["currency"] != currency)
            if other.any():
                note = (f"{int(other.sum()):,} conversions in currencies other than {currency} "
                        f"({', '.join(map(str, counts.index[1:4]))}) are counted but not valued: convert them first")
            valued = valued.loc[~other]
        send = out["send_ts"].reindex(valued["message_id"]).to_numpy()
        within = (valued["timestamp"].to_numpy() - send) < np.timedelta64(horizon_hours, "h")
        out["conversion_value"] = valued.loc[within].groupby("message_id")["value"].sum().reindex(out.index).fillna(0.0)
    else:
        out["conversion_value"] = 0.0
    neg = ev.loc[ev["event_type"].isin(NEGATIVE_TYPES)]
    out["t_negative"] = neg.groupby("message_id")["timestamp"].min().reindex(out.index).astype("datetime64[us, UTC]")
    return MessageExtras(frame=out, currency=currency, note=note)


def _utc(x) -> pd.Series:
    """Instants as a UTC Series of microseconds, by position (naive values are taken as UTC)."""
    s = x.reset_index(drop=True) if isinstance(x, pd.Series) else pd.Series(x)
    if s.dtype == object:
        s = pd.to_datetime(s, utc=True)
    elif getattr(s.dt, "tz", None) is None:
        s = s.dt.tz_localize("UTC")
    return s.astype("datetime64[us, UTC]")


def within(t, send, cutoff: pd.Timestamp, horizon_hours: int) -> np.ndarray:
    """True where an outcome at ``t`` (NaT: none) came within the horizon of ``send`` and before ``cutoff``."""
    t, send = _utc(t), _utc(send)
    ok = t.notna() & (t < cutoff) & ((t - send) < pd.Timedelta(hours=horizon_hours))
    return ok.to_numpy(dtype=bool)


def attach_extras(msgs: pd.DataFrame, extras: MessageExtras) -> pd.DataFrame:
    """``msgs`` with the extras' columns, aligned by message id."""
    f = extras.frame.reindex(msgs["message_id"])
    out = msgs.copy()
    for c in ("channel", "conversion_value"):
        out[c] = f[c].to_numpy()
    out["channel"] = out["channel"].fillna("email")
    out["conversion_value"] = out["conversion_value"].astype("float64").fillna(0.0)
    for c in ("t_conversion", "t_negative"):
        out[c] = pd.Series(_utc(f[c]).array, index=out.index)
    return out


def split_channel(msgs: pd.DataFrame, channel: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the served channel's messages, the other channels' human opens as activity rows).

    A deployment learns its channel's response from that channel's sends; the other channels'
    opens say when the person is around, so they join the activity evidence (weighed each
    night like any activity, :mod:`sendtime.features.activity`). Only certain human evidence
    crosses over: flagged human opens and clicks of e-mail (an unflagged e-mail open may be a
    proxy's fetch), every open of push and SMS (a tap). A push or SMS open of the served
    channel is a tap too, so it counts as a flagged human open."""
    served = msgs.loc[msgs["channel"] == channel].copy()
    if channel != "email" and len(served):
        opens = served[["t_open_machine_flag", "t_open_human_flag", "t_open_unk_fast", "t_open_unk_slow"]].min(axis=1)
        served["t_open_human_flag"] = opens.astype("datetime64[us, UTC]")
        for c in ("t_open_machine_flag", "t_open_unk_fast", "t_open_unk_slow", "t_open_unk_next"):
            served[c] = pd.Series(pd.NaT, index=served.index, dtype="datetime64[us, UTC]")
    other = msgs.loc[msgs["channel"] != channel]
    is_email = (other["channel"] == "email").to_numpy()
    cols = ["t_open_human_flag", "t_click"]
    cols_tap = cols + ["t_open_machine_flag", "t_open_unk_fast", "t_open_unk_slow"]
    t = np.where(is_email, other[cols].min(axis=1).to_numpy(dtype="datetime64[us]"),
                 other[cols_tap].min(axis=1).to_numpy(dtype="datetime64[us]"))
    seen = ~np.isnat(t)
    evidence = pd.DataFrame({"user_id": other["user_id"].to_numpy()[seen],
                             "event_type": (other["channel"].to_numpy(dtype=object)[seen] + "_open"),
                             "timestamp": pd.DatetimeIndex(t[seen]).tz_localize("UTC")})
    return served.reset_index(drop=True), evidence.sort_values("timestamp", kind="stable").reset_index(drop=True)


def channel_history(msgs: pd.DataFrame, channel: str, users: pd.DataFrame, default_tz: str,
                    activity: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame | None, int]:
    """What a deployment for ``channel`` learns from (``msgs`` with extras attached): its
    channel's messages, and the activity with the other channels' human opens added. Returns
    (messages, activity, other channels' opens added); the messages unchanged when every send is
    on the channel. Raises ValueError when none is."""
    from sendtime.features.activity import build_activity

    channels = set(msgs["channel"].unique())
    if channels <= {channel}:
        return msgs, activity, 0
    served, evidence = split_channel(msgs, channel)
    if served.empty:
        raise ValueError(f"SENDTIME_CHANNEL={channel}, but the history holds no {channel} send "
                         f"(sends by channel: {msgs['channel'].value_counts().to_dict()})")
    if evidence.empty:
        return served, activity, 0
    more = build_activity(evidence, users, default_tz)
    return served, more if activity is None else pd.concat([activity, more], ignore_index=True), len(evidence)
