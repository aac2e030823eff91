"""Per-user engagement features as of a cutoff, and the model rows built from them.

``build_user_features`` is a pure function of the messages table and a cutoff: only sends before
the cutoff, and only outcomes (opens, clicks, bounces) stamped before it, are seen. Training
snapshots, the nightly batch predictions and the service all call it and ``model_frame``, so the
rows the model learns from and the rows it scores are built by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from sendtime.features.activity import activity_counts, activity_prior
from sendtime.features.definitions import MODEL_FEATURES, USER_FEATURE_NAMES
from sendtime.features.machine_opens import MachineOpenModel, machine_stats
from sendtime.features.mapped import release
from sendtime.features.messages import MACHINE_OPEN_WINDOW, OUTCOME_COLUMNS, MessageArrays, micros, micros_of
from sendtime.features.outcomes import OutcomesAt, activity_from_counts, outcomes_at, outcomes_of  # noqa: F401 (re-exported)
from sendtime.features.profiles import (
    segment_codes,
    PopulationPrior,
    ShrinkageParams,
    decayed_sums,
    fit_decay,
    fit_decay_counts,
    fit_mixture,
    fit_rhythms,
    mixture_sample,
    one_segment,
    segment_weights,
    from_daytype48,
    rhythm_confidence,
    to_daytype48,
    group_profiles,
    risk_counts,
    user_profiles,
)

WINDOWS = (7, 28, 90)
HOUR = pd.Timedelta(hours=1)


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
        return pd.DataFrame(dict(self._columns(rows, how, MODEL_FEATURES)), columns=list(MODEL_FEATURES))

    def slot_blocks(self, start: int, end: int, columns: Sequence[str], varies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model input of users ``start:end`` at all 168 slots, split as the compiled
        traversal reads it: (columns with ``varies``, users x 168) float32, each column's rows
        side by side, and (users, the other columns), one row per user; both in ``columns``'
        order. The same numbers as ``model_frame`` of those rows (nothing repeated 168 times)."""
        n = end - start
        slots = slot_features(np.asarray(self.lam[start:end]), self.prior.decay, self.horizon)
        how = np.arange(168)
        XT = np.empty((int(np.sum(varies)), n * 168), dtype=np.float32)
        U = np.empty((n, len(columns) - XT.shape[0]), dtype=np.float32)
        i = j = 0
        for name, vary in zip(columns, varies):
            if vary:
                col = slots[name] if name in slots else _candidate(name, how)
                if col is None:
                    raise KeyError(f"model input: {name!r} is not a model feature that varies by slot")
                XT[i].reshape(n, 168)[:] = col
                i += 1
            else:
                if name == "p_struct_week":
                    U[:, j] = slots["p_struct"].mean(axis=1)
                elif name in USER_FEATURE_NAMES:
                    U[:, j] = self.table[name].to_numpy(dtype=np.float32)[start:end]
                else:
                    raise KeyError(f"model input: {name!r} is not a per-user model feature")
                j += 1
        return XT, U

    def _columns(self, rows: np.ndarray, how: np.ndarray, names: Sequence[str]):
        """(name, values) of the model's input columns ``names``, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and rows.min() < 0:
            raise ValueError("model input: some users are not in the feature table (row -1)")
        how = np.asarray(how, dtype=np.int64) % 168
        uniq, inv = np.unique(rows, return_inverse=True)
        slots = slot_features(self.lam[uniq], self.prior.decay, self.horizon)
        for name in names:
            if name in slots:
                yield name, slots[name][inv, how]
            elif name in CANDIDATE_COLUMNS:
                yield name, _candidate(name, how)
            elif name == "p_struct_week":
                # the profile's week in one number: the user's level as the profile sees it, the
                # same at every hour (what the hour-blind model learns from)
                yield name, slots["p_struct"].mean(axis=1)[inv].astype(np.float32)
            elif name in USER_FEATURE_NAMES:
                yield name, self.table[name].to_numpy(dtype=np.float32)[rows]
            else:
                raise KeyError(f"model input: {name!r} is not a model feature")


#: the candidate slot's own columns, functions of its local hour of the week alone
CANDIDATE_COLUMNS = ("cand_hour", "cand_weekday", "cand_weekend")


def _candidate(name: str, how: np.ndarray) -> np.ndarray | None:
    """A column of :data:`CANDIDATE_COLUMNS` at local hours of the week ``how`` (float32); None
    for any other name."""
    if name == "cand_hour":
        return (how % 24).astype(np.float32)
    if name == "cand_weekday":
        return (how // 24).astype(np.float32)
    if name == "cand_weekend":
        return (how // 24 >= 5).astype(np.float32)
    return None


def slot_features(lam: np.ndarray, decay: float, horizon: int) -> dict[str, np.ndarray]:
    """Request-time features for all 168 slots of each profile row."""
    if lam.dtype == np.float32 and lam.ndim == 2:  # one compiled pass, the same numbers
        from sendtime.features.kernels import decayed_sums_at

        act3, act6, act24 = decayed_sums_at(lam, decay, (3, 6, horizon))
    else:
        act3, act6, act24 = (decayed_sums(lam, decay, w) for w in (3, 6, horizon))
    day_max = np.repeat(act24.reshape(-1, 7, 24).max(axis=2), 24, axis=1)
    return {
        "act_0": lam.astype(np.float32),
        "act_3": act3,
        "act_6": act6,
        "act_24": act24,
        "p_struct": (1.0 - np.exp(-act24)).astype(np.float32),
        "act_rel": (act24 / np.maximum(act24.max(axis=1, keepdims=True), 1e-9)).astype(np.float32),
        "act_rel_day": (act24 / np.maximum(day_max, 1e-9)).astype(np.float32),
    }


def _last(user_idx: np.ndarray, mask: np.ndarray, ts_us: np.ndarray, n_users: int) -> np.ndarray:
    """Latest instant (int64 us) per user over rows in ``mask``; int64 min if none."""
    out = np.full(n_users, np.iinfo(np.int64).min, dtype=np.int64)
    if mask.any():
        np.maximum.at(out, user_idx[mask], ts_us[mask])
    return out


def activity_columns(send: np.ndarray, click: np.ndarray, uidx: np.ndarray, n: int, oc: OutcomesAt, cut: int) -> dict[str, np.ndarray]:
    """Per-user counts, recencies and machine-open shares (rates wait for the population's open
    rate, see :func:`finish_rates`). Per user only, so user buckets can be computed apart.
    ``send``, ``click`` and ``cut`` are int64 microseconds (see :func:`sendtime.features.messages.micros`)."""
    age_days = (cut - send) / 86_400e6
    counts = np.zeros((7, n), dtype=np.int64)
    for row, mask in enumerate((age_days <= 7, age_days <= 28, age_days <= 90, (age_days <= 28) & oc.opened,
                                (age_days <= 90) & oc.opened, (age_days <= 90) & oc.clicked)):
        counts[row] = np.bincount(uidx[mask], minlength=n)
    counts[6] = np.bincount(uidx, minlength=n)
    first_send = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    if len(send):
        np.minimum.at(first_send, uidx, send)
    open_ts = send + np.maximum(oc.open_delay_hour, 0) * 3_600_000_000
    last = np.stack([_last(uidx, np.ones(len(send), dtype=bool), send, n), _last(uidx, oc.opened, open_ts, n),
                     _last(uidx, oc.clicked, click, n)])
    return activity_from_counts(counts, last, first_send, oc, cut)


def finish_rates(cols: dict[str, np.ndarray], pop_rate: float) -> None:
    """Open rates shrunk to the population's rate (known only once every user was counted)."""
    for w in (28, 90):
        cols[f"open_rate_{w}d"] = (cols[f"human_opens_{w}d"] + 2 * pop_rate) / (cols[f"sends_{w}d"] + 2)


