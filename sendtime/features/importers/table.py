"""Any CSV or Parquet table of events, with its columns, event types and times mapped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from sendtime.features.contract import _OFFSET_RE, EVENT_COLUMNS, EVENT_TYPES, ContractError, _read_table, known_timezone
from sendtime.features.csv_reader import csv_source
from sendtime.features.importers.mapping import COLUMNS, ImportResult, finish, hid


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
        frame["event_id"] = [hid("csv", *r) for r in raw.astype(str).itertuples(index=False, name=None)]
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
    return finish("csv", frame.iloc[kept].reset_index(drop=True), kept, lambda i: row_text(int(kept[i])),
                   mapping_rejects, now, True)
