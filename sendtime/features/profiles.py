"""Exposure-corrected activity profiles: when does each user read mail, in local hour-of-week?

Naive open-hour histograms learn the old send schedule: if every campaign went out at 10:00,
most opens happen soon after 10:00. Here each message contributes *exposure* to the local hours
in which it sat unopened in the inbox (weighted by how buried it already was), and opens are
counted against that exposure. The ratio is an activity rate per local hour that does not depend
on when mail happened to be sent. The burying rate itself is fitted on the pooled data.

Sparse users are shrunk towards their group's profile (segment, then segment x time zone, then
population), scaled to their own overall engagement level, so a user with no history gets the
prior and a user with long history gets their own rhythm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sendtime.features.machine_opens import MachineOpenModel

H = 168


@dataclass(frozen=True)
class ShrinkageParams:
    horizon_hours: int = 24
    level_strength: float = 2.0  # expected-open units pulling the level ratio to 1
    shape_strength: float = 60.0  # exposure units pulling a user's hourly rate to the prior
    daytype_strength: float = 6.0  # exposure units pulling weekday/weekend apart from the daily profile
    group_strength: float = 50.0  # exposure units pulling a group's profile to its parent
    smooth_hours: float = 1.0  # Gaussian kernel width pooling evidence from neighbouring hours
    mixture_k: int = 10  # reading rhythms learned from the data for the prior (0: group profiles only)
    mixture_fit_users: int = 50_000  # the rhythm EM runs on at most this many users (a seeded sample)
    activity_strength: float = 40.0  # pseudo-events of the prior's shape against a user's own activity (features.activity)


@dataclass
class PopulationPrior:
    """Pooled quantities learned at a cutoff; enough to build a cold user's profile."""

    decay: float
    lam_pop: np.ndarray  # (168,)
    lam_group: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (168,)
    open_rate: float = 0.0
    mixture: "RhythmMixture | None" = None
    machine: "MachineOpenModel | None" = None  # who the machine openers were (sendtime.features.machine_opens)

    def group_profile(self, segment: str, timezone: str) -> np.ndarray:
        key = f"{segment}|{timezone}"
        if key in self.lam_group:
            return self.lam_group[key]
        return self.lam_group.get(segment, self.lam_pop)


def risk_counts(
    user_idx: np.ndarray,
    send_how: np.ndarray,
    at_risk_hours: np.ndarray,
    open_delay_hour: np.ndarray,
    n_users: int,
    horizon: int,
    decay: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per user and local hour-of-week: opens (O) and decay-weighted exposure (E).

    ``open_delay_hour`` is -1 for messages not opened (within horizon, before the cutoff).
    """
    E = np.zeros(n_users * H, dtype=np.float64)
    base = user_idx.astype(np.int64) * H
    for k in range(horizon):
        m = at_risk_hours > k
        if not m.any():
            break
        E += np.bincount(base[m] + (send_how[m] + k) % H, minlength=n_users * H) * (decay**k)
    opened = open_delay_hour >= 0
    O = np.bincount(
        base[opened] + (send_how[opened] + open_delay_hour[opened]) % H, minlength=n_users * H
    ).astype(np.float64)
    return O.reshape(n_users, H), E.reshape(n_users, H)


def decay_counts(send_how: np.ndarray, at_risk_hours: np.ndarray, open_delay_hour: np.ndarray,
                 horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Sufficient statistics of :func:`fit_decay`: messages at risk (A) and opens (B) per
    (send hour-of-week, hours after send). Counts, so they add up exactly across user buckets."""
    how = np.asarray(send_how, dtype=np.int64)
    at_risk = np.clip(np.asarray(at_risk_hours, dtype=np.int64), 0, horizon)
    hist = np.bincount(how * (horizon + 1) + at_risk, minlength=H * (horizon + 1)).reshape(H, horizon + 1)
    A = at_risk_beyond(hist)
    delay = np.asarray(open_delay_hour, dtype=np.int64)
    opened = (delay >= 0) & (delay < horizon)
    B = np.bincount(how[opened] * horizon + delay[opened], minlength=H * horizon).reshape(H, horizon).astype(np.float64)
    return A, B


def at_risk_beyond(hist: np.ndarray) -> np.ndarray:
    """(168, horizon+1) messages by send hour and hours at risk -> A[h, k]: at risk more than k hours."""
    return np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:].astype(np.float64)


