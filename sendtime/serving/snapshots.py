"""The one owner of published snapshots: their layout, writing, publishing and reading.

A snapshot is a folder under ``published/``: ``features/`` (the user features, profiles and
prior), ``scores.npy`` (every known user's 168 local hour-of-week P(open), scored by the
manifest's model version), ``serving/`` (what the service maps: ids, quantized scores, answers
for unknown users; :mod:`sendtime.serving.serving_table`), ``predictions.parquet`` and
``manifest.json``. It is written into a
staging folder and made current by a rename and an atomic swap of the ``CURRENT`` pointer, so
a crash at any point leaves the previous snapshot in service. The nightly run writes and
publishes them, the Spark batch job writes the same layout, the service and batch predictions
read them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from sendtime.features.engagement import UserFeatures
from sendtime.features.mapped import is_file
from sendtime.features.store import load_features, prior_to_dict, save_features
from sendtime.serving.serving_table import SERVING, ServingTable, write_serving_table

CURRENT = "CURRENT"
FEATURES = "features"
SCORES = "scores.npy"
PREDICTIONS = "predictions.parquet"
MANIFEST = "manifest.json"
ORDER_VALUES = "order_values.parquet"  # the value objective's expected order value per user


class NotReady(RuntimeError):
    """Nothing has been trained or published yet, or what is there cannot be used."""


def write_snapshot(folder: Path, features: UserFeatures | None = None, scores: np.ndarray | None = None,
                   predictions: pd.DataFrame | None = None, manifest: dict | None = None,
                   priors: dict | None = None, order_value: np.ndarray | None = None,
                   input_columns: list[str] | None = None) -> Path:
    """Write the given parts of a snapshot into ``folder`` (created if needed); with features,
    scores, the manifest and the unknown users' answers per zone (``priors``) also the serving
    table (its quantization report goes into the manifest)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if features is not None:
        save_features(features, folder / FEATURES)
    if scores is not None and not is_file(scores, folder / SCORES):  # a table scored into the file is there
        np.save(folder / SCORES, scores)
    if features is not None and scores is not None and manifest is not None and priors is not None:
        manifest = {**manifest, "serving_quantization": write_serving_table(
            folder / SERVING, features.table, scores, model_version=str(manifest["model_version"]),
            as_of=features.as_of, priors=priors, order_value=order_value, prior=prior_to_dict(features.prior),
            input_columns=input_columns)}
    if predictions is not None:
        predictions.to_parquet(folder / PREDICTIONS, index=False)
    if manifest is not None:
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return folder


def staging_folder(published_dir: Path, name: str) -> Path:
    """A fresh, empty folder to write snapshot ``name`` into before it is published."""
    staging = Path(published_dir) / f".staging_{name}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def publish(published_dir: Path, staging: Path, name: str) -> Path:
    """Move a finished staging folder to ``published/<name>`` and point CURRENT at it."""
    final = Path(published_dir) / name
    if final.exists():
        shutil.rmtree(final)
    Path(staging).rename(final)
    publish_pointer(Path(published_dir), name)
    return final


def publish_pointer(published_dir: Path, folder_name: str) -> None:
    """Point CURRENT at a finished snapshot folder, atomically (write a temp file, rename)."""
    tmp = published_dir / f".{CURRENT}.{os.getpid()}.tmp"
    tmp.write_text(folder_name + "\n")
    os.replace(tmp, published_dir / CURRENT)


def current_name(published_dir: Path) -> str:
    """The name CURRENT points at ("" if nothing was published)."""
    pointer = Path(published_dir) / CURRENT
    return pointer.read_text().strip() if pointer.exists() else ""


def current_snapshot(published_dir: Path) -> Path:
    pointer = published_dir / CURRENT
    if not pointer.exists():
        raise NotReady(f"no published snapshot in {published_dir}: run `sendtime nightly` first")
    folder = published_dir / pointer.read_text().strip()
    if not folder.is_dir():
        raise NotReady(f"published snapshot {folder} is missing")
    return folder


def read_manifest(folder: Path) -> dict:
    return json.loads((Path(folder) / MANIFEST).read_text())


def read_order_values(folder: Path, features: UserFeatures, manifest: dict) -> tuple[np.ndarray, float] | None:
    """Each snapshot user's expected order value (in the features' row order) and the
    population's, for a value-objective snapshot; None for other objectives."""
    if manifest.get("objective") != "value":
        return None
    table = pd.read_parquet(Path(folder) / ORDER_VALUES).set_index("user_id")["order_value"]
    population = float(manifest.get("order_value_population", 0.0))
    values = table.reindex(features.table.index).fillna(population).to_numpy(dtype=np.float64)
    return values, population


def read_features(folder: Path) -> UserFeatures:
    return load_features(Path(folder) / FEATURES)


def read_serving(folder: Path, model_version: str, manifest: dict) -> ServingTable | None:
    """The snapshot's serving table (memory-mapped), if it has one scored by ``model_version``."""
    path = Path(folder) / SERVING
    if not (path / "meta.json").exists() or str(manifest.get("model_version")) != str(model_version):
        return None
    served = ServingTable(path)
    return served if served.model_version == str(model_version) else None


def read_scores(folder: Path, model_version: str, manifest: dict) -> np.ndarray | None:
    """The snapshot's 168-slot score table (memory-mapped), if it was scored by ``model_version``."""
    path = Path(folder) / SCORES
    if not path.exists() or str(manifest.get("model_version")) != str(model_version):
        return None
    return np.load(path, mmap_mode="r")
