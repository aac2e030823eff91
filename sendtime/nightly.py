"""The nightly run: validate, build features, train, gate and promote, publish predictions.

Outputs are published atomically: everything is written into a fresh folder under
``published/`` and only then does ``published/CURRENT`` move to it, so a run killed halfway
leaves the previous snapshot being served.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import mlflow
import numpy as np
import pandas as pd

from sendtime.features.contract import ContractError, ReadResult, read_events, read_users, write_rejects
from sendtime.features.engagement import build_user_features, build_user_features_bucketed
from sendtime.features.inputs import data_files
from sendtime.features.messages import build_messages
from sendtime.features.profiles import ShrinkageParams
from sendtime.runguard import input_fingerprint, nightly_lock
from sendtime.settings import Settings
from sendtime.serving.model_store import champion_profile_params, load_champion
from sendtime.serving.snapshots import NotReady, publish, staging_folder, write_snapshot
from sendtime.serving.scoring import PROFILE_POLICY, ProfilePolicy, Scorer
from sendtime.features.engagement import outcomes_at
from sendtime.training.dataset import HistoryTooShort, build_training_set
from sendtime.training.offpolicy import evaluate_policy, logged_sends, policy_hours
from sendtime.training.model import ForestParams
from sendtime.training.registry import configure
from sendtime.training.train import refit_wanted, train_and_register


@dataclass
class NightlyResult:
    as_of: pd.Timestamp
    events: ReadResult
    users: ReadResult
    run_id: str
    model_version: str
    champion_version: str
    promoted: bool
    reason: str
    metrics: dict[str, float]
    published: Path
    predictions: Path
    rejects: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def parse_as_of(text: str) -> pd.Timestamp:
    """The --as-of cutoff: a strict ISO 8601 date at 00:00 UTC (see sendtime.dates)."""
    from sendtime.dates import parse_iso_date

    return parse_iso_date(text, "--as-of")


def validation_off_policy(msgs, users, validation_start, as_of, settings: Settings, params, status_quo_hour: int,
                          max_contexts: int = 20_000, min_matched: int = 50):
    """A function scoring a model's policy on the validation weeks' randomized logs, or None.

    Features are frozen at the start of the validation weeks, so the policy only knows what it
    would have known then. Returns None when the history holds no propensities.
    """
    from sendtime.features.definitions import MODEL_FEATURES

    from sendtime.training.dataset import sample_users

    msgs, users = sample_users(msgs, users, settings.max_train_users, settings.random_state)
    horizon = pd.Timedelta(hours=settings.horizon_hours)
    val = msgs.loc[(msgs["send_ts"] >= validation_start) & (msgs["send_ts"] < as_of - horizon)]
    if val["propensity"].notna().sum() < 100 or (val["propensity"] < 0.5).sum() < min_matched:
        return None
    uf = build_user_features(msgs, users, validation_start, params=params, default_tz=settings.default_timezone)
    uidx = uf.rows_of(msgs["user_id"])
    reward = outcomes_at(msgs, uidx, len(uf.table), as_of, settings.horizon_hours).opened
    logs = logged_sends(msgs, reward, validation_start, as_of - horizon)
    if len(logs) > max_contexts:
        logs = logs.take(np.random.default_rng(settings.random_state).choice(len(logs), max_contexts, replace=False))
    columns = list(MODEL_FEATURES)

    def estimate(model):
        chosen, _ = policy_hours(model, columns, uf, logs)
        return evaluate_policy(logs, chosen, status_quo_hour, n_boot=200, seed=settings.random_state)

    return estimate


def tune_profiles(msgs, users, as_of, settings: Settings, params: ShrinkageParams, say) -> ShrinkageParams:
    """The profile hyperparameters this history supports best (sendtime.training.shrinkage_search), on
    a sample of ``settings.tune_profile_users`` users, logged to the active MLflow run."""
    from sendtime.training.dataset import fit_windows
    from sendtime.training.shrinkage_search import choose_shrinkage

    if settings.tune_profile_users <= 0 or msgs.empty:
        return params
    last = as_of - pd.Timedelta(hours=settings.horizon_hours)
    labelled = msgs["send_ts"] < last
    if not labelled.any():
        return params
    validation, _ = fit_windows(msgs.loc[labelled, "send_ts"].min(), last, settings.validation_days, settings.snapshot_days)
    choice = choose_shrinkage(msgs, users, last - validation, as_of, params, settings.default_timezone,
                              max_users=settings.tune_profile_users, seed=settings.random_state, progress=say)
    mlflow.log_params(choice.as_params())
    if len(choice.scores):
        mlflow.log_table(choice.scores, "tuning/profile_hyperparameters.json")
    return choice.params


def choose_engine(setting: str, events_path: str | Path) -> str:
    """The feature engine for these inputs: DuckDB for typed Parquet (measured faster), else pandas."""
    if setting in ("pandas", "spark"):
        return setting
    from sendtime.features.duckdb_engine import usable

    why_not = usable(events_path)
    if why_not is None:
        return "duckdb"
    if setting == "duckdb":
        raise ValueError(f"SENDTIME_ENGINE=duckdb cannot read {events_path}: {why_not}")
    return "pandas"


BUCKET_ABOVE_EVENTS = 5_000_000  # larger histories are processed in user buckets (DuckDB engine)
EVENTS_PER_BUCKET = 5_000_000


def text_buckets(n_buckets: int, n_users: int, max_users: int) -> int:
    """How many user buckets to write with their text columns: enough to hold the training
    sample's ``max_users`` users (buckets are random shares of users, so one spare)."""
    per_bucket = max(n_users, 1) / max(n_buckets, 1)
    return int(min(n_buckets, np.ceil(max_users / max(per_bucket, 1.0)) + 1))


