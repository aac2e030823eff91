"""Messages on disk in user buckets: what the DuckDB engine writes and the user features read.

A bucket holds every message of a random share of users (by a hash of the user id), so the
per-user features can be built one bucket at a time. On disk, under a bucket directory:

- ``main/b{k}/``: the regular messages of bucket ``k`` as raw little-endian column files
  (``uidx.i32``, ``send_us.i64``, ``how.i16``); each outcome instant, which most messages lack,
  as the rows that have it (``{name}.rows.i32``) and its values (``{name}.i64``); plus
  ``unknown_ids.parquet``: the ids of the users missing from the users table, in row order.
  Appending raw columns costs a fraction of writing Parquet, and reading them back is a copy.
- ``text/bucket={k}/``: Parquet with the full message table (text columns included), only for
  the buckets written with text (the training sample reads these).
- ``fix/bucket={k}/``: Parquet, the rare messages rebuilt row by row by the contract's rules.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sendtime.features.messages import NAT, OUTCOME_COLUMNS, MessageArrays, hour_of_week_us

#: the raw column files of a bucket and their types (an outcome: the rows that have it, its values)
DENSE_COLUMNS = {"uidx": np.int32, "send_us": np.int64, "how": np.int16}
RAW_COLUMNS = {**DENSE_COLUMNS, **{f"{c}.rows": np.int32 for c in OUTCOME_COLUMNS}, **{c: np.int64 for c in OUTCOME_COLUMNS}}
_SUFFIX = {np.int16: "i16", np.int32: "i32", np.int64: "i64"}
MESSAGE_COLUMNS = ("message_id", "user_id", "send_ts", "propensity", *OUTCOME_COLUMNS, "timezone", "send_how")


class BucketWriter:
    """Takes the regular messages as Arrow record batches (columns: ``uidx``, ``user_id`` where
    the user is unknown, ``send_ts``, the outcome instants, ``bucket``) and appends them to the
    raw column files of their buckets. The local hour of the week of each send is computed
    here, from the user's time zone (``zone_of_user``, by users-table row; ``default_tz`` for
    users missing from it)."""

    def __init__(self, out: Path, zone_of_user: pd.Series, default_tz: str):
        self.out = Path(out)
        codes, names = pd.factorize(pd.Series(zone_of_user, dtype=object).fillna(default_tz).astype(str).to_numpy())
        self.zones = np.append(np.asarray(names, dtype=object), default_tz)
        self.zone_of_user = np.append(codes, len(self.zones) - 1).astype(np.int16 if len(self.zones) < 2**15 else np.int32)  # [-1]: the default
        self._files: dict[tuple[int, str], object] = {}
        self._unknown: dict[int, list] = {}
        self._bucket_rows: dict[int, int] = {}

    def add(self, batch) -> None:
        if batch.num_rows == 0:
            return
        import pyarrow.compute as pc

        # rows in bucket order (a stable radix sort of small integers), then every column
        # gathered once and written a slice per bucket
        bucket = batch.column("bucket").to_numpy().astype(np.uint16)
        order = np.argsort(bucket, kind="stable")
        counts = np.bincount(bucket)
        ends = np.cumsum(counts)
        uidx = pc.fill_null(batch.column("uidx"), -1).to_numpy().astype(np.int32)[order]
        cols = {"uidx": uidx, "send_us": _micros(batch.column("send_ts"))[order]}
        cols["how"] = hour_of_week_us(cols["send_us"], self.zone_of_user[uidx], self.zones)
        outcomes = {c: _micros(batch.column(c))[order] for c in OUTCOME_COLUMNS}
        unknown = uidx < 0
        ids = np.asarray(batch.column("user_id").to_pylist(), dtype=object)[order] if unknown.any() else None
        for b in np.flatnonzero(counts):
            lo, hi = ends[b] - counts[b], ends[b]
            for c, v in cols.items():
                v[lo:hi].tofile(self._file(int(b), c))
            first = self._bucket_rows.get(int(b), 0)
            if first + hi - lo >= 2**31:
                raise ValueError(f"message bucket {b} outgrew 2**31 rows: use more buckets")
            for c, v in outcomes.items():
                have = np.flatnonzero(v[lo:hi] != NAT)
                (have + first).astype(np.int32).tofile(self._file(int(b), f"{c}.rows"))
                v[lo:hi][have].tofile(self._file(int(b), c))
            self._bucket_rows[int(b)] = first + hi - lo
            if ids is not None and unknown[lo:hi].any():
                self._unknown.setdefault(int(b), []).extend(ids[lo:hi][unknown[lo:hi]].tolist())

    def _file(self, bucket: int, column: str):
        f = self._files.get((bucket, column))
        if f is None:
            folder = self.out / "main" / f"b{bucket}"
            folder.mkdir(parents=True, exist_ok=True)
            f = self._files[(bucket, column)] = open(folder / f"{column}.{_SUFFIX[RAW_COLUMNS[column]]}", "wb")
        return f

    def close(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for f in self._files.values():
            f.close()
        self._files.clear()
        for b, ids in self._unknown.items():
            pq.write_table(pa.table({"user_id": pa.array(ids, type=pa.string())}),
                           self.out / "main" / f"b{b}" / "unknown_ids.parquet")
        self._unknown.clear()


def _micros(column) -> np.ndarray:
    """An Arrow timestamp column as int64 microseconds, null as NAT."""
    import pyarrow as pa
    import pyarrow.compute as pc

    v = pc.fill_null(column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()), NAT)
    return v.to_numpy().astype(np.int64, copy=False)


class MessageBucket:
    """One bucket of messages (see the module docstring).

    Calling it gives the full message table of the bucket (it must be one of the buckets
    written with text columns); :meth:`arrays` gives the numbers the features need, from any
    bucket, without touching the text columns.
    """

    def __init__(self, root: str | Path, number: int = 0):
        self.root = Path(root)
        self.number = number

    @property
    def raw_dir(self) -> Path:
        return self.root / "main" / f"b{self.number}"

    def _parquet(self, sub: str) -> list[str]:
        return [str(f) for f in sorted((self.root / sub / f"bucket={self.number}").glob("*.parquet"))]

    def __call__(self) -> pd.DataFrame:
        text = self._parquet("text")
        sends = self.raw_dir / f"send_us.{_SUFFIX[np.int64]}"
        if not text and sends.exists() and sends.stat().st_size:
            raise ValueError("this message bucket was written without text columns (string_buckets): "
                             "only its numbers can be read (MessageBucket.arrays)")
        return load_frame(text + self._parquet("fix")).drop(columns="send_event")

    def _raw(self) -> dict[str, np.ndarray]:
        """The raw columns of the bucket, the outcomes made dense again (NAT where missing)."""
        d = self.raw_dir

        def read(name: str, t) -> np.ndarray:
            f = d / f"{name}.{_SUFFIX[t]}"
            return np.fromfile(f, dtype=t) if f.exists() else np.zeros(0, t)

        raw = {c: read(c, t) for c, t in DENSE_COLUMNS.items()}
        for c in OUTCOME_COLUMNS:
            v = np.full(len(raw["send_us"]), NAT, dtype=np.int64)
            v[read(f"{c}.rows", np.int32)] = read(c, np.int64)
            raw[c] = v
        return raw

    def arrays(self, user_index: pd.Index) -> MessageArrays:
        """:class:`sendtime.features.messages.MessageArrays` of the bucket; ``user_index`` is the users
        table's ids in order (the ``uidx`` the engine wrote)."""
        raw = self._raw()
        path = self.raw_dir / "unknown_ids.parquet"
        unknown = [_read_ids(path)] if path.exists() else []
        fix = self._parquet("fix")
        if fix:  # the rebuilt messages, in the same form
            f = MessageArrays.from_frame(load_frame(fix), user_index)
            fixed = {"uidx": f.uidx.astype(np.int32), "send_us": f.send_us, "how": f.how,
                     **{c: getattr(f, c) for c in OUTCOME_COLUMNS}}
            raw = {c: np.concatenate([raw[c], fixed[c]]) for c in fixed}
            unknown.append(f.unknown_ids)
        extra = np.concatenate(unknown) if unknown else np.array([], dtype=object)
        return MessageArrays(uidx=raw["uidx"].astype(np.int64), unknown_ids=extra.astype(object), send_us=raw["send_us"],
                             how=raw["how"], **{c: raw[c] for c in OUTCOME_COLUMNS})


