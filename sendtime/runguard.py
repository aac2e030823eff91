"""Guards around the nightly run: one run at a time, and the same inputs are not run twice.

- ``nightly_lock``: an exclusive, non-blocking file lock under SENDTIME_HOME, so two
  overlapping runs (cron firing while yesterday's run is still going) cannot both publish.
- ``input_fingerprint``: a hash of the input files' contents, the as-of date and every setting
  that changes the result. A run records it on its MLflow run once it has published; a later
  run with the same fingerprint has nothing to do, so re-running a night promotes nothing twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sendtime.features.definitions import FEATURE_SET_VERSION


class RunLocked(RuntimeError):
    """Another nightly run holds the lock."""


@contextmanager
def nightly_lock(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "nightly.lock"
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise RunLocked(f"another nightly run holds {path} (pid {holder}); not starting a second one") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock


def _hash_path(h: "hashlib._Hash", path: Path) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)


def input_fingerprint(events: Path, users: Path, as_of: str, settings, activity: Path | None = None) -> str:
    h = hashlib.sha256()
    _hash_path(h, Path(events))
    _hash_path(h, Path(users))
    if activity is not None:
        h.update(b"activity")
        _hash_path(h, Path(activity))
    knobs = {
        "as_of": as_of, "features": FEATURE_SET_VERSION, "horizon": settings.horizon_hours,
        "validation_days": settings.validation_days, "snapshot_days": settings.snapshot_days,
        "max_train_rows": settings.max_train_rows, "n_estimators": settings.n_estimators,
        "max_depth": settings.max_depth, "min_samples_leaf": settings.min_samples_leaf,
        "random_state": settings.random_state, "model_name": settings.model_name,
        "default_timezone": settings.default_timezone, "refit": settings.refit, "objective": settings.objective,
        "channel": settings.channel, "unsubscribe_penalty": settings.unsubscribe_penalty,
    }
    h.update(json.dumps(knobs, sort_keys=True).encode())
    return h.hexdigest()
