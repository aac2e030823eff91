"""The nightly run: validate, build features, train, gate and promote, publish predictions.

Outputs are published atomically: everything is written into a fresh folder under
``published/`` and only then does ``published/CURRENT`` move to it, so a run killed halfway
leaves the previous snapshot being served.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import mlflow
import numpy as np
import pandas as pd

from sendtime import analysis
from sendtime.dates import parse_iso_date
from sendtime.features.activity import build_activity, read_activity
from sendtime.features.contract import ContractError, ReadResult, read_users, write_rejects
from sendtime.features.definitions import MODEL_FEATURES
from sendtime.features.engagement import build_user_features, build_user_features_bucketed, outcomes_at
from sendtime.features.engines import MessageTable, build_message_table, choose_engine
from sendtime.features.inputs import data_files
from sendtime.features.order_values import order_values
from sendtime.features.message_extras import attach_extras, build_extras, channel_history, extras_events
from sendtime.features.profiles import ShrinkageParams
from sendtime.features.store import PROFILES
from sendtime.runguard import input_fingerprint, nightly_lock
from sendtime.settings import Settings
from sendtime.serving.event_store import EventStore
from sendtime.serving.model_store import champion_profile_params, load_champion
from sendtime.serving.snapshots import FEATURES, ORDER_VALUES, PREDICTIONS, SCORES, NotReady, publish, staging_folder, write_snapshot
from sendtime.serving.scoring import PROFILE_POLICY, ProfilePolicy, Scorer
from sendtime.training.dataset import HistoryTooShort, build_training_set, fit_windows, objective_label, sample_users
from sendtime.training.offpolicy import evaluate_policy, logged_sends, policy_hours
from sendtime.training.model import ForestParams
from sendtime.training.negative_risk import fit_negative_risk, risk_figure
from sendtime.training.registry import configure
from sendtime.training.shrinkage_search import choose_shrinkage
from sendtime.training.train import refit_wanted, train_and_register

#: from this many users the score table's pass says how far it is (each tenth)
PROGRESS_USERS = 200_000


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
    return parse_iso_date(text, "--as-of")


def validation_off_policy(msgs, users, validation_start, as_of, settings: Settings, params, status_quo_hour: int,
                          max_contexts: int = 20_000, min_matched: int = 50, activity: pd.DataFrame | None = None):
    """A function scoring a model's policy on the validation weeks' randomized logs, or None.

    Features are frozen at the start of the validation weeks, so the policy only knows what it
    would have known then. Returns None when the history holds no propensities.
    """
    msgs, users = sample_users(msgs, users, settings.max_train_users, settings.random_state)
    horizon = pd.Timedelta(hours=settings.horizon_hours)
    val = msgs.loc[(msgs["send_ts"] >= validation_start) & (msgs["send_ts"] < as_of - horizon)]
    if val["propensity"].notna().sum() < 100 or (val["propensity"] < 0.5).sum() < min_matched:
        return None
    uf = build_user_features(msgs, users, validation_start, params=params, default_tz=settings.default_timezone,
                             activity=activity)
    uidx = uf.rows_of(msgs["user_id"])
    reward = objective_label(outcomes_at(msgs, uidx, len(uf.table), as_of, settings.horizon_hours), settings.objective,
                             msgs, as_of, settings.horizon_hours)
    logs = logged_sends(msgs, reward, validation_start, as_of - horizon)
    if len(logs) > max_contexts:
        logs = logs.take(np.random.default_rng(settings.random_state).choice(len(logs), max_contexts, replace=False))
    columns = list(MODEL_FEATURES)

    def estimate(model):
        chosen, _ = policy_hours(model, columns, uf, logs)
        return evaluate_policy(logs, chosen, status_quo_hour, n_boot=200, seed=settings.random_state)

    return estimate


def tune_profiles(msgs, users, as_of, settings: Settings, params: ShrinkageParams, say,
                  activity: pd.DataFrame | None = None) -> ShrinkageParams:
    """The profile hyperparameters this history supports best (sendtime.training.shrinkage_search), on
    a sample of ``settings.tune_profile_users`` users, logged to the active MLflow run."""
    if settings.tune_profile_users <= 0 or msgs.empty:
        return params
    last = as_of - pd.Timedelta(hours=settings.horizon_hours)
    labelled = msgs["send_ts"] < last
    if not labelled.any():
        return params
    validation, _ = fit_windows(msgs.loc[labelled, "send_ts"].min(), last, settings.validation_days, settings.snapshot_days)
    choice = choose_shrinkage(msgs, users, last - validation, as_of, params, settings.default_timezone,
                              max_users=settings.tune_profile_users, seed=settings.random_state, progress=say,
                              activity=activity)
    mlflow.log_params(choice.as_params())
    if len(choice.scores):
        mlflow.log_table(choice.scores, "tuning/profile_hyperparameters.json")
    return choice.params


def log_engagement_figures(msgs: pd.DataFrame, uf, metrics: dict, say: Callable[[str], None]) -> None:
    """The analysts' figures (notebooks/01, the HTML report), logged to the run for people who
    only open the MLflow UI. A figure that cannot be drawn is reported, never fatal."""
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


def roll_intake_log(settings: Settings, events_path: str | Path, say: Callable[[str], None]) -> None:
    """Reading this home's webhook inbox: roll the event log's sealed segments into it first
    (what a running server still writes comes in the next run)."""
    store = EventStore(settings.home / "events")
    try:
        if Path(events_path).resolve() != store.inbox.resolve() or not store.wal.is_dir():
            return
        got = store.roll()
    except OSError as exc:
        say(f"could not roll the event log first ({exc}); reading the inbox as it is")
        return
    if got is not None and got.segments:
        say(f"rolled the event log into the inbox first: {got.written:,} events from {got.segments} segment(s)")


def run_nightly(
    settings: Settings,
    events_path: str | Path,
    users_path: str | Path,
    as_of: pd.Timestamp,
    say: Callable[[str], None] = print,
    force: bool = False,
    activity_path: str | Path | None = None,
) -> NightlyResult:
    """One nightly run, holding the lock; idempotent for the same inputs unless ``force``.
    ``activity_path``: sessions, app opens, page views, purchases (sendtime.features.activity)."""
    roll_intake_log(settings, events_path, say)
    for what, path in (("events", events_path), ("users", users_path), ("activity", activity_path)):
        if path is not None and not Path(path).exists():
            raise ContractError(f"{what} file not found: {path}")
    settings.prepare()
    with nightly_lock(settings.home):
        return _run_nightly(settings, events_path, users_path, as_of, say, force, activity_path)


def _run_nightly(settings, events_path, users_path, as_of, say, force, activity_path=None) -> NightlyResult:
    """The night as named steps (each below is one, testable on its own)."""
    t0 = time.time()
    configure(settings.tracking_uri, settings.registry_uri, settings.experiment, settings.artifact_root)
    fingerprint = check_not_done(settings, events_path, users_path, as_of, force, activity_path)
    us, tab = read_inputs(settings, events_path, users_path, as_of, fingerprint, say)
    with mlflow.start_run(run_name=f"nightly {as_of.date()}") as run:
        rejects = log_inputs(settings, run.info.run_id, events_path, as_of, fingerprint, us, tab)
        activity = read_activity_input(settings, run.info.run_id, activity_path, us, tab, as_of, rejects, say)
        tab.messages, activity = message_extras_step(settings, tab, events_path, us, as_of, activity, say)
        risk = negative_risk_step(settings, tab.messages, as_of, say)
        train_users = training_users(us, tab)
        params = tune_profiles(tab.messages, train_users, as_of, settings,
                               ShrinkageParams(horizon_hours=settings.horizon_hours), say, activity)
        status_quo_hour = settings.status_quo_utc_hour
        if status_quo_hour is None:
            status_quo_hour = tab.status_quo_utc_hour  # every engine counts it (features.messages.status_quo_hour)
        result, not_trained = train(settings, tab.messages, train_users, as_of, params, status_quo_hour, say, activity)
        uf = serving_features(settings, tab, us, as_of, say, activity)
        scorer, policy = champion_scorer(settings, uf, trained=result is not None, say=say)
        final, predictions = publish_snapshot(settings, run.info.run_id, scorer, as_of, result, policy, not_trained,
                                              status_quo_hour, say, risk, tab.messages)
        log_engagement_figures(tab.messages, uf, mlflow.get_run(run.info.run_id).data.metrics, say)
        mlflow.log_metrics({"users_scored": predictions["users"], "users_prior": predictions["prior"]})

    return NightlyResult(
        as_of=as_of, events=tab.events, users=us, run_id=run.info.run_id,
        model_version=result.model_version if result is not None else "", champion_version=scorer.model_version,
        promoted=bool(result is not None and result.decision.promoted),
        reason=result.decision.reason if result is not None else f"not trained: {not_trained}",
        metrics=result.metrics if result is not None else {}, published=final, predictions=final / PREDICTIONS,
        rejects=rejects, seconds=time.time() - t0,
    )


def check_not_done(settings: Settings, events_path, users_path, as_of: pd.Timestamp, force: bool,
                   activity_path=None) -> str:
    """The inputs' fingerprint; :class:`AlreadyDone` if they were already run and published."""
    fingerprint = input_fingerprint(Path(events_path), Path(users_path), as_of.isoformat(), settings,
                                    activity=Path(activity_path) if activity_path is not None else None)
    done = None if force else find_done_run(settings, fingerprint)
    if done:
        raise AlreadyDone(
            f"as-of {as_of.date()} was already run on identical inputs and settings (MLflow run {done}); "
            "nothing changed. Use --force to train again."
        )
    return fingerprint


