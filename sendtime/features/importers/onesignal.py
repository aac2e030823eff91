"""OneSignal Event Streams (push, e-mail and SMS receipts), as JSON lines or a JSON array.

An Event Stream posts one JSON body per event, shaped by a Liquid template; the importer reads
the body OneSignal's docs build from ``{{ event }}`` and ``{{ message }}`` (docs/importers.md
gives the template): ``event.id`` (the event id), ``event.kind`` (``message.<channel>.<action>``),
``event.datetime`` (ISO 8601 UTC; ``event.timestamp``, Unix seconds, as a fallback),
``event.external_id`` (your user id; ``event.onesignal_id`` with ``user_ids="onesignal_id"``) and
``message.id`` (the notification; flat ``message_id`` is read too).

Mapping: ``sent`` -> send with the channel (push, email, sms); push ``clicked`` (a tap opens the
app) -> open, flagged human (a proxy never taps); e-mail ``opened`` -> open (unflagged: OneSignal
does not say which are Apple's proxy), ``clicked`` -> click; ``failed``, ``hardbounced``,
``undelivered`` -> bounce; ``unsubscribed`` -> unsubscribe; ``reported_as_spam`` -> complaint.
``received``, ``delivered``, ``suppressed`` and in-app (``iam``) events are rejected as not used,
with their reason, so every record is accounted for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from sendtime.features.contract import ContractError
from sendtime.features.importers.mapping import ImportResult, Rows, field_at, iso_utc, json_records, nonempty, unix_seconds

ACTIONS = {
    "sent": "send", "clicked": "click", "opened": "open", "failed": "bounce", "hardbounced": "bounce",
    "undelivered": "bounce", "unsubscribed": "unsubscribe", "reported_as_spam": "complaint", "resporedasspam": "complaint",
}
NOT_USED = ("received", "delivered", "suppressed", "supressed", "displayed", "pagedisplayed", "impression")
CHANNELS = {"push": "push", "email": "email", "sms": "sms"}
USER_ID_FORMS = ("external_id", "onesignal_id")


def import_onesignal(source: str | Path | Sequence[Any], *, user_ids: str = "external_id",
                     now: pd.Timestamp | None = None, require_sends: bool = True) -> ImportResult:
    """OneSignal Event Stream bodies: a file of JSON lines or a JSON array, or the parsed list."""
    if user_ids not in USER_ID_FORMS:
        raise ContractError(f"user_ids must be one of {', '.join(USER_ID_FORMS)} for onesignal, got {user_ids!r}")
    items = ([(i, v, None) for i, v in enumerate(source)] if isinstance(source, (list, tuple))
             else json_records(source, "OneSignal"))
    acc = Rows()
    for row, obj, problem in items:
        if problem or not isinstance(obj, dict):
            acc.reject(row, obj, problem or "record is not a JSON object")
            continue
        ev = obj.get("event") if isinstance(obj.get("event"), dict) else obj
        kind = (nonempty(ev.get("kind")) or "").lower()
        parts = kind.split(".")
        if len(parts) != 3 or parts[0] != "message":
            acc.reject(row, obj, f"unknown OneSignal event kind '{kind[:60]}'" if kind else "missing event.kind")
            continue
        channel, action = parts[1], parts[2]
        if channel == "iam" or action in NOT_USED:
            acc.reject(row, obj, f"not used: OneSignal '{kind}' event (no contract equivalent)")
            continue
        if channel not in CHANNELS or action not in ACTIONS:
            acc.reject(row, obj, f"unknown OneSignal event kind '{kind[:60]}'")
            continue
        etype = ACTIONS[action]
        if channel == "push" and action == "clicked":
            etype = "open"  # a tap is the push's open
        uid = nonempty(ev.get(user_ids))
        eid = nonempty(ev.get("id"))
        mid = nonempty(field_at(obj, "message", "id")) or nonempty(obj.get("message_id"))
        missing = next((f for f, v in ((f"event.{user_ids}", uid), ("event.id", eid), ("message.id", mid)) if v is None), None)
        if missing:
            acc.reject(row, obj, f"missing {missing}")
            continue
        if nonempty(ev.get("datetime")):
            ts, why = iso_utc(ev.get("datetime"), "event.datetime")
        else:
            ts, why = unix_seconds(ev.get("timestamp"))
        if ts is None:
            acc.reject(row, obj, str(why))
            continue
        acc.add(row, obj, event_id=eid, user_id=uid, message_id=f"{mid}:{uid}", event_type=etype, timestamp=ts,
                machine_open=False if (etype == "open" and channel != "email") else None, propensity=None,
                channel=CHANNELS[channel])
    return acc.finish("onesignal", now, require_sends)
