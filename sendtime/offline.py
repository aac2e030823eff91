"""`sendtime evaluate --logged`: the champion's policy judged on logged sends (off-policy)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from sendtime.features.activity import load_activity
from sendtime.features.contract import read_events, read_users
from sendtime.features.engagement import build_user_features, outcomes_at
from sendtime.features.message_extras import attach_extras, build_extras, channel_history
from sendtime.features.messages import build_messages
from sendtime.settings import Settings
from sendtime.serving.model_store import champion_profile_params, load_champion
from sendtime.training.dataset import objective_label
from sendtime.training.offpolicy import OffPolicyReport, evaluate_policy, logged_sends, policy_hours


def evaluate_logged(
    settings: Settings,
    events_path: str | Path,
    users_path: str | Path,
    since: pd.Timestamp,
    until: pd.Timestamp,
    status_quo_hour: int | None = None,
    say: Callable[[str], None] = print,
    activity_path: str | Path | None = None,
) -> OffPolicyReport:
    if until <= since:
        raise ValueError("--as-of must be after --since")
    ev, us = read_events(events_path), read_users(users_path)
    say(ev.summary("events"))
    events = ev.accepted.loc[ev.accepted["timestamp"] < until]
    msgs = build_messages(events, us.accepted, settings.default_timezone)
    if msgs["propensity"].notna().sum() == 0:
        raise ValueError("no send carries a propensity: log the propensity of each send to use --logged")
    model, version, columns = load_champion(settings.tracking_uri, settings.registry_uri, settings.model_name)
    say(f"policy: champion v{version}, features as of {since.date()}")
    act = load_activity(activity_path, us.accepted, settings.default_timezone, say) if activity_path is not None else None
    # the deployment's channel and objective, as its nightly saw them
    msgs = attach_extras(msgs, build_extras(events, msgs, settings.horizon_hours))
    msgs, act, _ = channel_history(msgs, settings.channel, us.accepted, settings.default_timezone, act)
    say(f"judged on the {settings.objective} objective, {settings.channel} sends")
    uf = build_user_features(msgs, us.accepted, since, champion_profile_params(settings), settings.default_timezone,
                             activity=act)
    reward = objective_label(outcomes_at(msgs, uf.rows_of(msgs["user_id"]), len(uf.table), until, settings.horizon_hours),
                             settings.objective, msgs, until, settings.horizon_hours)
    horizon = pd.Timedelta(hours=settings.horizon_hours)
    logs = logged_sends(msgs, reward, since, until - horizon)
    if len(logs) == 0:
        raise ValueError(f"no logged sends with propensities between {since.date()} and {until.date()} minus the horizon")
    say(f"scoring the policy on {len(logs):,} logged sends")
    chosen, _ = policy_hours(model, list(columns), uf, logs)
    sq = status_quo_hour if status_quo_hour is not None else int(msgs.loc[msgs["send_ts"] < since, "send_ts"].dt.hour.mode().iloc[0])
    return evaluate_policy(logs, chosen, sq, n_boot=500, seed=settings.random_state)
