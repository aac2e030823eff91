"""What the contract reads, declared once for every engine: which files of a folder are data,
which text means "missing", what counts as surrounding blank space, and the reject reasons.

Pipelines write folders full of things that are not data: Spark's ``_SUCCESS`` and ``.crc``
files, Hive's ``_temporary`` folders, editors' and uploaders' hidden or temporary files. The
engines all list a folder through :func:`data_files`, so they read the same files, and every
ignored file is named in :attr:`DataFiles.ignored` for the run to report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

#: Every character Python's ``str.strip()`` removes: the pandas, DuckDB and Spark engines strip
#: exactly these from both ends of ids (DuckDB's and Spark's plain ``trim`` remove only spaces).
WHITESPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
#: Text that exports write for a missing value (compared after stripping, case-insensitive).
MISSING_TEXT = ("", "nan", "none", "null", "<na>", "nat")

# the contract's reject reasons (the rejects file, the run's counts and the API say these)
MISSING = "missing {}"
UNKNOWN_EVENT_TYPE = "unknown event_type"
MISSING_TIMESTAMP = "missing timestamp"
NAIVE_TIMESTAMP = "timestamp has no UTC offset (naive)"
UNPARSEABLE_TIMESTAMP = "unparseable timestamp"
BEFORE_1990 = "timestamp before 1990"
IN_THE_FUTURE = "timestamp in the future"
BAD_MACHINE_OPEN = "machine_open is not a boolean"
BAD_PROPENSITY = "propensity is not a probability in (0, 1]"
DUPLICATE_EVENT = "duplicate event (kept once)"
CONFLICTING_EVENT_ID = "duplicate event_id with different contents"
NO_SEND = "no send for message_id"
BEFORE_SEND = "before its send"
SECOND_SEND = "second send for message_id"
UNKNOWN_CHANNEL = "unknown channel (use email, push or sms)"
BAD_VALUE = "value is not a non-negative number"
BAD_CURRENCY = "currency is not a three-letter ISO 4217 code"

DATA_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
_PARTITION = re.compile(r"^([^=/]+)=(.*)$")


class ContractError(ValueError):
    """The input cannot be used at all (unreadable, or a required column is missing)."""


@dataclass
class DataFiles:
    """The data files under a path, in the order every engine reads them, and what was skipped."""

    root: Path
    files: list[Path]
    ignored: list[Path] = field(default_factory=list)

    def partitions(self, f: Path) -> dict[str, str]:
        """``key=value`` folder names between the root and ``f`` (Hive-style partitions)."""
        out: dict[str, str] = {}
        if f == self.root:
            return out
        for part in f.relative_to(self.root).parts[:-1]:
            m = _PARTITION.match(part)
            if m:
                out[m.group(1)] = _unquote(m.group(2))
        return out

    @property
    def all_parquet(self) -> bool:
        return bool(self.files) and all(is_parquet(f) for f in self.files)

    def ignored_summary(self, limit: int = 5) -> str | None:
        """One line naming what was skipped, or None."""
        if not self.ignored:
            return None
        names = [str(p.relative_to(self.root)) if p != self.root else p.name for p in self.ignored[:limit]]
        more = f" and {len(self.ignored) - limit:,} more" if len(self.ignored) > limit else ""
        return f"ignored {len(self.ignored):,} file(s) in {self.root} that are not data: {', '.join(names)}{more}"


def is_parquet(p: Path) -> bool:
    return p.name.lower().endswith(PARQUET_SUFFIXES)


def _unquote(v: str) -> str:
    from urllib.parse import unquote

    return unquote(v)


def _skipped(rel: Path) -> bool:
    """Hidden (``.x``), bookkeeping (``_SUCCESS``, ``_temporary/``, ``_committed_*``) or temporary
    (``x.tmp``, ``x~``, ``x.crc``) anywhere on the path below the root."""
    for part in rel.parts:
        if part.startswith((".", "_")) or part.endswith(("~", ".tmp", ".temp", ".crc", ".inprogress", ".partial")):
            return True
    return False


def data_files(path: str | Path) -> DataFiles:
    """The data files of ``path``: the file itself, or every ``.parquet`` / ``.csv`` file under
    the folder (sorted by path) that is not hidden, bookkeeping or temporary. A folder's files
    that are neither data nor skipped by those rules (``README.txt``, ``part-0000`` with no
    suffix) are listed as ignored too."""
    p = Path(path)
    if not p.is_dir():
        return DataFiles(root=p, files=[p])
    files, ignored = [], []
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        rel = f.relative_to(p)
        if _skipped(rel) or not f.name.lower().endswith(DATA_SUFFIXES):
            ignored.append(f)
        elif f.stat().st_size == 0:
            ignored.append(f)  # a zero-byte part file (an empty task's output) holds no rows
        else:
            files.append(f)
    return DataFiles(root=p, files=files, ignored=ignored)
