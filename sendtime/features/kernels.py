"""Compiled (numba) versions of the per-user profile arithmetic, bit-identical to the numpy
reference in :mod:`sendtime.features.profiles`.

The numpy reference builds (users x 168) arrays and walks them a dozen times; at millions of
users that, not the event table, is what bounds the feature build. These kernels walk each
user once, with the same floating-point operations in the same order (sums of integer counts
times powers of the decay, ascending in the delay; numpy's pairwise summation over the 168
hours; day sums in day order), so the bucketed build at scale gives exactly the numbers the
reference gives (tested in tests/features/test_kernels.py). numba compiles them on first use and caches
the machine code beside this file (or under NUMBA_CACHE_DIR).
"""

from __future__ import annotations

import numba
import numpy as np

from sendtime.features.machine_opens import classify, machine_stats
from sendtime.features.messages import MACHINE_OPEN_WINDOW
from sendtime.features.outcomes import OutcomesAt, activity_from_counts, human_unflagged_open
from sendtime.features.profiles import H, ShrinkageParams, at_risk_beyond, smoothing_weights

_JIT = {"cache": True, "nogil": True}


@numba.njit(**_JIT)
def _group_by_user(uidx: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Counting sort of message rows by user: (row order, start offset of each user)."""
    starts = np.zeros(n_users + 1, np.int64)
    for i in range(uidx.size):
        starts[uidx[i] + 1] += 1
    for u in range(n_users):
        starts[u + 1] += starts[u]
    fill = starts[:-1].copy()
    order = np.empty(uidx.size, np.int64)
    for i in range(uidx.size):
        u = uidx[i]
        order[fill[u]] = i
        fill[u] += 1
    return order, starts


@numba.njit(**_JIT)
def _chunks(n: int, parts: int) -> np.ndarray:
    return np.linspace(0, n, parts + 1).astype(np.int64)


@numba.njit(parallel=True, **_JIT)
def _risk_counts(uidx, how, at_risk, delay, n_users, dk, O, E):
    K = dk.size
    order, starts = _group_by_user(uidx, n_users)
    bounds = _chunks(n_users, 64)
    for c in numba.prange(64):
        for u in range(bounds[c], bounds[c + 1]):
            for s in range(H):
                O[u, s] = 0.0
                E[u, s] = 0.0
    for c in numba.prange(64):
        hist = np.zeros((H, K + 1), np.int64)  # messages by send hour and hours at risk
        T = np.zeros((H, K), np.int64)  # messages by send hour at risk more than k hours
        marked = np.zeros(H, np.bool_)
        hours = np.empty(H, np.int64)
        for u in range(bounds[c], bounds[c + 1]):
            nh = 0
            for j in range(starts[u], starts[u + 1]):
                i = order[j]
                h = np.int64(how[i])
                hist[h, min(max(np.int64(at_risk[i]), 0), K)] += 1
                if not marked[h]:
                    marked[h] = True
                    hours[nh] = h
                    nh += 1
                d = np.int64(delay[i])
                if d >= 0:
                    O[u, (h + d) % H] += 1.0
            for t in range(nh):
                h = hours[t]
                acc = 0
                for a in range(K, 0, -1):
                    acc += hist[h, a]
                    T[h, a - 1] = acc
                    hist[h, a] = 0
                hist[h, 0] = 0
                marked[h] = False
            # per hour reached, the reference adds its per-delay counts in ascending delay: one
            # send hour per (delay, hour reached), so looping delay outside keeps that order
            for k in range(K):
                for t in range(nh):
                    h = hours[t]
                    cnt = T[h, k]
                    if cnt != 0:
                        E[u, (h + k) % H] += cnt * dk[k]


def risk_counts(user_idx: np.ndarray, send_how: np.ndarray, at_risk_hours: np.ndarray, open_delay_hour: np.ndarray,
                n_users: int, horizon: int, decay: float, out: "CountBuffers | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sendtime.features.profiles.risk_counts`, compiled: same (O, E), bit for bit.

    With ``out``, the counts are written into its reused buffers (views are returned, valid
    until the next call with the same buffers): memory the size of one bucket, touched once."""
    dk = np.array([decay**k for k in range(horizon)], dtype=np.float64)
    O, E = (out or CountBuffers()).take(int(n_users))
    _risk_counts(np.asarray(user_idx, np.int64), np.asarray(send_how), np.asarray(at_risk_hours),
                 np.asarray(open_delay_hour), int(n_users), dk, O, E)
    return O, E


class CountBuffers:
    """Reusable (users x 168) buffers for :func:`risk_counts`, grown as needed."""

    def __init__(self) -> None:
        self.O = np.zeros((0, H))
        self.E = np.zeros((0, H))

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.O) < n:
            self.O, self.E = np.empty((n, H)), np.empty((n, H))
        return self.O[:n], self.E[:n]


