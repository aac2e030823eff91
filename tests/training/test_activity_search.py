"""The activity's weight is learned, not set: activity that follows the users' rhythm is used
strongly, activity that has nothing to do with it is weighed away (strength inf)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sendtime.features.activity import build_activity, validate_activity
from sendtime.features.contract import validate_events, validate_users
from sendtime.features.messages import build_messages
from sendtime.features.profiles import ShrinkageParams
from sendtime.simulation.simulate import simulate_world, world_config
from sendtime.training.shrinkage_search import choose_shrinkage


def _choice(fidelity: float):
    w = simulate_world(world_config("activity", n_users=1500, days=56, seed=5, activity_fidelity=fidelity))
    ev, us = validate_events(w.events).accepted, validate_users(w.users).accepted
    act = build_activity(validate_activity(w.activity).accepted, us)
    end = w.config.end_ts
    return choose_shrinkage(build_messages(ev, us), us, end - pd.Timedelta(days=15), end, ShrinkageParams(),
                            max_users=1500, activity=act)


def test_the_search_uses_faithful_activity_and_ignores_activity_unrelated_to_reading():
    faithful, unrelated = _choice(0.8), _choice(0.0)
    assert faithful.activity_searched and unrelated.activity_searched
    assert faithful.params.activity_strength <= ShrinkageParams().activity_strength  # at least the default's pull
    assert unrelated.params.activity_strength == np.inf
    assert set(faithful.as_params()) >= {"chosen_activity_strength"}
    s = faithful.scores.dropna(subset=["activity_strength"])
    off = s.loc[np.isinf(s["activity_strength"]), "loglik"].max()
    assert s["loglik"].max() > off + 0.003  # the held-out weeks say by how much it helps
