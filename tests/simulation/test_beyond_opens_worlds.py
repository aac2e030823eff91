"""The simulator's worlds beyond opens: conversions with values, unsubscribes at night, push."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sendtime.simulation.simulate import night_hours, shop_factor, simulate_world, world_config


def _truth_at_sends(w, column):
    t = w.truth.set_index(["user_id", "how"])[column]
    mt = w.message_truth
    return t.reindex(pd.MultiIndex.from_arrays([mt["user_id"], mt["how"]])).to_numpy()


def test_conversions_are_drawn_with_the_true_probabilities_and_carry_values():
    w = simulate_world(world_config("shoppers", n_users=3000, days=60, seed=3))
    mt = w.message_truth
    p = _truth_at_sends(w, "p_conversion")
    n_conv = int(mt["converted"].sum())
    assert n_conv > 400
    # the conversions of the sends agree with the truth they were drawn from (3 standard errors)
    assert abs(n_conv - p.sum()) < 3 * np.sqrt(p.sum()) + 0.01 * p.sum()
    conv = w.events.loc[w.events["event_type"] == "conversion"]
    assert (conv["value"] > 0).all() and (conv["currency"] == "USD").all()
    assert w.events.loc[w.events["event_type"] != "conversion", "value"].isna().all()
    # evenings and weekends sell: the true conversion peaks differ from the open peaks for some users
    f = shop_factor(w.config)
    assert abs(f.mean() - 1) < 1e-12 and f.max() == 2.5
    tp = w.truth.pivot(index="user_id", columns="how", values=["p_open", "p_conversion"])
    assert (tp["p_open"].to_numpy().argmax(1) != tp["p_conversion"].to_numpy().argmax(1)).mean() > 0.2


def test_night_deliveries_raise_unsubscribes_as_the_truth_says():
    w = simulate_world(world_config("night-unsub", n_users=3000, days=60, seed=4))
    mt = w.message_truth.loc[~w.message_truth["bounced"]]
    night = night_hours()[mt["how"].to_numpy()]
    rate_night, rate_day = mt.loc[night, "unsubscribed"].mean(), mt.loc[~night, "unsubscribed"].mean()
    assert rate_night > 10 * rate_day and abs(rate_night - 0.02) < 0.006
    kinds = w.events["event_type"].value_counts()
    assert kinds["complaint"] > 0 and kinds["unsubscribe"] > kinds["complaint"]
    t = w.truth
    assert t.loc[night_hours()[t["how"].to_numpy()], "p_unsubscribe"].min() > 0.02


def test_push_sends_are_tapped_on_the_phones_rhythm_without_machine_opens():
    w = simulate_world(world_config("push", n_users=3000, days=60, seed=5))
    ev = w.events
    sends = ev.loc[ev["event_type"] == "send"]
    assert 0.35 < (sends["channel"] == "push").mean() < 0.65
    push_ids = set(sends.loc[sends["channel"] == "push", "message_id"])
    push_opens = ev.loc[(ev["event_type"] == "open") & ev["message_id"].isin(push_ids)]
    assert (push_opens["machine_open"] == False).all()  # noqa: E712 - a receipt of a tap
    assert not ev.loc[(ev["event_type"] == "click") & ev["message_id"].isin(push_ids)].shape[0]
    mt = w.message_truth
    push = (mt["channel"] == "push").to_numpy() & ~mt["bounced"].to_numpy()
    p = _truth_at_sends(w, "p_push")[push]
    taps = int(mt.loc[push, "human_open"].sum())
    assert abs(taps - p.sum()) < 3 * np.sqrt(p.sum()) + 0.01 * p.sum()
    # the phone's rhythm is not the inbox's: best hours differ for many users
    tp = w.truth.pivot(index="user_id", columns="how", values=["p_open", "p_push"])
    assert (tp["p_open"].to_numpy().argmax(1) != tp["p_push"].to_numpy().argmax(1)).mean() > 0.3


def test_the_new_knobs_leave_the_other_worlds_as_they_were():
    a = simulate_world(world_config("default", n_users=300, days=20, seed=9))
    assert "channel" not in a.events and "value" not in a.events
    assert set(a.events["event_type"]) <= {"send", "open", "click", "bounce", "unsubscribe"}
