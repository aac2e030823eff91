"""One typed settings object, read from the environment and passed explicitly.

Everything defaults to embedded, local state under ``SENDTIME_HOME`` (SQLite MLflow store,
file artifacts, published outputs, BentoML store) so nothing needs a server; teams with a
tracking server override ``MLFLOW_TRACKING_URI`` and friends.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
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
#: what a send is optimized for (SENDTIME_OBJECTIVE), each within the horizon: a human open (or a
#: click), a click, a conversion (a purchase attributed to the message), or value (expected
#: revenue: P(conversion) times the user's expected order value); each its own registered model
OBJECTIVES = ("open", "click", "conversion", "value")
#: the channel a deployment serves (SENDTIME_CHANNEL): it learns from that channel's sends, and
#: from the other channels' opens as evidence of when a person is around
CHANNELS = ("email", "push", "sms")
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
    compiled_scoring: bool = True  # the hour-aware forest by the compiled slot traversal (0: predict_proba)
    refit: str = "auto"  # refit on the validation weeks too: auto (short histories), always, never
    max_window_hours: int = 24 * 7
    plan_seconds: float = 2.0  # /plan_campaign: the search for the best capped plan stops after this (0: no limit)
    spark_master: str = "local[2]"  # for SENDTIME_ENGINE=spark; spark-submit's --master wins when set
    engine: str = "auto"  # feature build: auto (duckdb for typed Parquet, else pandas), duckdb, pandas, spark
    events_user_ids: str = "email"  # POST /events: user_id is the address ("email") or its salted SHA-256 ("sha256")
    events_salt: str = field(default="", repr=False)
    events_fsync: bool = True  # POST /events answers after its log record is fsync-ed (0: after the write only)
    events_segment_seconds: float = 900.0  # a worker starts a new event-log segment this often; sealed ones roll to Parquet
    events_max_backlog_mb: int = 2048  # 503 + Retry-After when this much event log waits for its roll
    # SendGrid's Signed Event Webhook verification key (base64, from its settings page): when set,
    # POST /events needs a valid ECDSA signature over the timestamp and the body
    events_verification_key: str | None = None
    objective: str = "open"  # open | click | conversion | value; the default model name follows it (sendtime-click-model)
    channel: str = "email"  # email | push | sms; the default model name follows it (sendtime-push-open-model)
    # the cost of an unsubscribe or complaint, in units of the objective (an unsubscribe costs as
    # much as this many opens, clicks, conversions or currency units): hours are ranked by
    # expected objective minus this times P(unsubscribe or complaint); 0: not counted
    unsubscribe_penalty: float = 0.0
    # more objectives the service answers for (comma-separated, e.g. "click,conversion"): each one's
    # nightly runs with its SENDTIME_OBJECTIVE in the same home; a request's objective picks one
    serve_objectives: str = ""

    @property
    def published_dir(self) -> Path:
        """Where the nightly publishes and the service reads snapshots: one folder per objective
        and channel, so one home (one registry) can hold several deployments' snapshots."""
        if self.objective == "open" and self.channel == "email":
            return self.home / "published"
        return self.home / f"published-{self.channel}-{self.objective}"

    @property
    def served_objectives(self) -> tuple[str, ...]:
        """The objectives the service answers for: the deployment's first (the default of a
        request that names none), then SENDTIME_SERVE_OBJECTIVES' others."""
        more = [o.strip().lower() for o in self.serve_objectives.split(",") if o.strip()]
        return tuple(dict.fromkeys([self.objective, *more]))

    def for_objective(self, objective: str) -> "Settings":
        """These settings for another objective of the same channel: its registered model (the
        default name) and its published snapshots."""
        if objective == self.objective:
            return self
        if self.model_name != default_model_name(self.objective, self.channel):
            raise ValueError("SENDTIME_SERVE_OBJECTIVES needs the default model names (SENDTIME_MODEL_NAME is set)")
        return replace(self, objective=objective, model_name=default_model_name(objective, self.channel))

    @property
    def bentoml_home(self) -> Path:
        return self.home / "bentoml"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """The settings from ``env`` (default: the process environment). Each field's default is
        the one written in the class above, nowhere else; :data:`ENV_VARS` names its variable."""
        env = os.environ if env is None else env
        home = Path(env.get("SENDTIME_HOME") or Path.cwd() / ".sendtime").expanduser().resolve()
        tracking = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
        values: dict[str, object] = {
            "home": home, "tracking_uri": tracking, "registry_uri": env.get("MLFLOW_REGISTRY_URI") or tracking,
            "artifact_root": env.get("SENDTIME_ARTIFACT_ROOT") or (home / "mlartifacts").as_uri(),
        }
        for f in fields(cls):
            key = ENV_VARS.get(f.name)
            raw = env.get(key) if key else None
            if raw is None or (raw == "" and f.name not in _KEEP_EMPTY):
                continue
            default = f.default
            if f.name == "status_quo_utc_hour":
                values[f.name] = _int(env, key, -1)
            elif f.name == "api_key":
                values[f.name] = raw or None
            elif isinstance(default, bool):
                values[f.name] = raw.strip().lower() not in ("0", "false", "no", "off")
            elif isinstance(default, int):
                values[f.name] = _int(env, key, default)
            elif isinstance(default, float):
                values[f.name] = _float(env, key, default)
            else:
                values[f.name] = raw.strip().lower() if f.name in _CHOICES else raw
        if "model_name" not in values:  # an objective's (and a channel's) own registered model
            values["model_name"] = default_model_name(str(values.get("objective", "open")), str(values.get("channel", "email")))
        return cls(**values)

    def __post_init__(self) -> None:
        if not 0.0 <= self.exploration_rate < 1.0:
            raise ValueError(f"SENDTIME_EXPLORATION_RATE must be in [0, 1), got {self.exploration_rate}")
        if not 0.0 <= self.holdout_share < 1.0:
            raise ValueError(f"SENDTIME_HOLDOUT_SHARE must be in [0, 1), got {self.holdout_share}")
        if self.engine not in ENGINES:
            raise ValueError(f"SENDTIME_ENGINE must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.refit not in REFIT_CHOICES:
            raise ValueError(f"SENDTIME_REFIT must be one of {', '.join(REFIT_CHOICES)}, got {self.refit!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"SENDTIME_OBJECTIVE must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        bad = [o for o in self.served_objectives if o not in OBJECTIVES]
        if bad:
            raise ValueError(f"SENDTIME_SERVE_OBJECTIVES must name objectives among {', '.join(OBJECTIVES)}, got {', '.join(bad)}")
        if self.channel not in CHANNELS:
            raise ValueError(f"SENDTIME_CHANNEL must be one of {', '.join(CHANNELS)}, got {self.channel!r}")
        if not self.unsubscribe_penalty >= 0:
            raise ValueError(f"SENDTIME_UNSUBSCRIBE_PENALTY must be >= 0, got {self.unsubscribe_penalty}")
        if self.events_user_ids not in ("email", "sha256"):
            raise ValueError(f"SENDTIME_EVENTS_USER_IDS must be email or sha256, got {self.events_user_ids!r}")
        if not self.plan_seconds >= 0:
            raise ValueError(f"SENDTIME_PLAN_SECONDS must be >= 0 (0: no limit), got {self.plan_seconds}")
        if not self.events_segment_seconds > 0:
            raise ValueError(f"SENDTIME_EVENTS_SEGMENT_SECONDS must be > 0, got {self.events_segment_seconds}")
        if self.events_max_backlog_mb < 0:
            raise ValueError(f"SENDTIME_EVENTS_MAX_BACKLOG_MB must be >= 0 (0: no limit), got {self.events_max_backlog_mb}")
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


def default_model_name(objective: str, channel: str = "email") -> str:
    """The registered model of an objective and channel: sendtime-open-model, sendtime-click-model,
    sendtime-push-open-model."""
    return f"sendtime-{channel + '-' if channel != 'email' else ''}{objective}-model"


#: the environment variable of each setting (the defaults are the dataclass's own)
ENV_VARS: dict[str, str] = {
    "experiment": "SENDTIME_EXPERIMENT",
    "model_name": "SENDTIME_MODEL_NAME",
    "default_timezone": "SENDTIME_DEFAULT_TIMEZONE",
    "horizon_hours": "SENDTIME_HORIZON_HOURS",
    "validation_days": "SENDTIME_VALIDATION_DAYS",
    "snapshot_days": "SENDTIME_SNAPSHOT_DAYS",
    "max_train_rows": "SENDTIME_MAX_TRAIN_ROWS",
    "max_train_users": "SENDTIME_MAX_TRAIN_USERS",
    "tune_profile_users": "SENDTIME_TUNE_PROFILE_USERS",
    "n_estimators": "SENDTIME_N_ESTIMATORS",
    "max_depth": "SENDTIME_MAX_DEPTH",
    "min_samples_leaf": "SENDTIME_MIN_SAMPLES_LEAF",
    "random_state": "SENDTIME_RANDOM_STATE",
    "n_jobs": "SENDTIME_N_JOBS",
    "gate_tolerance": "SENDTIME_GATE_TOLERANCE",
    "api_key": "SENDTIME_API_KEY",
    "exploration_rate": "SENDTIME_EXPLORATION_RATE",
    "holdout_share": "SENDTIME_HOLDOUT_SHARE",
    "status_quo_utc_hour": "SENDTIME_STATUS_QUO_UTC_HOUR",
    "policy_salt": "SENDTIME_POLICY_SALT",
    "max_users_per_request": "SENDTIME_MAX_USERS_PER_REQUEST",
    "max_window_hours": "SENDTIME_MAX_WINDOW_HOURS",
    "plan_seconds": "SENDTIME_PLAN_SECONDS",
    "reload_seconds": "SENDTIME_RELOAD_SECONDS",
    "use_score_table": "SENDTIME_SCORE_TABLE",
    "compiled_scoring": "SENDTIME_COMPILED_SCORING",
    "refit": "SENDTIME_REFIT",
    "engine": "SENDTIME_ENGINE",
    "spark_master": "SENDTIME_SPARK_MASTER",
    "events_user_ids": "SENDTIME_EVENTS_USER_IDS",
    "events_salt": "SENDTIME_EVENTS_SALT",
    "events_fsync": "SENDTIME_EVENTS_FSYNC",
    "events_segment_seconds": "SENDTIME_EVENTS_SEGMENT_SECONDS",
    "events_max_backlog_mb": "SENDTIME_EVENTS_MAX_BACKLOG_MB",
    "events_verification_key": "SENDTIME_EVENTS_VERIFICATION_KEY",
    "objective": "SENDTIME_OBJECTIVE",
    "channel": "SENDTIME_CHANNEL",
    "unsubscribe_penalty": "SENDTIME_UNSUBSCRIBE_PENALTY",
    "serve_objectives": "SENDTIME_SERVE_OBJECTIVES",
}
_CHOICES = {"refit", "engine", "events_user_ids", "objective", "channel"}  # read case- and space-insensitively
_KEEP_EMPTY = {"api_key", "events_salt"}  # an empty value means what it says (no key, no salt)
