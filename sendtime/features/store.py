"""Save and load a feature snapshot (table, activity profiles, population prior) as files.

The nightly run publishes one snapshot next to its predictions; the service loads it to answer
users by their features and to build cold-start rows from the prior.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from sendtime.features.definitions import FEATURE_SET_VERSION
from sendtime.features.engagement import UserFeatures
from sendtime.features.machine_opens import MachineOpenModel
from sendtime.features.mapped import is_file
from sendtime.features.profiles import PopulationPrior, RhythmMixture

TABLE = "user_features.parquet"
PROFILES = "profiles.npy"
PRIOR = "prior.json"


def prior_to_dict(prior: PopulationPrior) -> dict:
    return {
        "decay": prior.decay,
        "open_rate": prior.open_rate,
        "lam_pop": [float(x) for x in prior.lam_pop],
        "lam_group": {k: [float(x) for x in v] for k, v in prior.lam_group.items()},
        "mixture": None if prior.mixture is None else {
            "components": prior.mixture.components.tolist(),
            "weights": {k: v.tolist() for k, v in prior.mixture.weights.items()},
            "alpha": float(prior.mixture.alpha),
        },
        "machine": None if prior.machine is None else prior.machine.to_dict(),
    }


def prior_from_dict(d: dict) -> PopulationPrior:
    return PopulationPrior(
        decay=float(d["decay"]),
        lam_pop=np.asarray(d["lam_pop"], dtype=np.float64),
        lam_group={k: np.asarray(v, dtype=np.float64) for k, v in d["lam_group"].items()},
        open_rate=float(d["open_rate"]),
        mixture=None if d.get("mixture") is None else RhythmMixture(
            components=np.asarray(d["mixture"]["components"], dtype=np.float64),
            weights={k: np.asarray(v, dtype=np.float64) for k, v in d["mixture"]["weights"].items()},
            alpha=float(d["mixture"].get("alpha", 0.0)),
        ),
        machine=None if d.get("machine") is None else MachineOpenModel.from_dict(d["machine"]),
    )


#: rows of the feature table converted to Arrow at a time when it is saved
SAVE_ROWS = 1_000_000


def write_parquet_parts(parts: Iterable[pd.DataFrame], path: str | Path) -> None:
    """Frames written one after another into one Parquet file (the first one's schema; no
    index): a table of ten million rows is never whole in memory, nor copied whole into Arrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for part in parts:
            table = pa.Table.from_pandas(part, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(str(path), table.schema)
            writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()


def save_features(uf: UserFeatures, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t = uf.table
    write_parquet_parts((t.iloc[s:s + SAVE_ROWS].reset_index() for s in range(0, max(len(t), 1), SAVE_ROWS)), folder / TABLE)
    if not is_file(uf.lam, folder / PROFILES):  # profiles built into the file are there already
        np.save(folder / PROFILES, np.asarray(uf.lam, dtype=np.float32))  # no copy of a float32 table (6.7 GB at 10M users)
    meta = {
        "feature_set_version": FEATURE_SET_VERSION,
        "as_of": uf.as_of.isoformat(),
        "horizon": uf.horizon,
        "prior": prior_to_dict(uf.prior),
    }
    (folder / PRIOR).write_text(json.dumps(meta))
    return folder


def load_features(folder: str | Path, mmap: bool = True) -> UserFeatures:
    folder = Path(folder)
    meta = json.loads((folder / PRIOR).read_text())
    if meta.get("feature_set_version") != FEATURE_SET_VERSION:
        raise ValueError(
            f"feature snapshot {folder} has version {meta.get('feature_set_version')!r}, expected {FEATURE_SET_VERSION!r}"
        )
    table = pd.read_parquet(folder / TABLE).set_index("user_id")
    lam = np.load(folder / PROFILES, mmap_mode="r" if mmap else None)
    if lam.shape != (len(table), 168):
        raise ValueError(f"feature snapshot {folder}: profiles shape {lam.shape} does not match {len(table)} users")
    return UserFeatures(
        as_of=pd.Timestamp(meta["as_of"]),
        table=table,
        lam=np.asarray(lam),
        prior=prior_from_dict(meta["prior"]),
        horizon=int(meta["horizon"]),
    )
