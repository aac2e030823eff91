"""`sendtime nightly --engine spark` end to end on a small world: the same published features
as the embedded engine, through the real CLI (its own JVM, local[2], loopback only)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import AS_OF, make_env
from tests.test_cli import run


def _published(home):
    folder = home / "published" / (home / "published" / "CURRENT").read_text().strip()
    return folder, json.loads((folder / "manifest.json").read_text())


def _dirty_events(world_dir, out):
    """The tiny world's events with a few rows the contract rejects, spread about."""
    ev = pd.read_parquet(world_dir / "events.parquet")
    send = ev.loc[ev["event_type"] == "send"].iloc[7]
    bad = pd.DataFrame([
        {**send.to_dict(), "event_id": "NULL"},  # missing event id
        {**send.to_dict(), "event_id": "x-open", "event_type": "open", "message_id": "no-such-message"},
        {**send.to_dict(), "event_id": "x-early", "event_type": "click",
         "timestamp": send["timestamp"] - pd.Timedelta(hours=1)},  # before its send
        {**send.to_dict(), "event_id": "x-again", "timestamp": send["timestamp"] + pd.Timedelta(hours=1)},  # second send
        {**send.to_dict(), "event_id": " \t x-pad\xa0", "event_type": " OPEN ",
         "timestamp": send["timestamp"] + pd.Timedelta(hours=2)},  # accepted: padded
    ])
    mixed = pd.concat([ev.iloc[:1000], bad, ev.iloc[1000:], ev.iloc[[20]]], ignore_index=True)  # and a duplicate
    mixed["timestamp"] = pd.to_datetime(mixed["timestamp"], utc=True).astype("datetime64[us, UTC]")
    mixed.to_parquet(out, index=False)
    return out


@pytest.mark.slow  # the Spark features and scores are checked against the embedded engines in tests/features/test_spark.py
def test_nightly_on_spark_publishes_the_same_features_as_duckdb(world_dir, tmp_path):
    """On dirty events: the same features, and the same rejects file in the run's folder."""
    events = _dirty_events(world_dir, tmp_path / "events.parquet")
    args = ["nightly", "--events", str(events), "--users", str(world_dir / "users.parquet"), "--as-of", AS_OF]
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
    rejects = {engine: list(home.glob("runs/*/rejects_events.csv")) for engine, home in homes.items()}
    assert len(rejects["spark"]) == len(rejects["duckdb"]) == 1, rejects
    ours, theirs = rejects["spark"][0].read_text(), rejects["duckdb"][0].read_text()
    assert ours == theirs and len(ours.splitlines()) == 1 + 5  # the header and five rejected rows
    assert not list((homes["spark"] / "runs").glob("rejects_events_*.csv"))  # moved into the run's folder


def test_unknown_engine_is_a_one_line_error(tmp_path):
    r = run(["nightly", "--events", "x.parquet", "--users", "u.parquet", "--as-of", AS_OF, "--engine", "hadoop"],
            make_env(tmp_path / "home"))
    assert r.returncode == 2 and "--engine must be one of" in r.stderr
