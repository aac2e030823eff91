"""Segment / RudderStack calls (JSON lines) -> the activity table, and users' time zones.

Both platforms write the same spec: one JSON object per line with ``type`` (``track``, ``page``,
``screen``, ``identify``, ...), ``userId``, ``anonymousId``, ``messageId`` (their dedupe key),
``timestamp`` (``originalTimestamp`` / ``receivedAt`` as fallbacks), ``event`` and
``properties`` on track calls, and ``context.timezone`` (the device's IANA zone) on any call.

Mapping (docs/importers.md): track "Application Opened" -> ``app_open``; track "Order
Completed" -> ``purchase`` with ``properties.revenue`` (else ``total``, ``value``) and
``properties.currency``; any other track call -> ``session``; ``page`` and ``screen`` ->
``page_view``. ``identify``, ``group`` and ``alias`` calls are not activity: they are read for
the users table only (the latest ``context.timezone`` seen per user). A call without
``userId`` cannot be matched to a mail recipient and is rejected, unless ``user_ids="email"``
takes the address from ``traits.email`` / ``context.traits.email`` (the form the e-mail
importers use). Every line ends as an activity row, a not-activity row counted apart, or a
reject with its reason.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sendtime.features.activity import validate_activity
from sendtime.features.contract import ContractError, known_timezone
from sendtime.features.importers.mapping import field_at, user_key

NOT_ACTIVITY = ("identify", "group", "alias")
PURCHASE_EVENTS = ("order completed",)
APP_OPEN_EVENTS = ("application opened",)
USER_ID_FORMS = ("userId", "email", "sha256")


@dataclass
class ActivityImport:
    """``activity``: the activity contract, validated. ``users``: user_id, timezone (from the
    calls' device zones). ``rejects``: source_row, record, reason. ``not_activity``: identify
    and the like, read for the users table only."""

    activity: pd.DataFrame
    users: pd.DataFrame
    rejects: pd.DataFrame
    read: int
    not_activity: int

    def summary(self) -> str:
        return (f"segment calls: read {self.read:,} = activity {len(self.activity):,} + not activity "
                f"{self.not_activity:,} + rejected {len(self.rejects):,}")


def _instant(ts: object) -> pd.Timestamp | None:
    """A call's timestamp as a UTC instant (None when it has no offset or does not parse)."""
    try:
        t = pd.Timestamp(str(ts).strip())
    except (ValueError, TypeError, OverflowError):
        return None
    return t.tz_convert("UTC") if t.tzinfo is not None else None


def _value(props: dict) -> object:
    for k in ("revenue", "total", "value"):
        v = field_at(props, k)
        if v is not None:
            return v
    return None


def import_segment(path: str | Path, *, user_ids: str = "userId", salt: str = "") -> ActivityImport:
    """Read Segment / RudderStack JSON lines (``.jsonl``, ``.json`` lines or ``.gz``)."""
    if user_ids not in USER_ID_FORMS:
        raise ContractError(f"user_ids must be one of {', '.join(USER_ID_FORMS)}, got {user_ids!r}")
    p = Path(path)
    if not p.exists():
        raise ContractError(f"segment file not found: {p}")
    opener = gzip.open if p.suffix == ".gz" else open
    key = user_key("email" if user_ids == "email" else "sha256", salt) if user_ids != "userId" else None
    rows, bad, zones = [], [], {}
    read = not_activity = 0
    with opener(p, "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            i, read = read, read + 1
            try:
                call = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append((i, line.strip()[:500], f"malformed line: not valid JSON ({exc.msg})"))
                continue
            if not isinstance(call, dict):
                bad.append((i, line.strip()[:500], "malformed line: not a JSON object"))
                continue
            kind = str(call.get("type") or "").strip().lower()
            if key is None:
                uid = call.get("userId")
            else:
                email = field_at(call, "traits", "email") or field_at(call, "context", "traits", "email")
                uid = key(str(email)) if email else None
            uid = str(uid).strip() if uid not in (None, "") else None
            ts = call.get("timestamp") or call.get("originalTimestamp") or call.get("receivedAt")
            zone = field_at(call, "context", "timezone")
            if uid and isinstance(zone, str) and known_timezone(zone) and ts:
                at = _instant(ts)  # compared as instants: "09:30Z" is after "10:00+02:00"
                if at is not None and (uid not in zones or at >= zones[uid][0]):
                    zones[uid] = (at, zone)
            if kind in NOT_ACTIVITY:
                not_activity += 1
                continue
            if not uid:
                bad.append((i, line.strip()[:500], "missing user_id (no userId: anonymous activity matches no recipient)"))
                continue
            event = str(call.get("event") or "").strip().lower()
            props = call.get("properties") if isinstance(call.get("properties"), dict) else {}
            if kind == "track":
                etype = "purchase" if event in PURCHASE_EVENTS else "app_open" if event in APP_OPEN_EVENTS else "session"
            elif kind in ("page", "screen"):
                etype = "page_view"
            else:
                etype = kind or None  # judged (and rejected as unknown) by the contract
            rows.append({"source_row": i, "record": line.strip()[:500], "event_id": call.get("messageId"), "user_id": uid,
                         "event_type": etype, "timestamp": ts,
                         "value": _value(props) if etype == "purchase" else None,
                         "currency": props.get("currency") if etype == "purchase" else None})
    if read == 0:
        raise ContractError(f"{p} holds no Segment calls (expected one JSON object per line)")
    mapped = pd.DataFrame(rows, columns=["source_row", "record", "event_id", "user_id", "event_type", "timestamp",
                                         "value", "currency"])
    judged = validate_activity(mapped.drop(columns=["source_row", "record"]))
    at = judged.rejects["source_row"].to_numpy(dtype=np.int64)  # positions in ``mapped``
    contract = [(s, r, why) for s, r, why in zip(mapped["source_row"].to_numpy()[at], mapped["record"].to_numpy()[at],
                                                 judged.rejects["reason"].to_numpy())]
    rej = pd.DataFrame(bad + contract, columns=["source_row", "record", "reason"])
    users = pd.DataFrame({"user_id": list(zones), "timezone": [z for _, z in zones.values()]})
    return ActivityImport(activity=judged.accepted, users=users.sort_values("user_id", ignore_index=True),
                          rejects=rej.sort_values("source_row", ignore_index=True), read=read, not_activity=not_activity)
