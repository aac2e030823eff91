"""Which 64-bit values occur more than once in an array of a hundred million: the event-id check.

Grouping 10^8 distinct keys in a hash table is what makes the event-id check expensive (random
access into gigabytes). Here the values are split by their top bits into thousands of small
partitions that fit in the cache, and each partition is checked on its own with a small hash
set, both cores at once. Exact for any input; fast for hashes, whose top bits
spread evenly.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"cache": True, "nogil": True}
_BITS = 12  # 4,096 partitions: a few tens of thousands of values each at 10^8


@numba.njit(parallel=True, **_JIT)
def _partition(values, shift, n_parts, n_chunks):
    n = values.size
    bounds = np.linspace(0, n, n_chunks + 1).astype(np.int64)
    counts = np.zeros((n_chunks, n_parts), np.int64)
    for c in numba.prange(n_chunks):
        for i in range(bounds[c], bounds[c + 1]):
            counts[c, values[i] >> shift] += 1
    # where each chunk writes in each partition: partitions in order, chunks in order within
    offsets = np.empty((n_chunks, n_parts), np.int64)
    starts = np.zeros(n_parts + 1, np.int64)
    pos = 0
    for p in range(n_parts):
        starts[p] = pos
        for c in range(n_chunks):
            offsets[c, p] = pos
            pos += counts[c, p]
    starts[n_parts] = pos
    out = np.empty_like(values)
    for c in numba.prange(n_chunks):
        fill = offsets[c].copy()
        for i in range(bounds[c], bounds[c + 1]):
            p = values[i] >> shift
            out[fill[p]] = values[i]
            fill[p] += 1
    return out, starts


@numba.njit(parallel=True, **_JIT)
def _repeats_in_partitions(parted, starts, n_groups):
    """Per partition, a small open-addressing set (in the cache): a value met the second time
    is marked, once."""
    n_parts = starts.size - 1
    found = np.zeros(parted.size, np.bool_)
    largest = 0
    for p in range(n_parts):
        largest = max(largest, starts[p + 1] - starts[p])
    size = 1
    while size < 2 * largest:
        size *= 2
    groups = np.linspace(0, n_parts, n_groups + 1).astype(np.int64)
    for g in numba.prange(n_groups):
        keys = np.empty(size, np.uint64)
        seen = np.zeros(size, np.int8)  # 0 empty, 1 once, 2 more
        for p in range(groups[g], groups[g + 1]):
            lo, hi = starts[p], starts[p + 1]
            if hi - lo < 2:
                continue
            m, bits = 1, 0
            while m < 2 * (hi - lo):
                m *= 2
                bits += 1
            shift = np.uint64(64 - bits)
            seen[:m] = 0
            for i in range(lo, hi):
                v = parted[i]
                j = np.int64((v * np.uint64(0x9E3779B97F4A7C15)) >> shift)  # Fibonacci hashing
                while seen[j] != 0 and keys[j] != v:
                    j = (j + 1) & (m - 1)
                if seen[j] == 0:
                    keys[j] = v
                    seen[j] = 1
                elif seen[j] == 1:
                    seen[j] = 2
                    found[i] = True  # the second time: each repeated value once
    return found


def repeated_values(values: np.ndarray) -> np.ndarray:
    """The distinct values of a uint64 array that occur more than once, sorted."""
    v = np.ascontiguousarray(values, dtype=np.uint64)
    if v.size < 2:
        return np.zeros(0, dtype=np.uint64)
    parted, starts = _partition(v, np.uint64(64 - _BITS), 1 << _BITS, 64)
    found = _repeats_in_partitions(parted, starts, 64)
    return np.sort(parted[found])