def build_user_features(
    msgs: pd.DataFrame,
    users: pd.DataFrame,
    as_of: pd.Timestamp,
    params: ShrinkageParams | None = None,
    default_tz: str = "UTC",
    prior: PopulationPrior | None = None,
    machine: MachineOpenModel | None = None,
    activity: pd.DataFrame | None = None,
) -> UserFeatures:
    """Features of every user in ``users`` (and every user with a send) as of ``as_of``.

    With ``prior`` given, the pooled quantities are reused instead of refitted (serving cold
    users with the prior of the last nightly run). ``machine``: a machine-open mixture already
    fitted on these messages at this cutoff (a search over profile settings fits it once).
    ``activity``: sessions and the like (:func:`sendtime.features.activity.build_activity`);
    those before ``as_of`` pull each user's prior towards the hours they are active.
    """
    params = params or ShrinkageParams()
    H = params.horizon_hours
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")

    msgs = msgs.loc[msgs["send_ts"] < as_of]
    index, zones, segments, tz_source = _table_users(users, msgs["user_id"].unique(), default_tz)
    n = len(index)
    uidx = index.get_indexer(msgs["user_id"]).astype(np.int64)

    send_how = msgs["send_how"].to_numpy(dtype=np.int64)
    oc = outcomes_of(micros(msgs["send_ts"]), {c: micros(msgs[c]) for c in OUTCOME_COLUMNS}, uidx, n,
                     micros_of(as_of), H, machine=prior.machine if prior is not None else machine, how=send_how)
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
            mixture=fit_mixture(O48, E48, segments, lam_pop48, k=params.mixture_k, smooth_hours=params.smooth_hours,
                                max_users=params.mixture_fit_users)
            if params.mixture_k > 0 else None,
            machine=oc.machine_model,
        )
    resp = coded = None
    if prior.mixture is not None:
        coded = np.unique(np.asarray(segments, dtype=str), return_inverse=True)
        resp = prior.mixture.responsibilities(O48, E48, None, coded=coded)
        group_prior = from_daytype48(resp @ prior.mixture.components)
    else:
        group_prior = np.stack([prior.group_profile(s, z) for s, z in zip(segments, zones)]) if n else np.zeros((0, 168))
    if activity is not None and len(activity):
        group_prior = activity_prior(group_prior, activity_counts(activity, index, as_of), params.activity_strength,
                                     params.smooth_hours)
    lam, level = user_profiles(O, E, group_prior, params)

    cols = activity_columns(micros(msgs["send_ts"]), micros(msgs["t_click"]), uidx, n, oc, micros_of(as_of))
    finish_rates(cols, pop_rate)
    cols["level_ratio"] = level.astype(np.float32)
    conf = None if resp is None else rhythm_confidence(prior.mixture, resp, prior.mixture.prior_weights(None, coded), lam,
                                                       prior.decay, H)
    cols["confidence"] = _own_share(E.sum(1), params)
    cols["answer_confidence"] = _confidence(conf, cols["confidence"])

    return _assemble(cols, index, zones, tz_source, segments, lam, prior, as_of, H)


