"""Webhook intake: a SendGrid Event Webhook batch into the event store, with what became of each
event. The HTTP route (``POST /events``) is a thin shell over :func:`take_sendgrid_batch`.

Two paths give the same answer. :func:`plain_rows` maps and judges a batch in plain Python (a
dict lookup per rule, no DataFrame), which is what a webhook at tens of thousands of events a
second needs; it covers batches as SendGrid sends them (whole-second timestamps, boolean
``sg_machine_open``). Anything else (a fractional timestamp, a flag written as text) goes the
reference way, :func:`sendtime.features.importers.import_sendgrid` and the contract's
``validate_events``. ``tests/serving/test_webhooks.py`` holds the two equal on the sample batch
and on thousands of generated dirty ones.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from sendtime.features import inputs as R
from sendtime.features.contract import EARLIEST, FOLLOWS_SEND
from sendtime.features.importers import import_sendgrid
from sendtime.features.importers.mapping import user_key
from sendtime.features.importers.sendgrid import SENDGRID_EVENTS, SENDGRID_NOT_USED, sendgrid_message_id
from sendtime.serving.event_store import SECOND_SEND, EventStore, Row, rows_of_frame

_EARLIEST_US = EARLIEST.value // 1000
_DAY_US = 86_400_000_000
_MISSING = frozenset(R.MISSING_TEXT)
_MISSING_LEN = max(len(t) for t in R.MISSING_TEXT)
_PROCESSED = "not used: 'processed' (the message's 'delivered' event is its send)"


@dataclass
class Intake:
    received: int
    accepted: int
    duplicates: int
    rejects: list[tuple[int, str]] = field(default_factory=list)  # (index in the batch, reason), in batch order

    @property
    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, why in self.rejects:
            out[why] = out.get(why, 0) + 1
        return out


def _nonempty(v: Any) -> str | None:
    if isinstance(v, str):
        v = v.strip()
        return v or None
    return None


def _text(v: str) -> str | None:
    """The contract's reading of an id: text that exports write for missing is missing."""
    return None if len(v) <= _MISSING_LEN and v.lower() in _MISSING else v


