"""What every importer shares: the result type, user ids, stable event ids, the mapped rows and
the contract's judgement of them (every source record ends as an event or a reject)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from sendtime.features.contract import (
    EVENT_COLUMNS,
    MESSAGE_ATTRIBUTE_COLUMNS,
    OPTIONAL_EVENT_COLUMNS,
    ContractError,
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


def user_key(user_ids: str = "email", salt: str = "") -> Callable[[str], str]:
    """The function that turns a recipient address into a ``user_id``."""
    if user_ids == "email":
        return lambda email: email.strip().lower()
    if user_ids == "sha256":
        return lambda email: hashlib.sha256((salt + email.strip().lower()).encode("utf-8")).hexdigest()
    raise ContractError(f"user_ids must be one of {', '.join(USER_ID_FORMS)}, got {user_ids!r}")


def hid(prefix: str, *parts: object) -> str:
    """A stable event id for formats that carry none: identical events get identical ids."""
    return prefix + "-" + hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()[:24]


def field_at(d: Any, *path: str) -> Any:
    """``d[path[0]][path[1]]...``, or None where a level is missing or not an object (JSON records)."""
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def as_text(obj: Any) -> str:
    return obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, default=str)


def nonempty(v: Any) -> str | None:
    return v.strip() if isinstance(v, str) and v.strip() else None


def unix_seconds(v: Any) -> tuple[pd.Timestamp | None, str | None]:
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


def iso_utc(v: Any, field: str) -> tuple[pd.Timestamp | None, str | None]:
    """An ISO 8601 time with an offset, as a UTC instant (times decide which event is the send)."""
    if not nonempty(v):
        return None, f"missing {field}"
    try:
        ts = pd.Timestamp(v.strip())
    except (ValueError, TypeError, OverflowError, pd.errors.OutOfBoundsDatetime):
        return None, f"unparseable timestamp in {field}"
    if ts.tzinfo is None:
        return None, f"{field} has no UTC offset (naive)"
    return ts.tz_convert("UTC"), None


class Rows:
    """Source events as they are mapped: a contract row each, or the reason it could not be."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.src: list[tuple[int, Any]] = []  # (source_row, record) per mapped row
        self.bad: list[tuple[int, str, str]] = []  # (source_row, record text, reason)

    def add(self, source_row: int, record: Any, **fields: Any) -> None:
        self.rows.append(fields)
        self.src.append((source_row, record))

    def reject(self, source_row: int, record: Any, reason: str) -> None:
        self.bad.append((source_row, as_text(record), reason))

    def drop(self, keep: Sequence[bool], reason_of: Callable[[dict[str, Any]], str]) -> None:
        """Move mapped rows with ``keep`` False to the rejects (e.g. an unused 'processed')."""
        for row, (sr, rec), k in zip(list(self.rows), list(self.src), keep):
            if not k:
                self.reject(sr, rec, reason_of(row))
        self.rows = [r for r, k in zip(self.rows, keep) if k]
        self.src = [s for s, k in zip(self.src, keep) if k]

    def finish(self, fmt: str, now: pd.Timestamp | None, require_sends: bool) -> ImportResult:
        extra = [c for c in MESSAGE_ATTRIBUTE_COLUMNS if any(c in r for r in self.rows)]  # e.g. a channel
        frame = pd.DataFrame(self.rows, columns=list(COLUMNS) + extra)
        ts = frame["timestamp"]
        if len(frame) and all(isinstance(t, pd.Timestamp) for t in ts):
            frame["timestamp"] = pd.to_datetime(ts, utc=True)
        source_row = np.array([s for s, _ in self.src], dtype=np.int64)
        records = [r for _, r in self.src]
        bad = pd.DataFrame(self.bad, columns=["source_row", "record", "reason"])
        return finish(fmt, frame, source_row, lambda i: as_text(records[i]), bad, now, require_sends)


def finish(fmt: str, frame: pd.DataFrame, source_row: np.ndarray, record_of: Callable[[int], str],
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


def json_records(path: str | Path, what: str) -> list[tuple[int, Any, str | None]]:
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
