"""Arrays as large as memory, kept in files: written and read through a map whose pages are
released as the work goes (a ten-million-user table of 168 float32 slots is 6.7 GB; through a
map that is never released it would all stay in the process's resident memory)."""

from __future__ import annotations

import mmap
from pathlib import Path


#: rows read or written through a map between two :func:`release` calls
RELEASE_ROWS = 250_000


def release(arr) -> None:
    """Drop the resident pages of a memory-mapped array: its data stays in the file and the
    page cache, not in this process's resident memory. Nothing for an array in memory.

    numpy's maps of files are shared, so what was written stays in the page cache and reaches
    the file as the kernel writes it back; no flush here. (A flush on each release made the
    ten-million-user build write its profiles, whose rows each bucket touches all over the
    file, back to disk 43 times: 430 s of the build instead of 150.)"""
    mm = getattr(arr, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise"):
        return
    mm.madvise(mmap.MADV_DONTNEED)


def is_file(arr, path: Path) -> bool:
    """Is ``arr`` a map of the file at ``path`` (already written there)?"""
    name = getattr(arr, "filename", None)
    return name is not None and Path(path).exists() and Path(name).resolve() == Path(path).resolve()
