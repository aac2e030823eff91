"""What the service reads of a snapshot, in files every worker maps read-only.

A worker that loaded the whole feature snapshot held, per million users, the feature table, the
168 activity profiles, an object index of the ids and the float score table: about a GiB each,
ten at ten million users. The nightly run therefore also publishes ``serving/``: only what an
answer reads, in flat arrays that ``np.load(mmap_mode="r")`` maps, so the page cache holds one
copy for all workers and the kernel pages in what requests touch:

- ``ids.npy``: the user ids as fixed-width UTF-8 bytes (or, for ids longer than
  :data:`MAX_ID_BYTES` or holding a NUL, 16-byte BLAKE2b digests), ordered by a 64-bit hash of
  those bytes; ``buckets.npy`` holds where each of 2^k hash buckets starts, so a request's id is
  found by one bucket read and a compare or two (a binary search over ten million ids costs 24
  cache misses per id), exactly. Every other array is in this order.
- ``scores.npy``: each user's 168 local hour-of-week P(open) as uint8 codes of a per-user range
  (``score_lo.npy``, ``score_step.npy``, step = the user's range / 255): a quarter of the float
  table. The code of each user's best hour of the week, and of each local day, is kept strictly
  above the other hours' (of the week, of that day), so those best hours are the float table's;
  values are within half a step, at most two where a best is kept apart from hours tied with
  it. Within other windows two hours closer than a step may swap: :func:`quantization_report`
  measures it.
- ``zone.npy``, ``zone_from_table.npy``, ``source.npy``, ``confidence.npy`` and, for the value
  objective, ``order_value.npy``: what an answer says about the user.
- ``priors.npy`` / ``meta.json``: the answer for a user the snapshot does not know, per IANA
  zone (scored by the nightly run, so no worker runs the forest for them), plus the zone and
  source names, the as-of time and the population prior.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sendtime.features.engagement import answer_confidence
from sendtime.features.mapped import RELEASE_ROWS, release

SERVING = "serving"
FORMAT = 2
MAX_ID_BYTES = 64
LEVELS = 255


@dataclass
class Quantized:
    """A (users, 168) float table as per-user uint8 codes: p ~= lo + step * code."""

    codes: np.ndarray  # (n, 168) uint8
    lo: np.ndarray  # (n,) float32
    step: np.ndarray  # (n,) float32

    def values(self, rows: np.ndarray, how: np.ndarray) -> np.ndarray:
        """Dequantized P at (rows, how); ``rows`` (n,) or (n, 1) broadcast against ``how``."""
        r = rows if rows.ndim == how.ndim else rows[:, None]
        return self.lo[r].astype(np.float64) + self.step[r].astype(np.float64) * self.codes[r, how]


def quantize(table: np.ndarray, chunk: int = 200_000) -> Quantized:
    """Per-user affine uint8 codes of a 168-slot table, the best hour of the week and of each
    local day kept above the others."""
    n = len(table)
    codes = np.empty((n, 168), dtype=np.uint8)
    lo = np.empty(n, dtype=np.float32)
    step = np.empty(n, dtype=np.float32)
    for s in range(0, n, chunk):
        t = np.asarray(table[s:s + chunk], dtype=np.float64)
        mn, mx = t.min(axis=1), t.max(axis=1)
        st = (mx - mn) / LEVELS
        safe = np.where(st > 0, st, 1.0)
        c = np.clip(np.rint((t - mn[:, None]) / safe[:, None]), 0, LEVELS).astype(np.uint8)
        # the week's best hour keeps the top code alone: others at the top move one step down
        best = t.argmax(axis=1)
        top = c == LEVELS
        top[np.arange(len(t)), best] = False
        c[top & (st > 0)[:, None]] = LEVELS - 1
        c[np.arange(len(t)), best] = np.where(st > 0, LEVELS, 0)
        _keep_day_bests(c.reshape(-1, 7, 24), t.reshape(-1, 7, 24))
        codes[s:s + chunk], lo[s:s + chunk], step[s:s + chunk] = c, mn, st
        if (s // chunk + 1) % max(1, RELEASE_ROWS // chunk) == 0:
            release(table)
    release(table)
    return Quantized(codes=codes, lo=lo, step=step)


def _keep_day_bests(c: np.ndarray, t: np.ndarray) -> None:
    """In place, (n, 7, 24) codes: each local day's best hour keeps a code above the day's other
    hours. Hours of the day that reached its best's code go one below it (never a day's best,
    so the week's best stays alone at the top); a best at code 0 goes up to 1 instead."""
    best = t.argmax(axis=2)[..., None]
    cb = np.take_along_axis(c, best, axis=2)
    others = np.ones(c.shape, dtype=bool)
    np.put_along_axis(others, best, False, axis=2)
    clash = others & (c >= cb)
    low = (cb == 0) & clash.any(axis=2, keepdims=True)
    np.put_along_axis(c, best, np.where(low, 1, cb).astype(c.dtype), axis=2)
    lower = clash & ~low
    c[lower] = np.broadcast_to(cb - 1, c.shape)[lower].astype(c.dtype)
    c[clash & low] = 0


