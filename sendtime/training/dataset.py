"""Training rows: one per historical send, features as of a snapshot before that send.

Label: the message got a human open (an open not attributed to a machine, or a click) within
``horizon_hours`` of delivery. Only sends whose whole horizon lies before the as-of cutoff are
used, so every label is fully observed. Features come from the latest weekly snapshot at or
before the send, built from events strictly before the snapshot: point-in-time correct.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from sendtime.features.engagement import build_user_features, outcomes_at
from sendtime.features.message_extras import within
from sendtime.features.profiles import ShrinkageParams


@dataclass
class TrainingSet:
    X: pd.DataFrame
    y: np.ndarray
    meta: pd.DataFrame  # message_id, user_id, send_ts, propensity, send_how, snapshot, validation
    validation_start: pd.Timestamp
    validation_window: pd.Timedelta = pd.Timedelta(days=14)  # as used (shrunk on short histories)
    snapshot_every: pd.Timedelta = pd.Timedelta(days=7)

    @property
    def train_mask(self) -> np.ndarray:
        return ~self.meta["validation"].to_numpy()

    @property
    def val_mask(self) -> np.ndarray:
        return self.meta["validation"].to_numpy()


def sample_users(msgs: pd.DataFrame, users: pd.DataFrame, max_users: int | None, random_state: int = 0,
                 progress: Callable[[str], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The messages and users of a seeded sample of ``max_users`` users with sends (all of
    them when there are fewer): the same sample for the same inputs and seed."""
    if max_users is None:
        return msgs, users
    ids = msgs["user_id"].unique()
    if len(ids) <= max_users:
        return msgs, users
    keep = np.random.default_rng(random_state + 7).choice(np.asarray(ids, dtype=object), max_users, replace=False)
    if progress:
        progress(f"training on a sample of {max_users:,} of {len(ids):,} users")
    return msgs.loc[msgs["user_id"].isin(keep)], users.loc[users["user_id"].isin(keep)]


class NothingToLearn(ValueError):
    """The history cannot train a model (no send was opened, or too little history): nothing
    is registered, and the command exits with 3 (nothing trained)."""


class HistoryTooShort(NothingToLearn):
    """Too little history for a model yet (no labelled send, or no send on one side of the
    time split): the nightly publishes the stated prior-only policy instead of refusing."""


def snapshot_cutoffs(first: pd.Timestamp, last: pd.Timestamp, every: int | pd.Timedelta) -> list[pd.Timestamp]:
    """Cutoffs every ``every`` (days, or a Timedelta) from midnight UTC of ``first`` up to ``last``
    (inclusive)."""
    step = every if isinstance(every, pd.Timedelta) else pd.Timedelta(days=every)
    c = first.floor("D")
    out = []
    while c <= last:
        out.append(c)
        c = c + step
    return out


def fit_windows(first_send: pd.Timestamp, last_send: pd.Timestamp, validation_days: int,
                snapshot_days: int) -> tuple[pd.Timedelta, pd.Timedelta]:
    """The validation window and snapshot step for this history: as configured when the labelled
    history spans at least three validation windows, else shrunk to what it allows (a third of
    it for validation, a sixth per snapshot, whole hours, at least one), so a week of history
    trains as well as a year does."""
    span = last_send - first_send.floor("D")
    validation = pd.Timedelta(days=validation_days)
    snapshot = pd.Timedelta(days=snapshot_days)
    if span >= 3 * validation:
        return validation, snapshot
    hour = pd.Timedelta(hours=1)
    validation = max((span / 3).floor("h"), hour)
    return validation, min(snapshot, max((span / 6).floor("h"), hour))


def objective_label(outcomes, objective: str, msgs: pd.DataFrame | None = None, cutoff: pd.Timestamp | None = None,
                    horizon_hours: int | None = None) -> np.ndarray:
    """The label of each send for an objective (sendtime.settings.OBJECTIVES): ``open``, a human
    open or a click within the horizon; ``click``, a click within the horizon; ``conversion``,
    a conversion within the horizon (``msgs`` with the columns of
    :func:`sendtime.features.message_extras.attach_extras`); ``value``, the same (its forest learns
    P(conversion); each user's expected order value scales it, sendtime.features.order_values)."""
    if objective == "open":
        return outcomes.opened.astype(np.int8)
    if objective == "click":
        return outcomes.clicked.astype(np.int8)
    if objective in ("conversion", "value"):
        if msgs is None or "t_conversion" not in msgs.columns:
            raise ValueError(f"the {objective} objective needs conversion events in the history (event_type conversion)")
        return within(msgs["t_conversion"], msgs["send_ts"], cutoff, horizon_hours).astype(np.int8)
    raise ValueError(f"unknown objective {objective!r}: use open, click, conversion or value")


