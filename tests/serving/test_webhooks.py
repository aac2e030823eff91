"""The fast SendGrid path (plain Python, what POST /events runs) against the reference (the
importer and the contract's validate_events) on the sample batch and thousands of dirty ones."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from sendtime.features.importers.mapping import user_key
from sendtime.serving.webhooks import plain_rows, reference_rows

SAMPLE = json.loads((Path(__file__).resolve().parents[1] / "formats" / "sendgrid_events.json").read_text())
NOW = pd.Timestamp("2026-03-10T00:00:00Z")
T0 = 1772546400  # 2026-03-03T14:00:00Z

KINDS = ["delivered", "processed", "open", "click", "bounce", "dropped", "deferred", "unsubscribe",
         "group_unsubscribe", "spamreport", "Open ", "teleport", "", None]
EMAILS = ["a@x.example", " B@X.example ", "c@x.example", "null", "", None, "NaN"]
IDS = ["e1", "e2", "e3", " e4 ", "nan", "", None, "e5"]
MSGS = ["m1.filter0001-1", "m2.filter0002-2", "m1.recvd-x", "m3", "", None]
TIMES = [T0, T0 + 60, T0 - 60, float(T0 + 3600), 100, NOW.timestamp() + 3 * 86400, None, ""]
FLAGS = [True, False, None]
NOT_PLAIN = [("timestamp", T0 + 1.5), ("timestamp", "123"), ("sg_machine_open", "yes"), ("sg_machine_open", 1)]


def dirty_batch(rng: random.Random, n: int) -> list:
    out: list = []
    for _ in range(n):
        if rng.random() < 0.002:
            out.append(rng.choice([None, "open", 7, ["x"]]))
            continue
        rec = {"event": rng.choice(KINDS), "email": rng.choice(EMAILS), "sg_event_id": rng.choice(IDS),
               "sg_message_id": rng.choice(MSGS), "timestamp": rng.choice(TIMES)}
        if rng.random() < 0.5:
            rec["sg_machine_open"] = rng.choice(FLAGS)
        for k in [k for k in rec if rng.random() < 0.05]:
            del rec[k]
        if rng.random() < 0.005:
            k, v = rng.choice(NOT_PLAIN)
            rec[k] = v
        if out and rng.random() < 0.15:
            rec = dict(rng.choice([r for r in out if isinstance(r, dict)] or [rec]))  # an exact repeat
        out.append(rec)
    return out


def both(records: list, user_ids: str = "email"):
    fast = plain_rows(records, user_key(user_ids, "salt"), NOW.value // 1000)
    ref = reference_rows(records, user_ids, "salt", NOW)
    return fast, ref


def test_the_sample_batch_is_mapped_as_the_importer_maps_it():
    fast, ref = both(SAMPLE)
    assert fast is not None
    assert sorted(fast[0]) == sorted(ref[0]) and fast[1] == ref[1]
    assert len(fast[0]) == 11 and len(fast[1]) == 4


@pytest.mark.parametrize("user_ids", ["email", "sha256"])
def test_dirty_batches_get_the_reference_answer_row_for_row(user_ids):
    rng = random.Random(7 if user_ids == "email" else 8)
    plain = 0
    for _ in range(400):
        records = dirty_batch(rng, rng.randint(1, 40))
        fast, ref = both(records, user_ids)
        if fast is None:  # not plain: the route takes the reference path, so nothing to compare
            continue
        plain += 1
        assert sorted(fast[0]) == sorted(ref[0]), records
        assert fast[1] == ref[1], records
    assert plain > 270  # the fast path covers most batches, dirty ones included


def test_not_plain_records_go_the_reference_way():
    base = {"event": "open", "email": "a@x.example", "sg_event_id": "e", "sg_message_id": "m"}
    assert plain_rows([{**base, "timestamp": T0 + 0.25}], user_key(), 0) is None  # fractional second
    assert plain_rows([{**base, "timestamp": T0, "sg_machine_open": "true"}], user_key(), 0) is None
    assert plain_rows(["open"], user_key(), 0) is None
