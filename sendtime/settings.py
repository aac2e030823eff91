"""One typed settings object, read from the environment and passed explicitly.

Everything defaults to embedded, local state under ``SENDTIME_HOME`` (SQLite MLflow store,
file artifacts, published outputs, BentoML store) so nothing needs a server; teams with a
tracking server override ``MLFLOW_TRACKING_URI`` and friends.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

MODEL_NAME_DEFAULT = "sendtime-open-model"

# Environment variables that switch off outbound telemetry of MLflow and BentoML.
TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "DO_NOT_TRACK": "1",
    "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    "GIT_PYTHON_REFRESH": "quiet",
}


def _number(env: Mapping[str, str], key: str, default, cast=float):
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise ValueError(f"{key} must be {kind}, got {raw!r}") from None


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    return _number(env, key, default, float)


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    return _number(env, key, default, int)


ENGINES = ("auto", "duckdb", "pandas", "spark")
REFIT_CHOICES = ("auto", "always", "never")  # SENDTIME_REFIT; decided by sendtime.training.train.refit_wanted


@dataclass(frozen=True)
class Settings:
    home: Path
    tracking_uri: str
    registry_uri: str
    artifact_root: str
    experiment: str = "sendtime"
    model_name: str = MODEL_NAME_DEFAULT
    default_timezone: str = "UTC"
    horizon_hours: int = 24
    validation_days: int = 14
    snapshot_days: int = 7
    max_train_rows: int = 400_000
    max_train_users: int = 200_000
    tune_profile_users: int = 5_000  # users the nightly's profile-hyperparameter search runs on (0: off)
    n_estimators: int = 120
    max_depth: int = 14
    min_samples_leaf: int = 100
    random_state: int = 0
    n_jobs: int = -1
    gate_tolerance: float = 0.002
    api_key: str | None = field(default=None, repr=False)
    exploration_rate: float = 0.05
    holdout_share: float = 0.05
    status_quo_utc_hour: int | None = None
    policy_salt: str = "sendtime"
    max_users_per_request: int = 10_000
    reload_seconds: float = 30.0
    use_score_table: bool = True
    refit: str = "auto"  # refit on the validation weeks too: auto (short histories), always, never
    max_window_hours: int = 24 * 7
    spark_master: str = "local[2]"  # for SENDTIME_ENGINE=spark; spark-submit's --master wins when set
    engine: str = "auto"  # feature build: auto (duckdb for typed Parquet, else pandas), duckdb, pandas, spark
    events_user_ids: str = "email"  # POST /events: user_id is the address ("email") or its salted SHA-256 ("sha256")
    events_salt: str = field(default="", repr=False)

    @property
    def published_dir(self) -> Path:
        return self.home / "published"

    @property
    def bentoml_home(self) -> Path:
        return self.home / "bentoml"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        home = Path(env.get("SENDTIME_HOME") or Path.cwd() / ".sendtime").expanduser().resolve()
        tracking = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
        registry = env.get("MLFLOW_REGISTRY_URI") or tracking
        artifacts = env.get("SENDTIME_ARTIFACT_ROOT") or (home / "mlartifacts").as_uri()
        return cls(
            home=home,
            tracking_uri=tracking,
            registry_uri=registry,
            artifact_root=artifacts,
            experiment=env.get("SENDTIME_EXPERIMENT", "sendtime"),
            model_name=env.get("SENDTIME_MODEL_NAME", MODEL_NAME_DEFAULT),
            default_timezone=env.get("SENDTIME_DEFAULT_TIMEZONE", "UTC"),
            horizon_hours=_int(env, "SENDTIME_HORIZON_HOURS", 24),
            validation_days=_int(env, "SENDTIME_VALIDATION_DAYS", 14),
            snapshot_days=_int(env, "SENDTIME_SNAPSHOT_DAYS", 7),
            max_train_rows=_int(env, "SENDTIME_MAX_TRAIN_ROWS", 400_000),
            max_train_users=_int(env, "SENDTIME_MAX_TRAIN_USERS", 200_000),
            tune_profile_users=_int(env, "SENDTIME_TUNE_PROFILE_USERS", 5_000),
            n_estimators=_int(env, "SENDTIME_N_ESTIMATORS", 120),
            max_depth=_int(env, "SENDTIME_MAX_DEPTH", 14),
            min_samples_leaf=_int(env, "SENDTIME_MIN_SAMPLES_LEAF", 100),
            random_state=_int(env, "SENDTIME_RANDOM_STATE", 0),
            n_jobs=_int(env, "SENDTIME_N_JOBS", -1),
            gate_tolerance=_float(env, "SENDTIME_GATE_TOLERANCE", 0.002),
            api_key=env.get("SENDTIME_API_KEY") or None,
            exploration_rate=_float(env, "SENDTIME_EXPLORATION_RATE", 0.05),
            holdout_share=_float(env, "SENDTIME_HOLDOUT_SHARE", 0.05),
            status_quo_utc_hour=_int(env, "SENDTIME_STATUS_QUO_UTC_HOUR", -1) if env.get("SENDTIME_STATUS_QUO_UTC_HOUR") else None,
            policy_salt=env.get("SENDTIME_POLICY_SALT", "sendtime"),
            max_users_per_request=_int(env, "SENDTIME_MAX_USERS_PER_REQUEST", 10_000),
            reload_seconds=_float(env, "SENDTIME_RELOAD_SECONDS", 30.0),
            use_score_table=env.get("SENDTIME_SCORE_TABLE", "1").strip().lower() not in ("0", "false", "no", "off"),
            refit=env.get("SENDTIME_REFIT", "auto").strip().lower(),
            engine=env.get("SENDTIME_ENGINE", "auto").strip().lower(),
            spark_master=env.get("SENDTIME_SPARK_MASTER", "local[2]"),
            events_user_ids=env.get("SENDTIME_EVENTS_USER_IDS", "email").strip().lower(),
            events_salt=env.get("SENDTIME_EVENTS_SALT", ""),
        )

    def __post_init__(self) -> None:
        if not 0.0 <= self.exploration_rate < 1.0:
            raise ValueError(f"SENDTIME_EXPLORATION_RATE must be in [0, 1), got {self.exploration_rate}")
        if not 0.0 <= self.holdout_share < 1.0:
            raise ValueError(f"SENDTIME_HOLDOUT_SHARE must be in [0, 1), got {self.holdout_share}")
        if self.engine not in ENGINES:
            raise ValueError(f"SENDTIME_ENGINE must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.refit not in REFIT_CHOICES:
            raise ValueError(f"SENDTIME_REFIT must be one of {', '.join(REFIT_CHOICES)}, got {self.refit!r}")
        if self.events_user_ids not in ("email", "sha256"):
            raise ValueError(f"SENDTIME_EVENTS_USER_IDS must be email or sha256, got {self.events_user_ids!r}")
        if self.status_quo_utc_hour is not None and not 0 <= self.status_quo_utc_hour <= 23:
            raise ValueError(f"SENDTIME_STATUS_QUO_UTC_HOUR must be 0-23, got {self.status_quo_utc_hour}")

    def prepare(self) -> "Settings":
        """Create the state folders and make the local process quiet and loopback-only."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.published_dir.mkdir(parents=True, exist_ok=True)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        for key, value in TELEMETRY_OFF.items():
            os.environ.setdefault(key, value)
        # a remote tracking server that is down should fail the run in seconds, not minutes
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("BENTOML_HOME", str(self.bentoml_home))
        return self
