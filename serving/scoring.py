"""The one predict path: batch predictions (CLI, nightly) and the HTTP service both call it.

A :class:`Scorer` holds the champion model, its version and input columns (from the MLflow
signature) and the published feature snapshot. Known users are scored from their features;
users missing from the snapshot get cold-start features built from the snapshot's prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date as Date
from typing import Sequence

import numpy as np
import pandas as pd

from features.engagement import UserFeatures, build_user_features
from features.messages import hour_of_week
from serving.policy import ExplorationPolicy


class SchemaMismatch(ValueError):
    """The model expects inputs the feature snapshot cannot provide."""


@dataclass
class Scorer:
    model: object
    model_version: str
    input_columns: list[str]
    features: UserFeatures

    def __post_init__(self) -> None:
        probe = self.features.model_frame(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        missing = [c for c in self.input_columns if c not in probe.columns]
        if missing:
            raise SchemaMismatch(f"model v{self.model_version} needs columns the features lack: {', '.join(missing)}")

    def score(self, uf: UserFeatures, rows: np.ndarray, how: np.ndarray) -> np.ndarray:
        """P(open) for (user row, local hour-of-week) pairs, scoring each distinct pair once."""
        if len(rows) == 0:
            return np.zeros(0)
        key = rows.astype(np.int64) * 168 + (how.astype(np.int64) % 168)
        uniq, inv = np.unique(key, return_inverse=True)
        X = uf.model_frame(uniq // 168, uniq % 168)[self.input_columns]
        return self.model.predict_proba(X)[:, 1][inv]

    def users(self, user_ids: Sequence[str], timezones: Sequence[str | None] | None = None, default_tz: str = "UTC") -> tuple[UserFeatures, pd.DataFrame]:
        """Feature rows for the requested users (known or cold) and how their zone was chosen.

        Returns the feature object to index and a frame with ``row``, ``timezone``,
        ``timezone_source`` and ``source`` per requested user, in request order.
        """
        ids = pd.Index([str(u) for u in user_ids])
        known = self.features.rows_of(ids)
        table = self.features.table
        tz_req = pd.Series(list(timezones) if timezones is not None else [None] * len(ids), dtype=object)
        tz_tab = pd.Series(np.where(known >= 0, table["timezone"].to_numpy()[np.maximum(known, 0)], None), dtype=object)
        src_tab = np.where(known >= 0, table["timezone_source"].to_numpy()[np.maximum(known, 0)], "default")
        zone = tz_req.where(tz_req.notna(), tz_tab.where(src_tab == "users_table", None))
        zone_source = np.where(tz_req.notna(), "request", np.where(src_tab == "users_table", "users_table", "default"))
        zone = zone.fillna(default_tz)
        info = pd.DataFrame({"timezone": zone.to_numpy(), "timezone_source": zone_source})
        cold = np.flatnonzero(known < 0)
        if len(cold) == 0:
            info["row"] = known
            info["source"] = table["source"].to_numpy()[known]
            return self.features, info
        cold_users = pd.DataFrame(
            {"user_id": ids[cold].unique(), "segment": "unknown"}
        )
        cold_users["timezone"] = pd.Series(zone.to_numpy()[cold], index=ids[cold]).groupby(level=0).first().reindex(cold_users["user_id"]).to_numpy()
        empty = _empty_messages()
        cf = build_user_features(empty, cold_users, self.features.as_of, prior=self.features.prior,
                                 params=None, default_tz=default_tz)
        merged = UserFeatures(
            as_of=self.features.as_of,
            table=pd.concat([table, cf.table]),
            lam=np.vstack([np.asarray(self.features.lam), cf.lam]),
            prior=self.features.prior,
            horizon=self.features.horizon,
        )
        rows = known.copy()
        rows[cold] = len(table) + cf.table.index.get_indexer(ids[cold])
        info["row"] = rows
        info["source"] = merged.table["source"].to_numpy()[rows]
        return merged, info

    def predict_day(self, day: Date, user_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Scores of the 24 local hours of ``day`` for every user (batch predictions)."""
        uf = self.features
        ids = uf.table.index if user_ids is None else pd.Index(user_ids)
        uf, info = self.users(list(ids))
        weekday = pd.Timestamp(day).weekday()
        rows = np.repeat(info["row"].to_numpy(), 24)
        how = np.tile(np.arange(24) + 24 * weekday, len(ids))
        p = self.score(uf, rows, how).reshape(len(ids), 24)
        best = p.argmax(axis=1)
        return pd.DataFrame(
            {
                "user_id": np.asarray(ids, dtype=str),
                "date": pd.Timestamp(day).date().isoformat(),
                "best_hour_local": best.astype(np.int16),
                "p_open": p[np.arange(len(ids)), best],
                "hour_scores": list(p.astype(np.float32)),
                "source": info["source"].to_numpy(),
                "confidence": uf.table["confidence"].to_numpy()[info["row"].to_numpy()],
                "timezone": info["timezone"].to_numpy(),
                "model_version": self.model_version,
            }
        )

    def best_in_window(
        self,
        user_ids: Sequence[str],
        timezones: Sequence[str | None],
        window_start: pd.Timestamp,
        window_end: pd.Timestamp,
        default_tz: str = "UTC",
        policy: ExplorationPolicy | None = None,
        status_quo_utc_hour: int | None = None,
    ) -> pd.DataFrame:
        """Each user's send hour in [window_start, window_end] (whole UTC hours), DST-correct.

        Without a policy it is the best hour; with one, holdout users get the status-quo hour
        and a share of the rest a random hour, each answer with its propensity.
        """
        candidates = candidate_hours(window_start, window_end)
        uf, info = self.users(user_ids, timezones, default_tz)
        n, m = len(info), len(candidates)
        how = np.empty((n, m), dtype=np.int64)
        local_hour = np.empty((n, m), dtype=np.int64)
        cand = pd.Series(candidates)
        for zone, idx in info.groupby("timezone").groups.items():
            h = hour_of_week(cand, np.full(m, zone, dtype=object))
            how[np.asarray(idx)] = h
            local_hour[np.asarray(idx)] = h % 24
        p = self.score(uf, np.repeat(info["row"].to_numpy(), m), how.ravel()).reshape(n, m)
        ids = [str(u) for u in user_ids]
        if policy is None:
            best = p.argmax(axis=1)
            prop = np.ones(n)
            label = np.full(n, "optimized", dtype=object)
        else:
            sq = status_quo_index(candidates, 14 if status_quo_utc_hour is None else status_quo_utc_hour)
            key = f"{candidates[0].isoformat()}|{candidates[-1].isoformat()}"
            best, prop, label = policy.choose(ids, p, np.full(n, sq), key)
        pick = np.arange(n)
        return pd.DataFrame(
            {
                "user_id": ids,
                "send_at": candidates[best],
                "local_hour": local_hour[pick, best],
                "p_open": p[pick, best],
                "source": info["source"].to_numpy(),
                "confidence": uf.table["confidence"].to_numpy()[info["row"].to_numpy()],
                "timezone": info["timezone"].to_numpy(),
                "timezone_source": info["timezone_source"].to_numpy(),
                "policy": label,
                "propensity": prop,
            }
        )


