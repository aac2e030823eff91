"""SendGrid Event Webhook events (a posted JSON array, a dump of them, or one event a line)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from sendtime.features.importers.mapping import ImportResult, Rows, json_records, nonempty, unix_seconds, user_key


SENDGRID_EVENTS = {
    "delivered": "send", "processed": "send", "open": "open", "click": "click", "bounce": "bounce",
    "dropped": "bounce", "unsubscribe": "unsubscribe", "group_unsubscribe": "unsubscribe",
    "spamreport": "complaint", "spam_report": "complaint",
}
SENDGRID_NOT_USED = ("deferred", "group_resubscribe")
_SG_SUFFIX = re.compile(r"\.(?:filter|recvd).*$", re.S)


def sendgrid_message_id(sg_message_id: str) -> str:
    """The X-Message-ID part of an ``sg_message_id``: what precedes ``.filter…`` (or ``.recvd…``).

    SendGrid appends a server-specific suffix to the X-Message-ID its Mail Send API returned;
    the prefix is what the sender knows, and it is shared by every recipient of one API call.
    """
    return _SG_SUFFIX.sub("", sg_message_id.strip())


def import_sendgrid(source: str | Path | Sequence[Any], *, user_ids: str = "email", salt: str = "",
                    now: pd.Timestamp | None = None, require_sends: bool = True) -> ImportResult:
    """SendGrid Event Webhook events: a file holding the posted JSON array (or one event per
    line), or the parsed list itself (the webhook route passes that, with ``require_sends=False``).

    The send is the ``delivered`` event; ``processed`` stands in only for a message that has no
    ``delivered`` in the input (a bounce or drop), else it is rejected as not used.
    """
    key = user_key(user_ids, salt)
    items = ([(i, v, None) for i, v in enumerate(source)] if isinstance(source, (list, tuple))
             else json_records(source, "SendGrid"))
    acc, kinds = Rows(), []
    for row, obj, problem in items:
        if problem or not isinstance(obj, dict):
            acc.reject(row, obj, problem or "record is not a JSON object")
            continue
        kind = (nonempty(obj.get("event")) or "").lower()
        if not kind:
            acc.reject(row, obj, "missing event")
            continue
        if kind in SENDGRID_NOT_USED:
            acc.reject(row, obj, f"not used: SendGrid '{kind}' event (no contract equivalent)")
            continue
        if kind not in SENDGRID_EVENTS:
            acc.reject(row, obj, f"unknown SendGrid event '{kind[:40]}'")
            continue
        email, eid, mid = nonempty(obj.get("email")), nonempty(obj.get("sg_event_id")), nonempty(obj.get("sg_message_id"))
        ts, ts_reason = unix_seconds(obj.get("timestamp"))
        missing = next((f for f, v in (("email", email), ("sg_event_id", eid), ("sg_message_id", mid)) if v is None), None)
        if missing or ts is None:
            acc.reject(row, obj, f"missing {missing}" if missing else str(ts_reason))
            continue
        user = key(email)
        etype = SENDGRID_EVENTS[kind]
        acc.add(row, obj, event_id=eid, user_id=user, message_id=f"{sendgrid_message_id(mid)}:{user}", event_type=etype,
                timestamp=ts, machine_open=obj.get("sg_machine_open") if etype == "open" else None, propensity=None)
        kinds.append(kind)
    delivered = {r["message_id"] for r, k in zip(acc.rows, kinds) if k == "delivered"}
    acc.drop([not (k == "processed" and r["message_id"] in delivered) for r, k in zip(acc.rows, kinds)],
             lambda r: "not used: 'processed' (the message's 'delivered' event is its send)")
    return acc.finish("sendgrid", now, require_sends)
