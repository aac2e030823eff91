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
    human_open_us: np.ndarray | None = None  # per message: the first human evidence (open or click), NAT if none


#: delay bins (hours after delivery) in which a machine opener's fetch pattern is tallied
FETCH_DELAY_EDGES_H = (1 / 6, 1.0, 3.0, 8.0, 24.0)


def human_unflagged_open(send: np.ndarray, how: np.ndarray, t: dict[str, np.ndarray], user_idx: np.ndarray,
                         is_machine: np.ndarray, cut: int) -> np.ndarray:
    """Per message: the unflagged open that is human evidence, as seen from ``cut`` (NAT if none).

    For most users that is the first unflagged open. A machine opener's proxy fetches (nearly)
    every message once, so without a flagged fetch one of a message's unflagged opens is the
    fetch: with one open, that one; with two, the one that looks more like this user's own
    fetches, i.e. the opens of their messages with a single unflagged open (and their flagged
    machine opens), tallied by local hour of day and by delay since delivery. A proxy that
    fetches on the charger at night, or hours late, or seconds after delivery, leaves its own
    pattern; the human open is the other one, whether it came before the fetch or after it. A
    user with no such pattern yet keeps the first open as the fetch."""
    nat = NAT
    hour = 3_600_000_000
    send = np.asarray(send, np.int64)
    uidx = np.asarray(user_idx, np.int64)

    def seen(x: np.ndarray) -> np.ndarray:
        return (x != nat) & (x < cut)

    tuf, tus, tmf = t["t_open_unk_fast"], t["t_open_unk_slow"], t["t_open_machine_flag"]
    tnx = t.get("t_open_unk_next", np.full(len(send), nat))
    u1 = np.where(seen(tuf), tuf, np.where(seen(tus), tus, nat))
    u2 = np.where(seen(u1) & seen(tnx), tnx, nat)
    flagged_fetch = seen(tmf)
    mach = np.asarray(is_machine, bool)[uidx] & ~flagged_fetch if len(uidx) else np.zeros(0, bool)
    out = np.where(mach, nat, u1)
    two = mach & seen(u2)
    if not two.any():
        return out
    how = np.asarray(how, np.int64)
    edges = (np.asarray(FETCH_DELAY_EDGES_H) * hour).astype(np.int64)

    def slot(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = send[rows]
        hod = (how[rows] + (s % hour + (x[rows] - s)) // hour) % 24
        return hod, np.searchsorted(edges, x[rows] - s, side="right")

    # each machine opener's own fetches (the lone unflagged opens and the flagged machine
    # opens), and their own human moments (clicks), tallied by local hour and by delay
    users = np.flatnonzero(is_machine)
    pos = np.full(len(is_machine), -1, np.int64)
    pos[users] = np.arange(len(users))
    nd = len(edges) + 1
    machine_rows = np.asarray(is_machine, bool)[uidx]
    tc = t["t_click"]

    def tally(parts) -> tuple[np.ndarray, np.ndarray]:
        by_hour, by_delay = np.zeros(len(users) * 24), np.zeros(len(users) * nd)
        for rows, x in parts:
            hod, dbin = slot(x, rows)
            p = pos[uidx[rows]]
            by_hour += np.bincount(p * 24 + hod, minlength=len(by_hour))
            by_delay += np.bincount(p * nd + dbin, minlength=len(by_delay))
        return by_hour.reshape(len(users), 24), by_delay.reshape(len(users), nd)

    fetch = tally(((np.flatnonzero(mach & seen(u1) & ~seen(u2)), u1), (np.flatnonzero(machine_rows & flagged_fetch), tmf)))
    human = tally(((np.flatnonzero(machine_rows & seen(tc)), tc),))
    rows = np.flatnonzero(two)
    p = pos[uidx[rows]]

    def density(x: np.ndarray, counts) -> np.ndarray:  # hour and delay shares, each smoothed by 1/2
        hod, dbin = slot(x, rows)
        by_hour, by_delay = counts
        n = by_hour[p].sum(axis=1)
        return (by_hour[p, hod] + 0.5) / (n + 12.0) * (by_delay[p, dbin] + 0.5) / (n + 0.5 * nd)

    first_is_fetch = density(u1, fetch) * density(u2, human) >= density(u2, fetch) * density(u1, human)
    out[rows] = np.where(first_is_fetch, u2[rows], u1[rows])
    return out


def outcomes_at(msgs: pd.DataFrame, user_idx: np.ndarray, n_users: int, cutoff: pd.Timestamp, horizon: int) -> OutcomesAt:
    """Classify machine opens and find human opens for every message, as seen from ``cutoff``."""
    return outcomes_of(micros(msgs["send_ts"]), {c: micros(msgs[c]) for c in OUTCOME_COLUMNS},
                       np.asarray(user_idx), n_users, micros_of(cutoff), horizon,
                       how=msgs["send_how"].to_numpy(dtype=np.int64))


def outcomes_of(send: np.ndarray, t: dict[str, np.ndarray], user_idx: np.ndarray, n_users: int, cut: int,
                horizon: int, machine: MachineOpenModel | None = None, settle_us: int | None = None, *,
                how: np.ndarray) -> OutcomesAt:
    """:func:`outcomes_at` on integer microseconds (``t``: the outcome columns, NaT as NAT).

    Machine openers are the users the :class:`features.machine_opens.MachineOpenModel` mixture
    puts there (``machine``: a fitted one, e.g. pooled over every bucket; else it is fitted on
    these messages). For them one unflagged open of a message is the proxy's fetch, so it is
    not human evidence (:func:`human_unflagged_open` says which); another open is, and so are
    flagged human opens and clicks. For everyone else every open counts. ``how``: each send's
    local hour of the week (it places the opens in the user's day)."""
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
    for x in (t["t_open_human_flag"], t["t_click"], human_unflagged_open(send, how, t, user_idx, is_machine, cut)):
        np.minimum(first, np.where(x == NAT, big, x), out=first)
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
    return OutcomesAt(sent, user_idx, opened, k_open, at_risk, clicked, is_machine, fast_share, machine_prob, model,
                      np.where(first < cut, first, NAT))


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
