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

from features.engagement import build_user_features, outcomes_at
from features.profiles import ShrinkageParams


@dataclass
class TrainingSet:
    X: pd.DataFrame
    y: np.ndarray
    meta: pd.DataFrame  # message_id, user_id, send_ts, propensity, send_how, snapshot, validation
    validation_start: pd.Timestamp

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


def snapshot_cutoffs(first: pd.Timestamp, last: pd.Timestamp, every_days: int) -> list[pd.Timestamp]:
    """Cutoffs at midnight UTC every ``every_days`` from ``first`` up to ``last`` (inclusive)."""
    start = first.floor("D")
    out = []
    c = start
    while c <= last:
        out.append(c)
        c = c + pd.Timedelta(days=every_days)
    return out


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
        raise ValueError("no sends with a fully observed horizon before the as-of date: nothing to train on")
    validation_start = last_send - pd.Timedelta(days=validation_days)
    missing = pd.Index(msgs["user_id"].unique()).difference(pd.Index(users["user_id"]))
    if len(missing):  # users with sends but no users-table row: default zone, unknown segment
        users = pd.concat([users, pd.DataFrame({"user_id": missing, "timezone": None, "segment": "unknown"})], ignore_index=True)
    index = pd.Index(users["user_id"])
    uidx = index.get_indexer(labelled["user_id"]).astype(np.int64)
    final = outcomes_at(labelled, uidx, len(index), as_of, horizon_hours)
    y_all = final.opened.astype(np.int8)

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

    cutoffs = snapshot_cutoffs(labelled["send_ts"].min(), last_send, snapshot_days)
    frames, metas, ys = [], [], []
    send_ts = labelled["send_ts"]
    for j, c in enumerate(cutoffs):
        nxt = cutoffs[j + 1] if j + 1 < len(cutoffs) else last_send + pd.Timedelta(seconds=1)
        sel = keep & (send_ts >= c).to_numpy() & (send_ts < nxt).to_numpy()
        if not sel.any():
            continue
        uf = build_user_features(msgs, users, c, params=params, default_tz=default_tz)
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
    return TrainingSet(X=X, y=np.concatenate(ys), meta=meta, validation_start=validation_start)