def training_messages(buckets: list, max_users: int, say: Callable[[str], None]) -> pd.DataFrame:
    """Messages of whole user buckets (each a random share of users, by hash) until they hold
    ``max_users`` users: the training sample, without ever loading the whole history. Only the
    buckets written with text columns (:func:`text_buckets`) are read."""
    parts, n = [], 0
    for load in buckets:
        part = load()
        parts.append(part)
        n += part["user_id"].nunique()
        if n >= max_users:
            break
    say(f"training messages from {len(parts)} of {len(buckets)} user buckets ({n:,} users)")
    # ordered by send time, then message id (unique): the same sample and the same model for the
    # same inputs, whatever order the engine's threads wrote the rows in
    return pd.concat(parts, ignore_index=True).sort_values(["send_ts", "message_id"], kind="stable").reset_index(drop=True)


def log_engagement_figures(msgs: pd.DataFrame, uf, metrics: dict, say: Callable[[str], None]) -> None:
    """The analysts' figures (notebooks/01, the HTML report), logged to the run for people who
    only open the MLflow UI. A figure that cannot be drawn is reported, never fatal."""
    from sendtime import analysis

    figures = {
        "plots/opens_by_local_hour.png": lambda: analysis.engagement_heatmap(msgs, "opens"),
        "plots/clicks_by_local_hour.png": lambda: analysis.engagement_heatmap(msgs, "clicks"),
        "plots/reading_profiles.png": lambda: analysis.profile_heatmap(uf.lam),
        "plots/machine_open_share.png": lambda: analysis.machine_open_share(msgs),
        "plots/time_to_open.png": lambda: analysis.time_to_open(msgs),
        "plots/history_length.png": lambda: analysis.history_length(msgs),
    }
    if analysis.ope_values(metrics) is not None:
        figures["plots/lift_over_status_quo.png"] = lambda: analysis.lift_with_interval(metrics)
    for name, draw in figures.items():
        try:
            mlflow.log_figure(draw(), name)
        except Exception as exc:  # a plot must never cost the night's publish
            say(f"could not draw {name}: {exc}")


class AlreadyDone(RuntimeError):
    """This as-of date was already run on the same inputs and published."""


def find_done_run(settings: Settings, fingerprint: str) -> str | None:
    """The run that already published these inputs, if its outputs are still the current ones."""
    runs = mlflow.search_runs(
        experiment_names=[settings.experiment],
        filter_string=f"tags.input_fingerprint = '{fingerprint}' and tags.published = 'true'",
        output_format="list", max_results=1, order_by=["attributes.start_time DESC"],
    )
    return runs[0].info.run_id if runs else None


def run_nightly(
    settings: Settings,
    events_path: str | Path,
    users_path: str | Path,
    as_of: pd.Timestamp,
    say: Callable[[str], None] = print,
    force: bool = False,
) -> NightlyResult:
    """One nightly run, holding the lock; idempotent for the same inputs unless ``force``."""
    for what, path in (("events", events_path), ("users", users_path)):
        if not Path(path).exists():
            raise ContractError(f"{what} file not found: {path}")
    settings.prepare()
    with nightly_lock(settings.home):
        return _run_nightly(settings, events_path, users_path, as_of, say, force)


