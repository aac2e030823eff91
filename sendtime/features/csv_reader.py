"""CSV as exports really are: malformed records become rejects with their line number, the rest is read.

:func:`read_csv_records` parses a CSV file with pyarrow's reader and never gives up on a whole
file for a few bad lines. What it does with each kind of line:

* A record with MORE fields than the header is malformed ("malformed line: expected 6 fields,
  saw 7"): pyarrow's ``invalid_row_handler`` skips it and reports its row number and text.
* A record with FEWER fields is padded with missing values (as pandas' reader did), so the
  contract judges it row by row ("missing event_type" ...).
* A record with bytes that are not UTF-8 is malformed ("malformed line: not valid UTF-8").
  Whether the file is valid UTF-8 is checked once (a C-speed decode); only if it is not, each
  invalid byte is replaced by a marker character that cannot occur in the text, and the
  records whose values (or text) hold the marker are the invalid ones.
* A quote that opens a field and never closes ("malformed line: unclosed quote") makes the
  reader take the following lines into that field, up to the next quote or to the end of the
  file. A record that spans lines is checked: if it holds an odd number of quotes (it ran to
  the end of the file inside quotes), the quote ending its field is followed by text instead of
  a delimiter, or a line wholly inside it is a whole record on its own, the line where it
  starts is rejected and the lines after it are parsed again (in windows, until both parses
  start a record on the same line), so no line after it is lost. A record that spans lines
  legitimately but has the wrong field count is one malformed record.
* A UTF-8 byte-order mark, CRLF (or CR) line ends, quoted fields with delimiters, quotes and
  newlines are read as data; blank lines are skipped (they are not records); ``.csv.gz`` is
  decompressed.

Line numbers are physical, 1-based, counting the header as line 1 and every line a quoted
newline or a bad record takes up. They come from pyarrow's row numbers (a record spanning lines
is one row there) plus the count of line breaks inside the records before.

A file that is mostly malformed (more than half of its records) is refused with a one-line
:class:`~sendtime.features.contract.ContractError` naming the first bad line: it is probably the wrong
file, delimiter or encoding, and keeping the "good" half would be guessing.

Interface for the contract (``sendtime.features.contract._read_table``): :meth:`CsvTable.records` gives
every record in file order as one frame (malformed records as rows of missing values, so the
position of a row is its record number, counting malformed records) with a :class:`CsvSource`
in ``frame.attrs["csv"]``; :func:`concat_records` concatenates per-file frames keeping that
information; :func:`mark_rejects` puts the line numbers and malformed reasons into a
validated :class:`~sendtime.features.contract.ReadResult`.
"""

from __future__ import annotations

import bisect
import codecs
import gzip
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from sendtime.features.inputs import ContractError

FIELD_COUNT = "malformed line: expected {} fields, saw {}"
NOT_UTF8 = "malformed line: not valid UTF-8"
UNCLOSED_QUOTE = "malformed line: unclosed quote"
TEXT_LIMIT = 200  # characters of a malformed record's text kept in ``bad``
_MARKERS = tuple(chr(c) for c in range(0xFDD0, 0xFDF0))  # Unicode noncharacters: never in real text


@dataclass(eq=False)
class CsvSource:
    """Where the rows of a frame read from CSV came from, one entry per row of the frame.

    ``lines``: physical 1-based line of each row (-1 for rows that did not come from a CSV file,
    e.g. a Parquet file in the same folder); ``malformed``: ``row`` (position in the frame),
    ``line``, ``reason``, ``text`` of the malformed records (whose rows in the frame are all
    missing); ``files``: the file of each row, when the frame combines several files.

    Kept in ``frame.attrs["csv"]``. pandas copies attrs to frames derived from it (deeply, and
    compares them on concat): this object is immutable by convention, copies as itself and
    equals only itself, so that costs nothing and never compares arrays.
    """

    path: str | None
    lines: np.ndarray
    malformed: pd.DataFrame
    files: np.ndarray | None = None

    def __deepcopy__(self, memo: dict) -> "CsvSource":
        return self