def read_inputs(settings: Settings, events_path, users_path, as_of: pd.Timestamp, fingerprint: str,
                say: Callable[[str], None]) -> tuple[ReadResult, MessageTable]:
    """Validate users and events and build the message table (whichever engine the setting picks)."""
    engine = choose_engine(settings.engine, events_path)
    skipped = data_files(events_path).ignored_summary()
    if skipped:
        say(skipped)
    us = read_users(users_path)
    tab = build_message_table(engine, events_path, us.accepted, as_of, settings, fingerprint[:12], say)
    say(tab.events.summary("events"))
    say(us.summary("users"))
    if tab.ignored:
        say(f"{tab.ignored:,} accepted events at or after the as-of cutoff are not used")
    return us, tab


def log_inputs(settings: Settings, run_id: str, events_path, as_of: pd.Timestamp, fingerprint: str,
               us: ReadResult, tab: MessageTable) -> dict[str, Path]:
    """The rejects files, input counts, tags and engine timings, logged to the run."""
    run_dir = settings.runs_dir / run_id
    ev, rejects = tab.events, {}
    saved = tab.save_rejects(run_dir / "rejects_events.csv")
    if saved is not None:
        rejects["events"] = saved
    if us.n_rejected:
        rejects["users"] = write_rejects(us, run_dir / "rejects_users.csv")
    for path in rejects.values():
        mlflow.log_artifact(str(path), artifact_path="rejects")
    mlflow.log_metrics({
        "events_read": ev.read, "events_accepted": ev.n_accepted, "events_rejected": ev.n_rejected,
        "users_read": us.read, "users_accepted": us.n_accepted, "users_rejected": us.n_rejected,
    })
    mlflow.set_tags({"as_of": as_of.isoformat(), "events_path": str(events_path), "input_fingerprint": fingerprint, "feature_engine": tab.engine})
    if tab.timings:
        mlflow.log_metrics({f"engine_{k}_seconds": v for k, v in tab.timings.items()})
    return rejects


