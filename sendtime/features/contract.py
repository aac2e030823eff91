"""The input contract: read event and user tables, validate every row, account for all of them.

Rows that break the contract are never dropped silently: they come back in a rejects table with
a reason, and ``accepted + rejected == read`` always holds. A file that cannot be read at all, or
lacks a required column, raises :class:`ContractError` with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from zoneinfo import available_timezones

import numpy as np
import pandas as pd

from sendtime.features.csv_reader import concat_records, mark_rejects, read_csv_records
from sendtime.features import inputs as R  # the reject reasons, one definition for every engine
from sendtime.features.inputs import MISSING_TEXT, ContractError, data_files

EVENT_COLUMNS = ("event_id", "user_id", "message_id", "event_type", "timestamp")
OPTIONAL_EVENT_COLUMNS = ("machine_open", "propensity")
EVENT_TYPES = ("send", "open", "click", "bounce", "unsubscribe", "complaint", "conversion")
#: optional columns about the message: the channel of a send (email when missing), and the value
#: and currency of a conversion (a purchase attributed to the message). Kept only when present.
MESSAGE_ATTRIBUTE_COLUMNS = ("channel", "value", "currency")
CHANNELS = ("email", "push", "sms")
#: the outcomes that must follow a send of the same message
FOLLOWS_SEND = ("open", "click", "bounce", "conversion")
USER_COLUMNS = ("user_id", "timezone")
OPTIONAL_USER_COLUMNS = ("segment",)
EARLIEST = pd.Timestamp("1990-01-01", tz="UTC")
# An offset only counts after a time of day: "2026-03-02" ends in "-02" but is a naive date.
_OFFSET_RE = r"[Tt ]\d{2}(?::?\d{2}){0,2}(?:[.,]\d+)?\s*(?:Z|z|[+-]\d{2}(?::?\d{2})?)$"
_TRUE = {"true", "1", "t", "yes", "y"}
_FALSE = {"false", "0", "f", "no", "n"}


@dataclass
class ReadResult:
    accepted: pd.DataFrame
    rejects: pd.DataFrame  # original columns as text, plus ``reason``
    read: int

    @property
    def n_accepted(self) -> int:
        return len(self.accepted)

    @property
    def n_rejected(self) -> int:
        return len(self.rejects)

    def summary(self, what: str) -> str:
        return (
            f"{what}: read {self.read:,} = accepted {self.n_accepted:,} + rejected {self.n_rejected:,}"
        )

    def reasons(self) -> dict[str, int]:
        if self.rejects.empty:
            return {}
        return {str(k): int(v) for k, v in self.rejects["reason"].value_counts().items()}


def _read_table(path: str | Path, what: str) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise ContractError(f"{what} file not found: {p}")
    try:
        if p.is_dir():
            return _read_folder(p, what)
        if p.stat().st_size == 0:
            raise ContractError(f"{what} file {p} is empty (0 bytes)")
        name = p.name.lower()
        if name.endswith(".parquet") or name.endswith(".pq"):
            return pd.read_parquet(p)
        if name.endswith(".csv") or name.endswith(".csv.gz"):
            # every record in file order, malformed ones as rows of missing values; their line
            # numbers and reasons ride along in attrs["csv"] (see sendtime.features.csv_reader)
            return read_csv_records(p, what).records()
    except ContractError:
        raise
    except UnicodeDecodeError:
        raise ContractError(f"{what} file {p} is not valid UTF-8 text") from None
    except Exception as exc:  # pyarrow/pandas raise many types for corrupt input
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ContractError(f"cannot read {what} file {p}: {first}") from None
    raise ContractError(f"{what} file {p} must be .parquet or .csv")


def _read_folder(p: Path, what: str) -> pd.DataFrame:
    """A folder as pipelines write it (:func:`sendtime.features.inputs.data_files`): the data files in
    path order, each with its Hive ``key=value`` folder values as text columns it lacks, and
    their columns united by name (a column missing from one file is missing on its rows; types
    that drift between files meet as text and are judged row by row)."""
    found = data_files(p)
    if not found.files:
        why = f" ({found.ignored_summary()})" if found.ignored else ""
        raise ContractError(f"{what} folder {p} holds no .parquet or .csv files{why}")
    frames = []
    for f in found.files:
        frame = _read_table(f, what)
        for key, value in found.partitions(f).items():
            if key not in frame.columns:
                frame[key] = pd.Series([value] * len(frame), index=frame.index, dtype=object)
        frames.append(frame)
    if len(frames) > 1 and len({tuple(str(t) for t in fr.dtypes) + tuple(fr.columns) for fr in frames}) > 1:
        frames = [_for_union(fr) for fr in frames]
    return concat_records(frames, found.files)  # pd.concat, keeping each CSV file's lines and malformed records


def _for_union(frame: pd.DataFrame) -> pd.DataFrame:
    """A file's columns as plain objects, so that files whose types drift (an id as integer in
    one, text in another; timestamps as instants in one, text in another) concatenate without
    pandas coercing values, and each value is judged by the contract as it was written."""
    return frame.astype(object).where(frame.notna(), None)


def _require(df: pd.DataFrame, columns: tuple[str, ...], what: str, path: str | Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ContractError(f"{what} file {path} lacks required column(s): {', '.join(missing)}")


def _text_of(v: object) -> str:
    # An integer id column with a null in it arrives as float64 (42 -> 42.0): write it as "42" so
    # it still matches the same id read as text or as an integer elsewhere.
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _as_text(s: pd.Series) -> pd.Series:
    """Strings with surrounding blanks stripped; missing stays missing, and so does text that
    exports write for missing (:data:`sendtime.features.inputs.MISSING_TEXT`: "", "nan", "NULL", ...)."""
    if isinstance(s.dtype, pd.StringDtype) and len(s):
        out = _strip_strings(s)
    else:
        out = s.astype("object")
        mask = out.notna()
        out = out.where(~mask, out[mask].map(_text_of) if mask.any() else out)
    return _missing_as_none(out)


def _missing_as_none(out: pd.Series) -> pd.Series:
    """None for the values that mean missing; only short values can, so only those are looked at."""
    text = out.astype(str)
    short = (text.str.len() <= _MISSING_LEN).to_numpy()
    if not short.any():
        return out
    missing = np.zeros(len(out), dtype=bool)
    missing[short] = text[short].str.lower().isin(MISSING_TEXT).to_numpy()
    return out.where(~missing, None)


_MISSING_LEN = max(len(t) for t in MISSING_TEXT)


def _strip_strings(s: pd.Series) -> pd.Series:
    """The text values, stripped as ``str.strip`` does, without a Python call per value: only
    the values that begin or end with a character Python counts as whitespace are stripped,
    found from the few distinct first and last characters."""
    first, last = s.str[:1], s.str[-1:]
    ends = set(first.dropna().unique()) | set(last.dropna().unique())
    blank = [c for c in ends if c.isspace()]
    out = s.astype("object")
    if blank:
        pad = (first.isin(blank) | last.isin(blank)).fillna(False).to_numpy(dtype=bool)
        out[pad] = [v.strip() for v in out[pad]]
    return out


def parse_utc(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse timestamps as UTC instants. Returns (timestamps, reason-or-None per row)."""
    reason = pd.Series([None] * len(values), index=values.index, dtype="object")
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        ts = values.dt.tz_convert("UTC")
        reason[ts.isna()] = R.MISSING_TIMESTAMP
    elif pd.api.types.is_datetime64_any_dtype(values.dtype):
        ts = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]")
        reason[:] = R.NAIVE_TIMESTAMP
        return ts, reason
    else:
        text = values.astype("object").map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip())
        has_offset = text.fillna("").str.contains(_OFFSET_RE, regex=True)
        ts = pd.to_datetime(text.where(has_offset), utc=True, errors="coerce", format="ISO8601")
        reason[text.isna()] = R.MISSING_TIMESTAMP
        no_offset = text.notna() & ~has_offset
        if no_offset.any():
            # Only text that is a date-time at all is "naive"; "hello" or an epoch number is not.
            numeric = pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype)
            as_naive = pd.to_datetime(text.where(no_offset), utc=True, errors="coerce", format="ISO8601")
            is_date = as_naive.notna() & ~numeric
            reason[no_offset & is_date] = R.NAIVE_TIMESTAMP
            reason[no_offset & ~is_date] = R.UNPARSEABLE_TIMESTAMP
        reason[text.notna() & has_offset & ts.isna()] = R.UNPARSEABLE_TIMESTAMP
    ts = ts.astype("datetime64[us, UTC]")
    return ts, reason