def fit_decay(send_how: np.ndarray, at_risk_hours: np.ndarray, open_delay_hour: np.ndarray, horizon: int) -> tuple[float, np.ndarray]:
    """Fit opens ~ Poisson(at_risk * lam[(h+k) % 168] * d**k) on pooled data: returns (d, lam)."""
    return fit_decay_counts(*decay_counts(send_how, at_risk_hours, open_delay_hour, horizon), horizon)


def fit_decay_counts(A: np.ndarray, B: np.ndarray, horizon: int) -> tuple[float, np.ndarray]:
    """:func:`fit_decay` from its sufficient statistics."""
    if B.sum() < 20:
        rate = (B.sum() + 1.0) / (A.sum() + 50.0)
        return 0.8, np.full(H, rate)
    target = (np.arange(H)[:, None] + np.arange(horizon)[None, :]) % H
    ks = np.arange(horizon)[None, :]

    def lam_given(d: float) -> np.ndarray:
        num = np.bincount(target.ravel(), weights=B.ravel(), minlength=H)
        den = np.bincount(target.ravel(), weights=(A * d**ks).ravel(), minlength=H)
        overall = num.sum() / max(den.sum(), 1e-12)
        return (num + 5.0 * overall) / (den + 5.0)

    def loglik(d: float) -> float:
        lam = lam_given(d)
        mu = A * lam[target] * d**ks
        return float((B * np.log(np.maximum(mu, 1e-300)) - mu).sum())

    lo, hi = 0.3, 0.999
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = loglik(a), loglik(b)
    for _ in range(40):
        if fa > fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = loglik(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = loglik(b)
    d = (lo + hi) / 2
    return float(d), lam_given(d)


def _shrink(O: np.ndarray, E: np.ndarray, prior: np.ndarray, strength: float) -> np.ndarray:
    return (O + strength * prior) / (E + strength)


def group_profiles(
    O: np.ndarray,
    E: np.ndarray,
    lam_pop: np.ndarray,
    segments: np.ndarray,
    zones: np.ndarray,
    strength: float,
) -> dict[str, np.ndarray]:
    """Segment profiles shrunk to the population, segment x zone profiles shrunk to the segment."""
    out: dict[str, np.ndarray] = {}
    for seg in np.unique(segments):
        m = segments == seg
        prof = _shrink(O[m].sum(0), E[m].sum(0), lam_pop, strength)
        out[str(seg)] = prof
        for zone in np.unique(zones[m]):
            mz = m & (zones == zone)
            out[f"{seg}|{zone}"] = _shrink(O[mz].sum(0), E[mz].sum(0), prof, strength)
    return out


def _daytype_split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,168) -> weekday-summed (n,24) and weekend-summed (n,24)."""
    w = x.reshape(-1, 7, 24)
    return w[:, :5].sum(1), w[:, 5:].sum(1)


def _expand(weekday: np.ndarray, weekend: np.ndarray) -> np.ndarray:
    """(n,24) weekday and weekend profiles -> (n,168)."""
    return np.concatenate([np.tile(weekday, (1, 5)), np.tile(weekend, (1, 2))], axis=1)


def smoothing_weights(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (hours) and Gaussian weights of :func:`smooth_ring`; none for sigma <= 0."""
    if sigma <= 0:
        return np.zeros(0, np.int64), np.zeros(0)
    offsets = np.arange(-int(3 * sigma + 1), int(3 * sigma + 1) + 1)
    w = np.exp(-0.5 * (offsets / sigma) ** 2)
    w /= w.sum()
    return offsets.astype(np.int64), w


def smooth_ring(x: np.ndarray, sigma: float) -> np.ndarray:
    """Circular Gaussian smoothing along the last axis (hours); identity for sigma <= 0."""
    if sigma <= 0:
        return x
    offsets, w = smoothing_weights(sigma)
    out = np.zeros_like(x, dtype=np.float64)
    for o, wt in zip(offsets, w):
        out += wt * np.roll(x, o, axis=-1)
    return out