def read_activity_input(settings: Settings, run_id: str, activity_path, us: ReadResult, tab: MessageTable,
                        as_of: pd.Timestamp, rejects: dict[str, Path], say: Callable[[str], None]) -> pd.DataFrame | None:
    """The activity table (validated, each row's local hour-of-week), its counts and rejects
    logged; None without one, or when the feature build runs in user buckets (it does not read
    activity yet, and training and serving must see the same evidence)."""
    if activity_path is None:
        return None
    if tab.buckets is not None:
        say("activity is not used: the bucketed feature build (large histories) does not read it yet")
        mlflow.set_tags({"activity_used": "false", "activity_not_used_reason": "bucketed feature build"})
        return None
    act = read_activity(activity_path)
    say(act.summary("activity"))
    if act.n_rejected:
        rejects["activity"] = write_rejects(act, settings.runs_dir / run_id / "rejects_activity.csv")
        mlflow.log_artifact(str(rejects["activity"]), artifact_path="rejects")
    accepted = act.accepted.loc[act.accepted["timestamp"] < as_of]
    mlflow.log_metrics({"activity_read": act.read, "activity_accepted": act.n_accepted, "activity_rejected": act.n_rejected,
                        "activity_users": int(accepted["user_id"].nunique())})
    mlflow.set_tags({"activity_used": "true", "activity_path": str(activity_path)})
    return build_activity(accepted, us.accepted, settings.default_timezone)