def _parse_bool(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    reason = pd.Series([None] * len(values), index=values.index, dtype="object")
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("boolean"), reason
    out = pd.Series(pd.NA, index=values.index, dtype="boolean")
    if pd.api.types.is_numeric_dtype(values.dtype):  # 0/1 flags (an integer column with nulls reads as 1.0)
        num = pd.to_numeric(values, errors="coerce")
        out[num == 1] = True
        out[num == 0] = False
        reason[num.notna() & ~num.isin([0, 1])] = R.BAD_MACHINE_OPEN
        return out, reason
    text = values.astype("object").map(lambda v: None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v).strip().lower())
    out[text.isin(_TRUE)] = True
    out[text.isin(_FALSE)] = False
    bad = text.notna() & ~text.isin(_TRUE | _FALSE | {"", "none", "null", "nan"})
    reason[bad] = R.BAD_MACHINE_OPEN
    return out, reason


def flag_row_basics(df: pd.DataFrame, reason: pd.Series, required: tuple[str, ...], types: tuple[str, ...],
                    ts_reason: pd.Series, now: pd.Timestamp) -> None:
    """The checks every row of a table of events shares, in order (a row keeps its first
    reason): required ids, a known ``event_type``, and a usable timestamp (parsed, after 1990,
    not more than a day in the future). Writes into ``reason`` where it is still empty."""
    def flag(mask: pd.Series, text: str) -> None:
        reason[mask & reason.isna()] = text

    for c in required:
        flag(df[c].isna(), R.MISSING.format(c))
    flag(~df["event_type"].isin(types) & df["event_type"].notna(), R.UNKNOWN_EVENT_TYPE)
    ts_bad = ts_reason.notna() & reason.isna()
    reason[ts_bad] = ts_reason[ts_bad]
    flag(df["timestamp"] < EARLIEST, R.BEFORE_1990)
    flag(df["timestamp"] > now + pd.Timedelta(days=1), R.IN_THE_FUTURE)