def user_profiles(O: np.ndarray, E: np.ndarray, prior: np.ndarray, p: ShrinkageParams) -> tuple[np.ndarray, np.ndarray]:
    """Shrunk (n,168) activity rates and each user's level ratio against their prior.

    ``prior`` is (n,168): each user's group profile. The user's level (opens seen vs opens the
    group profile predicts for the same exposure) scales the prior; the daily shape is shrunk to
    that scaled prior; weekday and weekend shapes are shrunk to the daily shape.
    """
    O = smooth_ring(O, p.smooth_hours)
    E = smooth_ring(E, p.smooth_hours)
    expected = (E * prior).sum(1)
    level = (O.sum(1) + p.level_strength) / (expected + p.level_strength)
    scaled = prior * level[:, None]

    # daily (hour-of-day) profile: pool all seven days
    O_d = O.reshape(-1, 7, 24).sum(1)
    E_d = E.reshape(-1, 7, 24).sum(1)
    prior_d = scaled.reshape(-1, 7, 24).mean(1)
    daily = _shrink(O_d, E_d, prior_d, p.shape_strength)

    # weekday / weekend: shrink to the daily profile, keeping the group's weekday/weekend ratio
    Ow, Oe = _daytype_split(O)
    Ew, Ee = _daytype_split(E)
    pw = scaled.reshape(-1, 7, 24)[:, :5].mean(1)
    pe = scaled.reshape(-1, 7, 24)[:, 5:].mean(1)
    ratio_w = pw / np.maximum(prior_d, 1e-9)
    ratio_e = pe / np.maximum(prior_d, 1e-9)
    weekday = _shrink(Ow, Ew, daily * ratio_w, p.daytype_strength)
    weekend = _shrink(Oe, Ee, daily * ratio_e, p.daytype_strength)
    return _expand(weekday, weekend).astype(np.float32), level


def decayed_sums(lam: np.ndarray, decay: float, width: int) -> np.ndarray:
    """s[u, h] = sum_{k<width} lam[u, (h+k) % 168] * decay**k: expected activity a message meets."""
    out = np.zeros_like(lam, dtype=np.float32)
    for k in range(width):
        out += np.roll(lam, -k, axis=1) * np.float32(decay**k)
    return out


def to_daytype48(x: np.ndarray) -> np.ndarray:
    """(n,168) -> (n,48): weekday hours summed over Mon-Fri, then weekend hours over Sat-Sun."""
    wd, we = _daytype_split(x)
    return np.concatenate([wd, we], axis=1)


def from_daytype48(x48: np.ndarray) -> np.ndarray:
    """(n,48) per-day rates -> (n,168)."""
    return _expand(x48[:, :24], x48[:, 24:])


