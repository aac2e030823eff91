"""Which of a machine opener's opens is the proxy's fetch and which the person's
(features/outcomes.py::human_unflagged_open): learned from each user's own fetches and clicks,
so a human open before a fetch that waits for the night counts, and so does one after it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sendtime.features.contract import validate_events, validate_users
from sendtime.features.messages import NAT, OUTCOME_COLUMNS, build_messages, micros, micros_of
from sendtime.features.outcomes import human_unflagged_open, outcomes_at
from sendtime.simulation.evaluate import machine_open_report
from sendtime.simulation.simulate import simulate_world, world_config

H = 3_600_000_000
DAY0 = micros_of(pd.Timestamp("2026-03-02 12:00", tz="UTC"))  # a Monday, 12:00 UTC


def _messages(rows):
    """rows: (user, day, opens as hours after the 12:00 send, click hour or None)."""
    n = len(rows)
    send = np.array([DAY0 + d * 24 * H for _, d, _, _ in rows], np.int64)
    t = {c: np.full(n, NAT, np.int64) for c in OUTCOME_COLUMNS}
    for i, (_, _, opens, click) in enumerate(rows):
        x = sorted(send[i] + int(o * H) for o in opens)
        fast = [v for v in x if v - send[i] <= H // 6]
        slow = [v for v in x if v - send[i] > H // 6]
        t["t_open_unk_fast"][i] = fast[0] if fast else NAT
        t["t_open_unk_slow"][i] = slow[0] if slow else NAT
        t["t_open_unk_next"][i] = x[1] if len(x) > 1 else NAT
        t["t_click"][i] = send[i] + int(click * H) if click is not None else NAT
    how = np.array([(d % 7) * 24 + 12 for _, d, _, _ in rows], np.int64)
    return send, how, t, np.array([u for u, _, _, _ in rows], np.int64)


def test_the_fetch_is_the_open_that_looks_like_the_users_own_fetches():
    # user 0's proxy fetches at 03:00 (15 h after a noon send) and they click around 13:30;
    # user 1 is a human; user 2 is a machine opener with no pattern yet
    history = [(0, d, [15.0], None) for d in range(10)] + [(0, 10 + d, [15.0, 1.4], 1.5) for d in range(5)]
    asked = [(0, 20, [1.5, 15.0], None),   # the person before the night's fetch
             (0, 21, [15.0, 21.0], None),  # the fetch, then the person at 09:00
             (0, 22, [15.0], None),        # the fetch alone
             (1, 20, [0.01, 3.0], None),   # a human's first open counts, however fast
             (2, 20, [2.0, 5.0], None)]    # no pattern: the first open is the fetch
    send, how, t, uidx = _messages(history + asked)
    got = human_unflagged_open(send, how, t, uidx, np.array([True, False, True]), DAY0 + 40 * 24 * H)[len(history):]
    want = [send[-5] + int(1.5 * H), send[-4] + 21 * H, NAT, send[-2] + int(0.01 * H), send[-1] + 5 * H]
    np.testing.assert_array_equal(got, np.array(want, np.int64))


def test_a_flagged_fetch_leaves_every_unflagged_open_human_and_the_cutoff_hides_later_ones():
    send, how, t, uidx = _messages([(0, 0, [2.0, 5.0], None)])
    t["t_open_machine_flag"][0] = send[0] + 60_000_000
    assert human_unflagged_open(send, how, t, uidx, np.array([True]), DAY0 + 10 * H)[0] == send[0] + 2 * H
    t["t_open_machine_flag"][0] = NAT
    # seen at 03:00 the next morning, only the 14:00 open exists: it is the fetch
    assert human_unflagged_open(send, how, t, uidx, np.array([True]), send[0] + 3 * H)[0] == NAT


def test_late_unflagged_fetches_the_human_opens_of_proxy_users_are_found():
    cfg = world_config("default", n_users=2000, days=60, seed=5, machine_flags=False, late_fetch_share=0.5,
                       machine_delay_s=(2.0, 4 * 3600.0), fetch_share=0.9)
    w = simulate_world(cfg)
    ev, us = validate_events(w.events).accepted, validate_users(w.users).accepted
    msgs = build_messages(ev, us)
    idx = pd.Index(us["user_id"])
    uidx = idx.get_indexer(msgs["user_id"])
    as_of = w.config.end_ts
    oc = outcomes_at(msgs, uidx, len(idx), as_of, 24)
    got = human_unflagged_open(micros(msgs["send_ts"]), msgs["send_how"].to_numpy(np.int64),
                               {c: micros(msgs[c]) for c in OUTCOME_COLUMNS}, uidx, oc.is_machine_user, micros_of(as_of))
    opens = ev.loc[ev["event_type"] == "open"].merge(w.open_truth, on="event_id")
    human = micros(msgs["message_id"].map(opens.loc[~opens["is_machine"]].groupby("message_id")["timestamp"].min())
                   .astype("datetime64[us, UTC]"))
    mach = oc.is_machine_user[uidx]
    counted, truly = mach & (got != NAT), mach & (human != NAT) & (human < micros_of(as_of))
    right = counted & (got == human)
    # the rule before (the first unflagged open is the fetch; a slow open after a fast one is
    # human) finds few of them: most fetches here are slow
    slow = micros(msgs["t_open_unk_slow"])
    before = mach & (micros(msgs["t_open_unk_fast"]) != NAT) & (slow != NAT) & (slow == human)
    assert truly.sum() > 100
    assert right.sum() / counted.sum() >= 0.65, (right.sum(), counted.sum())
    assert right.sum() / truly.sum() >= 0.4, (right.sum(), truly.sum())  # a tenth of the messages have no fetch
    assert right.sum() >= 3 * before.sum(), (right.sum(), before.sum())
    rep = machine_open_report(ev, us, w.open_truth, as_of, user_truth=w.user_truth)
    for k in ("machine_user_precision", "machine_user_recall", "machine_open_precision", "machine_open_recall"):
        assert rep[k] >= 0.9, (k, rep)