def status_quo_index(candidates: pd.DatetimeIndex, utc_hour: int) -> int:
    """Index of the window's first candidate at the status-quo UTC hour (else the nearest hour)."""
    hours = np.asarray(candidates.hour)
    dist = np.abs(hours - utc_hour)
    dist = np.minimum(dist, 24 - dist)
    return int(np.argmin(dist))


def candidate_hours(window_start: pd.Timestamp, window_end: pd.Timestamp) -> pd.DatetimeIndex:
    """Whole UTC hours inside [start, end]; empty when the window holds none."""
    start = pd.Timestamp(window_start).tz_convert("UTC").ceil("h")
    end = pd.Timestamp(window_end).tz_convert("UTC").floor("h")
    if end < start:
        return pd.DatetimeIndex([], tz="UTC")
    return pd.date_range(start, end, freq="h", tz="UTC")


def _empty_messages() -> pd.DataFrame:
    ts = pd.Series([], dtype="datetime64[us, UTC]")
    return pd.DataFrame(
        {
            "message_id": pd.Series([], dtype=object),
            "user_id": pd.Series([], dtype=object),
            "send_ts": ts,
            "propensity": pd.Series([], dtype=float),
            "t_open_machine_flag": ts,
            "t_open_human_flag": ts,
            "t_open_unk_fast": ts,
            "t_open_unk_slow": ts,
            "t_click": ts,
            "t_bounce": ts,
            "timezone": pd.Series([], dtype=object),
            "send_how": pd.Series([], dtype=np.int16),
        }
    )