def _smooth48(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.concatenate([smooth_ring(x[:, :24], sigma), smooth_ring(x[:, 24:], sigma)], axis=1)


@dataclass
class RhythmMixture:
    """K reading rhythms learned from the pooled data (empirical Bayes), with mixing weights.

    Each component is a rate per (weekday hour, weekend hour). A user's opens are
    Poisson(level * exposure * component) with the level drawn from a Gamma(alpha, alpha) prior
    (mean 1), so the level is integrated out: users whose mail sat unopened through a
    component's active hours count as evidence against that component. ``alpha <= 0`` falls
    back to a profiled-out level (only the opens' hours inform the rhythm). A user's prior is
    the posterior-weighted mix of components; a user with no evidence gets their segment's
    mixing weights.
    """

    components: np.ndarray  # (K, 48)
    weights: dict[str, np.ndarray]  # segment -> (K,), "*" for all
    alpha: float = 0.0  # Gamma shape of the per-user level multiplier (0: profile likelihood)

    def loglik(self, O48: np.ndarray, E48: np.ndarray) -> np.ndarray:
        phi = np.maximum(self.components, 1e-9)
        expected = E48 @ phi.T  # (n,K)
        n_open = O48.sum(1, keepdims=True)
        if self.alpha > 0:
            a = self.alpha
            return O48 @ np.log(phi).T - (n_open + a) * np.log(a + expected)
        return O48 @ np.log(phi).T - n_open * np.log(np.maximum(expected, 1e-12))

    def level_posterior_mean(self, O48: np.ndarray, E48: np.ndarray) -> np.ndarray:
        """(n,K) posterior mean of the level multiplier under each component."""
        expected = E48 @ np.maximum(self.components, 1e-9).T
        n_open = O48.sum(1, keepdims=True)
        if self.alpha > 0:
            return (n_open + self.alpha) / (expected + self.alpha)
        return n_open / np.maximum(expected, 1e-12)

    def responsibilities(self, O48: np.ndarray, E48: np.ndarray, segments: np.ndarray,
                         coded: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Posterior weight of each rhythm per user. ``coded``: the segments already as
        ``np.unique(segments, return_inverse=True)`` (names, codes), to skip that per call."""
        ll = self.loglik(O48, E48)
        segs, inv = coded if coded is not None else np.unique(np.asarray(segments, dtype=str), return_inverse=True)
        table = np.array([np.log(np.maximum(self.weights.get(s, self.weights["*"]), 1e-9)) for s in segs]).reshape(len(segs), -1)
        z = ll + (table[inv] if len(inv) else 0.0)
        z -= z.max(1, keepdims=True)
        r = np.exp(z)
        return r / r.sum(1, keepdims=True)

    def prior_weights(self, segments: np.ndarray, coded: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """(n, K): each user's weights before any history (their segment's mixing weights)."""
        segs, inv = coded if coded is not None else np.unique(np.asarray(segments, dtype=str), return_inverse=True)
        table = np.array([self.weights.get(s, self.weights["*"]) for s in segs]).reshape(len(segs), -1)
        w = table[inv] if len(inv) else np.zeros((0, len(self.components)))
        return w / np.maximum(w.sum(1, keepdims=True), 1e-12)


#: a weekday (Wednesday) and a weekend day (Saturday) whose 24 hours' horizons stay in their day type
_CONFIDENCE_DAYS = ((2, 5 / 7), (5, 2 / 7))


def _best_hours(lam: np.ndarray, decay: float, width: int) -> np.ndarray:
    """(n, 2): the hour of the day with the most expected activity for a delivery, on a weekday
    and on a weekend day (the decayed sums of :func:`decayed_sums`, for those 48 slots only)."""
    out = np.empty((len(lam), len(_CONFIDENCE_DAYS)), np.int64)
    for j, (day, _w) in enumerate(_CONFIDENCE_DAYS):
        slots = day * 24 + np.arange(24)
        s = np.zeros((len(lam), 24), np.float64)
        for k in range(width):
            s += lam[:, (slots + k) % H] * decay**k
        out[:, j] = s.argmax(1)
    return out


def rhythm_confidence(mixture: "RhythmMixture", resp: np.ndarray, resp0: np.ndarray, lam: np.ndarray, decay: float,
                      width: int) -> np.ndarray | None:
    """How far a user's own history raised the chance that their best hour is right.

    Under the learned rhythms, the chance that a user's best hour (of a weekday, of a weekend
    day) is within an hour of the truth is the posterior weight of the rhythms whose own best
    hour is that close: ``resp`` (n, K), the user's posterior over rhythms; ``resp0``, the
    same user's before any history (their segment's weights). Returns (a - a0) / (1 - a0),
    clipped to 0..1: 0 when the history says no more than the prior, 1 when it is certain.
    None with fewer than two rhythms (nothing to be sure of)."""
    if mixture is None or len(mixture.components) < 2:
        return None
    comp = from_daytype48(mixture.components)
    d = np.abs(_best_hours(comp, decay, width)[None, :, :] - _best_hours(lam, decay, width)[:, None, :])
    near = np.minimum(d, 24 - d) <= 1  # (n, K, days)
    w = np.array([x for _d, x in _CONFIDENCE_DAYS])
    agree = (near * w).sum(2)  # (n, K)
    a, a0 = (resp * agree).sum(1), (resp0 * agree).sum(1)
    gain = (a - a0) / np.maximum(1.0 - a0, 1e-9)
    return np.where(gain > 1e-9, np.minimum(gain, 1.0), 0.0)  # no history: exactly 0, not rounding noise


def segment_codes(segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(segments, return_inverse=True)`` by hashing (millions of users, a few segments)."""
    import pandas as pd

    codes, names = pd.factorize(np.asarray(segments, dtype=object))
    names = np.asarray(names, dtype=str)
    order = np.argsort(names, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return names[order], rank[codes]


def _gamma_marginal(O48: np.ndarray, E48: np.ndarray, r: np.ndarray, comps: np.ndarray, alpha: float) -> float:
    """Marginal log-likelihood (up to terms free of alpha) of the level prior Gamma(alpha, alpha)."""
    from scipy.special import gammaln

    n_open = O48.sum(1, keepdims=True)
    expected = E48 @ np.maximum(comps, 1e-9).T
    ll = alpha * np.log(alpha) - gammaln(alpha) + gammaln(alpha + n_open) - (alpha + n_open) * np.log(alpha + expected)
    return float((r * ll).sum())


def fit_mixture(
    O48: np.ndarray,
    E48: np.ndarray,
    segments: np.ndarray,
    lam_pop48: np.ndarray,
    k: int = 10,
    iters: int = 40,
    min_opens: float = 3,
    smooth_hours: float = 1.0,
    seed: int = 0,
    marginal_level: bool = True,
    max_users: int | None = None,
) -> RhythmMixture:
    """EM for O ~ Poisson(level_u * E * phi_k), level_u ~ Gamma(alpha, alpha) integrated out.

    Initialised (farthest points on normalised shapes) from users with ``min_opens`` or more
    opens; with ``marginal_level`` the EM then runs on every user with exposure, since unopened
    mail also tells which hours a user is not reading, and alpha is refitted each iteration.
    With ``max_users``, the EM sees a seeded random sample of that many users (its cost grows
    with users x iterations; a few hundred thousand users pin ten rhythms down) and every user
    then gets responsibilities from the fitted components.
    """
    keep = mixture_sample(len(O48), max_users, seed)
    mix, fitted = fit_rhythms(O48 if keep is None else O48[keep], E48 if keep is None else E48[keep], lam_pop48,
                              k=k, iters=iters, min_opens=min_opens, smooth_hours=smooth_hours, seed=seed,
                              marginal_level=marginal_level)
    if not fitted:
        return mix
    return segment_weights(mix, mix.responsibilities(O48, E48, None, coded=one_segment(len(O48))), segments)


def mixture_sample(n: int, max_users: int | None, seed: int = 0) -> np.ndarray | None:
    """The sorted rows the rhythm EM of :func:`fit_mixture` sees (None: all ``n``); a builder
    that never holds every user's 48-slot counts keeps only these."""
    if max_users is None or n <= max_users:
        return None
    return np.sort(np.random.default_rng(seed + 1).choice(n, max_users, replace=False))


def one_segment(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` users coded into the single segment "*" (for ``responsibilities(coded=...)``)."""
    return np.array(["*"]), np.zeros(n, dtype=np.int64)


def fit_rhythms(O48: np.ndarray, E48: np.ndarray, lam_pop48: np.ndarray, k: int = 10, iters: int = 40,
                min_opens: float = 3, smooth_hours: float = 1.0, seed: int = 0,
                marginal_level: bool = True) -> tuple[RhythmMixture, bool]:
    """The EM of :func:`fit_mixture` on the users given (its sample): (mixture with the
    population's weights only, fitted). Not fitted: too few users with opens, and the mixture is
    the population's one rhythm, final as it is."""
    fit = O48.sum(1) >= min_opens
    if fit.sum() < 5 * k:
        return RhythmMixture(lam_pop48[None, :].copy(), {"*": np.ones(1)}), False
    rng = np.random.default_rng(seed)
    Oi, Ei = O48[fit], E48[fit]
    rates = _smooth48((Oi + 2 * lam_pop48) / (Ei + 2), smooth_hours)
    shapes = rates / rates.sum(1, keepdims=True)
    # farthest-point initialisation on normalised shapes
    idx = [int(rng.integers(len(shapes)))]
    dist = np.full(len(shapes), np.inf)
    for _ in range(k - 1):
        dist = np.minimum(dist, ((shapes - shapes[idx[-1]]) ** 2).sum(1))
        idx.append(int(np.argmax(dist)))
    alpha = 0.0
    if marginal_level:
        use = E48.sum(1) > 0
        Of, Ef = O48[use], E48[use]
        alpha = 1.0
    else:
        Of, Ef = Oi, Ei
    mix = RhythmMixture(rates[idx].copy(), {"*": np.full(k, 1.0 / k)}, alpha)
    grid = np.array([0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0])
    everyone = (np.array(["*"]), np.zeros(len(Of), dtype=np.int64))  # one segment, "*"
    for it in range(iters):
        r = mix.responsibilities(Of, Ef, None, coded=everyone)
        level = mix.level_posterior_mean(Of, Ef)  # (n,K)
        num = r.T @ Of
        den = (r * level).T @ Ef
        comp = _smooth48((num + 1.0 * lam_pop48) / (den + 1.0), smooth_hours * 0.5)
        if marginal_level and it % 5 == 4:
            alpha = float(grid[np.argmax([_gamma_marginal(Of, Ef, r, comp, a) for a in grid])])
        mix = RhythmMixture(comp, {"*": r.mean(0)}, alpha)
    return mix, True


def segment_weights(mix: RhythmMixture, r_all: np.ndarray, segments: np.ndarray) -> RhythmMixture:
    """``mix`` with each segment's mixing weights: its users' responsibilities under the
    population's weights (``r_all``, every user, in table order), shrunk to those."""
    weights = {"*": mix.weights["*"]}
    names, codes = segment_codes(np.asarray(segments))
    for j, s in enumerate(names):
        m = codes == j
        weights[str(s)] = (r_all[m].sum(0) + 10 * weights["*"]) / (m.sum() + 10)
    return RhythmMixture(mix.components, weights, mix.alpha)