def message_extras_step(settings: Settings, tab: MessageTable, events_path, us: ReadResult, as_of: pd.Timestamp,
                        activity: pd.DataFrame | None, say: Callable[[str], None]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The messages with their channel, conversions and unsubscribes attached, kept to the
    served channel; the other channels' opens join the activity evidence. Returns (messages,
    activity)."""
    ev = extras_events(tab.events, events_path, as_of, say)
    extras = build_extras(ev, tab.messages, settings.horizon_hours)
    if extras.note:
        say(extras.note)
    msgs = attach_extras(tab.messages, extras)
    channels = extras.channels
    mlflow.log_params({"channel": settings.channel, "unsubscribe_penalty": settings.unsubscribe_penalty})
    mlflow.log_metrics({f"sends_{c}": n for c, n in channels.items()})
    if settings.objective in ("conversion", "value"):
        n_conv = int(msgs["t_conversion"].notna().sum())
        mlflow.log_metric("conversions", n_conv)
        if not n_conv:
            raise ContractError(f"SENDTIME_OBJECTIVE={settings.objective}, but the history holds no conversion event "
                                "(event_type conversion, with the message_id of the send it is attributed to)")
        if settings.objective == "value" and not (msgs["conversion_value"] > 0).any():
            raise ContractError("SENDTIME_OBJECTIVE=value, but no conversion carries a value (the value column): "
                                "use SENDTIME_OBJECTIVE=conversion, or export the orders' values")
    if len(channels) == 1 and settings.channel in channels:
        return msgs, activity
    if tab.buckets is not None:
        say(f"channels {channels}: the bucketed feature build does not split channels yet; all sends are used")
        return msgs, activity
    try:
        served, activity, n_evidence = channel_history(msgs, settings.channel, us.accepted, settings.default_timezone,
                                                       activity)
    except ValueError as exc:
        raise ContractError(str(exc)) from None
    say(f"channel {settings.channel}: {len(served):,} of {len(msgs):,} sends; the other channels' "
        f"{n_evidence:,} opens join the activity evidence")
    mlflow.log_metric("other_channel_opens", n_evidence)
    if n_evidence:
        mlflow.set_tags({"activity_used": "true"})
    return served, activity


def negative_risk_step(settings: Settings, msgs: pd.DataFrame, as_of: pd.Timestamp, say: Callable[[str], None]):
    """The unsubscribe-or-complaint risk by local delivery hour, logged (metrics, table, figure)."""
    risk = fit_negative_risk(msgs, as_of, settings.horizon_hours)
    mlflow.log_metrics(risk.as_metrics())
    mlflow.log_table(risk.frame(), "negative_risk/by_local_hour.json")
    if risk.negatives.sum():
        try:
            mlflow.log_figure(risk_figure(risk), "plots/unsubscribe_risk_by_hour.png")
        except Exception as exc:  # a plot must never cost the night's publish
            say(f"could not draw the unsubscribe risk: {exc}")
        say(f"unsubscribes and complaints: {int(risk.negatives.sum()):,} of {int(risk.sends.sum()):,} sends; "
            f"by local delivery hour {risk.by_local_hour.min():.2%} to {risk.by_local_hour.max():.2%} (shrunk)")
    return risk


def training_users(us: ReadResult, tab: MessageTable) -> pd.DataFrame:
    """The users training sees: all of them, or with user buckets the sampled buckets' users."""
    if tab.buckets is None:
        return us.accepted
    return us.accepted.loc[us.accepted["user_id"].isin(tab.messages["user_id"].unique())]


