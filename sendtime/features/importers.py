"""Importers: the email platforms' own event exports, turned into the event contract.

Why: teams hold SendGrid Event Webhook dumps, Mailchimp email-activity reports and Amazon SES
event streams, not the contract's table. Each importer only *maps* its format (field names,
event types, ids, times); the contract (:func:`sendtime.features.contract.validate_events`) then judges
the mapped rows exactly as it judges a hand-written file. Nothing is dropped silently: every
source event ends up in ``events`` or in ``rejects`` (with its original content as text and a
reason), so ``accepted + rejected == read``. A file that cannot be parsed at all raises
:class:`~sendtime.features.contract.ContractError` with a one-line message.

``read`` counts source events: a SendGrid array element, an SES record per recipient, a CSV
row, and for Mailchimp every recipient's send (implied by the campaign) plus each of their
activities. The field-by-field mapping of every format is in docs/importers.md.

Shared conventions: ``user_id`` is the recipient's address, trimmed and lower-cased (or, with
``user_ids="sha256"``, the hex SHA-256 of ``salt`` + that address, so no address is stored);
the users table must use the same form. ``message_id`` is ``<platform message id>:<user_id>``,
one message per recipient, as the contract's "one send per message" needs.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from sendtime.features.csv_reader import csv_source
from sendtime.features.contract import (
    _OFFSET_RE,
    EVENT_COLUMNS,
    EVENT_TYPES,
    OPTIONAL_EVENT_COLUMNS,
    ContractError,
    _read_table,
    known_timezone,
    validate_events,
)

COLUMNS = EVENT_COLUMNS + OPTIONAL_EVENT_COLUMNS
USER_ID_FORMS = ("email", "sha256")


@dataclass
class ImportResult:
    """``events``: contract columns, validated. ``rejects``: ``source_row`` (0-based position of
    the record in the input), ``record`` (its content as text) and ``reason``."""

    fmt: str
    events: pd.DataFrame
    rejects: pd.DataFrame
    read: int

    @property
    def n_accepted(self) -> int:
        return len(self.events)

    @property
    def n_rejected(self) -> int:
        return len(self.rejects)

    def reasons(self) -> dict[str, int]:
        if self.rejects.empty:
            return {}
        return {str(k): int(v) for k, v in self.rejects["reason"].value_counts().items()}

    def summary(self) -> str:
        return f"{self.fmt} events: read {self.read:,} = accepted {self.n_accepted:,} + rejected {self.n_rejected:,}"


# -- shared helpers ---------------------------------------------------------------------------
def user_key(user_ids: str = "email", salt: str = "") -> Callable[[str], str]:
    """The function that turns a recipient address into a ``user_id``."""
    if user_ids == "email":
        return lambda email: email.strip().lower()
    if user_ids == "sha256":
        return lambda email: hashlib.sha256((salt + email.strip().lower()).encode("utf-8")).hexdigest()
    raise ContractError(f"user_ids must be one of {', '.join(USER_ID_FORMS)}, got {user_ids!r}")


def _hid(prefix: str, *parts: object) -> str:
    """A stable event id for formats that carry none: identical events get identical ids."""
    return prefix + "-" + hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()[:24]


def _text(obj: Any) -> str:
    return obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, default=str)


def _nonempty(v: Any) -> str | None:
    return v.strip() if isinstance(v, str) and v.strip() else None


def _unix_seconds(v: Any) -> tuple[pd.Timestamp | None, str | None]:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None, "missing timestamp"
    if isinstance(v, bool):
        return None, "timestamp is not a unix time in seconds"
    try:
        x = float(v)
        if not np.isfinite(x):
            raise ValueError
        return pd.Timestamp(x, unit="s", tz="UTC"), None
    except (TypeError, ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
        return None, "timestamp is not a unix time in seconds"


def _iso_utc(v: Any, field: str) -> tuple[pd.Timestamp | None, str | None]:
    """An ISO 8601 time with an offset, as a UTC instant (times decide which event is the send)."""
    if not _nonempty(v):
        return None, f"missing {field}"
    try:
        ts = pd.Timestamp(v.strip())
    except (ValueError, TypeError, OverflowError, pd.errors.OutOfBoundsDatetime):
        return None, f"unparseable timestamp in {field}"
    if ts.tzinfo is None:
        return None, f"{field} has no UTC offset (naive)"
    return ts.tz_convert("UTC"), None


class _Rows:
    """Source events as they are mapped: a contract row each, or the reason it could not be."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.src: list[tuple[int, Any]] = []  # (source_row, record) per mapped row
        self.bad: list[tuple[int, str, str]] = []  # (source_row, record text, reason)

    def add(self, source_row: int, record: Any, **fields: Any) -> None:
        self.rows.append(fields)
        self.src.append((source_row, record))

    def reject(self, source_row: int, record: Any, reason: str) -> None:
        self.bad.append((source_row, _text(record), reason))

    def drop(self, keep: Sequence[bool], reason_of: Callable[[dict[str, Any]], str]) -> None:
        """Move mapped rows with ``keep`` False to the rejects (e.g. an unused 'processed')."""
        for row, (sr, rec), k in zip(list(self.rows), list(self.src), keep):
            if not k:
                self.reject(sr, rec, reason_of(row))
        self.rows = [r for r, k in zip(self.rows, keep) if k]
        self.src = [s for s, k in zip(self.src, keep) if k]

    def finish(self, fmt: str, now: pd.Timestamp | None, require_sends: bool) -> ImportResult:
        frame = pd.DataFrame(self.rows, columns=list(COLUMNS))
        ts = frame["timestamp"]
        if len(frame) and all(isinstance(t, pd.Timestamp) for t in ts):
            frame["timestamp"] = pd.to_datetime(ts, utc=True)
        source_row = np.array([s for s, _ in self.src], dtype=np.int64)
        records = [r for _, r in self.src]
        bad = pd.DataFrame(self.bad, columns=["source_row", "record", "reason"])
        return _finish(fmt, frame, source_row, lambda i: _text(records[i]), bad, now, require_sends)


