"""What each sent message's outcome is, as seen from a cutoff, and the per-user columns tallied
from it: the one outcome rule, shared by the pandas features, the bucketed build and the compiled
pass (:mod:`sendtime.features.kernels`), so none of them imports another for it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sendtime.features.machine_opens import MachineOpenModel, classify, machine_stats
from sendtime.features.messages import MACHINE_OPEN_WINDOW, NAT, OUTCOME_COLUMNS, micros, micros_of

NEVER = 999.0  # days since an event that never happened


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
    machine_prob: np.ndarray | None = None  # per user: the mixture's posterior
    machine_model: MachineOpenModel | None = None


def outcomes_at(msgs: pd.DataFrame, user_idx: np.ndarray, n_users: int, cutoff: pd.Timestamp, horizon: int) -> OutcomesAt:
    """Classify machine opens and find human opens for every message, as seen from ``cutoff``."""
    return outcomes_of(micros(msgs["send_ts"]), {c: micros(msgs[c]) for c in OUTCOME_COLUMNS},
                       np.asarray(user_idx), n_users, micros_of(cutoff), horizon)


def outcomes_of(send: np.ndarray, t: dict[str, np.ndarray], user_idx: np.ndarray, n_users: int, cut: int,
                horizon: int, machine: MachineOpenModel | None = None, settle_us: int | None = None) -> OutcomesAt:
    """:func:`outcomes_at` on integer microseconds (``t``: the outcome columns, NaT as NAT).

    Machine openers are the users the :class:`features.machine_opens.MachineOpenModel` mixture
    puts there (``machine``: a fitted one, e.g. pooled over every bucket; else it is fitted on
    these messages). For them the first unflagged open of a message is the proxy's fetch, so
    it is not human evidence; a later open is, and so are flagged human opens and clicks. For
    everyone else every open counts."""
    hour = 3_600_000_000
    window = int(MACHINE_OPEN_WINDOW / pd.Timedelta(microseconds=1))

    def seen(x: np.ndarray) -> np.ndarray:  # an outcome that happened before the cutoff
        return (x != NAT) & (x < cut)

    stats = machine_stats(send, t, user_idx, n_users, cut, horizon, window, settle_us)
    is_machine, machine_prob, model = classify(stats, machine)
    fast_share = np.where(stats[:, 0] > 0, stats[:, 2] / np.maximum(stats[:, 0], 1), 0.0)

    sent = send < cut
    bounced = seen(t["t_bounce"])
    big = np.iinfo(np.int64).max
    first = np.full(len(send), big, dtype=np.int64)
    for name in ("t_open_human_flag", "t_click"):
        x = t[name]
        np.minimum(first, np.where(x == NAT, big, x), out=first)
    tuf, tus, tmf = t["t_open_unk_fast"], t["t_open_unk_slow"], t["t_open_machine_flag"]
    mach = is_machine[user_idx]
    fetched = (tmf != NAT) | (tuf != NAT)  # the proxy's fetch is already accounted for before a slow open
    np.minimum(first, np.where((tuf == NAT) | (mach & (tmf == NAT)), big, tuf), out=first)
    np.minimum(first, np.where((tus == NAT) | (mach & ~fetched), big, tus), out=first)
    has = first < cut
    delay = np.full(len(send), np.nan)
    delay[has] = (first[has] - send[has]) / hour
    opened = sent & ~bounced & (delay < horizon)
    k_open = np.where(opened, np.floor(np.nan_to_num(delay, nan=0.0)), -1).astype(np.int64)
    avail = np.ceil((cut - send) / hour).clip(0, horizon).astype(np.int64)
    at_risk = np.where(opened, np.minimum(k_open + 1, avail), np.minimum(horizon, avail))
    at_risk = np.where(sent & ~bounced, at_risk, 0)
    ct = t["t_click"]
    clicked = sent & seen(ct) & ((ct - send) < horizon * hour)
    return OutcomesAt(sent, user_idx, opened, k_open, at_risk, clicked, is_machine, fast_share, machine_prob, model)


def _days_since(last_us: np.ndarray, cut: int) -> np.ndarray:
    none = last_us == np.iinfo(np.int64).min
    days = (cut - last_us) / 86_400e6
    return np.where(none, NEVER, np.clip(days, 0, NEVER)).astype(np.float32)


def activity_from_counts(counts: np.ndarray, last: np.ndarray, first_send: np.ndarray, oc: OutcomesAt,
                         cut: int) -> dict[str, np.ndarray]:
    """The per-user columns from per-user tallies (also what the compiled pass in
    :mod:`features.kernels` tallies). ``counts``: sends in 7, 28, 90 days, human opens in 28 and
    90 days, clicks in 90 days, all sends; ``last``: the last send, human open and click (int64
    microseconds, int64 min if none); ``first_send``: int64 max if none."""
    cols: dict[str, np.ndarray] = {}
    cols["sends_7d"] = counts[0].astype(np.float32)
    cols["sends_28d"] = counts[1].astype(np.float32)
    cols["human_opens_28d"] = counts[3].astype(np.float32)
    cols["sends_90d"] = counts[2].astype(np.float32)
    cols["human_opens_90d"] = counts[4].astype(np.float32)
    clicks = counts[5].astype(np.float32)
    cols["clicks_90d"] = clicks
    cols["click_rate_90d"] = (clicks + 0.2) / (cols["sends_90d"] + 2)
    cols["days_since_send"] = _days_since(last[0], cut)
    cols["days_since_open"] = _days_since(last[1], cut)
    cols["days_since_click"] = _days_since(last[2], cut)
    first = np.where(first_send == np.iinfo(np.int64).max, np.iinfo(np.int64).min, first_send)
    tenure = _days_since(first, cut)
    cols["tenure_days"] = np.where(tenure == NEVER, 0.0, tenure).astype(np.float32)
    cols["fast_open_share"] = oc.fast_share.astype(np.float32)
    cols["is_machine_opener"] = oc.is_machine_user.astype(np.float32)
    cols["n_sends"] = counts[6]
    return cols
