"""The proof-of-lift suite end to end on one small world (the README table uses 20,000 users)."""

from __future__ import annotations

import pandas as pd

from sendtime.suite import run_suite


def test_suite_beats_status_quo_and_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("SENDTIME_N_ESTIMATORS", "40")
    monkeypatch.setenv("SENDTIME_N_JOBS", "2")
    summary = run_suite(["default"], [0], n_users=800, days=60, out_dir=tmp_path, say=lambda m: None)
    row = summary.iloc[0]
    assert row["capture_mean"] > 0.3  # recommendations capture a real share of the possible gain
    assert row["capture_mean"] > row["reference_mean"]  # and more than the straightforward RF
    assert row["cold_sendtime"] > row["cold_best_utc"]  # users with <= 3 sends beat the best UTC hour
    assert row["mpp_precision"] > 0.9 and row["mpp_recall"] > 0.9
    runs = pd.read_csv(tmp_path / "capture_runs.csv")
    assert len(runs) == 1 and (tmp_path / "capture.png").stat().st_size > 5_000
    assert "| default |" in (tmp_path / "capture.md").read_text()