def _finish(fmt: str, frame: pd.DataFrame, source_row: np.ndarray, record_of: Callable[[int], str],
            mapping_rejects: pd.DataFrame, now: pd.Timestamp | None, require_sends: bool) -> ImportResult:
    """Judge the mapped rows by the contract; its rejects go back to their source records."""
    res = validate_events(frame.reset_index(drop=True), now=now, require_sends=require_sends)
    pos = res.rejects["source_row"].to_numpy(dtype=np.int64)
    judged = pd.DataFrame({"source_row": source_row[pos], "record": [record_of(int(i)) for i in pos],
                           "reason": res.rejects["reason"].to_numpy(dtype=object)})
    parts = [p for p in (mapping_rejects, judged) if len(p)]
    rejects = (pd.concat(parts, ignore_index=True) if parts else judged)
    rejects = rejects.astype({"source_row": "int64"}).sort_values("source_row", kind="stable").reset_index(drop=True)
    return ImportResult(fmt=fmt, events=res.accepted, rejects=rejects, read=len(frame) + len(mapping_rejects))


def _json_records(path: str | Path, what: str) -> list[tuple[int, Any, str | None]]:
    """``(source_row, value, problem)`` per record of a JSON array, one JSON value, or
    newline-delimited JSON (one record a line, as Firehose writes; a bad line is one reject)."""
    p = Path(path)
    if not p.is_file():
        raise ContractError(f"{what} file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ContractError(f"{what} file {p} is not valid UTF-8 text") from None
    if not text.strip():
        raise ContractError(f"{what} file {p} is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        lines = [(i, line) for i, line in enumerate(text.splitlines()) if line.strip()]
        if exc.msg != "Extra data" or not lines[0][1].lstrip().startswith("{"):
            raise ContractError(f"{what} file {p} is not valid JSON: {exc.msg.removesuffix(' at')} "
                                f"at line {exc.lineno} column {exc.colno}") from None
        out: list[tuple[int, Any, str | None]] = []
        for n, (_, line) in enumerate(lines):
            try:
                out.append((n, json.loads(line), None))
            except json.JSONDecodeError as e:
                out.append((n, line, f"not valid JSON: {e.msg.removesuffix(' at')} at column {e.colno}"))
        return out
    items = data if isinstance(data, list) else [data]
    return [(i, v, None) for i, v in enumerate(items)]


# -- SendGrid ---------------------------------------------------------------------------------
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
             else _json_records(source, "SendGrid"))
    acc, kinds = _Rows(), []
    for row, obj, problem in items:
        if problem or not isinstance(obj, dict):
            acc.reject(row, obj, problem or "record is not a JSON object")
            continue
        kind = (_nonempty(obj.get("event")) or "").lower()
        if not kind:
            acc.reject(row, obj, "missing event")
            continue
        if kind in SENDGRID_NOT_USED:
            acc.reject(row, obj, f"not used: SendGrid '{kind}' event (no contract equivalent)")
            continue
        if kind not in SENDGRID_EVENTS:
            acc.reject(row, obj, f"unknown SendGrid event '{kind[:40]}'")
            continue
        email, eid, mid = _nonempty(obj.get("email")), _nonempty(obj.get("sg_event_id")), _nonempty(obj.get("sg_message_id"))
        ts, ts_reason = _unix_seconds(obj.get("timestamp"))
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


# -- Mailchimp --------------------------------------------------------------------------------
MAILCHIMP_ACTIONS = {"open": "open", "click": "click", "bounce": "bounce"}


def _send_times(send_time: str | Mapping[str, str] | None, reports: list[dict[str, Any]]) -> Callable[[str], str]:
    """campaign_id -> its send_time as ISO text with an offset (a missing one stops the import)."""
    given = dict(send_time) if isinstance(send_time, Mapping) else {}
    for rep in reports:
        if _nonempty(rep.get("campaign_id")) and _nonempty(rep.get("send_time")):
            given.setdefault(rep["campaign_id"].strip(), rep["send_time"])

    seen: dict[str, str] = {}

    def lookup(campaign: str) -> str:
        if campaign in seen:
            return seen[campaign]
        text = send_time if isinstance(send_time, str) else given.get(campaign)
        if not _nonempty(text):
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
            if _nonempty(r.get("send_time")) and _nonempty(r.get("campaign_id")):
                reports.setdefault(r["campaign_id"], {"campaign_id": r["campaign_id"], "send_time": r["send_time"]})
            if _nonempty(r.get("action")):
                act = {c: r.get(c) for c in ("action", "timestamp", "url", "ip", "type") if r.get(c) is not None}
                members[k][1]["activity"].append((i, act))
        return list(members.values()), list(reports.values())
    out, reports = [], []
    for row, obj, problem in _json_records(path, "Mailchimp"):
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
    acc = _Rows()
    for row, m in members:
        acts = m.get("activity") if isinstance(m, dict) else None
        acts = acts if isinstance(acts, list) else []
        if not isinstance(m, dict):
            acc.reject(row, m, "record is not a member object")
            continue
        campaign, email = _nonempty(m.get("campaign_id")), _nonempty(m.get("email_address"))
        if campaign is None or email is None:
            reason = "missing campaign_id" if campaign is None else "missing email_address"
            acc.reject(row, {k: v for k, v in m.items() if k != "activity"}, reason)
            for a in acts:
                acc.reject(*(a if isinstance(a, tuple) else (row, a)), reason)
            continue
        user = key(email)
        message = f"{campaign}:{user}"
        acc.add(row, {"campaign_id": campaign, "email_address": email, "send_time": when(campaign)}, event_id=_hid("mc", campaign, user, "send"),
                user_id=user, message_id=message, event_type="send", timestamp=when(campaign), machine_open=None, propensity=None)
        for a in acts:
            arow, act = a if isinstance(a, tuple) else (row, a)
            record = {"campaign_id": campaign, "email_address": email, **(act if isinstance(act, dict) else {"activity": act})}
            action = (_nonempty(act.get("action")) or "").lower() if isinstance(act, dict) else ""
            if action not in MAILCHIMP_ACTIONS:
                acc.reject(arow, record, f"unknown Mailchimp action '{action[:40]}'" if action else "missing action")
                continue
            stamp = act.get("timestamp")
            acc.add(arow, record, event_id=_hid("mc", campaign, user, action, stamp, act.get("url")), user_id=user,
                    message_id=message, event_type=MAILCHIMP_ACTIONS[action], timestamp=stamp, machine_open=None, propensity=None)
    return acc.finish("mailchimp", now, True)


# -- Amazon SES -------------------------------------------------------------------------------
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
    return [e for e in found if _nonempty(e)] or destination


def import_ses(source: str | Path, *, user_ids: str = "email", salt: str = "", now: pd.Timestamp | None = None) -> ImportResult:
    """Amazon SES event publishing records (``eventType``; or ``notificationType`` for plain
    notifications): a JSON array, Firehose's one record a line, or SNS envelopes of either.

    A record names its recipients (``mail.destination``; the bounce and complaint objects list
    theirs), and makes one contract event per recipient. Opens and clicks of a message with
    several recipients cannot be attributed and are rejected. The send is the ``Delivery``
    event; ``Send`` stands in only for a message with no ``Delivery`` in the input.
    """
    key = user_key(user_ids, salt)
    acc, kinds = _Rows(), []
    for row, obj, problem in _json_records(source, "SES"):
        rec, problem = (obj, problem) if problem else _ses_unwrap(obj)
        if problem or not isinstance(rec, dict):
            acc.reject(row, obj, problem or "record is not a JSON object")
            continue
        kind = (_nonempty(rec.get("eventType")) or _nonempty(rec.get("notificationType")) or "").lower()
        mail = rec.get("mail") if isinstance(rec.get("mail"), dict) else {}
        mid = _nonempty(mail.get("messageId"))
        destination = [e for e in mail.get("destination") or [] if _nonempty(e)] if isinstance(mail.get("destination"), list) else []
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
            stamp, reason = _iso_utc(stamp, "mail.timestamp" if kind == "send" else f"{kind}.timestamp")
        if reason:
            acc.reject(row, obj, reason)
            continue
        for email in _ses_recipients(kind, detail, destination):
            user = key(email)
            acc.add(row, obj, event_id=_hid("ses", mid, kind, user, stamp, json.dumps(detail, sort_keys=True, default=str)),
                    user_id=user, message_id=f"{mid}:{user}", event_type=SES_EVENTS[kind], timestamp=stamp,
                    machine_open=None, propensity=None)
            kinds.append(kind)
    delivered = {r["message_id"] for r, k in zip(acc.rows, kinds) if k == "delivery"}
    acc.drop([not (k == "send" and r["message_id"] in delivered) for r, k in zip(acc.rows, kinds)],
             lambda r: "not used: 'Send' (the message's Delivery event is its send)")
    return acc.finish("ses", now, True)


# -- generic CSV ------------------------------------------------------------------------------
def _csv_times(text: pd.Series, fmt: str | None, tz: str | None) -> tuple[pd.Series, pd.Series]:
    """Parse with a strptime format (or ``unix``/``unix_ms``) and read naive times in ``tz``.
    Returns (values for the contract, mapping reason or None per row)."""
    reason = pd.Series([None] * len(text), index=text.index, dtype="object")
    blank = text.isna()
    if fmt in ("unix", "unix_ms"):
        num = pd.to_numeric(text, errors="coerce")
        num = num.where((num.abs() < (4e12 if fmt == "unix_ms" else 4e9)))
        ts = pd.to_datetime(num, unit="ms" if fmt == "unix_ms" else "s", utc=True)
        reason[~blank & ts.isna()] = f"timestamp is not {'unix milliseconds' if fmt == 'unix_ms' else 'a unix time in seconds'}"
        return ts.astype("datetime64[us, UTC]"), reason
    aware = text.fillna("").str.contains(_OFFSET_RE, regex=True) | bool(fmt and "%z" in fmt)
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us, UTC]")
    if aware.any():
        out[aware] = pd.to_datetime(text[aware], format=fmt or "ISO8601", utc=True, errors="coerce")
    naive = ~aware & ~blank
    if naive.any():
        local = pd.to_datetime(text[naive], format=fmt or "ISO8601", errors="coerce")
        if tz is not None:
            out[naive] = local.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
            reason[naive & local.notna() & out.isna()] = f"local time does not exist or is ambiguous in {tz} (DST change)"
        else:
            reason[naive & local.notna()] = "timestamp has no UTC offset (naive): give timezone"
        reason[naive & local.isna()] = f"timestamp does not match format {fmt}" if fmt else "unparseable timestamp"
    reason[aware & ~blank & out.isna()] = f"timestamp does not match format {fmt}" if fmt else "unparseable timestamp"
    reason[blank] = "missing timestamp"
    return out, reason