@dataclass
class CsvTable:
    """A CSV file's records. ``frame``: the well-formed records, every column as text (pandas'
    ``str`` dtype; empty fields are missing), indexed by record number (0-based, in file order,
    malformed records counted); ``lines``: the physical line where each of them starts;
    ``bad``: the malformed records (``record``, ``line``, ``reason``, ``text``)."""

    path: Path
    frame: pd.DataFrame
    lines: np.ndarray
    bad: pd.DataFrame

    @property
    def n_records(self) -> int:
        return len(self.frame) + len(self.bad)

    def records(self) -> pd.DataFrame:
        """Every record in file order, malformed ones as rows of missing values; RangeIndex, so a
        row's position is its record number; a :class:`CsvSource` in ``attrs["csv"]``."""
        n = self.n_records
        lines = np.empty(n, dtype=np.int64)
        lines[self.frame.index.to_numpy()] = self.lines
        lines[self.bad["record"].to_numpy(dtype=np.int64)] = self.bad["line"].to_numpy(dtype=np.int64)
        frame = self.frame
        if len(self.bad):
            frame = frame.reindex(pd.RangeIndex(n))
        else:
            frame = frame.set_axis(pd.RangeIndex(n), axis=0)
        malformed = self.bad.rename(columns={"record": "row"})[["row", "line", "reason", "text"]]
        frame.attrs["csv"] = CsvSource(path=str(self.path), lines=lines, malformed=malformed.reset_index(drop=True))
        return frame


def csv_source(frame: pd.DataFrame) -> CsvSource | None:
    src = frame.attrs.get("csv")
    return src if isinstance(src, CsvSource) and len(src.lines) == len(frame) else None


def concat_records(frames: Sequence[pd.DataFrame], paths: Sequence[str | Path] | None = None) -> pd.DataFrame:
    """``pd.concat(frames, ignore_index=True)`` keeping each CSV file's line numbers and
    malformed records (with the file they are in). ``paths`` names the files of frames that do
    not carry a :class:`CsvSource` (e.g. Parquet), for the rejects' ``file`` column."""
    out = pd.concat(list(frames), ignore_index=True)
    srcs = [csv_source(f) for f in frames]
    if all(s is None for s in srcs):
        return out
    names = list(paths) if paths is not None else [None] * len(frames)
    lines, files, mal, offset = [], [], [], 0
    for f, s, name in zip(frames, srcs, names):
        n = len(f)
        label = str(name) if name is not None else (s.path if s is not None else "")
        lines.append(s.lines if s is not None else np.full(n, -1, dtype=np.int64))
        files.append(s.files if s is not None and s.files is not None else np.full(n, label, dtype=object))
        if s is not None and len(s.malformed):
            m = s.malformed.assign(row=s.malformed["row"].to_numpy() + offset)
            if "file" not in m.columns:
                m["file"] = label
            mal.append(m)
        offset += n
    malformed = pd.concat(mal, ignore_index=True) if mal else pd.DataFrame(columns=["row", "line", "reason", "text", "file"])
    out.attrs["csv"] = CsvSource(path=None, lines=np.concatenate(lines).astype(np.int64), malformed=malformed,
                                 files=np.concatenate(files))
    return out