def train(settings: Settings, msgs: pd.DataFrame, train_users: pd.DataFrame, as_of: pd.Timestamp,
          params: ShrinkageParams, status_quo_hour: int, say: Callable[[str], None], activity: pd.DataFrame | None = None):
    """Training rows, the forests, the gate: (TrainResult, None), or (None, why) when the
    history holds no labelled send yet (the night then publishes the prior-only policy)."""
    say("building training rows (point-in-time snapshots)")
    try:
        ts = build_training_set(
            msgs, train_users, as_of, settings.horizon_hours, settings.validation_days,
            settings.snapshot_days, settings.max_train_rows, settings.random_state,
            settings.default_timezone, params, progress=say, max_users=settings.max_train_users, activity=activity,
            objective=settings.objective,
        )
        off_policy = validation_off_policy(msgs, train_users, ts.validation_start, as_of, settings, params, status_quo_hour,
                                           activity=activity)
        result = train_and_register(
            ts, ForestParams.from_settings(settings), settings.model_name, settings.gate_tolerance,
            extra_params={"horizon_hours": settings.horizon_hours, "as_of": as_of.date().isoformat(),
                          "objective": settings.objective},
            progress=say, off_policy=off_policy,
            refit=refit_wanted(settings.refit, ts.validation_window, settings.validation_days),
        )
    except HistoryTooShort as exc:  # a history of hours: no labelled send yet
        mlflow.set_tags({"trained": "false", "not_trained_reason": str(exc)})
        say(f"no model trained: {exc}")
        return None, str(exc)
    say(("promoted" if result.decision.promoted else "not promoted") + f" v{result.model_version}: {result.decision.reason}")
    return result, None


def serving_features(settings: Settings, tab: MessageTable, us: ReadResult, as_of: pd.Timestamp,
                     say: Callable[[str], None], activity: pd.DataFrame | None = None):
    """Every user's features as of the cutoff, with the profile settings the champion was trained on."""
    say("building serving features as of the cutoff and publishing")
    serve_params = champion_profile_params(settings)
    if tab.buckets is not None:  # a large history: its profiles go to a work file (see publish_snapshot)
        uf = build_user_features_bucketed(tab.buckets, us.accepted, as_of, params=serve_params,
                                          default_tz=settings.default_timezone, progress=say,
                                          profiles_path=work_profiles(settings, tab))
        tab.close()
    else:
        uf = build_user_features(tab.messages, us.accepted, as_of, params=serve_params,
                                 default_tz=settings.default_timezone, activity=activity)
    if uf.prior.machine is not None:
        mo = uf.prior.machine.summary()
        mlflow.log_metrics({f"machine_open_{k}": v for k, v in mo.items()})
        say(f"machine openers: {mo['machine_share']:.1%} of users with settled sends by the open-delay mixture "
            f"({int(mo['labelled_users']):,} users labelled by flags)")
    return uf


def work_profiles(settings: Settings, tab: MessageTable) -> Path:
    """Where a bucketed build writes its profiles before the snapshot they belong to exists."""
    return settings.runs_dir / f"{tab.bucket_dir.name}.profiles.npy"


def champion_scorer(settings: Settings, uf, trained: bool, say: Callable[[str], None]) -> tuple[Scorer, str]:
    """The champion over these features, or (nothing registered, nothing trainable) the
    profiles' own probabilities, said so: (scorer, policy)."""
    try:
        model, version, columns = load_champion(settings.tracking_uri, settings.registry_uri, settings.model_name)
        policy = "model"
    except NotReady:
        if trained:
            raise
        model, version, columns, policy = ProfilePolicy(), PROFILE_POLICY, ["p_struct"], PROFILE_POLICY
        say("publishing the prior-only policy: each user's profile (shrunk to the population's rhythms) "
            "scores the hours until a model can be trained")
    return Scorer(model=model, model_version=version, input_columns=columns, features=uf,
                  compiled=settings.compiled_scoring), policy


