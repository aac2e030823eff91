"""Features declared once, typed and versioned (in the spirit of a Feast feature repo).

``USER_FEATURES`` are computed per user as of a cutoff from events strictly before it.
``REQUEST_FEATURES`` depend on the candidate send slot, which only exists at request time
(or, for training rows, at the historical send). The model's input columns are exactly
``MODEL_FEATURES``, in this order; the list travels with the model as its MLflow signature.
"""

from __future__ import annotations

from dataclasses import dataclass

FEATURE_SET_VERSION = "v2"  # v2: p_struct_week


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str
    description: str


USER_FEATURES: tuple[Feature, ...] = (
    Feature("sends_7d", "float32", "messages sent in the 7 days before the cutoff"),
    Feature("sends_28d", "float32", "messages sent in the 28 days before the cutoff"),
    Feature("sends_90d", "float32", "messages sent in the 90 days before the cutoff"),
    Feature("human_opens_28d", "float32", "messages opened by a human within the horizon, 28 days"),
    Feature("human_opens_90d", "float32", "messages opened by a human within the horizon, 90 days"),
    Feature("clicks_90d", "float32", "messages clicked, 90 days"),
    Feature("open_rate_28d", "float32", "smoothed human open rate, 28 days"),
    Feature("open_rate_90d", "float32", "smoothed human open rate, 90 days"),
    Feature("click_rate_90d", "float32", "smoothed click rate, 90 days"),
    Feature("days_since_send", "float32", "days since the last send (999 if none)"),
    Feature("days_since_open", "float32", "days since the last human open (999 if none)"),
    Feature("days_since_click", "float32", "days since the last click (999 if none)"),
    Feature("tenure_days", "float32", "days since the first send"),
    Feature("fast_open_share", "float32", "share of sends opened within minutes of delivery"),
    Feature("is_machine_opener", "float32", "1 if the user's opens look like Apple MPP"),
    Feature("level_ratio", "float32", "opens seen vs opens the group profile predicts"),
    Feature("confidence", "float32", "how much of the profile is the user's own evidence (0-1)"),
)

REQUEST_FEATURES: tuple[Feature, ...] = (
    Feature("cand_hour", "float32", "candidate local hour of day (request-time)"),
    Feature("cand_weekday", "float32", "candidate local weekday, Monday=0 (request-time)"),
    Feature("cand_weekend", "float32", "1 if the candidate local day is Saturday or Sunday"),
    Feature("act_0", "float32", "user's activity rate in the candidate hour"),
    Feature("act_3", "float32", "decayed activity over the 3 hours from the candidate"),
    Feature("act_6", "float32", "decayed activity over the 6 hours from the candidate"),
    Feature("act_24", "float32", "decayed activity over the horizon from the candidate"),
    Feature("p_struct", "float32", "1 - exp(-act_24): structural open probability"),
    Feature("act_rel", "float32", "act_24 relative to the user's best slot of the week"),
    Feature("act_rel_day", "float32", "act_24 relative to the user's best slot of the same local day"),
)

#: per user, derived from the profile when rows are built; the same at every candidate hour
PROFILE_SUMMARY_FEATURES: tuple[Feature, ...] = (
    Feature("p_struct_week", "float32", "p_struct averaged over the 168 hours of the week: the profile's level"),
)

MODEL_FEATURES: tuple[str, ...] = tuple(f.name for f in USER_FEATURES + REQUEST_FEATURES + PROFILE_SUMMARY_FEATURES)
#: the hour-blind model's inputs: everything that does not depend on the candidate hour
HOUR_BLIND_FEATURES: tuple[str, ...] = tuple(f.name for f in USER_FEATURES + PROFILE_SUMMARY_FEATURES)
USER_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in USER_FEATURES)