def mark_rejects(result: Any, raw: pd.DataFrame) -> Any:
    """The validated ``result`` (a ReadResult of ``raw``, whose ``source_row`` is the position in
    ``raw``) with a ``line`` column (and ``file``, for several files) in its rejects, and the
    malformed records' reasons in place of the contract's ("missing event_id": all their
    fields are missing), their columns empty. Unchanged when ``raw`` did not come from CSV."""
    src = csv_source(raw)
    if src is None:
        return result
    rej = result.rejects.copy()
    rows = rej["source_row"].to_numpy(dtype=np.int64)
    lines = src.lines[rows]
    if (lines < 0).any():  # rows from a file that is not CSV (a Parquet file in the same folder)
        rej.insert(1, "line", pd.array(np.where(lines >= 0, lines, 0), dtype="Int64"))
        rej.loc[lines < 0, "line"] = pd.NA
    else:
        rej.insert(1, "line", lines)
    if src.files is not None:
        rej.insert(1, "file", src.files[rows].astype(object))
    if len(src.malformed):
        by_row = pd.Series(src.malformed["reason"].to_numpy(dtype=object), index=src.malformed["row"].to_numpy(dtype=np.int64))
        mal = np.isin(rows, by_row.index.to_numpy())
        if mal.sum() != len(by_row):  # a malformed record (all fields missing) was accepted: never expected
            raise ContractError(f"{len(by_row) - int(mal.sum())} malformed CSV record(s) passed validation")
        data_cols = [c for c in rej.columns if c not in ("source_row", "file", "line", "reason")]
        rej.loc[mal, "reason"] = by_row.reindex(rows[mal]).to_numpy(dtype=object)
        rej.loc[mal, data_cols] = ""
    rej.attrs = {}
    return replace(result, rejects=rej)


# ----------------------------------------------------------------------------- reading


class _LineIndex:
    """Where each physical line of a buffer starts and where its content ends. Line ends are the
    reader's: ``\\n``, ``\\r\\n`` or a lone ``\\r``."""

    def __init__(self, buf: bytes):
        a = np.frombuffer(buf, dtype=np.uint8)
        n = len(a)
        ends = np.flatnonzero(a == 10)
        cr = np.flatnonzero(a == 13)
        if len(cr):
            nxt = a[np.minimum(cr + 1, n - 1)]
            lone = cr[(cr + 1 >= n) | (nxt != 10)]
            if len(lone):
                ends = np.union1d(ends, lone)
        content_end = ends - ((a[ends] == 10) & (a[np.maximum(ends - 1, 0)] == 13) & (ends > 0))
        starts = np.concatenate([[0], ends + 1]).astype(np.int64)
        stops = np.concatenate([content_end, [n]]).astype(np.int64)
        if starts[-1] >= n:  # the buffer ends with a line end: no line after it
            starts, stops = starts[:-1], stops[:-1]
        self.buf, self.start, self.stop = buf, starts, stops
        self.n = len(starts)

    def text(self, first: int, last: int | None = None) -> bytes:
        """Lines ``first``..``last`` (1-based, inclusive) with their line ends between them."""
        last = first if last is None else min(last, self.n)
        if first > self.n:
            return b""
        return self.buf[self.start[first - 1]:self.stop[last - 1]]


def _read_bytes(p: Path) -> bytes:
    data = p.read_bytes()
    if p.name.lower().endswith(".gz"):
        data = gzip.decompress(data)
    return data


def _mark_invalid_utf8(data: bytes) -> tuple[bytes, str | None]:
    """``data`` itself if it is UTF-8; else a UTF-8 copy where each invalid byte sequence is one
    marker character (a Unicode noncharacter that the file does not hold), and that marker."""
    try:
        data.decode("utf-8")
        return data, None
    except UnicodeDecodeError:
        pass
    marker = next((m for m in _MARKERS if m.encode("utf-8") not in data), "\ufffd")
    name = f"sendtime-csv-mark-{ord(marker):x}"
    try:
        codecs.lookup_error(name)
    except LookupError:
        codecs.register_error(name, lambda err, m=marker: (m, err.end))
    return data.decode("utf-8", errors=name).encode("utf-8"), marker


def _unique_names(names: list[str]) -> list[str]:
    """pandas' header rules: a blank name is ``Unnamed: i``, repeats get ``.1``, ``.2`` ..."""
    out: list[str] = []
    seen: set[str] = set()
    for i, name in enumerate(names):
        name = name if name != "" else f"Unnamed: {i}"
        base, k = name, 0
        while name in seen:
            k += 1
            name = f"{base}.{k}"
        seen.add(name)
        out.append(name)
    return out


def _convert(names: list[str], types: pa.DataType = pa.string()) -> pcsv.ConvertOptions:
    return pcsv.ConvertOptions(column_types={c: types for c in names}, null_values=[""], strings_can_be_null=True,
                               quoted_strings_can_be_null=True)


