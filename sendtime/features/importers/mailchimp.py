"""Mailchimp email-activity reports (the API's JSON or its flattened CSV)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from sendtime.features.contract import ContractError, _read_table
from sendtime.features.importers.mapping import ImportResult, Rows, hid, json_records, nonempty, user_key


MAILCHIMP_ACTIONS = {"open": "open", "click": "click", "bounce": "bounce"}


def _send_times(send_time: str | Mapping[str, str] | None, reports: list[dict[str, Any]]) -> Callable[[str], str]:
    """campaign_id -> its send_time as ISO text with an offset (a missing one stops the import)."""
    given = dict(send_time) if isinstance(send_time, Mapping) else {}
    for rep in reports:
        if nonempty(rep.get("campaign_id")) and nonempty(rep.get("send_time")):
            given.setdefault(rep["campaign_id"].strip(), rep["send_time"])

    seen: dict[str, str] = {}

    def lookup(campaign: str) -> str:
        if campaign in seen:
            return seen[campaign]
        text = send_time if isinstance(send_time, str) else given.get(campaign)
        if not nonempty(text):
            raise ContractError(f"Mailchimp campaign {campaign} has no send_time: pass send_time= (the campaign's "
                                "send_time from GET /campaigns/{id}) or add a send_time field")
        try:
            ts = pd.Timestamp(text)
        except ValueError:
            raise ContractError(f"Mailchimp send_time {text!r} of campaign {campaign} is not a date-time") from None
        if ts.tzinfo is None:
            raise ContractError(f"Mailchimp send_time {text!r} of campaign {campaign} has no UTC offset")
        seen[campaign] = ts.tz_convert("UTC").isoformat()
        return seen[campaign]

    return lookup


def _mailchimp_members(path: Path) -> tuple[list[tuple[int, Any]], list[dict[str, Any]]]:
    """(source_row, member entry) pairs and the report objects, from the JSON or the CSV export."""
    if path.suffix.lower() == ".csv":
        raw = _read_table(path, "Mailchimp")
        missing = [c for c in ("email_address", "campaign_id", "action", "timestamp") if c not in raw.columns]
        if missing:
            raise ContractError(f"Mailchimp file {path} lacks required column(s): {', '.join(missing)}")
        members: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        reports: dict[str, dict[str, Any]] = {}
        for i, r in enumerate(raw.to_dict("records")):
            r = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            k = (str(r.get("campaign_id") or ""), str(r.get("email_address") or ""))
            if k not in members:
                members[k] = (i, {"campaign_id": r.get("campaign_id"), "email_address": r.get("email_address"), "activity": []})
            if nonempty(r.get("send_time")) and nonempty(r.get("campaign_id")):
                reports.setdefault(r["campaign_id"], {"campaign_id": r["campaign_id"], "send_time": r["send_time"]})
            if nonempty(r.get("action")):
                act = {c: r.get(c) for c in ("action", "timestamp", "url", "ip", "type") if r.get(c) is not None}
                members[k][1]["activity"].append((i, act))
        return list(members.values()), list(reports.values())
    out, reports = [], []
    for row, obj, problem in json_records(path, "Mailchimp"):
        if isinstance(obj, dict) and isinstance(obj.get("emails"), list):
            reports.append(obj)
            for m in obj["emails"]:
                if isinstance(m, dict) and not m.get("campaign_id") and obj.get("campaign_id"):
                    m = {**m, "campaign_id": obj["campaign_id"]}
                out.append((len(out), m))
        else:
            out.append((len(out), obj if problem is None else None))
    return out, reports


def import_mailchimp(source: str | Path, *, send_time: str | Mapping[str, str] | None = None, user_ids: str = "email",
                     salt: str = "", now: pd.Timestamp | None = None) -> ImportResult:
    """Mailchimp email activity (``GET /reports/{campaign_id}/email-activity``): the JSON response
    (or a list of them), or its flattened CSV (one row per activity; a row with no action is a
    recipient without activity). Each recipient gets one send at the campaign's ``send_time``.
    """
    key = user_key(user_ids, salt)
    members, reports = _mailchimp_members(Path(source))
    when = _send_times(send_time, reports)
    acc = Rows()
    for row, m in members:
        acts = m.get("activity") if isinstance(m, dict) else None
        acts = acts if isinstance(acts, list) else []
        if not isinstance(m, dict):
            acc.reject(row, m, "record is not a member object")
            continue
        campaign, email = nonempty(m.get("campaign_id")), nonempty(m.get("email_address"))
        if campaign is None or email is None:
            reason = "missing campaign_id" if campaign is None else "missing email_address"
            acc.reject(row, {k: v for k, v in m.items() if k != "activity"}, reason)
            for a in acts:
                acc.reject(*(a if isinstance(a, tuple) else (row, a)), reason)
            continue
        user = key(email)
        message = f"{campaign}:{user}"
        acc.add(row, {"campaign_id": campaign, "email_address": email, "send_time": when(campaign)}, event_id=hid("mc", campaign, user, "send"),
                user_id=user, message_id=message, event_type="send", timestamp=when(campaign), machine_open=None, propensity=None)
        for a in acts:
            arow, act = a if isinstance(a, tuple) else (row, a)
            record = {"campaign_id": campaign, "email_address": email, **(act if isinstance(act, dict) else {"activity": act})}
            action = (nonempty(act.get("action")) or "").lower() if isinstance(act, dict) else ""
            if action not in MAILCHIMP_ACTIONS:
                acc.reject(arow, record, f"unknown Mailchimp action '{action[:40]}'" if action else "missing action")
                continue
            stamp = act.get("timestamp")
            acc.add(arow, record, event_id=hid("mc", campaign, user, action, stamp, act.get("url")), user_id=user,
                    message_id=message, event_type=MAILCHIMP_ACTIONS[action], timestamp=stamp, machine_open=None, propensity=None)
    return acc.finish("mailchimp", now, True)