def import_csv(source: str | Path, *, columns: Mapping[str, str] | None = None,
               event_types: Mapping[str, str | None] | None = None, timestamp_format: str | None = None,
               timezone: str | None = None, now: pd.Timestamp | None = None) -> ImportResult:
    """Any CSV (or Parquet) of events: ``columns`` maps contract columns to source columns
    (unmapped ones keep their contract name), ``event_types`` maps source values to contract
    types (case-insensitive; ``None`` marks a value as not used), ``timestamp_format`` is a
    strptime format or ``unix``/``unix_ms``, and ``timezone`` (IANA) is the zone of naive times.
    Without ``event_id`` every row gets an id from its content (identical rows: one event).
    """
    cols = {c: c for c in COLUMNS}
    for c, src in (columns or {}).items():
        if c not in cols:
            raise ContractError(f"columns: {c!r} is not a contract column ({', '.join(COLUMNS)})")
        cols[c] = src
    if timezone is not None and not known_timezone(timezone):
        raise ContractError(f"timezone {timezone!r} is not an IANA time zone name")
    types = {str(k).strip().lower(): v for k, v in (event_types or {}).items()}
    wrong = sorted({str(v) for v in types.values() if v is not None and v not in EVENT_TYPES})
    if wrong:
        raise ContractError(f"event_types maps to {', '.join(wrong)}: use {', '.join(EVENT_TYPES)} (or None for not used)")
    raw = _read_table(source, "events").reset_index(drop=True)
    missing = [f"{src} (for {c})" for c, src in cols.items() if c in EVENT_COLUMNS[1:] and src not in raw.columns]
    if missing:
        raise ContractError(f"events file {source} lacks required column(s): {', '.join(missing)}")

    frame = pd.DataFrame(index=raw.index)
    for c in COLUMNS:
        frame[c] = raw[cols[c]] if cols[c] in raw.columns else None
    if cols["event_id"] not in raw.columns:
        frame["event_id"] = [_hid("csv", *r) for r in raw.astype(str).itertuples(index=False, name=None)]
    kind = frame["event_type"].astype("object")
    low = kind.map(lambda v: None if v is None or pd.isna(v) else str(v).strip().lower())
    frame["event_type"] = low.map(lambda v: None if v is None else types.get(v, v))
    reason = pd.Series([None] * len(raw), index=raw.index, dtype="object")
    malformed = csv_source(raw).malformed if csv_source(raw) is not None else None
    if malformed is not None and len(malformed):  # lines the CSV reader could not parse, with their line number
        rows = malformed["row"].to_numpy(dtype=np.int64)
        reason.iloc[rows] = [f"{r} (line {n})" for r, n in zip(malformed["reason"], csv_source(raw).lines[rows])]
    unused = low.isin([k for k, v in types.items() if v is None])
    reason[unused] = "not used: event type " + kind[unused].astype(str).map(repr)
    stamps = frame["timestamp"]
    if pd.api.types.is_datetime64_any_dtype(stamps.dtype):
        if timezone is not None and not isinstance(stamps.dtype, pd.DatetimeTZDtype):  # naive Parquet times
            frame["timestamp"] = stamps.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
            dst = stamps.notna() & frame["timestamp"].isna()
            reason[dst] = f"local time does not exist or is ambiguous in {timezone} (DST change)"
    elif timestamp_format or timezone:
        text = stamps.astype("object").map(lambda v: None if v is None or pd.isna(v) else str(v).strip() or None)
        frame["timestamp"], ts_reason = _csv_times(text, timestamp_format, timezone)
        reason = reason.where(reason.notna(), ts_reason)
    bad = reason.notna().to_numpy()
    row_text = lambda i: json.dumps({str(k): (None if pd.isna(v) else v) for k, v in raw.iloc[i].items()}, ensure_ascii=False, default=str)
    mapping_rejects = pd.DataFrame({"source_row": np.flatnonzero(bad), "record": [row_text(i) for i in np.flatnonzero(bad)],
                                    "reason": reason[bad].to_numpy(dtype=object)})
    kept = np.flatnonzero(~bad)
    return _finish("csv", frame.iloc[kept].reset_index(drop=True), kept, lambda i: row_text(int(kept[i])),
                   mapping_rejects, now, True)


