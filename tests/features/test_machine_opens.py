"""Machine (Apple MPP) opens: detected without flags, and ignored as evidence of reading."""

from __future__ import annotations

import pandas as pd

from sendtime.features.contract import validate_events, validate_users
from sendtime.simulation.evaluate import machine_open_report
from sendtime.simulation.simulate import simulate_world, world_config


def test_detector_precision_and_recall_without_flags():
    w = simulate_world(world_config("no-flags", n_users=1500, days=60, seed=5))
    assert w.events.loc[w.events["event_type"] == "open", "machine_open"].isna().all()
    ev, us = validate_events(w.events).accepted, validate_users(w.users).accepted
    rep = machine_open_report(ev, us, w.open_truth, pd.Timestamp(w.config.end_ts))
    assert rep["machine_open_precision"] >= 0.9
    assert rep["machine_open_recall"] >= 0.9


def test_flags_are_used_when_present():
    w = simulate_world(world_config("default", n_users=600, days=42, seed=6))
    ev, us = validate_events(w.events).accepted, validate_users(w.users).accepted
    rep = machine_open_report(ev, us, w.open_truth, pd.Timestamp(w.config.end_ts))
    assert rep["machine_open_precision"] == 1.0 and rep["machine_open_recall"] == 1.0


def test_machine_opens_do_not_count_as_reading():
    """A machine opener's fast opens at the send hour do not make the send hour look good."""
    import numpy as np

    from sendtime.features.engagement import build_user_features
    from sendtime.features.messages import build_messages

    rows = []
    start = pd.Timestamp("2026-01-05T08:00:00Z")
    rng = np.random.default_rng(3)
    for u in range(30):  # the mixture learns from a population: ordinary readers beside the proxy
        for d in range(40):
            send = start + pd.Timedelta(days=d)
            rows.append((f"s{u}-{d}", f"h{u}", f"m{u}-{d}", "send", send))
            if rng.random() < 0.3:
                rows.append((f"o{u}-{d}", f"h{u}", f"m{u}-{d}", "open", send + pd.Timedelta(minutes=int(rng.integers(1, 600)))))
    for d in range(40):
        send = start + pd.Timedelta(days=d)
        rows.append((f"s{d}", "mpp", f"m{d}", "send", send))
        rows.append((f"o{d}", "mpp", f"m{d}", "open", send + pd.Timedelta(seconds=40)))  # proxy fetch
        if d % 4 == 0:  # the human reads (and clicks) in the evening
            rows.append((f"c{d}", "mpp", f"m{d}", "click", send.normalize() + pd.Timedelta(hours=20, minutes=15)))
    ev = pd.DataFrame(rows, columns=["event_id", "user_id", "message_id", "event_type", "timestamp"])
    ev = validate_events(ev, now=pd.Timestamp("2026-12-01", tz="UTC")).accepted  # no machine_open column at all
    us = validate_users(pd.DataFrame({"user_id": ["mpp"] + [f"h{u}" for u in range(30)], "timezone": "UTC"})).accepted
    uf = build_user_features(build_messages(ev, us), us, pd.Timestamp("2026-02-20", tz="UTC"))
    assert uf.table.loc["mpp", "is_machine_opener"] == 1
    assert uf.table["is_machine_opener"].sum() == 1
    assert uf.table.loc["mpp", "open_rate_90d"] < 0.4  # not ~1.0 from the proxy opens
    assert int(np.argmax(uf.lam[uf.rows_of(["mpp"])[0], :24])) == 20