def publish_snapshot(settings: Settings, run_id: str, scorer: Scorer, as_of: pd.Timestamp, result, policy: str,
                     not_trained: str | None, status_quo_hour: int, say: Callable[[str], None], risk=None,
                     tab_messages: pd.DataFrame | None = None):
    """Score every user's 168 slots, predict the as-of day, write and publish the snapshot:
    (published folder, {"users": scored, "prior": answered by the prior})."""
    uf = scorer.features
    folder_name = f"{as_of.date().isoformat()}_{run_id[:12]}"
    staging = staging_folder(settings.published_dir, folder_name)
    say(f"scoring all 168 weekly slots of {len(uf.table):,} users with champion v{scorer.model_version}")
    # written into the snapshot's file as it is scored, and read back through a map: at ten
    # million users the float table is 6.7 GB, which need not stay in memory
    table = np.lib.format.open_memmap(staging / SCORES, mode="w+", dtype=np.float32, shape=(len(uf.table), 168))
    t0 = time.perf_counter()
    scorer.full_table(out=table, progress=say if len(uf.table) >= PROGRESS_USERS else None)
    del table
    took = time.perf_counter() - t0
    say(f"score table written in {took:.0f} s ({168 * len(uf.table) / max(took, 1e-9):,.0f} slot rows/s); writing predictions")
    scorer.table = np.load(staging / SCORES, mmap_mode="r")
    predictions = scorer.write_predictions(as_of.date(), staging / PREDICTIONS)
    say(f"predictions for {as_of.date()} written ({predictions['users']:,} users); writing the snapshot")
    manifest = {
        "as_of": as_of.isoformat(),
        "run_id": run_id,
        "model_name": settings.model_name,
        "objective": settings.objective,
        "channel": settings.channel,
        "negative_risk_by_local_hour": [float(x) for x in risk.by_local_hour] if risk is not None else None,
        "unsubscribe_penalty": settings.unsubscribe_penalty,
        "model_version": scorer.model_version,
        "trained_version": result.model_version if result is not None else None,
        "promoted": bool(result is not None and result.decision.promoted),
        "policy": policy,
        "not_trained": not_trained,
        "prediction_date": as_of.date().isoformat(),
        "users": int(len(uf.table)),
        "status_quo_utc_hour": status_quo_hour,
    }
    values = None
    if settings.objective == "value":  # what a conversion of each user is worth
        ov = order_values(tab_messages, uf.table.index, as_of, settings.horizon_hours)
        ov.frame().to_parquet(staging / ORDER_VALUES, index=False)
        values = ov.frame().set_index("user_id")["order_value"].reindex(uf.table.index).fillna(ov.population).to_numpy()
        manifest["order_value_population"] = ov.population
        mlflow.log_metrics({"order_value_population": ov.population, "order_value_between_sd": ov.between_var ** 0.5,
                            "order_value_within_sd": ov.within_var ** 0.5, "users_with_orders": int((ov.orders > 0).sum())})
        say(f"expected order value: population {ov.population:.2f}; {int((ov.orders > 0).sum()):,} users with orders of their own")
    # what a user the snapshot does not know gets, in every zone a request may name: scored now,
    # so the service never runs the forest for them
    priors = scorer.published_priors(settings.default_timezone)
    built = getattr(uf.lam, "filename", None)
    if built is not None and Path(built).resolve().parent == Path(settings.runs_dir).resolve():  # a work file: moved in
        (staging / FEATURES).mkdir(parents=True, exist_ok=True)
        os.replace(built, staging / FEATURES / PROFILES)
        uf.lam = np.load(staging / FEATURES / PROFILES, mmap_mode="r")
    write_snapshot(staging, features=uf, scores=scorer.table, manifest=manifest,
                   priors=priors, order_value=values, input_columns=list(scorer.input_columns))
    say("feature snapshot, score table and serving table written")
    final = publish(settings.published_dir, staging, folder_name)
    mlflow.set_tag("published", "true")
    mlflow.log_dict(manifest, "published/manifest.json")
    return final, predictions