@numba.njit(**_JIT)
def _block_sum(v, lo, n):
    """numpy's pairwise-summation leaf: eight running sums, combined pairwise, then the rest."""
    r0, r1, r2, r3 = v[lo], v[lo + 1], v[lo + 2], v[lo + 3]
    r4, r5, r6, r7 = v[lo + 4], v[lo + 5], v[lo + 6], v[lo + 7]
    end = lo + n - n % 8
    for i in range(lo + 8, end, 8):
        r0 += v[i]
        r1 += v[i + 1]
        r2 += v[i + 2]
        r3 += v[i + 3]
        r4 += v[i + 4]
        r5 += v[i + 5]
        r6 += v[i + 6]
        r7 += v[i + 7]
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(end, lo + n):
        res += v[i]
    return res


@numba.njit(**_JIT)
def _sum168(v):
    """``v.sum()`` for 168 float64 values exactly as numpy adds them (two pairwise halves)."""
    return _block_sum(v, 0, 80) + _block_sum(v, 80, 88)


@numba.njit(**_JIT)
def _days(x, first, last, out):
    """out[h] = x[first*24+h] + ... + x[last*24+h], in day order (numpy's sum over an outer axis)."""
    for h in range(24):
        acc = x[first * 24 + h]
        for d in range(first + 1, last + 1):
            acc += x[d * 24 + h]
        out[h] = acc


@numba.njit(**_JIT)
def _smooth(x, offsets, weights, xp, out):
    """``smooth_ring``: out[s] = sum_j w[j] * x[(s - off[j]) % 168], added in j order."""
    if offsets.size == 0:
        out[:] = x
        return
    R = (xp.size - H) // 2
    for s in range(H):
        xp[R + s] = x[s]
    for s in range(R):
        xp[s] = x[H - R + s]
        xp[R + H + s] = x[s]
    out[:] = 0.0
    for j in range(offsets.size):
        w = weights[j]
        base = R - offsets[j]
        for s in range(H):
            out[s] += w * xp[base + s]


@numba.njit(parallel=True, **_JIT)
def _profiles(O, E, prior48, offsets, weights, level_strength, shape_strength, daytype_strength, rows, lam, level):
    n = O.shape[0]
    R = 0
    for j in range(offsets.size):
        R = max(R, abs(offsets[j]))
    bounds = _chunks(n, 64)
    for chunk in numba.prange(64):
        xp = np.empty(H + 2 * R)
        o = np.empty(H)
        e = np.empty(H)
        ep = np.empty(H)
        prior = np.empty(H)
        scaled = np.empty(H)
        a = np.empty(24)
        b = np.empty(24)
        c = np.empty(24)
        od = np.empty(24)
        ed = np.empty(24)
        pd_ = np.empty(24)
        daily = np.empty(24)
        for u in range(bounds[chunk], bounds[chunk + 1]):
            r = rows[u]
            for s in range(H):
                prior[s] = prior48[u, (24 if s >= 120 else 0) + s % 24]
            _smooth(O[u], offsets, weights, xp, o)
            _smooth(E[u], offsets, weights, xp, e)
            for s in range(H):
                ep[s] = e[s] * prior[s]
            lv = (_sum168(o) + level_strength) / (_sum168(ep) + level_strength)
            level[r] = lv
            for s in range(H):
                scaled[s] = prior[s] * lv
            _days(o, 0, 6, od)
            _days(e, 0, 6, ed)
            _days(scaled, 0, 6, pd_)
            for h in range(24):
                pd_[h] = pd_[h] / 7
                daily[h] = (od[h] + shape_strength * pd_[h]) / (ed[h] + shape_strength)
            # weekday (Mon-Fri), then weekend (Sat-Sun): shrunk to the daily profile
            for first, last, ndays in ((0, 4, 5), (5, 6, 2)):
                _days(o, first, last, a)
                _days(e, first, last, b)
                _days(scaled, first, last, c)
                for h in range(24):
                    ratio = (c[h] / ndays) / max(pd_[h], 1e-9)
                    v = np.float32((a[h] + daytype_strength * (daily[h] * ratio)) / (b[h] + daytype_strength))
                    for d in range(first, last + 1):
                        lam[r, d * 24 + h] = v