def validate_events(raw: pd.DataFrame, now: pd.Timestamp | None = None, *, require_sends: bool = True) -> ReadResult:
    """Validate an event table already in memory (see :func:`read_events`).

    ``require_sends=False`` lets opens, clicks and bounces through whose send is not in the same
    table (one that is must still come first): a webhook batch may carry an open whose send came
    in an earlier batch, or comes in a later one. The nightly run reads the whole history with
    the check on.
    """
    read = len(raw)
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    df = pd.DataFrame(index=raw.index)
    for c in ("event_id", "user_id", "message_id", "event_type"):
        df[c] = _as_text(raw[c])
    df["event_type"] = df["event_type"].str.lower()
    df["timestamp"], ts_reason = parse_utc(raw["timestamp"])
    if "machine_open" in raw.columns:
        df["machine_open"], mo_reason = _parse_bool(raw["machine_open"])
    else:
        df["machine_open"] = pd.Series(pd.NA, index=raw.index, dtype="boolean")
        mo_reason = pd.Series([None] * read, index=raw.index, dtype="object")
    if "propensity" in raw.columns:
        df["propensity"] = pd.to_numeric(raw["propensity"], errors="coerce").astype("float64")
        bad_prop = raw["propensity"].notna() & (df["propensity"].isna() | (df["propensity"] <= 0) | (df["propensity"] > 1))
    else:
        df["propensity"] = np.nan
        bad_prop = pd.Series(False, index=raw.index)

    reason = pd.Series([None] * read, index=raw.index, dtype="object")

    def flag(mask: pd.Series, text: str) -> None:
        m = mask & reason.isna()
        reason[m] = text

    flag_row_basics(df, reason, ("event_id", "user_id", "message_id", "event_type"), EVENT_TYPES, ts_reason, now)
    flag(mo_reason.notna(), R.BAD_MACHINE_OPEN)
    flag(bad_prop, R.BAD_PROPENSITY)
    for c, bad in _message_attributes(raw, df).items():
        flag(bad, {"channel": R.UNKNOWN_CHANNEL, "value": R.BAD_VALUE, "currency": R.BAD_CURRENCY}[c])

    # Repeated event ids: identical rows are the same event (kept once); differing contents are
    # a conflict, and only the first occurrence is kept.
    ok = reason.isna()
    key_cols = ["event_id", "user_id", "message_id", "event_type", "timestamp"]
    dup_any = ok & df["event_id"].duplicated(keep="first") & df["event_id"].notna()
    if dup_any.any():
        same = ok & df.duplicated(subset=key_cols, keep="first")
        flag(dup_any & same, R.DUPLICATE_EVENT)
        flag(dup_any & ~same, R.CONFLICTING_EVENT_ID)

    # Opens and clicks must follow a send of the same message.
    ok = reason.isna()
    sends = df[ok & (df["event_type"] == "send")]
    send_ts = sends.drop_duplicates("message_id").set_index("message_id")["timestamp"]
    follow = ok & df["event_type"].isin(FOLLOWS_SEND)
    # reindex, not Series.map: map() with an empty lookup (no valid sends at all) casts it to
    # float64 and fails on datetimes
    matched = pd.Series(send_ts.reindex(df.loc[follow, "message_id"]).to_numpy(), index=df.index[follow],
                        dtype="datetime64[us, UTC]")
    no_send = pd.Series(False, index=df.index)
    no_send[follow] = matched.isna().to_numpy()
    if require_sends:
        flag(no_send, R.NO_SEND)
    before = pd.Series(False, index=df.index)
    before[follow] = (df.loc[follow, "timestamp"] < matched).fillna(False).astype(bool).to_numpy()
    flag(before, R.BEFORE_SEND)
    # a repeated send among the sends only: an open listed above its send is no earlier send
    is_send = ok & (df["event_type"] == "send")
    dup_send = is_send & df["message_id"].where(is_send).duplicated(keep="first")
    flag(dup_send & reason.isna(), R.SECOND_SEND)

    bad = reason.notna()
    rejects = raw.loc[bad].astype("object").astype(str).copy()
    rejects["reason"] = reason[bad].values
    rejects.insert(0, "source_row", np.flatnonzero(bad.to_numpy()))
    accepted = df.loc[~bad].copy()
    accepted.loc[accepted["event_type"] != "open", "machine_open"] = pd.NA
    if "value" in accepted.columns:  # a value belongs to a conversion
        accepted.loc[accepted["event_type"] != "conversion", ["value", "currency"]] = np.nan, None
    accepted = accepted.sort_values(["timestamp", "event_id"], kind="stable").reset_index(drop=True)
    for c in ("event_id", "user_id", "message_id", "event_type"):
        accepted[c] = accepted[c].astype(str)
    return ReadResult(accepted=accepted, rejects=rejects.reset_index(drop=True), read=read)