def _run_nightly(settings, events_path, users_path, as_of, say, force) -> NightlyResult:
    t0 = time.time()
    configure(settings.tracking_uri, settings.registry_uri, settings.experiment, settings.artifact_root)
    fingerprint = input_fingerprint(Path(events_path), Path(users_path), as_of.isoformat(), settings)
    done = None if force else find_done_run(settings, fingerprint)
    if done:
        raise AlreadyDone(
            f"as-of {as_of.date()} was already run on identical inputs and settings (MLflow run {done}); "
            "nothing changed. Use --force to train again."
        )

    engine = choose_engine(settings.engine, events_path)
    skipped = data_files(events_path).ignored_summary()
    if skipped:
        say(skipped)
    us = read_users(users_path)
    bucket_dir, n_buckets, buckets = None, 0, None
    if engine == "spark":
        from sendtime.features.spark_engine import messages_spark, spark_session, stop_spark

        say(f"reading events from {events_path} (Spark engine, master {settings.spark_master})")
        pending = settings.runs_dir / f"rejects_events_{fingerprint[:12]}.csv"
        spark = spark_session(master=settings.spark_master)
        try:
            ev = messages_spark(spark, events_path, us.accepted, as_of, settings.default_timezone,
                                rejects_path=pending)
        finally:
            stop_spark(spark)
        say(ev.summary("events"))
        say(us.summary("users"))
        msgs = ev.messages
        if ev.events_before_cutoff == 0 or msgs.empty:
            raise ValueError(f"no sends before the as-of date {as_of.date()}: nothing to learn from")
        ignored = ev.n_accepted - ev.events_before_cutoff
    elif engine == "duckdb":
        from sendtime.features.duckdb_engine import build_messages_duckdb

        from sendtime.features.duckdb_engine import bucket_loaders, count_rows

        say(f"reading events from {events_path} (DuckDB engine)")
        pending = settings.runs_dir / f"rejects_events_{fingerprint[:12]}.csv"
        n_rows = count_rows(events_path)
        if n_rows > BUCKET_ABOVE_EVENTS:  # features bucket by bucket: memory bounded by one bucket
            bucket_dir = settings.runs_dir / f"buckets_{fingerprint[:12]}"
            shutil.rmtree(bucket_dir, ignore_errors=True)
            n_buckets = int(np.ceil(n_rows / EVENTS_PER_BUCKET))
            say(f"{n_rows:,} events: messages split into {n_buckets} user buckets")
        with_text = text_buckets(n_buckets, us.n_accepted, settings.max_train_users)
        ev = build_messages_duckdb(events_path, us.accepted, as_of, settings.default_timezone,
                                   rejects_path=pending, progress=say, temp_dir=settings.runs_dir / "duckdb-tmp",
                                   buckets=n_buckets, bucket_dir=bucket_dir,
                                   string_buckets=with_text)
        say(ev.summary("events"))
        say(us.summary("users"))
        if bucket_dir is not None:
            buckets = bucket_loaders(bucket_dir)
            msgs = training_messages([b for b in buckets if b.number < with_text], settings.max_train_users, say)
        else:
            msgs = ev.messages
        if ev.events_before_cutoff == 0 or msgs.empty:
            raise ValueError(f"no sends before the as-of date {as_of.date()}: nothing to learn from")
        ignored = ev.n_accepted - ev.events_before_cutoff
    else:
        say(f"reading events from {events_path}")
        ev = read_events(events_path)
        say(ev.summary("events"))
        say(us.summary("users"))
        events = ev.accepted.loc[ev.accepted["timestamp"] < as_of]
        if events.empty or not (events["event_type"] == "send").any():
            raise ValueError(f"no sends before the as-of date {as_of.date()}: nothing to learn from")
        ignored = len(ev.accepted) - len(events)
    if ignored:
        say(f"{ignored:,} accepted events at or after the as-of cutoff are not used")

    with mlflow.start_run(run_name=f"nightly {as_of.date()}") as run:
        run_dir = settings.runs_dir / run.info.run_id
        rejects = {}
        if ev.n_rejected and engine in ("duckdb", "spark"):
            run_dir.mkdir(parents=True, exist_ok=True)
            rejects["events"] = Path(shutil.move(str(ev.rejects_path), run_dir / "rejects_events.csv"))
        elif ev.n_rejected and engine == "pandas":
            rejects["events"] = write_rejects(ev, run_dir / "rejects_events.csv")
        if us.n_rejected:
            rejects["users"] = write_rejects(us, run_dir / "rejects_users.csv")
        for path in rejects.values():
            mlflow.log_artifact(str(path), artifact_path="rejects")
        mlflow.log_metrics({
            "events_read": ev.read, "events_accepted": ev.n_accepted, "events_rejected": ev.n_rejected,
            "users_read": us.read, "users_accepted": us.n_accepted, "users_rejected": us.n_rejected,
        })
        mlflow.set_tags({"as_of": as_of.isoformat(), "events_path": str(events_path), "input_fingerprint": fingerprint,
                         "feature_engine": engine})
        if engine == "duckdb":
            mlflow.log_metrics({f"engine_{k}_seconds": v for k, v in ev.timings.items()})

        say("building messages and training rows (point-in-time snapshots)")
        if engine == "pandas":
            msgs = build_messages(events, us.accepted, settings.default_timezone)
        params = ShrinkageParams(horizon_hours=settings.horizon_hours)
        # with user buckets, training sees the sampled buckets' users only
        train_users = us.accepted if buckets is None else us.accepted.loc[us.accepted["user_id"].isin(msgs["user_id"].unique())]
        params = tune_profiles(msgs, train_users, as_of, settings, params, say)
        sq_engine = getattr(ev, "status_quo_utc_hour", None)
        status_quo_hour = sq_engine if sq_engine is not None else int(msgs["send_ts"].dt.hour.mode().iloc[0])
        not_trained = None
        try:
            ts = build_training_set(
                msgs, train_users, as_of, settings.horizon_hours, settings.validation_days,
                settings.snapshot_days, settings.max_train_rows, settings.random_state,
                settings.default_timezone, params, progress=say, max_users=settings.max_train_users,
            )
            forest = ForestParams.from_settings(settings)
            off_policy = validation_off_policy(msgs, train_users, ts.validation_start, as_of, settings, params, status_quo_hour)
            result = train_and_register(
                ts, forest, settings.model_name, settings.gate_tolerance,
                extra_params={"horizon_hours": settings.horizon_hours, "as_of": as_of.date().isoformat()},
                progress=say, off_policy=off_policy,
                refit=refit_wanted(settings.refit, ts.validation_window, settings.validation_days),
            )
            say(("promoted" if result.decision.promoted else "not promoted") + f" v{result.model_version}: {result.decision.reason}")
        except HistoryTooShort as exc:  # a history of hours: no labelled send yet
            not_trained, result = str(exc), None
            mlflow.set_tags({"trained": "false", "not_trained_reason": not_trained})
            say(f"no model trained: {not_trained}")

        say("building serving features as of the cutoff and publishing")
        serve_params = champion_profile_params(settings)  # the features the champion was trained on
        if buckets is not None:
            uf = build_user_features_bucketed(buckets, us.accepted, as_of, params=serve_params,
                                              default_tz=settings.default_timezone, progress=say)
            shutil.rmtree(bucket_dir, ignore_errors=True)
        else:
            uf = build_user_features(msgs, us.accepted, as_of, params=serve_params, default_tz=settings.default_timezone)
        if uf.prior.machine is not None:
            mo = uf.prior.machine.summary()
            mlflow.log_metrics({f"machine_open_{k}": v for k, v in mo.items()})
            say(f"machine openers: {mo['machine_share']:.1%} of users with settled sends by the open-delay mixture "
                f"({int(mo['labelled_users']):,} users labelled by flags)")
        policy = "model"
        try:
            model, champ_version, columns = load_champion(settings.tracking_uri, settings.registry_uri, settings.model_name)
        except NotReady:
            if result is not None:
                raise
            # nothing registered and nothing trainable: the profiles' own probabilities, said so
            model, champ_version, columns, policy = ProfilePolicy(), PROFILE_POLICY, ["p_struct"], PROFILE_POLICY
            say("publishing the prior-only policy: each user's profile (shrunk to the population's rhythms) "
                "scores the hours until a model can be trained")
        scorer = Scorer(model=model, model_version=champ_version, input_columns=columns, features=uf)
        folder_name = f"{as_of.date().isoformat()}_{run.info.run_id[:12]}"
        staging = staging_folder(settings.published_dir, folder_name)
        say(f"scoring all 168 weekly slots of {len(uf.table):,} users with champion v{champ_version}")
        scorer.table = scorer.full_table()
        predictions = scorer.predict_day(as_of.date())
        manifest = {
            "as_of": as_of.isoformat(),
            "run_id": run.info.run_id,
            "model_name": settings.model_name,
            "model_version": champ_version,
            "trained_version": result.model_version if result is not None else None,
            "promoted": bool(result is not None and result.decision.promoted),
            "policy": policy,
            "not_trained": not_trained,
            "prediction_date": as_of.date().isoformat(),
            "users": int(len(uf.table)),
            "status_quo_utc_hour": status_quo_hour,
        }
        write_snapshot(staging, features=uf, scores=scorer.table, predictions=predictions, manifest=manifest)
        final = publish(settings.published_dir, staging, folder_name)
        mlflow.set_tag("published", "true")
        mlflow.log_dict(manifest, "published/manifest.json")
        log_engagement_figures(msgs, uf, mlflow.get_run(run.info.run_id).data.metrics, say)
        mlflow.log_metrics({
            "users_scored": len(predictions),
            "users_prior": int((predictions["source"] == "prior").sum()),
        })

    return NightlyResult(
        as_of=as_of, events=ev, users=us, run_id=run.info.run_id,
        model_version=result.model_version if result is not None else "", champion_version=champ_version,
        promoted=bool(result is not None and result.decision.promoted),
        reason=result.decision.reason if result is not None else f"not trained: {not_trained}",
        metrics=result.metrics if result is not None else {}, published=final, predictions=final / "predictions.parquet",
        rejects=rejects, seconds=time.time() - t0,
    )