# -- dispatch and the CLI-facing writer -------------------------------------------------------
FORMATS: dict[str, Callable[..., ImportResult]] = {
    "sendgrid": import_sendgrid, "mailchimp": import_mailchimp, "ses": import_ses, "csv": import_csv,
}


def import_file(fmt: str, path: str | Path, **options: Any) -> ImportResult:
    """Import ``path`` in format ``fmt`` (sendgrid, mailchimp, ses, csv) with its options."""
    fn = FORMATS.get(str(fmt).strip().lower())
    if fn is None:
        raise ContractError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    params = [n for n, p in inspect.signature(fn).parameters.items() if p.kind == p.KEYWORD_ONLY and n != "require_sends"]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ContractError(f"format {fmt} has no option {', '.join(unknown)}: it takes {', '.join(params)}")
    return fn(path, **options)


def write_events_parquet(events: pd.DataFrame, path: str | Path) -> Path:
    """Contract events as typed Parquet (what the DuckDB engine reads), written atomically:
    a temporary name first (``.tmp``, which no reader of a folder picks up), then a rename."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("event_id", pa.string()), ("user_id", pa.string()), ("message_id", pa.string()),
                        ("event_type", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")),
                        ("machine_open", pa.bool_()), ("propensity", pa.float64())])
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = events.reindex(columns=list(COLUMNS)).copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[us, UTC]")
    frame["machine_open"] = frame["machine_open"].astype("boolean")
    frame["propensity"] = pd.to_numeric(frame["propensity"], errors="coerce").astype("float64")
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
        dir_fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power loss
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def rejects_path_for(out_path: str | Path) -> Path:
    """``events.parquet`` -> ``events_rejects.csv`` beside it."""
    out = Path(out_path)
    return out.with_name(f"{out.stem}_rejects.csv")


def import_events(fmt: str, path: str | Path, out_path: str | Path, **options: Any) -> dict[str, Any]:
    """Import ``path`` and write the contract Parquet to ``out_path`` and the rejects to
    ``<stem>_rejects.csv`` beside it (always, so no stale rejects stay). Returns the counts.

    Point ``sendtime nightly --events`` at the Parquet file, not its folder, when the rejects
    CSV sits beside it: a folder's CSV files are read as events too.
    """
    res = import_file(fmt, path, **options)
    out = write_events_parquet(res.events, out_path)
    rejects = rejects_path_for(out)
    tmp = rejects.with_name(f".{rejects.name}.{os.getpid()}.tmp")
    res.rejects.to_csv(tmp, index=False)
    os.replace(tmp, rejects)
    return {"format": res.fmt, "read": res.read, "accepted": res.n_accepted, "rejected": res.n_rejected,
            "reasons": res.reasons(), "events": str(out), "rejects": str(rejects)}
