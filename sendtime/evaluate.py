"""Policy evaluation against a simulated world's ground truth.

For a prediction date, each policy picks one send hour per user; its value is the mean of the
user's *true* open probability at that local hour-of-week. The headline number is the share of
the oracle's gain over the status quo that the recommendations capture:
``(recommended - status_quo) / (oracle - status_quo)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import read_events, read_users
from features.messages import hour_of_week


@dataclass
class PolicyReport:
    date: str
    users: int
    rates: dict[str, float]  # policy -> expected open rate
    capture: float

    def table(self) -> pd.DataFrame:
        sq, orc = self.rates["status_quo"], self.rates["oracle"]
        rows = []
        for k, v in self.rates.items():
            cap = (v - sq) / (orc - sq) if orc > sq else float("nan")
            rows.append({"policy": k, "open_rate": v, "lift_vs_status_quo": v / sq - 1 if sq else float("nan"), "capture": cap})
        return pd.DataFrame(rows)


def load_world(world_dir: str | Path) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    world_dir = Path(world_dir)
    for name in ("truth.parquet", "world.json", "users.parquet"):
        if not (world_dir / name).exists():
            raise FileNotFoundError(f"{world_dir} is not a simulated world: {name} is missing (make one with `sendtime simulate`)")
    truth = pd.read_parquet(world_dir / "truth.parquet")
    meta = json.loads((world_dir / "world.json").read_text())
    users = read_users(world_dir / "users.parquet").accepted
    return truth, meta, users


def truth_matrix(truth: pd.DataFrame, user_ids: pd.Index) -> np.ndarray:
    """(n_users, 168) true open probabilities in ``user_ids`` order."""
    t = truth.pivot(index="user_id", columns="how", values="p_open").reindex(index=user_ids, columns=range(168))
    if t.isna().any().any():
        raise ValueError("ground truth lacks some users or hours")
    return t.to_numpy()


def most_frequent_open_hour(events: pd.DataFrame, users: pd.DataFrame, fallback: int) -> pd.Series:
    """Each user's most frequent local open hour, every open counted (the common heuristic)."""
    opens = events.loc[events["event_type"] == "open", ["user_id", "timestamp"]]
    tz = opens["user_id"].map(users.set_index("user_id")["timezone"]).fillna("UTC")
    hours = pd.Series(hour_of_week(opens["timestamp"], tz) % 24, index=opens.index)
    mode = pd.DataFrame({"user_id": opens["user_id"], "h": hours}).groupby("user_id")["h"].agg(lambda s: s.value_counts().idxmax())
    return mode.reindex(users["user_id"]).fillna(fallback).astype(int)


def evaluate_day(
    truth: pd.DataFrame,
    users: pd.DataFrame,
    status_quo_utc_hour: int,
    recommended_hour: pd.Series,
    day: str,
    events: pd.DataFrame | None = None,
    extra_policies: dict[str, pd.Series] | None = None,
) -> PolicyReport:
    """Expected open rate of each policy for sends on local date ``day``."""
    ids = pd.Index(users["user_id"])
    T = truth_matrix(truth, ids)
    n = len(ids)
    date = pd.Timestamp(day)
    wd = date.weekday()
    pick = np.arange(n)
    tz = users["timezone"].fillna("UTC").to_numpy()

    def rate_utc(hour: int) -> float:
        inst = pd.Series([date.tz_localize("UTC") + pd.Timedelta(hours=hour)] * n)
        how = hour_of_week(inst, tz)
        return float(T[pick, how].mean())

    def rate_local(hours: pd.Series) -> float:
        h = hours.reindex(ids)
        if h.isna().any():
            raise ValueError(f"{int(h.isna().sum())} users have no recommended hour")
        return float(T[pick, wd * 24 + h.to_numpy(dtype=int)].mean())

    rates = {"status_quo": rate_utc(status_quo_utc_hour)}
    utc_rates = [rate_utc(h) for h in range(24)]
    rates["best_single_utc_hour"] = max(utc_rates)
    if events is not None:
        best_local = int(np.argmax(T[:, wd * 24: wd * 24 + 24].mean(0)))
        rates["most_frequent_open_hour"] = rate_local(most_frequent_open_hour(events, users, best_local))
    for name, hours in (extra_policies or {}).items():
        rates[name] = rate_local(hours)
    rates["sendtime"] = rate_local(recommended_hour)
    rates["oracle"] = float(T[:, wd * 24: wd * 24 + 24].max(1).mean())
    sq, orc = rates["status_quo"], rates["oracle"]
    capture = (rates["sendtime"] - sq) / (orc - sq) if orc > sq else float("nan")
    return PolicyReport(date=day, users=n, rates=rates, capture=capture)


def evaluate_predictions(world_dir: str | Path, predictions_path: str | Path) -> PolicyReport:
    truth, meta, users = load_world(world_dir)
    pred = pd.read_parquet(predictions_path)
    missing = {"user_id", "best_hour_local", "date"} - set(pred.columns)
    if missing:
        raise ValueError(f"predictions file {predictions_path} lacks column(s): {', '.join(sorted(missing))}")
    days = pred["date"].unique()
    if len(days) != 1:
        raise ValueError(f"predictions file must hold one date, found {len(days)}")
    events = read_events(Path(world_dir) / "events.parquet").accepted
    rec = pred.set_index("user_id")["best_hour_local"]
    return evaluate_day(truth, users, int(meta["status_quo_utc_hour"]), rec, str(days[0]), events=events)
