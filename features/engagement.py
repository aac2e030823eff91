"""Per-user engagement features as of a cutoff, and the model rows built from them.

``build_user_features`` is a pure function of the messages table and a cutoff: only sends before
the cutoff, and only outcomes (opens, clicks, bounces) stamped before it, are seen. Training
snapshots, the nightly batch predictions and the service all call it and ``model_frame``, so the
rows the model learns from and the rows it scores are built by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.definitions import MODEL_FEATURES, USER_FEATURE_NAMES
from features.messages import MACHINE_OPEN_WINDOW, human_open_time
from features.profiles import (
    PopulationPrior,
    ShrinkageParams,
    decayed_sums,
    fit_decay,
    fit_mixture,
    to_daytype48,
    group_profiles,
    risk_counts,
    user_profiles,
)

MPP_THRESHOLD = 0.6
NEVER = 999.0
WINDOWS = (7, 28, 90)
HOUR = pd.Timedelta(hours=1)


@dataclass
class OutcomesAt:
    """What the messages table looks like from a cutoff: per message row, known outcomes."""

    sent: np.ndarray  # bool: sent before the cutoff
    user_idx: np.ndarray
    opened: np.ndarray  # human open within horizon, seen before the cutoff
    open_delay_hour: np.ndarray  # -1 if not opened
    at_risk_hours: np.ndarray
    clicked: np.ndarray
    is_machine_user: np.ndarray  # per user
    fast_share: np.ndarray  # per user


def outcomes_at(msgs: pd.DataFrame, user_idx: np.ndarray, n_users: int, cutoff: pd.Timestamp, horizon: int) -> OutcomesAt:
    """Classify machine opens and find human opens for every message, as seen from ``cutoff``."""
    send = msgs["send_ts"]
    sent = (send < cutoff).to_numpy()
    bounced = (msgs["t_bounce"] < cutoff).fillna(False).to_numpy()
    settled = sent & ~bounced & (send < cutoff - MACHINE_OPEN_WINDOW).to_numpy()
    machine_flag = (msgs["t_open_machine_flag"] < cutoff) & (
        msgs["t_open_machine_flag"] - send <= MACHINE_OPEN_WINDOW
    )
    fast = ((msgs["t_open_unk_fast"] < cutoff) | machine_flag).fillna(False).to_numpy()
    n_settled = np.bincount(user_idx[settled], minlength=n_users)
    n_fast = np.bincount(user_idx[settled & fast], minlength=n_users)
    fast_share = np.where(n_settled > 0, n_fast / np.maximum(n_settled, 1), 0.0)
    is_machine = fast_share >= MPP_THRESHOLD

    ht = human_open_time(msgs, is_machine[user_idx], cutoff)
    delay = ((ht - send) / HOUR).to_numpy(dtype=float, na_value=np.nan)
    opened = sent & ~bounced & (delay < horizon)
    k_open = np.where(opened, np.floor(np.nan_to_num(delay, nan=0.0)), -1).astype(np.int64)
    avail = np.ceil(((cutoff - send) / HOUR).to_numpy(dtype=float)).clip(0, horizon).astype(np.int64)
    at_risk = np.where(opened, np.minimum(k_open + 1, avail), np.minimum(horizon, avail))
    at_risk = np.where(sent & ~bounced, at_risk, 0)
    ct = msgs["t_click"]
    clicked = sent & ((ct < cutoff) & ((ct - send) < horizon * HOUR)).fillna(False).to_numpy()
    return OutcomesAt(sent, user_idx, opened, k_open, at_risk, clicked, is_machine, fast_share)


@dataclass
class UserFeatures:
    """Features of every known user as of ``as_of``, plus their activity profiles."""

    as_of: pd.Timestamp
    table: pd.DataFrame  # indexed by user_id: USER_FEATURE_NAMES + timezone, segment, n_sends, source
    lam: np.ndarray  # (n_users, 168) activity rate per local hour-of-week
    prior: PopulationPrior
    horizon: int

    def rows_of(self, user_ids: pd.Series | list[str]) -> np.ndarray:
        """Row positions of user ids; -1 for users not in the table."""
        return self.table.index.get_indexer(pd.Index(user_ids))

    def model_frame(self, rows: np.ndarray, how: np.ndarray) -> pd.DataFrame:
        """Model input for (user row, local hour-of-week) pairs, columns = MODEL_FEATURES."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and rows.min() < 0:
            raise ValueError("model_frame: some users are not in the feature table (row -1)")
        how = np.asarray(how, dtype=np.int64) % 168
        uniq, inv = np.unique(rows, return_inverse=True)
        slots = slot_features(self.lam[uniq], self.prior.decay, self.horizon)
        out = {name: self.table[name].to_numpy(dtype=np.float32)[rows] for name in USER_FEATURE_NAMES}
        out["cand_hour"] = (how % 24).astype(np.float32)
        out["cand_weekday"] = (how // 24).astype(np.float32)
        out["cand_weekend"] = (how // 24 >= 5).astype(np.float32)
        for name, arr in slots.items():
            out[name] = arr[inv, how]
        return pd.DataFrame(out, columns=list(MODEL_FEATURES))


def slot_features(lam: np.ndarray, decay: float, horizon: int) -> dict[str, np.ndarray]:
    """Request-time features for all 168 slots of each profile row."""
    act24 = decayed_sums(lam, decay, horizon)
    day_max = np.repeat(act24.reshape(-1, 7, 24).max(axis=2), 24, axis=1)
    return {
        "act_0": lam.astype(np.float32),
        "act_3": decayed_sums(lam, decay, 3),
        "act_6": decayed_sums(lam, decay, 6),
        "act_24": act24,
        "p_struct": (1.0 - np.exp(-act24)).astype(np.float32),
        "act_rel": (act24 / np.maximum(act24.max(axis=1, keepdims=True), 1e-9)).astype(np.float32),
        "act_rel_day": (act24 / np.maximum(day_max, 1e-9)).astype(np.float32),
    }


def _last(user_idx: np.ndarray, mask: np.ndarray, ts: pd.Series, n_users: int) -> np.ndarray:
    """Latest timestamp (as int64 us) per user over rows in ``mask``; int64 min if none."""
    out = np.full(n_users, np.iinfo(np.int64).min, dtype=np.int64)
    if mask.any():
        vals = ts.to_numpy(dtype="datetime64[us]")[mask].astype(np.int64)
        np.maximum.at(out, user_idx[mask], vals)
    return out


def _days_since(last_us: np.ndarray, cutoff: pd.Timestamp) -> np.ndarray:
    cut = cutoff.to_datetime64().astype("datetime64[us]").astype(np.int64)
    none = last_us == np.iinfo(np.int64).min
    days = (cut - last_us) / 86_400e6
    return np.where(none, NEVER, np.clip(days, 0, NEVER)).astype(np.float32)


def build_user_features(
    msgs: pd.DataFrame,
    users: pd.DataFrame,
    as_of: pd.Timestamp,
    params: ShrinkageParams | None = None,
    default_tz: str = "UTC",
    prior: PopulationPrior | None = None,
) -> UserFeatures:
    """Features of every user in ``users`` (and every user with a send) as of ``as_of``.

    With ``prior`` given, the pooled quantities are reused instead of refitted (serving cold
    users with the prior of the last nightly run).
    """
    params = params or ShrinkageParams()
    H = params.horizon_hours
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")

    msgs = msgs.loc[msgs["send_ts"] < as_of]
    table_users = users[["user_id", "timezone", "segment"]] if len(users) else pd.DataFrame(columns=["user_id", "timezone", "segment"])
    extra = pd.Index(msgs["user_id"].unique()).difference(pd.Index(table_users["user_id"]))
    if len(extra):
        table_users = pd.concat(
            [table_users, pd.DataFrame({"user_id": extra, "timezone": None, "segment": "unknown"})],
            ignore_index=True,
        )
    tz_source = np.where(table_users["timezone"].notna(), "users_table", "default")
    zones = table_users["timezone"].fillna(default_tz).astype(str).to_numpy()
    segments = table_users["segment"].fillna("unknown").astype(str).to_numpy()
    index = pd.Index(table_users["user_id"].astype(str), name="user_id")
    n = len(index)
    uidx = index.get_indexer(msgs["user_id"]).astype(np.int64)

    oc = outcomes_at(msgs, uidx, n, as_of, H)
    send_how = msgs["send_how"].to_numpy(dtype=np.int64)
    if prior is None:
        decay, lam_pop = fit_decay(send_how, oc.at_risk_hours, oc.open_delay_hour, H)
        pop_rate = float(oc.opened.sum() + 1) / float(oc.sent.sum() + 5)
    else:
        decay, lam_pop, pop_rate = prior.decay, prior.lam_pop, prior.open_rate
    O, E = risk_counts(uidx, send_how, oc.at_risk_hours, oc.open_delay_hour, n, H, decay)
    O48, E48 = to_daytype48(O), to_daytype48(E)
    if prior is None:
        lam_pop48 = to_daytype48(lam_pop[None, :])[0] / np.array([5.0] * 24 + [2.0] * 24)
        prior = PopulationPrior(
            decay=decay,
            lam_pop=lam_pop,
            # segment x zone profiles are the prior only when no rhythm mixture is fitted
            lam_group=group_profiles(O, E, lam_pop, segments, zones, params.group_strength) if params.mixture_k <= 0 else {},
            open_rate=pop_rate,
            mixture=fit_mixture(O48, E48, segments, lam_pop48, k=params.mixture_k, smooth_hours=params.smooth_hours)
            if params.mixture_k > 0 else None,
        )
    if prior.mixture is not None:
        group_prior = prior.mixture.prior(O48, E48, segments)
    else:
        group_prior = np.stack([prior.group_profile(s, z) for s, z in zip(segments, zones)]) if n else np.zeros((0, 168))
    lam, level = user_profiles(O, E, group_prior, params)

    age_days = ((as_of - msgs["send_ts"]) / pd.Timedelta(days=1)).to_numpy(dtype=float)
    cols: dict[str, np.ndarray] = {}
    for w in WINDOWS:
        in_w = age_days <= w
        sends = np.bincount(uidx[in_w], minlength=n).astype(np.float32)
        opens = np.bincount(uidx[in_w & oc.opened], minlength=n).astype(np.float32)
        cols[f"sends_{w}d"] = sends
        if w in (28, 90):
            cols[f"human_opens_{w}d"] = opens
            cols[f"open_rate_{w}d"] = (opens + 2 * pop_rate) / (sends + 2)
        if w == 90:
            clicks = np.bincount(uidx[in_w & oc.clicked], minlength=n).astype(np.float32)
            cols["clicks_90d"] = clicks
            cols["click_rate_90d"] = (clicks + 0.2) / (sends + 2)
    sent_rows = np.ones(len(msgs), dtype=bool)
    first_send = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    if len(msgs):
        np.minimum.at(first_send, uidx, msgs["send_ts"].to_numpy(dtype="datetime64[us]").astype(np.int64))
    cols["days_since_send"] = _days_since(_last(uidx, sent_rows, msgs["send_ts"], n), as_of)
    open_ts = msgs["send_ts"] + pd.to_timedelta(np.maximum(oc.open_delay_hour, 0), unit="h")
    cols["days_since_open"] = _days_since(_last(uidx, oc.opened, open_ts, n), as_of)
    cols["days_since_click"] = _days_since(_last(uidx, oc.clicked, msgs["t_click"], n), as_of)
    first_send = np.where(first_send == np.iinfo(np.int64).max, np.iinfo(np.int64).min, first_send)
    tenure = _days_since(first_send, as_of)
    cols["tenure_days"] = np.where(tenure == NEVER, 0.0, tenure).astype(np.float32)
    cols["fast_open_share"] = oc.fast_share.astype(np.float32)
    cols["is_machine_opener"] = oc.is_machine_user.astype(np.float32)
    cols["level_ratio"] = level.astype(np.float32)
    e_tot = E.sum(1)
    cols["confidence"] = (e_tot / (e_tot + 24 * params.shape_strength)).astype(np.float32)

    table = pd.DataFrame({k: cols[k] for k in USER_FEATURE_NAMES}, index=index)
    n_sends = np.bincount(uidx, minlength=n)
    table["n_sends"] = n_sends
    table["timezone"] = zones
    table["timezone_source"] = tz_source
    table["segment"] = segments
    table["source"] = np.where(n_sends > 0, "model", "prior")
    return UserFeatures(as_of=as_of, table=table, lam=lam, prior=prior, horizon=H)