def _read_ids(path: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    return np.asarray(pq.read_table(path)["user_id"].to_pylist(), dtype=object)


def bucket_loaders(bucket_dir: str | Path) -> list[MessageBucket]:
    """One loader per bucket written by ``build_messages_duckdb(..., buckets=N)``."""
    root = Path(bucket_dir)
    numbers = {int(p.name[1:]) for p in root.glob("main/b*")}
    numbers |= {int(p.name.split("=")[1]) for sub in ("text", "fix") for p in root.glob(f"{sub}/bucket=*")}
    return [MessageBucket(root, n) for n in sorted(numbers)]


def load_frame(files: list[str]) -> pd.DataFrame:
    """The messages of some Parquet message files, with the dtypes
    :func:`sendtime.features.messages.build_messages` produces (plus ``send_event``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = [*MESSAGE_COLUMNS, "send_event"]
    tables = [pq.read_table(f, columns=cols) for f in files]
    if not tables:
        ts = pa.timestamp("us", tz="UTC")
        types = {"propensity": pa.float64(), "send_how": pa.int16(), "send_ts": ts,
                 **{c: ts for c in OUTCOME_COLUMNS}}
        return _to_pandas(pa.table({c: pa.array([], type=types.get(c, pa.string())) for c in cols}))
    return _to_pandas(pa.concat_tables(tables, promote_options="default"))


def _to_pandas(table) -> pd.DataFrame:
    """Arrow result -> the dtypes :func:`sendtime.features.messages.build_messages` produces."""
    df = table.select([*MESSAGE_COLUMNS, "send_event"]).to_pandas()
    for c in ("message_id", "user_id", "timezone"):
        df[c] = df[c].astype(str)
    for c in ("send_ts", *OUTCOME_COLUMNS):
        df[c] = df[c].astype("datetime64[us, UTC]")
    df["propensity"] = df["propensity"].astype("float64")
    df["send_how"] = df["send_how"].to_numpy(dtype=np.int16)
    return df