def user_profiles(O: np.ndarray, E: np.ndarray, prior: np.ndarray, p: ShrinkageParams, rows: np.ndarray | None = None,
                  out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sendtime.features.profiles.user_profiles`, compiled: same (lam, level), bit for bit.

    ``prior`` is (n, 48) per-day rates (weekday hours, then weekend hours; the rhythm mixture's
    form) or (n, 168) with the same weekday and weekend hours on every day of each kind. With
    ``rows`` and ``out`` (lam, level), user i is written straight into row ``rows[i]``."""
    if prior.shape[1] == 168:
        prior = profiles_to48(prior)
    n = len(O)
    if out is None:
        out = (np.empty((n, H), np.float32), np.empty(n))
        rows = np.arange(n)
    offsets, weights = smoothing_weights(p.smooth_hours)
    f = np.ascontiguousarray
    _profiles(f(O, np.float64), f(E, np.float64), f(prior, np.float64), offsets, weights,
              float(p.level_strength), float(p.shape_strength), float(p.daytype_strength),
              np.asarray(rows, np.int64), *out)
    return out


def profiles_to48(x168: np.ndarray) -> np.ndarray:
    """(n, 168) rates that repeat per day kind -> (n, 48): Monday's hours, then Saturday's."""
    return np.concatenate([x168[:, :24], x168[:, 120:144]], axis=1)


@numba.njit(parallel=True, **_JIT)
def _row_stats(O, E, rows, O48, E48, e_tot):
    bounds = _chunks(O.shape[0], 64)
    for c in numba.prange(64):
        for u in range(bounds[c], bounds[c + 1]):
            r = rows[u]
            _days(O[u], 0, 4, O48[r, :24])
            _days(O[u], 5, 6, O48[r, 24:])
            _days(E[u], 0, 4, E48[r, :24])
            _days(E[u], 5, 6, E48[r, 24:])
            e_tot[r] = _sum168(E[u])


def row_stats(O: np.ndarray, E: np.ndarray, rows: np.ndarray | None = None,
              out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``to_daytype48(O)``, ``to_daytype48(E)`` and ``E.sum(1)``, bit for bit; with ``rows`` and
    ``out``, written straight into rows ``rows`` of the arrays in ``out``."""
    n = len(O)
    if out is None:
        out = (np.empty((n, 48)), np.empty((n, 48)), np.empty(n))
        rows = np.arange(n)
    _row_stats(np.ascontiguousarray(O), np.ascontiguousarray(E), np.asarray(rows, np.int64), *out)
    return out


@numba.njit(parallel=True, **_JIT)
def _outcomes(send, thf, hunk, tclick, tbounce, cut, horizon):
    m = send.size
    nat = np.iinfo(np.int64).min
    big = np.iinfo(np.int64).max
    hour = 3_600_000_000
    sent_a = np.empty(m, np.bool_)
    opened = np.zeros(m, np.bool_)
    k_open = np.full(m, -1, np.int64)
    at_risk = np.zeros(m, np.int64)
    clicked = np.zeros(m, np.bool_)
    for i in numba.prange(m):  # each message on its own: its human unflagged open is known
        s = send[i]
        sent_a[i] = s < cut
        live = sent_a[i] and not (tbounce[i] != nat and tbounce[i] < cut)
        first = big
        for x in (thf[i], tclick[i], hunk[i]):
            if x != nat and x < first:
                first = x
        avail = min(max(np.ceil((cut - s) / hour), 0.0), float(horizon))
        if live:
            if first < cut and (first - s) / hour < horizon:
                opened[i] = True
                k_open[i] = np.int64(np.floor((first - s) / hour))
                at_risk[i] = min(k_open[i] + 1, np.int64(avail))
            else:
                at_risk[i] = min(horizon, np.int64(avail))
        c = tclick[i]
        clicked[i] = sent_a[i] and c != nat and c < cut and (c - s) < horizon * hour
    return sent_a, opened, k_open, at_risk, clicked


def outcomes(send: np.ndarray, t: dict, user_idx: np.ndarray, n_users: int, cut: int, horizon: int,
             machine=None, settle_us: int | None = None, *, how: np.ndarray):
    """:func:`sendtime.features.engagement.outcomes_of`, compiled: the same arrays."""

    window = int(MACHINE_OPEN_WINDOW.total_seconds() * 1_000_000)
    uidx = np.asarray(user_idx, np.int64)
    stats = machine_stats(send, t, uidx, int(n_users), int(cut), int(horizon), window, settle_us)
    is_machine, prob, model = classify(stats, machine)
    fast_share = np.where(stats[:, 0] > 0, stats[:, 2] / np.maximum(stats[:, 0], 1), 0.0)
    hunk = human_unflagged_open(send, how, t, uidx, is_machine, int(cut))
    sent, opened, k_open, at_risk, clicked = _outcomes(
        send, t["t_open_human_flag"], hunk, t["t_click"], t["t_bounce"], int(cut), int(horizon))
    return OutcomesAt(sent, uidx, opened, k_open, at_risk, clicked, is_machine, fast_share, prob, model)


@numba.njit(**_JIT)
def _message_stats(uidx, send, how, opened, k_open, at_risk, clicked, click, n_users, cut, horizon):
    lo = np.iinfo(np.int64).min
    hi = np.iinfo(np.int64).max
    counts = np.zeros((7, n_users), np.int64)  # sends 7/28/90 d, opens 28/90 d, clicks 90 d, all sends
    last = np.full((3, n_users), lo)  # last send, last open, last click
    first = np.full(n_users, hi)
    hist = np.zeros((H, horizon + 1), np.int64)
    B = np.zeros((H, horizon), np.int64)
    for i in range(send.size):
        u = uidx[i]
        s = send[i]
        age = (cut - s) / 86_400e6
        counts[6, u] += 1
        if age <= 7:
            counts[0, u] += 1
        if age <= 28:
            counts[1, u] += 1
            if opened[i]:
                counts[3, u] += 1
        if age <= 90:
            counts[2, u] += 1
            if opened[i]:
                counts[4, u] += 1
            if clicked[i]:
                counts[5, u] += 1
        if s > last[0, u]:
            last[0, u] = s
        if s < first[u]:
            first[u] = s
        if opened[i]:
            t = s + max(k_open[i], 0) * 3_600_000_000
            if t > last[1, u]:
                last[1, u] = t
        if clicked[i] and click[i] > last[2, u]:
            last[2, u] = click[i]
        h = np.int64(how[i])
        hist[h, min(max(np.int64(at_risk[i]), 0), horizon)] += 1
        d = k_open[i]
        if d >= 0 and d < horizon:
            B[h, d] += 1
    return counts, last, first, hist, B


def activity_and_decay(send: np.ndarray, click: np.ndarray, how: np.ndarray, uidx: np.ndarray, n: int, oc, cut: int,
                       horizon: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """:func:`sendtime.features.engagement.activity_columns` and :func:`sendtime.features.profiles.decay_counts`
    in one compiled pass over the messages: the same columns and counts."""

    counts, last, first, hist, Bc = _message_stats(
        np.asarray(uidx, np.int64), send, np.asarray(how), oc.opened, oc.open_delay_hour, oc.at_risk_hours, oc.clicked,
        click, int(n), int(cut), int(horizon))
    cols = activity_from_counts(counts, last, first, oc, cut)
    A = at_risk_beyond(hist)
    return cols, A, Bc.astype(np.float64)


@numba.njit(parallel=True, **_JIT)
def _decayed_sums_at(lam, weights, widths, out):  # pragma: no cover - compiled
    for u in numba.prange(lam.shape[0]):
        acc = np.zeros(168, np.float32)
        w = 0
        for k in range(weights.size):
            wk = weights[k]
            for h in range(168):
                acc[h] = acc[h] + lam[u, (h + k) % 168] * wk
            while w < widths.size and widths[w] == k + 1:
                out[w, u, :] = acc
                w += 1


def decayed_sums_at(lam: np.ndarray, decay: float, widths: tuple[int, ...]) -> list[np.ndarray]:
    """:func:`sendtime.features.profiles.decayed_sums` of a float32 (users, 168) table for
    several widths in one pass: the sum for a width is the longer one's partial sum, the same
    float32 operations in the same order (bit-identical), without a rolled copy per term."""
    lam = np.ascontiguousarray(lam, dtype=np.float32)
    order = np.argsort(widths, kind="stable")
    ws = np.asarray(widths, dtype=np.int64)[order]
    if len(ws) == 0 or ws[0] < 1:
        raise ValueError("decayed sums need widths of at least one hour")
    weights = np.array([np.float32(decay**k) for k in range(int(ws[-1]))], dtype=np.float32)
    out = np.empty((len(ws), lam.shape[0], 168), dtype=np.float32)
    if lam.shape[0]:
        _decayed_sums_at(lam, weights, ws, out)
    got = [None] * len(ws)
    for i, j in enumerate(order):
        got[j] = out[i]
    return got