def _shared(codes: np.ndarray, categories) -> np.ndarray:
    """An object array of strings in which equal values are one string (ten million users' zones
    as ten million string objects would be over half a GB)."""
    return np.asarray([str(c) for c in categories], dtype=object)[np.asarray(codes, dtype=np.int64)]


def _table_users(users: pd.DataFrame, message_users, default_tz: str):
    """Every user of the users table, then users with sends but no users-table row (sorted)."""
    table_users = users[["user_id", "timezone", "segment"]] if len(users) else pd.DataFrame(columns=["user_id", "timezone", "segment"])
    extra = pd.Index(message_users).difference(pd.Index(table_users["user_id"]))
    if len(extra):
        table_users = pd.concat(
            [table_users, pd.DataFrame({"user_id": extra, "timezone": None, "segment": "unknown"})],
            ignore_index=True,
        )
    tz_source = _shared(table_users["timezone"].notna().to_numpy(), ("default", "users_table"))
    zones = _shared(*pd.factorize(table_users["timezone"].fillna(default_tz).astype(str)))
    segments = _shared(*pd.factorize(table_users["segment"].fillna("unknown").astype(str)))
    index = pd.Index(table_users["user_id"].astype(str), name="user_id")
    return index, zones, segments, tz_source


def build_user_features_bucketed(
    buckets: Sequence,
    users: pd.DataFrame,
    as_of: pd.Timestamp,
    params: ShrinkageParams | None = None,
    default_tz: str = "UTC",
    progress: Callable[[str], None] | None = None,
    profiles_path: str | Path | None = None,
) -> UserFeatures:
    """:func:`build_user_features` over messages split into user buckets, with the same result.
    With ``profiles_path`` the 168-hour profiles are written into that ``.npy`` file and mapped
    (their pages released as the build goes): 6.7 GB at ten million users that need not be in
    memory.

    A bucket is a :class:`sendtime.features.duckdb_engine.MessageBucket` (read as integer arrays) or any
    loader returning a message table; every user's messages are in one bucket. Each bucket is
    read once; what the population fits need (decay counts, open totals, the 48-hour exposure
    per user for the rhythm mixture) adds up exactly across buckets, so memory holds one
    bucket's messages plus a few bytes per message and per user, whatever the history. The
    per-user profile arithmetic runs compiled (:mod:`sendtime.features.kernels`), bit-identical to the
    numpy reference.
    """
    from sendtime.features import kernels

    params = params or ShrinkageParams()
    if params.mixture_k <= 0:
        raise ValueError("bucketed features need the rhythm mixture prior (mixture_k > 0)")
    H = params.horizon_hours
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    cut = micros_of(as_of)
    say = progress or (lambda _m: None)
    table_ids = pd.Index(users["user_id"].astype(str)) if len(users) else pd.Index([], dtype=object)
    A = np.zeros((168, H))
    B = np.zeros((168, H))
    opened_total = sent_total = 0
    def load(bucket):
        arr = bucket.arrays(table_ids) if hasattr(bucket, "arrays") else MessageArrays.from_frame(bucket(), table_ids)
        keep = arr.send_us < cut
        known, extra, local = _local_users(arr, keep, len(table_ids))
        return arr, keep, known, extra, local, {c: getattr(arr, c)[keep] for c in OUTCOME_COLUMNS}

    # the machine-open mixture is fitted on every user's counts first: a pass over the buckets
    # that keeps six counts per user, so each bucket's machine openers are the pooled model's
    window = int(MACHINE_OPEN_WINDOW / pd.Timedelta(microseconds=1))
    stats: dict[int, list] = {H * 3_600_000_000: [], window: []}  # both settle times; one is kept
    for bucket in buckets:
        arr, keep, known, extra, local, t = load(bucket)
        for settle, out in stats.items():
            out.append(machine_stats(arr.send_us[keep], t, local, len(known) + len(extra), cut, H, window, settle))
        del arr, t
    settle_us = H * 3_600_000_000
    if not any(int(x[:, 0].sum()) for x in stats[settle_us]):
        settle_us = window
    machine = MachineOpenModel().fit(np.concatenate(stats[settle_us]) if buckets else np.zeros((0, 6), np.int64))
    del stats
    say("machine openers classified")
    parts = []  # per bucket: users (table rows, unknown ids), per-user columns, compact per-message arrays
    for b, bucket in enumerate(buckets):
        arr, keep, known, extra, local, t = load(bucket)
        n_local = len(known) + len(extra)
        send = arr.send_us[keep]
        how = arr.how[keep].astype(np.int64)
        oc = kernels.outcomes(send, t, local, n_local, cut, H, machine=machine, settle_us=settle_us, how=how)
        activity, a, bb = kernels.activity_and_decay(send, t["t_click"], how, local, n_local, oc, cut, H)
        A += a
        B += bb
        opened_total += int(oc.opened.sum())
        sent_total += int(oc.sent.sum())
        parts.append((known, extra, activity,
                      local.astype(np.int32), how.astype(np.int16), oc.at_risk_hours.astype(np.int8),
                      oc.open_delay_hour.astype(np.int8)))
        say(f"bucket {b + 1}/{len(buckets)}: {len(send):,} messages, {n_local:,} users")
        del arr, t, send, oc
    all_extra = np.concatenate([p[1] for p in parts]) if parts else np.array([], dtype=object)
    index, zones, segments, tz_source = _table_users(users, all_extra.astype(object), default_tz)
    n = len(index)
    decay, lam_pop = fit_decay_counts(A, B, H)
    pop_rate = float(opened_total + 1) / float(sent_total + 5)

    # per-user columns of users with no sends: an empty bucket's values
    empty = _empty_activity(n, as_of)
    # (no bucket at all when filtering left no message: every user is such a user)
    dtypes = {k: v.dtype for k, v in parts[0][2].items()} if parts else {k: np.asarray(v).dtype for k, v in empty.items()}
    cols = {k: np.full(n, empty[k], dtype=t) for k, t in dtypes.items()}
    rows = []
    buffers = kernels.CountBuffers()
    # every user's 48-slot counts would be 2 x 8 x 48 bytes a user (7.7 GB at ten million): only
    # the rhythm EM's sample is kept, and every user's responsibilities (K numbers) come from a
    # pass of their own; the same numbers as fit_mixture on all the counts
    sample = mixture_sample(n, params.mixture_fit_users)
    slot = np.arange(n) if sample is None else np.full(n, -1, np.int64)
    if sample is not None:
        slot[sample] = np.arange(len(sample))
    O48 = np.zeros((n if sample is None else len(sample), 48))
    E48 = np.zeros_like(O48)
    e_tot = np.zeros(n)

    def counts48(uidx, how, at_risk, delay, g):
        O, E = kernels.risk_counts(uidx, how, at_risk, delay, len(g), H, decay, out=buffers)
        return kernels.row_stats(O, E)

    for known, extra, c, uidx, how, at_risk, delay in parts:
        g = np.concatenate([known, index.get_indexer(pd.Index(extra.astype(object)))]) if len(extra) else known
        rows.append(g)
        for k, v in c.items():
            cols[k][g] = v
        o48, e48, e_tot[g] = counts48(uidx, how, at_risk, delay, g)
        into = slot[g]
        mine = into >= 0
        O48[into[mine]], E48[into[mine]] = o48[mine], e48[mine]
    say("exposure counted")
    lam_pop48 = to_daytype48(lam_pop[None, :])[0] / np.array([5.0] * 24 + [2.0] * 24)
    mix, fitted = fit_rhythms(O48, E48, lam_pop48, k=params.mixture_k, smooth_hours=params.smooth_hours)
    del O48, E48
    if fitted:
        r_all = np.zeros((n, len(mix.components)))
        none = np.zeros((1, 48))
        r_all[:] = mix.responsibilities(none, none, None, coded=one_segment(1))  # users without sends
        for (known, extra, _c, uidx, how, at_risk, delay), g in zip(parts, rows):
            o48, e48, _ = counts48(uidx, how, at_risk, delay, g)
            r_all[g] = mix.responsibilities(o48, e48, None, coded=one_segment(len(g)))
        mix = segment_weights(mix, r_all, segments)
        del r_all
    prior = PopulationPrior(decay=decay, lam_pop=lam_pop, lam_group={}, open_rate=pop_rate, machine=machine, mixture=mix)
    say("rhythm prior fitted")
    seg_names, seg_codes = segment_codes(segments)
    if profiles_path is None:
        lam = np.empty((n, 168), dtype=np.float32)
    else:
        lam = np.lib.format.open_memmap(profiles_path, mode="w+", dtype=np.float32, shape=(n, 168))
    level = np.empty(n)
    seen = np.zeros(n, dtype=bool)
    conf: np.ndarray | None = np.zeros(n)
    mix = prior.mixture
    for (known, extra, _c, uidx, how, at_risk, delay), g in zip(parts, rows):
        O, E = kernels.risk_counts(uidx, how, at_risk, delay, len(g), H, decay, out=buffers)
        o48, e48, _ = kernels.row_stats(O, E)  # the rows of O48 and E48 above, without gathering them
        coded = (seg_names, seg_codes[g])
        resp = mix.responsibilities(o48, e48, None, coded=coded)
        kernels.user_profiles(O, E, resp @ mix.components, params, rows=g, out=(lam, level))
        part = rhythm_confidence(mix, resp, mix.prior_weights(None, coded), lam[g], decay, H)
        if part is None:
            conf = None
        elif conf is not None:
            conf[g] = part
        seen[g] = True
        release(lam)
    if (~seen).any():  # users without sends: no counts, their segment's prior
        u = np.flatnonzero(~seen)
        z = np.zeros((len(u), 168))
        z48 = np.zeros((len(u), 48))
        kernels.user_profiles(z, z, _prior48(prior, z48, z48, (seg_names, seg_codes[u])), params, rows=u, out=(lam, level))
    finish_rates(cols, pop_rate)
    cols["level_ratio"] = level.astype(np.float32)
    cols["confidence"] = _own_share(e_tot, params)
    cols["answer_confidence"] = _confidence(conf, cols["confidence"])
    if profiles_path is not None:
        release(lam)
        del lam
        lam = np.load(profiles_path, mmap_mode="r")
    return _assemble(cols, index, zones, tz_source, segments, lam, prior, as_of, H)


