"""The settings: one typed object from the environment, each default written once."""

from __future__ import annotations

from dataclasses import fields

import pytest

from sendtime.settings import ENV_VARS, Settings
from sendtime.training.model import ForestParams

COMPUTED = {"home", "tracking_uri", "registry_uri", "artifact_root"}  # derived from SENDTIME_HOME / MLFLOW_*


def test_every_setting_has_one_variable_and_the_class_default(tmp_path):
    names = {f.name for f in fields(Settings)}
    assert set(ENV_VARS) == names - COMPUTED
    assert len(set(ENV_VARS.values())) == len(ENV_VARS)
    s = Settings.from_env({"SENDTIME_HOME": str(tmp_path)})
    for f in fields(Settings):
        if f.name not in COMPUTED:
            assert getattr(s, f.name) == f.default, f.name
    assert s.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}" and s.registry_uri == s.tracking_uri


def test_values_are_parsed_by_the_type_of_their_default(tmp_path):
    env = {"SENDTIME_HOME": str(tmp_path), "SENDTIME_N_ESTIMATORS": "7", "SENDTIME_GATE_TOLERANCE": "0.01",
           "SENDTIME_SCORE_TABLE": "off", "SENDTIME_ENGINE": " DuckDB ", "SENDTIME_STATUS_QUO_UTC_HOUR": "9",
           "SENDTIME_API_KEY": "", "SENDTIME_MODEL_NAME": "m", "SENDTIME_REFIT": ""}
    s = Settings.from_env(env)
    assert (s.n_estimators, s.gate_tolerance, s.use_score_table, s.engine) == (7, 0.01, False, "duckdb")
    assert (s.status_quo_utc_hour, s.api_key, s.model_name, s.refit) == (9, None, "m", "auto")
    assert ForestParams.from_settings(s).n_estimators == 7
    assert ForestParams().n_estimators == Settings.from_env({"SENDTIME_HOME": str(tmp_path)}).n_estimators


@pytest.mark.parametrize("key, value, fragment", [
    ("SENDTIME_N_ESTIMATORS", "many", "SENDTIME_N_ESTIMATORS must be an integer"),
    ("SENDTIME_GATE_TOLERANCE", "tiny", "SENDTIME_GATE_TOLERANCE must be a number"),
    ("SENDTIME_ENGINE", "excel", "SENDTIME_ENGINE must be one of"),
    ("SENDTIME_STATUS_QUO_UTC_HOUR", "25", "must be 0-23"),
])
def test_bad_values_name_their_variable(tmp_path, key, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        Settings.from_env({"SENDTIME_HOME": str(tmp_path), key: value})


def test_the_objective_picks_its_own_model_name_unless_one_is_set(tmp_path):
    home = {"SENDTIME_HOME": str(tmp_path)}
    assert Settings.from_env(home).objective == "open" and Settings.from_env(home).model_name == "sendtime-open-model"
    click = Settings.from_env({**home, "SENDTIME_OBJECTIVE": " Click "})
    assert click.objective == "click" and click.model_name == "sendtime-click-model"
    assert Settings.from_env({**home, "SENDTIME_OBJECTIVE": "click", "SENDTIME_MODEL_NAME": "mine"}).model_name == "mine"
    with pytest.raises(ValueError, match="SENDTIME_OBJECTIVE must be one of open, click"):
        Settings.from_env({**home, "SENDTIME_OBJECTIVE": "revenue"})
