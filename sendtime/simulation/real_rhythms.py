"""Reading rhythms taken from real people's timestamps, for simulated worlds nobody wrote.

Each source in the real-data folder (see its README) becomes one 168-hour activity shape per
person: that person's local hour-of-week histogram, pooled a little towards their own daily
profile and smoothed over neighbouring hours, peak-normalised. The simulator draws each user's
rhythm from one real person, so the world's rhythms are as lumpy, shifted and irregular as
people are, not as a generator's bumps are.

Sources (``name``: file, whose timestamps, what local time):

- ``git``: ``git_commits.csv``, commit authors, each commit's own UTC offset;
- ``radoslaw``: ``radoslaw_email.edges``, senders in a Polish company, Europe/Warsaw;
- ``enron``: ``enron/messages.tsv``, Enron senders; the stored instants run about 7 h behind
  local time (the nightly low sits at 17-22 UTC), so local = UTC + 7 h;
- ``studentlife``: ``studentlife_activity.csv``, hourly activity level of students, -05:00.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

SOURCES = ("git", "radoslaw", "enron", "studentlife")
MIN_EVENTS = 30  # a person needs this many timestamps to stand for a rhythm


def _how_of_local(local: pd.Series) -> np.ndarray:
    return (local.dt.day_of_week * 24 + local.dt.hour).to_numpy(dtype=np.int64)


def _people(who: pd.Series, how: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """(people, 168) weighted hour-of-week counts of people with at least MIN_EVENTS events."""
    codes, _ = pd.factorize(who)
    n_events = np.bincount(codes)
    keep = np.flatnonzero(n_events >= MIN_EVENTS)
    w = np.ones(len(how)) if weight is None else np.asarray(weight, dtype=np.float64)
    counts = np.bincount(codes * 168 + how, weights=w, minlength=(codes.max() + 1) * 168 if len(codes) else 0)
    return counts.reshape(-1, 168)[keep] if len(codes) else np.zeros((0, 168))


def _local_frame(source: str, root: Path) -> pd.DataFrame:
    """Every timestamp of ``source`` as (person, naive local time, weight)."""
    if source == "git":
        df = pd.read_csv(root / "git_commits.csv", usecols=["author_id", "author_ts", "author_tz_min"])
        local = pd.to_datetime(df["author_ts"] + df["author_tz_min"] * 60, unit="s")
        return pd.DataFrame({"person": df["author_id"], "local": local, "weight": 1.0})
    if source == "radoslaw":
        df = pd.read_csv(root / "radoslaw_email.edges", sep=r"\s+", header=None, names=["s", "r", "t", "w"], engine="c")
        df = df.drop_duplicates(["s", "t"])  # one e-mail to many recipients is one moment of activity
        local = pd.to_datetime(df["t"], unit="s", utc=True).dt.tz_convert("Europe/Warsaw").dt.tz_localize(None)
        return pd.DataFrame({"person": df["s"], "local": local, "weight": 1.0})
    if source == "enron":
        df = pd.read_csv(root / "enron" / "messages.tsv", sep="\t", header=None,
                         names=["mid", "file", "t", "subject", "sender"], usecols=["t", "sender"])
        return pd.DataFrame({"person": df["sender"], "local": pd.to_datetime(df["t"] + 7 * 3600, unit="s"), "weight": 1.0})
    if source == "studentlife":
        df = pd.read_csv(root / "studentlife_activity.csv", usecols=["timestamp", "user", "activity"])
        local = pd.to_datetime(df["timestamp"].str.slice(0, 19))
        return pd.DataFrame({"person": df["user"], "local": local, "weight": df["activity"].astype(np.float64)})
    raise ValueError(f"unknown real rhythm source {source!r}; choose from {', '.join(SOURCES)}")


def _load(source: str, root: Path) -> np.ndarray:
    if source == "git":  # the export's own local hour-of-week column
        df = pd.read_csv(root / "git_commits.csv", usecols=["author_id", "author_local_hour_of_week"])
        return _people(df["author_id"], df["author_local_hour_of_week"].to_numpy(dtype=np.int64) % 168)
    f = _local_frame(source, root)
    weight = f["weight"].to_numpy() if source == "studentlife" else None
    return _people(f["person"], _how_of_local(f["local"]), weight)


def activity_instants(source: str, root: str | Path) -> pd.DataFrame:
    """(person, local) moments each person was active, sorted: the commits and e-mails
    themselves; for StudentLife's hourly levels, the middle of every hour with any activity."""
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"real-data folder {root} does not exist (set SENDTIME_REALDATA)")
    f = _local_frame(source, path)
    f = f.loc[f["weight"] > 0, ["person", "local"]].copy()
    if source == "studentlife":
        f["local"] = f["local"] + pd.Timedelta(minutes=30)
    f["person"] = f["person"].astype(str)
    return f.sort_values(["person", "local"], ignore_index=True)


def smooth_shapes(counts: np.ndarray, sigma_hours: float = 1.0, day_pool: float = 0.3) -> np.ndarray:
    """Per person: the hour-of-week histogram pulled ``day_pool`` of the way to its own
    daily profile (a week of someone's history is thin), smoothed on the 168-hour ring,
    peak-normalised to 1."""
    c = np.asarray(counts, dtype=np.float64)
    if len(c) == 0:
        return np.zeros((0, 168))
    rate = c / np.maximum(c.sum(1, keepdims=True), 1e-12)
    daily = rate.reshape(-1, 7, 24).mean(1)
    pooled = (1 - day_pool) * rate + day_pool * np.tile(daily, 7)
    d = np.arange(168)
    d = np.minimum(d, 168 - d)
    kern = np.exp(-0.5 * (d / max(sigma_hours, 1e-6)) ** 2)
    kern /= kern.sum()
    sm = np.real(np.fft.ifft(np.fft.fft(pooled, axis=1) * np.fft.fft(kern)[None, :], axis=1)).clip(0)
    return sm / np.maximum(sm.max(1, keepdims=True), 1e-12)


@lru_cache(maxsize=8)
def _cached(source: str, root: str) -> np.ndarray:
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"real-data folder {root} does not exist (set realdata_dir / SENDTIME_REALDATA)")
    return smooth_shapes(_load(source, path))


def real_shapes(sources: list[str] | tuple[str, ...], root: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(people, 168) shapes of every person of ``sources`` and the source index of each."""
    shapes, which = [], []
    for i, s in enumerate(sources):
        if s not in SOURCES:
            raise ValueError(f"unknown real rhythm source {s!r}; choose from {', '.join(SOURCES)}")
        x = _cached(s, str(Path(root).resolve()))
        shapes.append(x)
        which.append(np.full(len(x), i))
    out = np.concatenate(shapes) if shapes else np.zeros((0, 168))
    if len(out) == 0:
        raise ValueError(f"no person with >= {MIN_EVENTS} events in {', '.join(sources)}")
    return out, np.concatenate(which)


def default_realdata_dir() -> Path:
    """``SENDTIME_REALDATA``, else ``../shared/realdata`` beside the checkout."""
    import os

    env = os.environ.get("SENDTIME_REALDATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "realdata"