def _parse(data: pa.Buffer, names: list[str], skip_rows: int = 0, quote: bool = True,
           convert: pcsv.ConvertOptions | None = None) -> tuple[pa.Table, list[tuple[int, int, str]]]:
    """Parse ``data`` single-threaded (then pyarrow numbers the invalid rows: 1-based, a record
    spanning lines counts once, skipped rows and blank lines count). Returns the table and the
    invalid rows as (number, fields seen, text)."""
    invalid: list[tuple[int, int, str]] = []

    def handler(row: Any) -> str:
        invalid.append((int(row.number), int(row.actual_columns), row.text))
        return "skip"

    table = pcsv.read_csv(
        data,
        read_options=pcsv.ReadOptions(column_names=names, skip_rows=skip_rows, use_threads=False),
        parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=handler, ignore_empty_lines=False,
                                        quote_char='"' if quote else False),
        convert_options=convert if convert is not None else _convert(names),
    )
    return table, invalid


def _breaks(s: str) -> int:
    return s.count("\n") + s.count("\r") - s.count("\r\n")


def _breaks_in_rows(table: pa.Table) -> np.ndarray:
    """Line breaks inside each row's values (``\\n``, ``\\r\\n`` or a lone ``\\r``)."""
    total = np.zeros(table.num_rows, dtype=np.int64)
    for col in table.columns:
        for sub, sign in (("\n", 1), ("\r", 1), ("\r\n", -1)):
            total += sign * pc.fill_null(pc.count_substring(col, sub), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return total


def _header(buf: bytes, lines: _LineIndex, what: str, p: Path) -> tuple[list[str], int]:
    """The column names and the header's line (the first line that is not blank)."""
    first = 1
    while first <= lines.n and not lines.text(first).strip():
        first += 1
    if first > lines.n:
        raise ContractError(f"{what} file {p} holds no header line (only blank lines)")
    line = buf[lines.start[first - 1]:lines.stop[first - 1]]
    table = pcsv.read_csv(pa.py_buffer(line + b"\n"), read_options=pcsv.ReadOptions(use_threads=False),
                          convert_options=pcsv.ConvertOptions(column_types={}))
    return _unique_names(list(table.column_names)), first


@dataclass
class _Parsed:
    good: list[pa.Table]
    good_lines: list[np.ndarray]
    bad: list[tuple[int, str, str]]  # (line, reason, text)


@dataclass
class _Segment:
    """Lines ``first``..``last`` parsed: the table, the invalid rows, and by row number (1-based,
    row 0 unused) the line breaks inside each row and the line where it starts."""

    table: pa.Table
    invalid: list[tuple[int, int, str]]
    good_nums: np.ndarray
    breaks: np.ndarray
    row_line: np.ndarray

    @property
    def n_rows(self) -> int:
        return len(self.row_line) - 1


def _segment(buf: bytes, data: pa.Buffer, lines: "_LineIndex", names: list[str], first: int, last: int, skip: int,
             where: str) -> _Segment:
    begin = int(lines.start[first - 1])
    stop = int(lines.start[last]) if last < lines.n else len(buf)
    table, invalid = _parse(data.slice(begin, stop - begin), names, skip_rows=skip)
    n_rows = skip + table.num_rows + len(invalid)
    bad_nums = np.array([n for n, _, _ in invalid], dtype=np.int64)
    good_nums = np.setdiff1d(np.arange(skip + 1, n_rows + 1, dtype=np.int64), bad_nums, assume_unique=True)
    if len(good_nums) != table.num_rows:  # pyarrow numbered its rows differently than assumed
        raise ContractError(f"cannot read {where}: row numbers of the CSV reader do not add up")
    breaks = np.zeros(n_rows + 1, dtype=np.int64)
    # some record spans lines, or (an odd number of quotes) a quote may run to the end
    if last - first + 1 != n_rows or buf.count(b'"', begin, stop) % 2:
        breaks[good_nums] = _breaks_in_rows(table)
        breaks[bad_nums] = [_breaks(t) for _, _, t in invalid]
    row_line = first + np.arange(n_rows + 1, dtype=np.int64) - 1 + np.concatenate([[0], np.cumsum(breaks)[:-1]])
    return _Segment(table, invalid, good_nums, breaks, row_line)


def _closes_cleanly(line: bytes) -> bool:
    """Whether the quote that ends a quoted field on this (last) line of a multi-line record is
    followed by a delimiter or the line end, as in a real quoted value (``""`` is an escaped
    quote, not the end). A stray quote's field ends instead at the next field's opening quote,
    followed by that field's text."""
    i = 0
    while True:
        j = line.find(b'"', i)
        if j < 0:
            return True
        if line[j + 1:j + 2] == b'"':
            i = j + 2
            continue
        return line[j + 1:j + 2] in (b",", b"", b"\r")


def _swallowing(lines: _LineIndex, ncols: int, starts: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Which of these multi-line records look like a quote left open that took the lines after it
    into its field: an odd number of quotes (it ran to the end of the file inside quotes), a quote
    ending the field that is not followed by a delimiter or the line end, or a line wholly
    inside it (no quote in it) that is a whole record by itself (``ncols`` fields)."""
    flagged = np.zeros(len(starts), dtype=bool)
    inner: list[bytes] = []
    owner: list[int] = []
    for i, (s, k) in enumerate(zip(starts.tolist(), spans.tolist())):
        last = min(s + k, lines.n)
        if lines.text(s, last).count(b'"') % 2 or not _closes_cleanly(lines.text(last)):
            flagged[i] = True
            continue
        if ncols < 2:
            continue
        for ln in range(s + 1, last):
            t = lines.text(ln)
            if t.strip() and b'"' not in t:  # a quote in it: the line is not wholly inside the value
                inner.append(t)
                owner.append(i)
    if inner:
        cols = [f"c{i}" for i in range(ncols)]
        table, invalid = _parse(pa.py_buffer(b"\n".join(inner) + b"\n"), cols, quote=False,
                                convert=pcsv.ConvertOptions(include_columns=cols[:1], column_types={cols[0]: pa.binary()}))
        whole = np.ones(len(inner), dtype=bool)
        whole[np.array([n - 1 for n, _, _ in invalid], dtype=np.int64)] = False
        flagged[np.unique(np.asarray(owner)[whole])] = True
    return flagged


RESYNC_WINDOW = 256  # lines parsed past a swallowing record to find where the parses agree again


def _culprits(seg: _Segment, lines: _LineIndex, ncols: int) -> np.ndarray:
    """Row numbers (ascending) of the records an unclosed quote made swallow the lines after it."""
    multi = np.flatnonzero(seg.breaks > 0)  # rows that span lines
    return multi[_swallowing(lines, ncols, seg.row_line[multi], seg.breaks[multi])] if len(multi) else multi


def _take(seg: _Segment, r_from: int, r_to: int, out: _Parsed, names: list[str], where: str) -> None:
    """Rows ``r_from <= row < r_to`` of a segment into ``out``: well-formed ones as they are,
    short ones padded with missing values (as pandas does), the others as malformed."""
    ncols, row_line = len(names), seg.row_line
    if r_to <= r_from:
        return
    lo, hi = np.searchsorted(seg.good_nums, [r_from, r_to])  # good rows are in row order: a slice
    out.good.append(seg.table.slice(int(lo), int(hi - lo)))
    out.good_lines.append(row_line[seg.good_nums[lo:hi]])
    short: dict[int, list[tuple[int, str]]] = {}
    first = bisect.bisect_left(seg.invalid, (r_from,))
    for n, seen, text in seg.invalid[first:]:
        if n >= r_to:
            break
        if not text.strip():
            continue  # a line of blanks: not a record
        if seen < ncols:
            if text.count('"') % 2:  # a quote that took delimiters into its field (or ran to the end)
                out.bad.append((int(row_line[n]), UNCLOSED_QUOTE, text))
            else:
                short.setdefault(seen, []).append((int(row_line[n]), text))
        else:
            out.bad.append((int(row_line[n]), FIELD_COUNT.format(ncols, seen), text))
    for seen, rows in short.items():
        part, again = _parse(pa.py_buffer("\n".join(t for _, t in rows).encode("utf-8") + b"\n"), names[:seen])
        if again or part.num_rows != len(rows):
            raise ContractError(f"cannot read {where}: line {rows[0][0]} cannot be parsed")
        for c in names[seen:]:
            part = part.append_column(c, pa.nulls(part.num_rows, pa.string()))
        out.good.append(part)
        out.good_lines.append(np.array([ln for ln, _ in rows], dtype=np.int64))


def _parse_all(buf: bytes, lines: _LineIndex, names: list[str], header_line: int, what: str, p: Path) -> _Parsed:
    """Parse the whole file once and use it while it is in step. A record that an unclosed quote
    made swallow the lines after it is cut to its first line (rejected); from the next line on,
    windows of a few hundred lines are parsed until a window starts a record on the same line as
    the whole-file parse (from there both begin a record outside quotes, so they agree and the
    whole-file parse is used again), or finds an unclosed quote of its own. The work stays in
    proportion to the file, however many quotes are left open."""
    ncols, n = len(names), lines.n
    out = _Parsed([], [], [])
    data = pa.py_buffer(buf)
    where = f"{what} file {p}"
    whole = _segment(buf, data, lines, names, header_line, n, 1, where)
    whole_culprits = _culprits(whole, lines, ncols)
    row = 2  # the whole-file parse is in step from this row on
    while True:
        later = whole_culprits[whole_culprits >= row]
        if not len(later):
            _take(whole, row, whole.n_rows + 1, out, names, where)
            return out
        c = int(later[0])
        _take(whole, row, c, out, names, where)
        at, span_end = int(whole.row_line[c]), int(whole.row_line[c] + whole.breaks[c])
        out.bad.append((at, UNCLOSED_QUOTE, lines.text(at).decode("utf-8", errors="replace")))
        pos, window = at + 1, RESYNC_WINDOW
        while True:  # out of step with the whole-file parse from line pos
            if pos > n:
                return out
            last = min(n, max(span_end, pos) + window)
            seg = _segment(buf, data, lines, names, pos, last, 0, where)
            ends = seg.row_line[1:] + seg.breaks[1:]  # last line of each row
            # a record that reaches the window's last line may be cut by it (unless that is the end)
            reliable = seg.n_rows + 1 if last == n else 1 + int(np.searchsorted(ends, last))
            own = _culprits(seg, lines, ncols)
            own = own[own < reliable]
            limit = int(own[0]) if len(own) else reliable
            starts = seg.row_line[1:limit]  # does the whole-file parse start a record on one of these lines?
            at_whole = np.minimum(np.searchsorted(whole.row_line, starts), whole.n_rows)
            common = starts[whole.row_line[at_whole] == starts]
            if len(common):  # in step again: take this window's rows up to there
                back = int(common[0])
                _take(seg, 1, 1 + int(np.searchsorted(seg.row_line[1:], back)), out, names, where)
                row = 1 + int(np.searchsorted(whole.row_line[1:], back))
                break
            if len(own):  # a quote left open in this window too
                q = int(own[0])
                _take(seg, 1, q, out, names, where)
                at, span_end = int(seg.row_line[q]), int(seg.row_line[q] + seg.breaks[q])
                out.bad.append((at, UNCLOSED_QUOTE, lines.text(at).decode("utf-8", errors="replace")))
                pos, window = at + 1, RESYNC_WINDOW
                continue
            _take(seg, 1, reliable, out, names, where)
            if reliable == 1:
                window *= 2  # one record longer than the window: look further
            else:
                pos, window = (int(seg.row_line[reliable]) if reliable <= seg.n_rows else last + 1), RESYNC_WINDOW


def _blank_rows(frame_nulls: np.ndarray, starts: np.ndarray, lines: _LineIndex) -> np.ndarray:
    """Rows with every field missing that are an empty line (not a line of delimiters)."""
    blank = np.zeros(len(starts), dtype=bool)
    idx = np.flatnonzero(frame_nulls)
    if len(idx):
        ln = starts[idx]
        blank[idx] = (lines.stop[ln - 1] - lines.start[ln - 1]) == 0
    return blank


def read_csv_records(path: str | Path, what: str) -> CsvTable:
    """Read a CSV (or ``.csv.gz``) file: see the module docstring. Raises ContractError (one
    line) when the file has no header or is mostly malformed."""
    p = Path(path)
    buf, marker = _mark_invalid_utf8(_read_bytes(p))
    lines = _LineIndex(buf)
    names, header_line = _header(buf, lines, what, p)
    if marker is not None:
        names = _unique_names([n.replace(marker, "\ufffd") for n in names])
    parsed = _parse_all(buf, lines, names, header_line, what, p)

    table = pa.concat_tables(parsed.good) if parsed.good else pa.table({c: pa.array([], pa.string()) for c in names})
    good_lines = np.concatenate(parsed.good_lines) if parsed.good_lines else np.empty(0, dtype=np.int64)
    order = np.argsort(good_lines, kind="stable")
    if len(order) and (np.diff(good_lines) < 0).any():
        table, good_lines = table.take(pa.array(order)), good_lines[order]
    drop = np.zeros(table.num_rows, dtype=bool)
    if table.num_rows:
        all_null = np.ones(table.num_rows, dtype=bool)
        for col in table.columns:
            all_null &= pc.is_null(col).to_numpy(zero_copy_only=False)
        drop = _blank_rows(all_null, good_lines, lines)
    bad = list(parsed.bad)
    if marker is not None and table.num_rows:
        invalid = np.zeros(table.num_rows, dtype=bool)
        for col in table.columns:
            invalid |= pc.fill_null(pc.match_substring(col, marker), False).to_numpy(zero_copy_only=False)
        invalid &= ~drop
        if invalid.any():
            breaks = _breaks_in_rows(table.filter(pa.array(invalid)))
            for ln, k in zip(good_lines[invalid].tolist(), breaks.tolist()):
                bad.append((ln, NOT_UTF8, lines.text(ln, ln + k).decode("utf-8")))
            drop |= invalid
    if drop.any():
        table, good_lines = table.filter(pa.array(~drop)), good_lines[~drop]

    bad.sort(key=lambda b: b[0])
    bad_lines = np.array([b[0] for b in bad], dtype=np.int64)
    # record numbers: rank of the start line among all records (good and malformed)
    good_rec = np.arange(len(good_lines), dtype=np.int64) + np.searchsorted(bad_lines, good_lines)
    bad_rec = np.arange(len(bad_lines), dtype=np.int64) + np.searchsorted(good_lines, bad_lines)
    texts = [b[2] if marker is None else b[2].replace(marker, "\ufffd") for b in bad]
    bad_frame = pd.DataFrame({
        "record": bad_rec,
        "line": bad_lines,
        "reason": pd.Series([b[1] for b in bad], dtype=object),
        "text": pd.Series([t if len(t) <= TEXT_LIMIT else t[:TEXT_LIMIT] + "..." for t in texts], dtype=object),
    })

    n = len(good_lines) + len(bad_lines)
    if len(bad_lines) and 2 * len(bad_lines) > n:
        first = bad[0]
        n_utf8 = sum(1 for b in bad if b[1] == NOT_UTF8)
        if 2 * n_utf8 > len(bad):
            at = next(b[0] for b in bad if b[1] == NOT_UTF8)
            raise ContractError(f"{what} file {p} is not valid UTF-8 text: {n_utf8:,} of {n:,} record(s) hold bytes that "
                                f"are not UTF-8, the first at line {at} (save it as UTF-8)")
        raise ContractError(f"{what} file {p} is not a usable CSV file: {len(bad):,} of {n:,} record(s) are malformed, "
                            f"the first at line {first[0]} ({first[1].removeprefix('malformed line: ')}); is ',' its delimiter?")

    frame = table.to_pandas()
    frame.index = pd.Index(good_rec)
    return CsvTable(path=p, frame=frame, lines=good_lines, bad=bad_frame)