def build_training_set(
    msgs: pd.DataFrame,
    users: pd.DataFrame,
    as_of: pd.Timestamp,
    horizon_hours: int,
    validation_days: int,
    snapshot_days: int,
    max_rows: int,
    random_state: int = 0,
    default_tz: str = "UTC",
    params: ShrinkageParams | None = None,
    progress: Callable[[str], None] | None = None,
    max_users: int | None = None,
    activity: pd.DataFrame | None = None,
    objective: str = "open",
) -> TrainingSet:
    """Training rows, bounded however long the history and however many users.

    The sampling plan: (1) with more than ``max_users`` users with sends, a seeded random
    sample of ``max_users`` users is kept, and every snapshot's features (and the population
    prior each snapshot fits) come from those users' messages, so building the snapshots costs
    at most ``max_users`` users each; (2) of their labelled sends, all validation sends up to a
    third of ``max_rows`` and a uniform sample of the earlier ones fill ``max_rows``, so the
    forest trains on at most ``max_rows`` rows (its time grows with rows x trees, not history).
    """
    params = params or ShrinkageParams(horizon_hours=horizon_hours)
    msgs, users = sample_users(msgs, users, max_users, random_state, progress)
    horizon = pd.Timedelta(hours=horizon_hours)
    last_send = as_of - horizon
    labelled = msgs.loc[msgs["send_ts"] < last_send].reset_index(drop=True)
    if labelled.empty:
        first = msgs["send_ts"].min() if len(msgs) else None
        span = f"{(as_of - first) / pd.Timedelta(hours=1):.0f} h of sends" if first is not None else "no sends"
        raise HistoryTooShort(f"the history holds {span} before the as-of date; a send is labelled only once its "
                             f"{horizon_hours} h horizon is complete, so no send is labelled yet")
    validation, snapshot = fit_windows(labelled["send_ts"].min(), last_send, validation_days, snapshot_days)
    if validation < pd.Timedelta(days=validation_days) and progress:
        progress(f"history of {(last_send - labelled['send_ts'].min()) / pd.Timedelta(days=1):.1f} labelled days: "
                 f"validation window {validation}, snapshots every {snapshot} "
                 f"(SENDTIME_VALIDATION_DAYS={validation_days} needs {3 * validation_days} days)")
    validation_start = last_send - validation
    missing = pd.Index(msgs["user_id"].unique()).difference(pd.Index(users["user_id"]))
    if len(missing):  # users with sends but no users-table row: default zone, unknown segment
        users = pd.concat([users, pd.DataFrame({"user_id": missing, "timezone": None, "segment": "unknown"})], ignore_index=True)
    index = pd.Index(users["user_id"])
    uidx = index.get_indexer(labelled["user_id"]).astype(np.int64)
    final = outcomes_at(labelled, uidx, len(index), as_of, horizon_hours)
    y_all = objective_label(final, objective, labelled, as_of, horizon_hours)

    # Sample up front (bounded training time however long the history): all of validation up to
    # half the budget, a uniform sample of the rest.
    rng = np.random.default_rng(random_state)
    is_val = (labelled["send_ts"] >= validation_start).to_numpy()
    keep = np.zeros(len(labelled), dtype=bool)
    for mask, budget in ((is_val, max_rows // 3), (~is_val, max_rows - min(int(is_val.sum()), max_rows // 3))):
        idx = np.flatnonzero(mask)
        if len(idx) > budget:
            idx = rng.choice(idx, size=budget, replace=False)
        keep[idx] = True

    cutoffs = snapshot_cutoffs(labelled["send_ts"].min(), last_send, snapshot)
    frames, metas, ys = [], [], []
    send_ts = labelled["send_ts"]
    for j, c in enumerate(cutoffs):
        nxt = cutoffs[j + 1] if j + 1 < len(cutoffs) else last_send + pd.Timedelta(seconds=1)
        sel = keep & (send_ts >= c).to_numpy() & (send_ts < nxt).to_numpy()
        if not sel.any():
            continue
        uf = build_user_features(msgs, users, c, params=params, default_tz=default_tz, activity=activity)
        part = labelled.loc[sel]
        frames.append(uf.model_frame(uf.rows_of(part["user_id"]), part["send_how"].to_numpy()))
        meta = part[["message_id", "user_id", "send_ts", "propensity", "send_how"]].copy()
        meta["snapshot"] = c
        metas.append(meta)
        ys.append(y_all[sel])
        if progress:
            progress(f"snapshot {j + 1}/{len(cutoffs)} ({c.date()}): {int(sel.sum()):,} rows")
    X = pd.concat(frames, ignore_index=True)
    meta = pd.concat(metas, ignore_index=True)
    meta["validation"] = (meta["send_ts"] >= validation_start).to_numpy()
    return TrainingSet(X=X, y=np.concatenate(ys), meta=meta, validation_start=validation_start,
                       validation_window=validation, snapshot_every=snapshot)