def _local_users(arr: MessageArrays, keep: np.ndarray, n_table: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bucket's local user numbers: users of the users table in table order, then unknown
    ids sorted. Returns (table rows, unknown ids, local number of each kept message)."""
    known_rows = arr.uidx[keep]
    unknown = known_rows < 0
    present = np.bincount(known_rows[~unknown], minlength=n_table) > 0
    known = np.flatnonzero(present)
    local_of = np.cumsum(present) - 1
    extra, extra_inv = np.unique(arr.unknown_ids[keep[arr.uidx < 0]].astype(str), return_inverse=True)
    local = np.empty(len(known_rows), dtype=np.int64)
    local[~unknown] = local_of[known_rows[~unknown]]
    local[unknown] = len(known) + extra_inv
    return known, extra, local


def answer_confidence(table: pd.DataFrame) -> np.ndarray:
    """Each user's answer ``confidence`` (float64) from a feature table; a table published before
    the column existed gives its ``confidence`` feature, which is what answers carried then."""
    return table["answer_confidence" if "answer_confidence" in table.columns else "confidence"].to_numpy(dtype=np.float64)


def _own_share(exposure: np.ndarray, params: ShrinkageParams) -> np.ndarray:
    """The ``confidence`` feature the forest reads: the share of the profile that is the user's
    own exposure, against the shape shrinkage."""
    return (exposure / (exposure + 24 * params.shape_strength)).astype(np.float32)


def _confidence(conf: np.ndarray | None, own_share: np.ndarray) -> np.ndarray:
    """The answers' ``confidence``: :func:`sendtime.features.profiles.rhythm_confidence` where
    there are rhythms to choose between, else the user's own share of the profile (with one
    rhythm only shrinkage moves a user's hours)."""
    return (own_share if conf is None else conf).astype(np.float32)


def _prior48(prior: PopulationPrior, O48: np.ndarray, E48: np.ndarray, segments: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The rhythm mixture's prior in its (n, 48) form (the responsibilities times the rhythms);
    ``segments``: (names, codes) as ``np.unique(..., return_inverse=True)`` gives them."""
    return prior.mixture.responsibilities(O48, E48, None, coded=segments) @ prior.mixture.components


def _empty_activity(n: int, as_of: pd.Timestamp) -> dict[str, np.ndarray]:
    """Per-user columns of a user with no sends (as :func:`activity_columns` gives them)."""
    z = np.zeros(0, dtype=bool)
    none = np.zeros(0, dtype=np.int64)
    oc = OutcomesAt(z, none, z, none, none, z, np.zeros(1, dtype=bool), np.zeros(1))
    one = activity_columns(none, none, none, 1, oc, micros_of(as_of))
    return {k: v[0] for k, v in one.items()}


def _assemble(cols, index, zones, tz_source, segments, lam, prior, as_of, H) -> UserFeatures:
    table = pd.DataFrame({k: cols[k] for k in USER_FEATURE_NAMES}, index=index)
    n_sends = cols["n_sends"]
    table["n_sends"] = n_sends
    table["timezone"] = zones
    table["timezone_source"] = tz_source
    table["segment"] = segments
    table["source"] = np.where(n_sends > 0, "model", "prior")
    table["answer_confidence"] = cols["answer_confidence"]
    return UserFeatures(as_of=as_of, table=table, lam=lam, prior=prior, horizon=H)