def plain_rows(records: list[Any], key: Callable[[str], str], now_us: int) -> tuple[list[Row], list[tuple[int, str]]] | None:
    """The batch's contract rows and its rejects ``(index, reason)``, exactly as the reference path
    decides them, or None when a record is not plain (then the caller takes the reference path).

    Rule order follows the reference: the SendGrid mapping (event kind, required fields, the
    unused ``processed``), then the contract row by row (ids, time range), then across rows
    (repeated event ids, opens before their send, a second send)."""
    rejects: list[tuple[int, str]] = []
    mapped: list[tuple[int, str, list]] = []  # (index, SendGrid kind, [eid, user, mid, type, ts_us, mo])
    for i, obj in enumerate(records):
        if not isinstance(obj, dict):
            return None
        kind = (_nonempty(obj.get("event")) or "").lower()
        if not kind:
            rejects.append((i, "missing event"))
            continue
        if kind in SENDGRID_NOT_USED:
            rejects.append((i, f"not used: SendGrid '{kind}' event (no contract equivalent)"))
            continue
        etype = SENDGRID_EVENTS.get(kind)
        if etype is None:
            rejects.append((i, f"unknown SendGrid event '{kind[:40]}'"))
            continue
        email, eid, mid = _nonempty(obj.get("email")), _nonempty(obj.get("sg_event_id")), _nonempty(obj.get("sg_message_id"))
        ts = obj.get("timestamp")
        if ts is None or (isinstance(ts, str) and not ts.strip()):
            ts_us = None
        elif type(ts) is int or (type(ts) is float and math.isfinite(ts) and ts.is_integer() and abs(ts) < 1e11):
            ts_us = int(ts) * 1_000_000
        else:
            return None  # a fractional or textual time: the reference path rounds it
        missing = next((f for f, v in (("email", email), ("sg_event_id", eid), ("sg_message_id", mid)) if v is None), None)
        if missing or ts_us is None:
            rejects.append((i, f"missing {missing}" if missing else R.MISSING_TIMESTAMP))
            continue
        mo = obj.get("sg_machine_open") if etype == "open" else None
        if mo is not None and type(mo) is not bool:
            return None
        user = key(email)
        mapped.append((i, kind, [eid, user, f"{sendgrid_message_id(mid)}:{user}", etype, ts_us, mo]))
    delivered = {r[2] for _, k, r in mapped if k == "delivered"}
    judged: list[tuple[int, list]] = []
    for i, kind, r in mapped:
        if kind == "processed" and r[2] in delivered:
            rejects.append((i, _PROCESSED))
        else:
            judged.append((i, r))

    reason: list[str | None] = [None] * len(judged)
    for j, (_, r) in enumerate(judged):  # the contract, row by row (first reason wins)
        r[0], r[1] = _text(r[0]), _text(r[1])
        for col, name in ((0, "event_id"), (1, "user_id")):
            if r[col] is None:
                reason[j] = R.MISSING.format(name)
                break
        else:
            if r[4] < _EARLIEST_US:
                reason[j] = R.BEFORE_1990
            elif r[4] > now_us + _DAY_US:
                reason[j] = R.IN_THE_FUTURE
    seen_ids: set[str] = set()
    seen_rows: set[tuple] = set()
    for j, (_, r) in enumerate(judged):  # repeated event ids: against every earlier row, judged or not
        if r[0] is None:
            continue
        k = (r[0], r[1], r[2], r[3], r[4])
        if reason[j] is None and r[0] in seen_ids:
            reason[j] = R.DUPLICATE_EVENT if k in seen_rows else R.CONFLICTING_EVENT_ID
        seen_ids.add(r[0])
        seen_rows.add(k)
    first_send: dict[str, int] = {}
    for j, (_, r) in enumerate(judged):
        if reason[j] is None and r[3] == "send":
            first_send.setdefault(r[2], r[4])
    for j, (_, r) in enumerate(judged):
        if reason[j] is not None:
            continue
        if r[3] in FOLLOWS_SEND:
            sent = first_send.get(r[2])
            if sent is not None and r[4] < sent:
                reason[j] = R.BEFORE_SEND
    sends_seen: set[str] = set()
    for j, (_, r) in enumerate(judged):
        if r[3] == "send" and reason[j] is None:
            if r[2] in sends_seen:
                reason[j] = R.SECOND_SEND
            sends_seen.add(r[2])
    rows: list[Row] = []
    for j, (i, r) in enumerate(judged):
        if reason[j] is None:
            rows.append((r[0], r[1], r[2], r[3], r[4], r[5], None))
        else:
            rejects.append((i, reason[j]))
    rejects.sort(key=lambda x: x[0])
    return rows, rejects


def reference_rows(records: list[Any], user_ids: str, salt: str, now: pd.Timestamp | None = None) -> tuple[list[Row], list[tuple[int, str]]]:
    """The same as :func:`plain_rows` by the importer and the contract (any batch)."""
    imported = import_sendgrid(records, user_ids=user_ids, salt=salt, now=now, require_sends=False)
    rejects = [(int(r.source_row), str(r.reason)) for r in imported.rejects.itertuples()]
    return rows_of_frame(imported.events), rejects


def take_sendgrid_batch(records: list[Any], store: EventStore, user_ids: str, salt: str) -> Intake:
    """Map the batch into the contract and append it to ``store``, idempotently: events already
    stored (a replayed or overlapping batch) and repeats inside the batch count as duplicates;
    events the contract refuses come back with their reasons. May raise
    :class:`sendtime.serving.event_store.StoreBusy` (the caller answers 503)."""
    now_us = time.time_ns() // 1000
    got = plain_rows(records, user_key(user_ids, salt), now_us)
    rows, rejects = got if got is not None else reference_rows(records, user_ids, salt, pd.Timestamp(now_us, unit="us", tz="UTC"))
    in_batch = sum(1 for _, why in rejects if why == R.DUPLICATE_EVENT)
    rejects = [(i, why) for i, why in rejects if why != R.DUPLICATE_EVENT]
    stored = store.append_rows(rows)
    if stored.refused:
        index: dict[str, int] = {}
        for i, rec in enumerate(records):
            if isinstance(rec, dict) and isinstance(rec.get("sg_event_id"), str):
                index.setdefault(rec["sg_event_id"].strip(), i)
        rejects += [(index[e], SECOND_SEND) for e in stored.refused]
        rejects.sort(key=lambda x: x[0])
    return Intake(received=len(records), accepted=stored.stored, duplicates=stored.duplicates + in_batch, rejects=rejects)

