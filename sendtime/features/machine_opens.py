"""Which users' opens are a machine's: a two-component mixture learned from the data.

A mail proxy (Apple Mail Privacy Protection and its kind) fetches every delivered message
whenever the device does, seconds after delivery or the next night, so a machine opener's
history looks like this: an open behind nearly every delivered message, whatever the person
does, and few clicks behind those opens. A human's opens are a share of the messages, and their
clicks follow their opens. Some humans open within a minute; some proxies wait hours. So no
delay window decides; per user, three counts over the settled messages do:

- ``opened`` of ``settled``: messages with any open (beta-binomial per component);
- ``fast`` of ``opened``: first open within minutes (the message table's own split; the
  mixture learns what share each component has, it is not a threshold);
- ``clicked`` of ``opened``: clicks behind the opens.

Users with flagged opens (``machine_open`` true or false) are labelled and fix their own
responsibilities, which calibrates the components for the users without flags (a history
where only part of the opens carry the flag). The machine component's open rate is held at
or above :data:`MIN_MACHINE_OPEN_RATE`, the definition of a proxy that fetches everything;
the mixture is kept only when it beats one human component by BIC, so a world without
machine openers gets none. Users with identical counts have identical posteriors, so the
EM runs on the distinct count tuples: the result does not depend on user order or on how
the users were split into buckets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, expit, logit

#: a proxy fetches every delivered message: the machine component opens at least this share
MIN_MACHINE_OPEN_RATE = 0.9
STAT_COLUMNS = ("settled", "opened", "fast", "clicked", "flag_machine", "flag_human")


def settle_time(send: np.ndarray, t_bounce: np.ndarray, cut: int, horizon: int, window_us: int) -> int:
    """How old a send must be to count: the horizon, or only the fast-open window when no send
    is that old yet (a history of hours). One answer for the whole history (see
    :func:`settle_of_parts` for one split into buckets)."""
    nat = np.iinfo(np.int64).min
    live = (send < cut) & ~((t_bounce != nat) & (t_bounce < cut))
    h_us = horizon * 3_600_000_000
    return h_us if bool((live & (send < cut - h_us)).any()) else window_us


def machine_stats(send: np.ndarray, t: dict[str, np.ndarray], user_idx: np.ndarray, n_users: int, cut: int,
                  horizon: int, window_us: int, settle_us: int | None = None) -> np.ndarray:
    """(n_users, 6) counts of :data:`STAT_COLUMNS` over each user's settled messages: sent at
    least ``settle_us`` before ``cut`` (default :func:`settle_time`), not bounced; outcomes
    within the horizon and before the cutoff."""
    nat = np.iinfo(np.int64).min
    h_us = horizon * 3_600_000_000
    send = np.asarray(send, np.int64)
    uidx = np.asarray(user_idx, np.int64)
    if settle_us is None:
        settle_us = settle_time(send, t["t_bounce"], cut, horizon, window_us)

    def seen(x: np.ndarray) -> np.ndarray:
        return (x != nat) & (x < cut) & (x - send < h_us)

    live = (send < cut) & ~((t["t_bounce"] != nat) & (t["t_bounce"] < cut))
    settled = live & (send < cut - settle_us)
    tmf, thf, tuf, tus = (t[c] for c in ("t_open_machine_flag", "t_open_human_flag", "t_open_unk_fast", "t_open_unk_slow"))
    any_open = seen(tmf) | seen(thf) | seen(tuf) | seen(tus)
    big = np.iinfo(np.int64).max
    first = np.full(len(send), big)
    for x in (tmf, thf, tuf, tus):
        np.minimum(first, np.where(seen(x), x, big), out=first)
    fast = any_open & (first - send <= window_us)
    clicked = any_open & seen(t["t_click"])
    cols = (settled, settled & any_open, settled & fast, settled & clicked, settled & seen(tmf), settled & seen(thf))
    out = np.zeros((n_users, len(cols)), np.int64)
    for j, m in enumerate(cols):
        out[:, j] = np.bincount(uidx[m], minlength=n_users)[:n_users]
    return out


def _bb_loglik(k: np.ndarray, n: np.ndarray, a: float, b: float) -> np.ndarray:
    """Beta-binomial log-pmf without the binomial coefficient (it cancels between components)."""
    return betaln(k + a, n - k + b) - betaln(a, b)


@dataclass(frozen=True)
class BetaBinomial:
    mean: float
    concentration: float

    @property
    def ab(self) -> tuple[float, float]:
        return self.mean * self.concentration, (1 - self.mean) * self.concentration

    def loglik(self, k: np.ndarray, n: np.ndarray) -> np.ndarray:
        a, b = self.ab
        return _bb_loglik(k, n, a, b)


def _fit_bb(k: np.ndarray, n: np.ndarray, w: np.ndarray, min_mean: float = 0.0, start: BetaBinomial | None = None) -> BetaBinomial:
    """Weighted maximum likelihood, the mean held in [min_mean, 1)."""
    keep = (w > 1e-12) & (n > 0)
    k, n, w = k[keep], n[keep], w[keep]
    if w.sum() <= 0:
        return start or BetaBinomial(max(min_mean, 0.5), 2.0)
    span = 1.0 - min_mean

    def unpack(x):
        mean = min_mean + span * expit(x[0])
        mean = float(np.clip(mean, 1e-4, 1 - 1e-4))
        return mean, float(np.exp(np.clip(x[1], -4, 9)))

    def nll(x):
        mean, conc = unpack(x)
        return -float((w * _bb_loglik(k, n, mean * conc, (1 - mean) * conc)).sum())

    raw = float(np.clip((w * k).sum() / max((w * n).sum(), 1e-12), 1e-3, 1 - 1e-3))
    m0 = start.mean if start else max(raw, min_mean + 0.5 * span)
    c0 = start.concentration if start else 5.0
    x0 = np.array([logit(np.clip((m0 - min_mean) / span, 1e-3, 1 - 1e-3)), np.log(c0)])
    res = minimize(nll, x0, method="L-BFGS-B", bounds=[(-9, 9), (-4, 9)])
    return BetaBinomial(*unpack(res.x))


@dataclass
class MachineOpenModel:
    """scikit-learn style: ``fit(stats)`` on :func:`machine_stats` counts, then
    ``posterior(stats)``: each user's probability of being a machine opener."""

    max_iter: int = 40
    tol: float = 1e-6

    def fit(self, stats: np.ndarray) -> "MachineOpenModel":
        stats = np.asarray(stats, np.int64).reshape(-1, len(STAT_COLUMNS))
        stats = stats[stats[:, 0] > 0]  # users with no settled message say nothing about the split
        tuples, weight = np.unique(stats, axis=0, return_counts=True)
        w = weight.astype(np.float64)
        if len(w) == 0:
            tuples, w = np.zeros((1, len(STAT_COLUMNS))), np.zeros(1)
        n, a, f, c, fm, fh = tuples.T.astype(np.float64)
        labelled = (fm + fh) > 0
        label = (fm >= fh).astype(np.float64)
        self.n_users_ = int(w.sum())
        self.n_labelled_ = int(w[labelled].sum())
        has = n > 0
        # one human component: the model to beat
        r1 = np.zeros(len(n))
        human1 = self._m_step(n, a, f, c, w * (1 - r1), machine=False)
        ll1 = float((w * self._component_ll(human1, n, a, f, c)).sum())
        # two components: start from the labels where there are some, else from the open rate
        rate = (a + 0.5) / (n + 1.0)
        r = np.where(labelled, label, np.where(has, (rate >= MIN_MACHINE_OPEN_RATE).astype(float), 0.0))
        human, machine, pi = human1, None, 0.0
        ll2 = -np.inf
        for it in range(self.max_iter):
            if (w * r).sum() < 1e-9:
                break
            pi = float(np.clip((w * r).sum() / w.sum(), 1e-6, 1 - 1e-6))
            human = self._m_step(n, a, f, c, w * (1 - r), machine=False, start=human)
            machine = self._m_step(n, a, f, c, w * r, machine=True, start=machine)
            lh = np.log1p(-pi) + self._component_ll(human, n, a, f, c)
            lm = np.log(pi) + self._component_ll(machine, n, a, f, c)
            top = np.maximum(lh, lm)
            ll = float((w * (top + np.log(np.exp(lh - top) + np.exp(lm - top)))).sum())
            r = np.where(labelled, label, expit(lm - lh))
            if abs(ll - ll2) < self.tol * max(abs(ll), 1.0):
                ll2 = ll
                break
            ll2 = ll
        self.iterations_ = it + 1 if self.max_iter else 0
        # BIC: the machine component adds 7 parameters (3 beta-binomials and a weight)
        penalty = 0.5 * 7 * np.log(max(self.n_users_, 2))
        self.loglik_one_, self.loglik_two_ = ll1, ll2
        self.has_machine_ = bool(machine is not None and (ll2 - ll1) > penalty) or bool(self.n_labelled_ and (w * label * labelled).sum() > 0)
        self.human_, self.machine_, self.machine_share_ = human, machine, pi if self.has_machine_ else 0.0
        return self

    @staticmethod
    def _m_step(n, a, f, c, w, machine: bool, start=None):
        s = start or (None, None, None)
        return (_fit_bb(a, n, w, MIN_MACHINE_OPEN_RATE if machine else 0.0, s[0]),
                _fit_bb(f, a, w, 0.0, s[1]), _fit_bb(c, a, w, 0.0, s[2]))

    @staticmethod
    def _component_ll(comp, n, a, f, c) -> np.ndarray:
        o, fa, cl = comp
        return o.loglik(a, n) + fa.loglik(f, a) + cl.loglik(c, a)

    def posterior(self, stats: np.ndarray) -> np.ndarray:
        """Per user: P(machine opener | counts); flagged users by their flags."""
        stats = np.asarray(stats, np.int64).reshape(-1, len(STAT_COLUMNS))
        n, a, f, c, fm, fh = stats.T.astype(np.float64)
        labelled = (fm + fh) > 0
        if not self.has_machine_ or self.machine_ is None:
            return np.where(labelled, (fm >= fh).astype(float), 0.0)
        pi = self.machine_share_
        lh = np.log1p(-pi) + self._component_ll(self.human_, n, a, f, c)
        lm = np.log(pi) + self._component_ll(self.machine_, n, a, f, c)
        return np.where(labelled, (fm >= fh).astype(float), expit(lm - lh))

    def to_dict(self) -> dict:
        comp = lambda c: None if c is None else [[bb.mean, bb.concentration] for bb in c]  # noqa: E731
        return {"has_machine": self.has_machine_, "machine_share": self.machine_share_, "human": comp(self.human_),
                "machine": comp(self.machine_), "n_users": self.n_users_, "n_labelled": self.n_labelled_,
                "iterations": self.iterations_}

    @classmethod
    def from_dict(cls, d: dict) -> "MachineOpenModel":
        comp = lambda c: None if c is None else tuple(BetaBinomial(float(m), float(k)) for m, k in c)  # noqa: E731
        m = cls()
        m.has_machine_, m.machine_share_ = bool(d["has_machine"]), float(d["machine_share"])
        m.human_, m.machine_ = comp(d["human"]), comp(d["machine"])
        m.n_users_, m.n_labelled_, m.iterations_ = int(d["n_users"]), int(d["n_labelled"]), int(d["iterations"])
        return m

    def summary(self) -> dict[str, float]:
        """What the nightly logs: the components and how sure the split is."""
        out = {"machine_share": float(self.machine_share_), "machine_component": float(self.has_machine_),
               "labelled_users": float(self.n_labelled_), "em_iterations": float(self.iterations_)}
        for name, comp in (("human", self.human_), ("machine", self.machine_)):
            if comp is not None:
                for part, bb in zip(("open_rate", "fast_share", "click_per_open"), comp):
                    out[f"{name}_{part}"] = float(bb.mean)
        return out


def classify(stats: np.ndarray, model: MachineOpenModel | None = None) -> tuple[np.ndarray, np.ndarray, MachineOpenModel]:
    """(is_machine, posterior, model): fits the model on ``stats`` when none is given. A user
    with no settled message is not called a machine opener, whatever the population's share."""
    model = model or MachineOpenModel().fit(stats)
    p = model.posterior(stats)
    return (p >= 0.5) & (np.asarray(stats)[:, 0] > 0), p, model
