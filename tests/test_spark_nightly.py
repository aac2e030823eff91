"""`sendtime nightly --engine spark` end to end on a small world: the same published features
as the embedded engine, through the real CLI (its own JVM, local[2], loopback only)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from tests.conftest import AS_OF, make_env
from tests.test_cli import run


def _published(home):
    folder = home / "published" / (home / "published" / "CURRENT").read_text().strip()
    return folder, json.loads((folder / "manifest.json").read_text())


def test_nightly_on_spark_publishes_the_same_features_as_duckdb(world_dir, tmp_path):
    args = ["nightly", "--events", str(world_dir / "events.parquet"), "--users", str(world_dir / "users.parquet"),
            "--as-of", AS_OF]
    homes = {}
    for engine in ("spark", "duckdb"):
        homes[engine] = tmp_path / engine
        r = run([*args, "--engine", engine], make_env(homes[engine]))
        assert r.returncode == 0, r.stderr[-3000:]
        assert "read" in r.stdout
    spark_dir, spark_manifest = _published(homes["spark"])
    duck_dir, duck_manifest = _published(homes["duckdb"])
    a = pd.read_parquet(spark_dir / "features" / "user_features.parquet")
    b = pd.read_parquet(duck_dir / "features" / "user_features.parquet")
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_array_equal(np.load(spark_dir / "features" / "profiles.npy"), np.load(duck_dir / "features" / "profiles.npy"))
    assert spark_manifest["users"] == duck_manifest["users"] > 300


def test_unknown_engine_is_a_one_line_error(tmp_path):
    r = run(["nightly", "--events", "x.parquet", "--users", "u.parquet", "--as-of", AS_OF, "--engine", "hadoop"],
            make_env(tmp_path / "home"))
    assert r.returncode == 2 and "--engine must be one of" in r.stderr
