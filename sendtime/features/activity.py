"""Activity not tied to any message (sessions, app opens, page views, purchases): when a person is around.

A send gets at most one answer; a person's app or site activity comes dozens of times a month,
so it is the richest evidence of their daily rhythm. It is its own table, not rows of the event
table: it has no message, comes from another system (a product-analytics stream such as
Segment's), and outnumbers sends many times over.

Its only use here is the rhythm: each user's activity counts per local hour-of-week pull the
shape of their prior towards the hours they are active, as strongly as the held-out weeks say
(``ShrinkageParams.activity_strength``, chosen with the other profile settings). The level
(how often a person opens) stays the e-mail history's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sendtime.features import inputs as R
from sendtime.features.contract import ReadResult, _as_text, _read_table, _require, flag_row_basics, parse_utc
from sendtime.features.messages import hour_of_week, resolve_timezones
from sendtime.features.profiles import smooth_ring

ACTIVITY_COLUMNS = ("user_id", "event_type", "timestamp")
OPTIONAL_ACTIVITY_COLUMNS = ("event_id", "value", "currency")
ACTIVITY_TYPES = ("session", "app_open", "page_view", "purchase")
BAD_VALUE = "value is not a number"
H = 168


def validate_activity(raw: pd.DataFrame, now: pd.Timestamp | None = None) -> ReadResult:
    """Every row accepted or rejected with a reason (the event contract's reasons where they
    apply); a repeated ``event_id`` is kept once."""
    read = len(raw)
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    df = pd.DataFrame(index=raw.index)
    for c in ("user_id", "event_type"):
        df[c] = _as_text(raw[c])
    df["event_type"] = df["event_type"].str.lower()
    df["event_id"] = _as_text(raw["event_id"]) if "event_id" in raw.columns else pd.Series(None, index=raw.index, dtype=object)
    df["timestamp"], ts_reason = parse_utc(raw["timestamp"])
    if "value" in raw.columns:
        df["value"] = pd.to_numeric(raw["value"], errors="coerce").astype("float64")
        bad_value = raw["value"].notna() & (raw["value"].astype(str).str.strip() != "") & df["value"].isna()
    else:
        df["value"] = np.nan
        bad_value = pd.Series(False, index=raw.index)
    df["currency"] = _as_text(raw["currency"]).str.upper() if "currency" in raw.columns else None

    reason = pd.Series([None] * read, index=raw.index, dtype="object")

    def flag(mask: pd.Series, text: str) -> None:
        reason[mask & reason.isna()] = text

    flag_row_basics(df, reason, ("user_id", "event_type"), ACTIVITY_TYPES, ts_reason, now)
    flag(bad_value, BAD_VALUE)
    ok = reason.isna()
    has_id = ok & df["event_id"].notna()
    dup = has_id & df["event_id"].where(has_id).duplicated(keep="first")
    flag(dup, R.DUPLICATE_EVENT)

    bad = reason.notna()
    rejects = raw.loc[bad].astype("object").astype(str).copy()
    rejects["reason"] = reason[bad].values
    rejects.insert(0, "source_row", np.flatnonzero(bad.to_numpy()))
    accepted = df.loc[~bad].sort_values("timestamp", kind="stable").reset_index(drop=True)
    accepted["user_id"] = accepted["user_id"].astype(str)
    return ReadResult(accepted=accepted, rejects=rejects.reset_index(drop=True), read=read)


def read_activity(path: str | Path, now: pd.Timestamp | None = None) -> ReadResult:
    """Read and validate activity from Parquet (file or folder) or CSV."""
    raw = _read_table(path, "activity")
    _require(raw, ACTIVITY_COLUMNS, "activity", path)
    return validate_activity(raw.reset_index(drop=True), now=now)


def load_activity(path: str | Path, users: pd.DataFrame, default_tz: str = "UTC",
                  say=lambda _m: None) -> pd.DataFrame:
    """Read, validate (saying the counts) and localize an activity file: what a command that
    builds features from files passes as ``activity``."""
    read = read_activity(path)
    say(read.summary("activity"))
    return build_activity(read.accepted, users, default_tz)


def build_activity(accepted: pd.DataFrame, users: pd.DataFrame, default_tz: str = "UTC") -> pd.DataFrame:
    """Accepted activity with each row's local hour-of-week in the user's zone (as sends get theirs)."""
    if accepted.empty:
        return empty_activity()
    tz, _ = resolve_timezones(accepted["user_id"], users, default_tz)
    return pd.DataFrame({"user_id": accepted["user_id"].to_numpy(), "event_type": accepted["event_type"].to_numpy(),
                         "timestamp": accepted["timestamp"].to_numpy(),
                         "how": hour_of_week(accepted["timestamp"], tz).astype(np.int16)})


def empty_activity() -> pd.DataFrame:
    return pd.DataFrame({"user_id": pd.Series([], dtype=object), "event_type": pd.Series([], dtype=object),
                         "timestamp": pd.Series([], dtype="datetime64[us, UTC]"), "how": pd.Series([], dtype=np.int16)})


def activity_counts(activity: pd.DataFrame, index: pd.Index, as_of: pd.Timestamp) -> np.ndarray:
    """(users of ``index``, 168) counts of activity before ``as_of`` per local hour-of-week
    (point in time: nothing at or after the cutoff)."""
    out = np.zeros((len(index), H), dtype=np.float64)
    if activity is None or activity.empty:
        return out
    before = activity.loc[activity["timestamp"] < as_of]
    rows = index.get_indexer(before["user_id"])
    ok = rows >= 0
    flat = rows[ok].astype(np.int64) * H + before["how"].to_numpy(dtype=np.int64)[ok]
    out.ravel()[:] = np.bincount(flat, minlength=len(index) * H)
    return out


def activity_prior(prior: np.ndarray, counts: np.ndarray, strength: float, smooth_hours: float) -> np.ndarray:
    """Each user's prior (n,168) with its shape pulled towards their activity's.

    The prior's shape stands for ``strength`` pseudo-events spread over the week, the user's
    own (smoothed) activity counts are added to it, and the prior's mean rate is kept: so a
    user with no activity keeps the prior, and one with many events gets their activity's shape
    at the e-mail history's level. ``strength`` of inf (or no activity) changes nothing."""
    if not np.isfinite(strength) or counts.size == 0 or not counts.any():
        return prior
    a = smooth_ring(counts, smooth_hours)
    mean = prior.mean(1, keepdims=True)
    shape = prior / np.maximum(mean, 1e-12)  # mean 1
    post = (a + strength * shape / H) / (a.sum(1, keepdims=True) + strength) * H
    return (mean * post).astype(prior.dtype, copy=False)
