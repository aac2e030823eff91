"""The nightly's own rules (its steps are exercised end to end by test_cli and the fixtures)."""

from __future__ import annotations

import json

import pandas as pd

from tests.conftest import AS_OF, home_env


def test_the_status_quo_hour_setting_wins_over_the_history(world_dir, tmp_path):
    """SENDTIME_STATUS_QUO_UTC_HOUR is the status quo for the off-policy lift and the published
    manifest too, not only for the service; unset, it is the history's most frequent send hour."""
    from sendtime.features.contract import read_events
    from sendtime.features.messages import status_quo_hour
    from sendtime.nightly import run_nightly
    from sendtime.settings import Settings

    sends = read_events(world_dir / "events.parquet").accepted
    sends = sends.loc[(sends["event_type"] == "send") & (sends["timestamp"] < pd.Timestamp(AS_OF, tz="UTC"))]
    usual = status_quo_hour(sends.rename(columns={"timestamp": "send_ts"}))
    wanted = (usual + 5) % 24
    for hour, home in ((None, tmp_path / "a"), (wanted, tmp_path / "b")):
        env = {k: v for k, v in {**home_env(home)}.items() if not k.startswith("MLFLOW_TRACKING")}
        env.pop("MLFLOW_REGISTRY_URI", None)
        if hour is not None:
            env["SENDTIME_STATUS_QUO_UTC_HOUR"] = str(hour)
        env["SENDTIME_N_ESTIMATORS"], env["SENDTIME_TUNE_PROFILE_USERS"] = "10", "0"
        res = run_nightly(Settings.from_env(env), world_dir / "events.parquet", world_dir / "users.parquet",
                          pd.Timestamp(AS_OF, tz="UTC"), say=lambda m: None)
        manifest = json.loads((res.published / "manifest.json").read_text())
        assert manifest["status_quo_utc_hour"] == (usual if hour is None else wanted)
