"""Format dispatch and the files an import writes: the contract Parquet (atomically) and its rejects."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from sendtime.features.contract import MESSAGE_ATTRIBUTE_COLUMNS, ContractError
from sendtime.features.importers.mailchimp import import_mailchimp
from sendtime.features.importers.mapping import COLUMNS, ImportResult
from sendtime.features.importers.onesignal import import_onesignal
from sendtime.features.importers.sendgrid import import_sendgrid
from sendtime.features.importers.ses import import_ses
from sendtime.features.importers.table import import_csv

FORMATS: dict[str, Callable[..., ImportResult]] = {
    "sendgrid": import_sendgrid, "mailchimp": import_mailchimp, "ses": import_ses, "onesignal": import_onesignal,
    "csv": import_csv,
}


def import_file(fmt: str, path: str | Path, **options: Any) -> ImportResult:
    """Import ``path`` in format ``fmt`` (sendgrid, mailchimp, ses, onesignal, csv) with its options."""
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

    extra = [c for c in MESSAGE_ATTRIBUTE_COLUMNS if c in events.columns]  # channel, value, currency when given
    schema = pa.schema([("event_id", pa.string()), ("user_id", pa.string()), ("message_id", pa.string()),
                        ("event_type", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")),
                        ("machine_open", pa.bool_()), ("propensity", pa.float64())]
                       + [(c, pa.float64() if c == "value" else pa.string()) for c in extra])
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = events.reindex(columns=list(COLUMNS) + extra).copy()
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