def quantization_report(table: np.ndarray, q: Quantized, sample: int = 200_000, seed: int = 0) -> dict:
    """How the codes rank hours against the float table, on a sample of users: the week's best
    hour, each local day's best hour, and the worst P lost by taking the codes' choice."""
    n = len(table)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, sample), replace=False))
    t = np.asarray(table[rows], dtype=np.float64)
    d = q.values(rows, np.broadcast_to(np.arange(168), (len(rows), 168)))
    week_same = float(np.mean(t.argmax(axis=1) == d.argmax(axis=1)))
    td, dd = t.reshape(-1, 7, 24), d.reshape(-1, 7, 24)
    pick = dd.argmax(axis=2)
    day_same = float(np.mean(td.argmax(axis=2) == pick))
    lost = td.max(axis=2) - np.take_along_axis(td, pick[..., None], axis=2)[..., 0]
    return {"users_checked": int(len(rows)), "week_best_same": week_same, "day_best_same": day_same,
            "day_max_p_lost": float(lost.max()), "day_mean_p_lost": float(lost.mean()),
            "max_abs_error": float(np.abs(t - d).max())}


def _id_keys(ids, kind: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(keys, usable) of ids as the index stores them; ``usable`` False where an id cannot be in
    the index (longer than its width)."""
    if kind == "digest":
        keys = [hashlib.blake2b(str(u).encode(), digest_size=16).digest() for u in ids]
        return np.array(keys, dtype="S16"), np.ones(len(keys), dtype=bool)
    text = [str(u) for u in ids]
    if not text:
        return np.zeros(0, dtype=f"S{width}"), np.zeros(0, dtype=bool)
    joined = "\0".join(text)
    if joined.count("\0") != len(text) - 1 or not joined.isascii():
        # a NUL inside an id, or non-ASCII text: one id at a time
        raw = [u.encode() for u in text]
        usable = np.fromiter((len(b) <= width and b"\0" not in b for b in raw), dtype=bool, count=len(raw))
        return np.array(raw, dtype=f"S{width}"), usable
    # plain ASCII ids (the common case): one byte array, one more column to see which are too long
    wide = np.array(joined.encode().split(b"\0"), dtype=f"S{width + 1}")
    usable = wide.view(np.uint8).reshape(len(text), width + 1)[:, width] == 0
    return wide.astype(f"S{width}"), usable


_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def key_hash(keys: np.ndarray) -> np.ndarray:
    """A 64-bit hash of fixed-width byte keys (their little-endian 8-byte words mixed in turn,
    then splitmix64's finalizer): the same on every machine, vectorized."""
    n, w = len(keys), keys.dtype.itemsize
    b = np.zeros((n, -(-w // 8) * 8), dtype=np.uint8)
    b[:, :w] = np.ascontiguousarray(keys).view(np.uint8).reshape(n, w)
    words = b.view("<u8").astype(np.uint64)
    h = np.full(n, 0x9E3779B97F4A7C15, dtype=np.uint64)
    for j in range(words.shape[1]):
        h ^= words[:, j]
        h *= _M1
        h ^= h >> np.uint64(29)
    h ^= h >> np.uint64(30)
    h *= _M1
    h ^= h >> np.uint64(27)
    h *= _M2
    h ^= h >> np.uint64(31)
    return h


def _bucket_bits(n: int) -> int:
    """log2 of the bucket count: the power of two at or above the number of users (at least 2)."""
    return max(1, int(np.ceil(np.log2(max(n, 2)))))


class ServingTable:
    """A published ``serving/`` folder, memory-mapped (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        self.folder = folder
        self.meta = json.loads((folder / "meta.json").read_text())
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{folder}: serving table format {self.meta.get('format')!r}, expected {FORMAT}")
        # plain arrays over the mappings (np.memmap's own indexing costs per request)
        load = lambda name: np.asarray(np.load(folder / f"{name}.npy", mmap_mode="r"))  # noqa: E731
        self.keys = load("ids")
        self.buckets = load("buckets")
        self.quantized = Quantized(codes=load("scores"), lo=load("score_lo"), step=load("score_step"))
        self.zone_codes, self.zone_from_table = load("zone"), load("zone_from_table")
        self.source_codes, self.confidence = load("source"), load("confidence")
        self.order_value = load("order_value") if (folder / "order_value.npy").exists() else None
        self.zones = np.asarray(self.meta["zones"], dtype=object)
        self.sources = np.asarray(self.meta["sources"], dtype=object)
        self.priors = np.load(folder / "priors.npy")  # (zones with a prior, 168): small, in memory
        self.n = int(self.meta["users"])
        for name, arr in (("ids", self.keys), ("scores", self.quantized.codes), ("zone", self.zone_codes),
                          ("confidence", self.confidence)):
            if len(arr) != self.n:
                raise ValueError(f"{folder}: {name}.npy has {len(arr)} rows, the table {self.n} users")

    def warm(self) -> int:
        """Touch every page of the mapped arrays (a worker then takes no page fault per request;
        the pages stay the page cache's, one copy for all workers); returns the bytes mapped."""
        total = 0
        for arr in (self.keys, self.buckets, self.quantized.codes, self.quantized.lo, self.quantized.step,
                    self.zone_codes, self.zone_from_table, self.source_codes, self.confidence, self.order_value):
            if arr is not None and arr.size:
                flat = np.asarray(arr).reshape(-1).view(np.uint8)
                for s in range(0, flat.nbytes, 16 << 20):  # 16 MiB at a time, the GIL let go between
                    int(flat[s:s + (16 << 20):4096].sum())
                    time.sleep(0.001)
                total += flat.nbytes
        return total

    @property
    def model_version(self) -> str:
        return str(self.meta["model_version"])

    @property
    def as_of(self) -> pd.Timestamp:
        return pd.Timestamp(self.meta["as_of"])

    def rows_of(self, ids) -> np.ndarray:
        """Row of each id (-1 for ids the snapshot does not know): the id's hash bucket, then a
        compare of the bucket's ids with it (about one and a half per id), exact."""
        keys, usable = _id_keys(ids, self.meta["id_kind"], int(self.meta["id_width"]))
        rows = np.full(len(keys), -1, dtype=np.int64)
        if self.n == 0 or len(keys) == 0:
            return rows
        b = (key_hash(keys) >> np.uint64(64 - int(self.meta["bucket_bits"]))).astype(np.int64)
        pos, end = self.buckets[b].astype(np.int64), self.buckets[b + 1].astype(np.int64)
        todo = np.flatnonzero(usable & (pos < end))
        while len(todo):
            p = pos[todo]
            hit = self.keys[p] == keys[todo]
            rows[todo[hit]] = p[hit]
            pos[todo] += 1
            todo = todo[~hit & (pos[todo] < end[todo])]
        return rows

    def user_ids(self) -> np.ndarray:
        """Every known id in row order (not available for digest keys)."""
        if self.meta["id_kind"] == "digest":
            raise ValueError("this snapshot's ids are stored as digests; read them from its features")
        return np.char.decode(np.asarray(self.keys), "utf-8").astype(object)

    def prior_scores(self) -> dict[str, tuple[np.ndarray, str, float]]:
        """Zone -> (168 P(open), answer source, confidence) for users the snapshot does not know."""
        p = self.meta["priors"]
        return {z: (self.priors[i].astype(np.float64), p["source"][i], float(p["confidence"][i]))
                for i, z in enumerate(p["zones"])}


def write_serving_table(folder: Path, table: pd.DataFrame, scores: np.ndarray, *, model_version: str,
                        as_of: pd.Timestamp, priors: dict[str, tuple[np.ndarray, str, float]],
                        order_value: np.ndarray | None = None, prior: dict | None = None,
                        input_columns: list[str] | None = None) -> dict:
    """Write ``folder`` from the feature table (indexed by user id; its timezone, timezone_source,
    source and confidence columns) and the float score table in the same row order, with the
    answers for unknown users per zone (``priors``) and the population prior as a dict; returns
    the quantization report."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = table.index.astype(str)
    raw_width = max((len(u.encode()) for u in ids), default=1)
    kind = "utf8" if raw_width <= MAX_ID_BYTES and not any("\0" in u for u in ids) else "digest"
    width = max(1, raw_width) if kind == "utf8" else 16
    keys, _ = _id_keys(ids, kind, width)
    bits = _bucket_bits(len(keys))
    h = key_hash(keys)
    order = np.lexsort((keys, h))  # by hash, then by id: equal ids end up side by side
    keys, h = keys[order], h[order]
    if len(keys) > 1 and ((keys[1:] == keys[:-1]) & (h[1:] == h[:-1])).any():
        raise ValueError("the feature table has repeated user ids (or colliding digests)")
    np.save(folder / "ids.npy", keys)
    starts = np.searchsorted(h >> np.uint64(64 - bits), np.arange(2**bits + 1, dtype=np.uint64))
    np.save(folder / "buckets.npy", starts.astype(np.int32 if len(keys) < 2**31 else np.int64))
    # quantized in the table's own order (each user's codes are their own), read front to back,
    # then written in the id order: a memory-mapped table is read once, sequentially
    q = quantize(scores)
    report = quantization_report(scores, q)
    release(scores)
    codes = np.lib.format.open_memmap(folder / "scores.npy", mode="w+", dtype=np.uint8, shape=q.codes.shape)
    for s in range(0, len(order), RELEASE_ROWS):
        codes[s:s + RELEASE_ROWS] = q.codes[order[s:s + RELEASE_ROWS]]
        release(codes)
    del codes
    np.save(folder / "score_lo.npy", q.lo[order])
    np.save(folder / "score_step.npy", q.step[order])
    del q
    zone, zones = pd.factorize(table["timezone"].astype(str).to_numpy()[order])
    source, sources = pd.factorize(table["source"].astype(str).to_numpy()[order])
    np.save(folder / "zone.npy", zone.astype(np.int16 if len(zones) < 2**15 else np.int32))
    np.save(folder / "zone_from_table.npy", (table["timezone_source"] == "users_table").to_numpy(dtype=bool)[order])
    np.save(folder / "source.npy", source.astype(np.int8 if len(sources) < 128 else np.int16))
    np.save(folder / "confidence.npy", answer_confidence(table).astype(np.float32)[order])
    if order_value is not None:
        np.save(folder / "order_value.npy", np.asarray(order_value, dtype=np.float64)[order])
    pz = sorted(priors)
    np.save(folder / "priors.npy", np.stack([np.asarray(priors[z][0], dtype=np.float32) for z in pz])
            if pz else np.zeros((0, 168), dtype=np.float32))
    meta = {"format": FORMAT, "users": int(len(keys)), "id_kind": kind, "id_width": int(width), "bucket_bits": bits,
            "model_version": str(model_version), "as_of": pd.Timestamp(as_of).isoformat(),
            "zones": [str(z) for z in zones], "sources": [str(s) for s in sources],
            "priors": {"zones": pz, "source": [str(priors[z][1]) for z in pz],
                       "confidence": [float(priors[z][2]) for z in pz]},
            "quantization": report, "prior": prior, "input_columns": list(input_columns or [])}
    (folder / "meta.json").write_text(json.dumps(meta))
    return report
