"""Amazon SES event publishing records (JSON, Firehose lines, or SNS envelopes of either)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from sendtime.features.importers.mapping import ImportResult, Rows, hid, iso_utc, json_records, nonempty, user_key


SES_EVENTS = {"send": "send", "delivery": "send", "open": "open", "click": "click", "bounce": "bounce", "complaint": "complaint"}
SES_NOT_USED = ("reject", "rendering failure", "deliverydelay", "subscription")


def _ses_unwrap(obj: Any) -> tuple[Any, str | None]:
    """An SNS envelope's ``Message`` (JSON text) is the SES record; other shapes pass through."""
    if isinstance(obj, dict) and obj.get("Type") in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        return obj, f"not used: SNS {obj['Type']}"
    if isinstance(obj, dict) and obj.get("Type") == "Notification" and isinstance(obj.get("Message"), str):
        try:
            return json.loads(obj["Message"]), None
        except json.JSONDecodeError:
            return obj, "SNS Message is not JSON"
    return obj, None


def _ses_recipients(kind: str, detail: dict[str, Any], destination: list[str]) -> list[str]:
    if kind == "bounce":
        found = [r.get("emailAddress") for r in detail.get("bouncedRecipients") or [] if isinstance(r, dict)]
    elif kind == "complaint":
        found = [r.get("emailAddress") for r in detail.get("complainedRecipients") or [] if isinstance(r, dict)]
    elif kind == "delivery":
        found = list(detail.get("recipients") or [])
    else:
        found = []
    return [e for e in found if nonempty(e)] or destination


def import_ses(source: str | Path, *, user_ids: str = "email", salt: str = "", now: pd.Timestamp | None = None) -> ImportResult:
    """Amazon SES event publishing records (``eventType``; or ``notificationType`` for plain
    notifications): a JSON array, Firehose's one record a line, or SNS envelopes of either.

    A record names its recipients (``mail.destination``; the bounce and complaint objects list
    theirs), and makes one contract event per recipient. Opens and clicks of a message with
    several recipients cannot be attributed and are rejected. The send is the ``Delivery``
    event; ``Send`` stands in only for a message with no ``Delivery`` in the input.
    """
    key = user_key(user_ids, salt)
    acc, kinds = Rows(), []
    for row, obj, problem in json_records(source, "SES"):
        rec, problem = (obj, problem) if problem else _ses_unwrap(obj)
        if problem or not isinstance(rec, dict):
            acc.reject(row, obj, problem or "record is not a JSON object")
            continue
        kind = (nonempty(rec.get("eventType")) or nonempty(rec.get("notificationType")) or "").lower()
        mail = rec.get("mail") if isinstance(rec.get("mail"), dict) else {}
        mid = nonempty(mail.get("messageId"))
        destination = [e for e in mail.get("destination") or [] if nonempty(e)] if isinstance(mail.get("destination"), list) else []
        detail = rec.get(kind, {}) if kind else {}
        reason = ("missing eventType" if not kind
                  else f"not used: SES '{rec.get('eventType') or rec.get('notificationType')}' event (no contract equivalent)" if kind in SES_NOT_USED
                  else f"unknown SES eventType '{kind[:40]}'" if kind not in SES_EVENTS
                  else "missing mail.messageId" if mid is None
                  else "missing mail.destination" if not destination
                  else f"missing the '{kind}' object" if not isinstance(detail, dict)
                  else f"{kind} of a message with {len(destination)} recipients: cannot tell whose" if kind in ("open", "click") and len(destination) > 1
                  else None)
        stamp = mail.get("timestamp") if kind == "send" else (detail.get("timestamp") if isinstance(detail, dict) else None)
        if reason is None:
            stamp, reason = iso_utc(stamp, "mail.timestamp" if kind == "send" else f"{kind}.timestamp")
        if reason:
            acc.reject(row, obj, reason)
            continue
        for email in _ses_recipients(kind, detail, destination):
            user = key(email)
            acc.add(row, obj, event_id=hid("ses", mid, kind, user, stamp, json.dumps(detail, sort_keys=True, default=str)),
                    user_id=user, message_id=f"{mid}:{user}", event_type=SES_EVENTS[kind], timestamp=stamp,
                    machine_open=None, propensity=None)
            kinds.append(kind)
    delivered = {r["message_id"] for r, k in zip(acc.rows, kinds) if k == "delivery"}
    acc.drop([not (k == "send" and r["message_id"] in delivered) for r, k in zip(acc.rows, kinds)],
             lambda r: "not used: 'Send' (the message's Delivery event is its send)")
    return acc.finish("ses", now, True)