def _message_attributes(raw: pd.DataFrame, df: pd.DataFrame) -> dict[str, pd.Series]:
    """Parse the optional channel, value and currency columns into ``df`` (where present):
    the rows each one rejects."""
    bad: dict[str, pd.Series] = {}
    if "channel" in raw.columns:
        ch = _as_text(raw["channel"]).str.lower()
        bad["channel"] = ch.notna() & ~ch.isin(CHANNELS)
        df["channel"] = ch.fillna("email")
    if "value" in raw.columns or "currency" in raw.columns:
        v = raw["value"] if "value" in raw.columns else pd.Series(np.nan, index=raw.index)
        num = pd.to_numeric(v, errors="coerce").astype("float64")
        given = _as_text(v.astype(object)).notna()
        bad["value"] = given & (num.isna() | (num < 0) | ~np.isfinite(num.fillna(0.0)))
        df["value"] = num
        cur = _as_text(raw["currency"]).str.upper() if "currency" in raw.columns else pd.Series(None, index=raw.index, dtype=object)
        bad["currency"] = cur.notna() & ~cur.fillna("").str.fullmatch(r"[A-Z]{3}")
        df["currency"] = cur
    return bad


def read_events(path: str | Path, now: pd.Timestamp | None = None) -> ReadResult:
    """Read and validate events from Parquet (file or folder) or CSV."""
    raw = _read_table(path, "events")
    _require(raw, EVENT_COLUMNS, "events", path)
    # CSV: rejects get their line, malformed records their reason (see sendtime.features.csv_reader)
    return mark_rejects(validate_events(raw.reset_index(drop=True), now=now), raw)


_ZONES: frozenset[str] | None = None


def known_timezone(name: str | None) -> bool:
    global _ZONES
    if _ZONES is None:
        _ZONES = frozenset(available_timezones())
    return bool(name) and name in _ZONES


def validate_users(raw: pd.DataFrame) -> ReadResult:
    read = len(raw)
    df = pd.DataFrame(index=raw.index)
    df["user_id"] = _as_text(raw["user_id"])
    df["timezone"] = _as_text(raw["timezone"])
    df["segment"] = _as_text(raw["segment"]) if "segment" in raw.columns else None
    reason = pd.Series([None] * read, index=raw.index, dtype="object")
    reason[df["user_id"].isna()] = "missing user_id"
    zones = df["timezone"].dropna().unique()
    bad_zones = {z for z in zones if not known_timezone(z)}
    reason[reason.isna() & df["timezone"].isin(bad_zones)] = "unknown timezone"
    reason[reason.isna() & df["user_id"].duplicated(keep="first")] = "duplicate user_id"
    bad = reason.notna()
    rejects = raw.loc[bad].astype("object").astype(str).copy()
    rejects["reason"] = reason[bad].values
    rejects.insert(0, "source_row", np.flatnonzero(bad.to_numpy()))
    accepted = df.loc[~bad].reset_index(drop=True)
    accepted["user_id"] = accepted["user_id"].astype(str)
    accepted["segment"] = accepted["segment"].fillna("unknown").astype(str)
    return ReadResult(accepted=accepted, rejects=rejects.reset_index(drop=True), read=read)


def read_users(path: str | Path) -> ReadResult:
    """Read and validate the users table: ``user_id``, ``timezone`` (IANA), optional ``segment``."""
    raw = _read_table(path, "users")
    _require(raw, USER_COLUMNS, "users", path)
    return mark_rejects(validate_users(raw.reset_index(drop=True)), raw)


def write_rejects(result: ReadResult, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    result.rejects.to_csv(p, index=False)
    return p
