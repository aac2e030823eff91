"""The one predict path: batch predictions (CLI, nightly) and the HTTP service both call it.

A :class:`Scorer` holds the champion model, its version and input columns (from the MLflow
signature) and the published feature snapshot. Known users are scored from their features;
users missing from the snapshot get cold-start features built from the snapshot's prior.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date as Date
from typing import Sequence

import numpy as np
import pandas as pd

from features.engagement import UserFeatures, build_user_features
from features.messages import hour_of_week
from serving.policy import ExplorationPolicy


class _Coded:
    """A string column as integer codes plus categories; indexing returns an object array."""

    def __init__(self, column: pd.Series) -> None:
        codes, cats = pd.factorize(column.astype(object), use_na_sentinel=False)
        self.codes = codes.astype(np.int32)
        self.categories = np.asarray(cats, dtype=object)

    def __getitem__(self, rows) -> np.ndarray:
        return self.categories[self.codes[rows]]


class SchemaMismatch(ValueError):
    """The model expects inputs the feature snapshot cannot provide."""


@dataclass
class WindowRules:
    """What a send time must satisfy besides being a whole UTC hour inside the window."""

    window_start: pd.Timestamp
    window_end: pd.Timestamp
    quiet: tuple[int, int] | None = None  # local minutes of day [start, end), may wrap midnight
    earliest: pd.Timestamp | None = None  # now + lead time


@dataclass
class Grid:
    """Every requested user x every candidate hour: scores and which pairs are allowed."""

    candidates: pd.DatetimeIndex
    info: pd.DataFrame  # row, timezone, timezone_source, source, confidence (request order)
    local_hour: np.ndarray  # (n, m)
    p: np.ndarray  # (n, m)
    allowed: np.ndarray  # (n, m)


@dataclass
class Scorer:
    model: object
    model_version: str
    input_columns: list[str]
    features: UserFeatures
    table: np.ndarray | None = None  # (known users, 168) precomputed P(open), same row order
    score_sources: dict = field(default_factory=lambda: {"table": 0, "model": 0})

    def __post_init__(self) -> None:
        probe = self.features.model_frame(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        missing = [c for c in self.input_columns if c not in probe.columns]
        if missing:
            raise SchemaMismatch(f"model v{self.model_version} needs columns the features lack: {', '.join(missing)}")
        if self.table is not None and self.table.shape != (len(self.features.table), 168):
            raise SchemaMismatch(
                f"score table shape {self.table.shape} does not match {len(self.features.table)} users x 168 slots"
            )
        # per-user columns as plain arrays once, not per request (Arrow-backed columns convert slowly)
        # (as small categoricals: a million users' strings would cost hundreds of MiB)
        t = self.features.table
        self._zone = _Coded(t["timezone"])
        self._zone_source = _Coded(t["timezone_source"])
        self._source = _Coded(t["source"])
        self._confidence = t["confidence"].to_numpy(dtype=np.float32)

    def score_model(self, uf: UserFeatures, rows: np.ndarray, how: np.ndarray) -> np.ndarray:
        """P(open) from the model, scoring each distinct (row, slot) pair once."""
        if len(rows) == 0:
            return np.zeros(0)
        key = rows.astype(np.int64) * 168 + (how.astype(np.int64) % 168)
        uniq, inv = np.unique(key, return_inverse=True)
        X = uf.model_frame(uniq // 168, uniq % 168)[self.input_columns]
        return self.model.predict_proba(X)[:, 1][inv]

    def score(self, uf: UserFeatures, rows: np.ndarray, how: np.ndarray) -> np.ndarray:
        """P(open) for (snapshot row, local hour-of-week) pairs: a table lookup when published."""
        rows = np.asarray(rows, dtype=np.int64)
        how = np.asarray(how, dtype=np.int64) % 168
        if self.table is None:
            self.score_sources["model"] += len(rows)
            return self.score_model(uf, rows, how)
        self.score_sources["table"] += len(rows)
        return np.asarray(self.table[rows, how], dtype=np.float64)

    def full_table(self, chunk_users: int = 20_000) -> np.ndarray:
        """P(open) of all 168 slots for every known user (published by the nightly run)."""
        n = len(self.features.table)
        out = np.empty((n, 168), dtype=np.float32)
        for s in range(0, n, chunk_users):
            e = min(n, s + chunk_users)
            rows = np.repeat(np.arange(s, e), 168)
            how = np.tile(np.arange(168), e - s)
            X = self.features.model_frame(rows, how)[self.input_columns]
            out[s:e] = self.model.predict_proba(X)[:, 1].reshape(e - s, 168)
        return out

    def users(self, user_ids: Sequence[str], timezones: Sequence[str | None] | None = None,
              default_tz: str = "UTC") -> tuple[UserFeatures | None, pd.DataFrame]:
        """Where each requested user's features are, and how their zone was chosen.

        Returns cold-start features for the users missing from the snapshot (None if all are
        known) and a frame in request order: ``row`` (into the snapshot, or into the cold
        features when ``cold``), ``timezone``, ``timezone_source``, ``source``, ``confidence``.
        The snapshot itself is never copied, so an unknown user costs the same with a million
        known ones.
        """
        ids = pd.Index([str(u) for u in user_ids])
        known = self.features.rows_of(ids)
        tz_req = pd.Series(list(timezones) if timezones is not None else [None] * len(ids), dtype=object)
        tz_tab = pd.Series(np.where(known >= 0, self._zone[np.maximum(known, 0)], None), dtype=object)
        src_tab = np.where(known >= 0, self._zone_source[np.maximum(known, 0)], "default")
        zone = tz_req.where(tz_req.notna(), tz_tab.where(src_tab == "users_table", None))
        zone_source = np.where(tz_req.notna(), "request", np.where(src_tab == "users_table", "users_table", "default"))
        zone = zone.fillna(default_tz)
        info = pd.DataFrame({"timezone": zone.to_numpy(), "timezone_source": zone_source})
        is_cold = known < 0
        rows = known.copy()
        source = np.empty(len(ids), dtype=object)
        conf = np.zeros(len(ids), dtype=np.float64)
        source[~is_cold] = self._source[known[~is_cold]]
        conf[~is_cold] = self._confidence[known[~is_cold]]
        cf = None
        if is_cold.any():
            cold_ids = ids[is_cold]
            cold_users = pd.DataFrame({"user_id": cold_ids.unique(), "segment": "unknown"})
            first_zone = pd.Series(zone.to_numpy()[is_cold], index=cold_ids).groupby(level=0).first()
            cold_users["timezone"] = first_zone.reindex(cold_users["user_id"]).to_numpy()
            cf = build_user_features(_empty_messages(), cold_users, self.features.as_of, prior=self.features.prior,
                                     default_tz=default_tz)
            rows[is_cold] = cf.table.index.get_indexer(cold_ids)
            source[is_cold] = cf.table["source"].to_numpy(dtype=object)[rows[is_cold]]
            conf[is_cold] = cf.table["confidence"].to_numpy(dtype=np.float64)[rows[is_cold]]
        info["row"], info["cold"], info["source"], info["confidence"] = rows, is_cold, source, conf
        return cf, info

    def score_requested(self, cold: UserFeatures | None, info: pd.DataFrame, how: np.ndarray) -> np.ndarray:
        """(n, m) P(open) for requested users (rows of ``info``) at local hours-of-week ``how``."""
        n, m = how.shape
        p = np.empty((n, m))
        rows = info["row"].to_numpy()
        is_cold = info["cold"].to_numpy()
        k = ~is_cold
        if k.any():
            p[k] = self.score(self.features, np.repeat(rows[k], m), how[k].ravel()).reshape(-1, m)
        if is_cold.any():
            p[is_cold] = self.score_model(cold, np.repeat(rows[is_cold], m), how[is_cold].ravel()).reshape(-1, m)
            self.score_sources["model"] += int(is_cold.sum()) * m
        return p

    def predict_day(self, day: Date, user_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Scores of the 24 local hours of ``day`` for every user (batch predictions)."""
        ids = self.features.table.index if user_ids is None else pd.Index(user_ids)
        cold, info = self.users(list(ids))
        weekday = pd.Timestamp(day).weekday()
        how = np.tile(np.arange(24) + 24 * weekday, (len(ids), 1))
        p = self.score_requested(cold, info, how)
        best = p.argmax(axis=1)
        return pd.DataFrame(
            {
                "user_id": np.asarray(ids, dtype=str),
                "date": pd.Timestamp(day).date().isoformat(),
                "best_hour_local": best.astype(np.int16),
                "p_open": p[np.arange(len(ids)), best],
                "hour_scores": list(p.astype(np.float32)),
                "source": info["source"].to_numpy(),
                "confidence": info["confidence"].to_numpy(),
                "timezone": info["timezone"].to_numpy(),
                "model_version": self.model_version,
            }
        )

    def grid(self, user_ids: Sequence[str], timezones: Sequence[str | None] | None, rules: WindowRules,
             default_tz: str = "UTC") -> Grid:
        """Score every requested user at every whole UTC hour of the window, DST-correct."""
        candidates = candidate_hours(rules.window_start, rules.window_end)
        cold, info = self.users(user_ids, timezones, default_tz)
        n, m = len(info), len(candidates)
        how = np.empty((n, m), dtype=np.int64)
        minute = np.empty((n, m), dtype=np.int64)
        for zone, idx in info.groupby("timezone", sort=False).indices.items():
            local = candidates.tz_convert(zone)
            how[idx] = np.asarray(local.weekday * 24 + local.hour)
            minute[idx] = np.asarray(local.hour * 60 + local.minute)
        allowed = np.ones((n, m), dtype=bool)
        if rules.earliest is not None:
            allowed &= np.asarray(candidates >= rules.earliest)[None, :]
        if rules.quiet is not None:
            qs, qe = rules.quiet
            quiet = (minute >= qs) & (minute < qe) if qs < qe else (minute >= qs) | (minute < qe)
            allowed &= ~quiet
        p = self.score_requested(cold, info, how)
        return Grid(candidates=candidates, info=info, local_hour=how % 24, p=p, allowed=allowed)

    def best_in_window(
        self,
        user_ids: Sequence[str],
        timezones: Sequence[str | None],
        window_start: pd.Timestamp,
        window_end: pd.Timestamp,
        default_tz: str = "UTC",
        policy: ExplorationPolicy | None = None,
        status_quo_utc_hour: int | None = None,
        quiet: tuple[int, int] | None = None,
        earliest: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Each user's send hour in the window (whole UTC hours), DST-correct, outside quiet hours.

        Without a policy it is the best allowed hour; with one, holdout users get the status-quo
        hour and a share of the rest a random allowed hour, each answer with its propensity.
        Users with no allowed hour come back with ``send_at`` empty and a ``reason``.
        """
        g = self.grid(user_ids, timezones, WindowRules(window_start, window_end, quiet, earliest), default_tz)
        return self.answers(g, [str(u) for u in user_ids], policy, status_quo_utc_hour)

    def answers(self, g: Grid, ids: list[str], policy: ExplorationPolicy | None = None,
                status_quo_utc_hour: int | None = None, chosen: np.ndarray | None = None) -> pd.DataFrame:
        """One answer per user from a grid: the policy's choice, or ``chosen`` (-1: none)."""
        n = len(ids)
        masked = np.where(g.allowed, g.p, -np.inf)
        has_hour = g.allowed.any(axis=1)
        prop = np.ones(n)
        label = np.full(n, "optimized", dtype=object)
        if chosen is not None:
            best = chosen
            label[:] = "planned"
        elif policy is None:
            best = masked.argmax(axis=1) if g.p.shape[1] else np.zeros(n, dtype=np.int64)
        else:
            # exploration and the status quo draw among allowed hours only
            sq = status_quo_index(g.candidates, 14 if status_quo_utc_hour is None else status_quo_utc_hour)
            key = f"{g.candidates[0].isoformat()}|{g.candidates[-1].isoformat()}" if len(g.candidates) else ""
            best = np.full(n, -1, dtype=np.int64)
            for k in np.unique(g.allowed.sum(axis=1)):
                if k == 0:
                    continue
                grp = np.flatnonzero(g.allowed.sum(axis=1) == k)
                cols = np.argsort(~g.allowed[grp], axis=1, kind="stable")[:, :k]  # allowed columns in order
                sub = np.take_along_axis(g.p[grp], cols, axis=1)
                sq_pos = np.abs(cols - sq).argmin(axis=1)
                idx, pr, lab = policy.choose([ids[i] for i in grp], sub, sq_pos, key)
                best[grp] = cols[np.arange(len(grp)), idx]
                prop[grp], label[grp] = pr, lab
        ok = has_hour & (best >= 0)
        safe = np.where(ok, best, 0)
        pick = np.arange(n)
        send_at = pd.Series(g.candidates[safe] if len(g.candidates) else pd.NaT, index=pick)
        send_at[~ok] = pd.NaT
        reason = np.where(has_hour, np.where(ok, None, "no capacity left in the window"),
                          "no hour in the window outside quiet hours and after the lead time")
        return pd.DataFrame(
            {
                "user_id": ids,
                "send_at": send_at.to_numpy(),
                "local_hour": np.where(ok, g.local_hour[pick, safe] if len(g.candidates) else 0, -1),
                "p_open": np.where(ok, g.p[pick, safe] if len(g.candidates) else np.nan, np.nan),
                "source": g.info["source"].to_numpy(),
                "confidence": g.info["confidence"].to_numpy(),
                "timezone": g.info["timezone"].to_numpy(),
                "timezone_source": g.info["timezone_source"].to_numpy(),
                "policy": label,
                "propensity": np.where(ok, prop, np.nan),
                "reason": reason,
                "choice": np.where(ok, safe, -1),
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
