"""The store behind ``POST /events``: a write-ahead log that answers in milliseconds, an index
that makes every event count once, and a roll into a few Parquet files that the nightly reads.

Layout under ``SENDTIME_HOME/events/``:

- ``wal/<started>-<pid>-<tag>.wal``: append-only log segments, one open per writing process.
  A record is ``length, crc32, JSON rows``; a batch is acknowledged only after its record is
  written (and, by default, ``fsync``-ed). A writer holds an exclusive ``flock`` on its open
  segment and starts a new one after ``segment_seconds``; a segment nobody holds is sealed.
- ``index.sqlite``: every stored event id and the segment that owns it, and each message's send.
- ``inbox/<YYYY-MM-DD>/events-<roll>.parquet``: typed contract files by the events' UTC day, one
  per day per roll; ``sendtime nightly --events $SENDTIME_HOME/events/inbox`` reads them.
- ``rolls/<roll>.json``: the journal of a roll in progress (which segments, which files).

Why each event is stored once, whatever crashes:

- *Append* (one batch, in a worker): the ids neither in the index nor in this worker's own
  log since its last roll are written to the log; nothing else is locked, so workers append in
  parallel and the index is only read (SQLite in WAL mode: readers never wait for the roll).
  A replay finds its ids there and is answered as duplicates with nothing written. A replay
  that reaches the *other* worker before the roll is logged twice (the answer says accepted).
- *Roll* (one process at a time): a row goes to Parquet only if its id is not in the index yet
  (the roll then claims it for its segment, first copy wins) or is already claimed for its own
  segment (an earlier attempt of the same roll). So an id logged twice (the replay above, or a
  crash after the log write and before the answer, then the platform's retry) is rolled once;
  the same holds for a message's send. A torn record at the end of a segment (a crash
  mid-write, never acknowledged) fails its checksum and is skipped. The journal makes a roll
  repeatable: killed before it finished, the next roll deletes the files it had listed and
  redoes it from the same segments, which are removed only after their files are in place.
  Claims go in as one sorted transaction per roll, which is what keeps SQLite fast here (a
  random-key insert per request was 20 ms a batch at a million ids).

Back-pressure instead of unbounded queues: more than ``max_waiting`` batches queued in one
worker, a wait over ``lock_timeout`` seconds, or more than ``max_backlog_bytes`` of log not yet
rolled raise :class:`StoreBusy`, which the route answers with 503 and ``Retry-After``; platforms
retry those. Nothing is ever dropped to make room.

The index is rebuilt from the inbox when it is missing (the log is claimed again by the next
roll). It keeps every id, about 60 bytes an event; pruning ids older than the platforms' retry
horizon is not built.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import orjson
import pandas as pd

from sendtime.features.importers import COLUMNS, write_events_parquet

log = logging.getLogger("sendtime.events")

SECOND_SEND = "second send for message_id (the store already has its send)"
# (event_id, user_id, message_id, event_type, timestamp in UTC microseconds, machine_open, propensity)
Row = tuple
_HEADER = struct.Struct("<II")
_CHUNK = 900  # ids per SQL IN (...) probe: under SQLite's variable limit on any build


class StoreBusy(Exception):
    """The store cannot take a batch now; the client should retry after ``retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass
class AppendResult:
    stored: int = 0  # new events written
    duplicates: int = 0  # event ids already in the store
    refused: list[str] = field(default_factory=list)  # event ids of sends whose message already has one


@dataclass
class RollResult:
    segments: int = 0
    rows_read: int = 0
    written: int = 0
    doubled: int = 0  # rows whose id another segment owns (written twice by a crash or a retry)
    torn_bytes: int = 0  # bytes of unacknowledged records cut off by a crash
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def rows_of_frame(events: pd.DataFrame) -> list[Row]:
    """Contract event rows (as ``validate_events`` returns them) as store rows."""
    if events.empty:
        return []
    ts = pd.to_datetime(events["timestamp"], utc=True).astype("datetime64[us, UTC]").array.asi8
    mo = events["machine_open"] if "machine_open" in events.columns else pd.Series(pd.NA, index=events.index)
    prop = events["propensity"] if "propensity" in events.columns else pd.Series(np.nan, index=events.index)
    return [(str(e), str(u), str(m), str(t), int(s), None if pd.isna(o) else bool(o), None if pd.isna(p) else float(p))
            for e, u, m, t, s, o, p in zip(events["event_id"], events["user_id"], events["message_id"],
                                           events["event_type"], ts, mo, prop)]


def frame_of(rows: list[Row]) -> pd.DataFrame:
    """Store rows as the contract's event table, in the contract's order (time, then id)."""
    cols = list(zip(*rows)) if rows else [()] * 7
    frame = pd.DataFrame({
        "event_id": pd.Series(cols[0], dtype=object), "user_id": pd.Series(cols[1], dtype=object),
        "message_id": pd.Series(cols[2], dtype=object), "event_type": pd.Series(cols[3], dtype=object),
        "timestamp": pd.to_datetime(np.asarray(cols[4], dtype="int64"), unit="us", utc=True).astype("datetime64[us, UTC]"),
        "machine_open": pd.Series(cols[5], dtype=object).astype("boolean"),
        "propensity": pd.Series([np.nan if p is None else p for p in cols[6]], dtype="float64"),
    })
    return frame.sort_values(["timestamp", "event_id"], kind="stable").reset_index(drop=True)


def _read_segment(path: Path) -> tuple[list[Row], int]:
    """The rows of a segment's intact records, and the bytes after the last one (a torn tail)."""
    data = path.read_bytes()
    rows: list[Row] = []
    pos = 0
    while pos + _HEADER.size <= len(data):
        n, crc = _HEADER.unpack_from(data, pos)
        body = data[pos + _HEADER.size: pos + _HEADER.size + n]
        if len(body) < n or zlib.crc32(body) != crc:
            break
        rows.extend(tuple(r) for r in orjson.loads(body))
        pos += _HEADER.size + n
    return rows, len(data) - pos


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


class _Segment:
    """This process's open log segment (created hidden, locked, then named, so a roller never
    sees an unlocked live segment)."""

    def __init__(self, wal: Path) -> None:
        wal.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        self.name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(self.started))}-{os.getpid()}-{os.urandom(3).hex()}.wal"
        tmp = wal / f".{self.name}.tmp"
        self.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        os.replace(tmp, wal / self.name)
        self.size = 0

    def write(self, payload: bytes, fsync: bool) -> None:
        rec = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        done = os.write(self.fd, rec)
        while done < len(rec):  # a short write (signals, full pipes) continues where it stopped
            done += os.write(self.fd, rec[done:])
        if fsync:
            os.fsync(self.fd)
        self.size += len(rec)

    def close(self) -> None:
        os.close(self.fd)  # releases the lock: the segment is sealed


class EventStore:
    def __init__(self, root: str | Path, *, fsync: bool = True, segment_seconds: float = 900.0,
                 max_backlog_bytes: int = 2 << 30, max_waiting: int = 64, lock_timeout: float = 5.0,
                 segment_events: int = 1_000_000) -> None:
        self.root = Path(root)
        self.wal = self.root / "wal"
        self.inbox = self.root / "inbox"
        self.rolls = self.root / "rolls"
        self.index_path = self.root / "index.sqlite"
        self.fsync = fsync
        self.segment_seconds = segment_seconds
        self.segment_events = segment_events  # and after this many events (bounds the memory of its id set)
        self.max_backlog_bytes = max_backlog_bytes
        self.max_waiting = max_waiting
        self.lock_timeout = lock_timeout
        self._lock = threading.Lock()  # one append at a time per process; owns the reader connection
        self._waiting = 0
        self._con: sqlite3.Connection | None = None
        self._segment: _Segment | None = None
        # what this process logged in its open segment (the index does not hold it yet): event ids,
        # sends. A sealed segment's sets are dropped: a replay of it before the roll is logged
        # again and the roll keeps one copy, as for a replay that reached another worker.
        self._unrolled: dict[str, tuple[set[str], set[str]]] = {}
        self._backlog: tuple[float, int] = (0.0, 0)

    # -- index -------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.index_path, timeout=self.lock_timeout, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")  # the log is the durable copy; a lost claim is claimed again
        con.execute("CREATE TABLE IF NOT EXISTS segments (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)")
        con.execute("CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY, seg INTEGER NOT NULL) WITHOUT ROWID")
        con.execute("CREATE TABLE IF NOT EXISTS sends (message_id TEXT PRIMARY KEY, event_id TEXT NOT NULL) WITHOUT ROWID")
        con.execute("INSERT OR IGNORE INTO segments VALUES (0, '(inbox)')")
        return con

    def _reader(self) -> sqlite3.Connection | None:
        """The appends' connection (under ``self._lock``); None while no roll has made the index."""
        if self._con is None and self.index_path.exists():
            con = sqlite3.connect(self.index_path, timeout=self.lock_timeout, isolation_level=None, check_same_thread=False)
            if "file" in {r[1] for r in con.execute("PRAGMA table_info(events)")}:
                con.close()
                self._migrate()
                con = sqlite3.connect(self.index_path, timeout=self.lock_timeout, isolation_level=None, check_same_thread=False)
            self._con = con
        return self._con

    def _migrate(self) -> None:
        """An index of the store before the log (one Parquet file per batch, an id per row with
        its file): kept aside, and the index built again from the inbox, which holds those files."""
        lock_fd = os.open(self.root / "roll.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            con = sqlite3.connect(self.index_path, timeout=self.lock_timeout)
            old = "file" in {r[1] for r in con.execute("PRAGMA table_info(events)")}
            con.close()
            if old:  # not done meanwhile by another worker
                os.replace(self.index_path, self.index_path.with_name("index-before-the-log.sqlite"))
                for extra in ("-wal", "-shm"):
                    Path(f"{self.index_path}{extra}").unlink(missing_ok=True)
                new = self._open()
                try:
                    self._rebuild(new)
                finally:
                    new.close()
                log.warning("the event index had the layout before the log; rebuilt from %s", self.inbox)
        finally:
            os.close(lock_fd)

    def _rebuild(self, con: sqlite3.Connection) -> None:
        """Index every event already in the inbox (the index was deleted or lost); the log's
        rows are claimed again by the next roll."""
        import pyarrow.parquet as pq

        from sendtime.features.inputs import data_files

        con.execute("BEGIN IMMEDIATE")
        try:
            for f in data_files(self.inbox).files:
                t = pq.read_table(f, columns=["event_id", "event_type", "message_id"]).to_pandas()
                con.executemany("INSERT OR IGNORE INTO events VALUES (?, 0)", ((e,) for e in t["event_id"]))
                s = t[t["event_type"] == "send"]
                con.executemany("INSERT OR IGNORE INTO sends VALUES (?, ?)", zip(s["message_id"], s["event_id"]))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    @staticmethod
    def _probe(con: sqlite3.Connection, sql: str, values: list[str]) -> dict[str, object]:
        out: dict[str, object] = {}
        for i in range(0, len(values), _CHUNK):
            part = values[i:i + _CHUNK]
            out.update(con.execute(sql.format(",".join("?" * len(part))), part).fetchall())
        return out

    def _owners(self, con: sqlite3.Connection, ids: list[str]) -> dict[str, int]:
        return self._probe(con, "SELECT event_id, seg FROM events WHERE event_id IN ({})", ids)  # type: ignore[return-value]

    def _send_owners(self, con: sqlite3.Connection, mids: list[str]) -> dict[str, str]:
        return self._probe(con, "SELECT message_id, event_id FROM sends WHERE message_id IN ({})", mids)  # type: ignore[return-value]

    @staticmethod
    def _segment_id(con: sqlite3.Connection, name: str) -> int:
        con.execute("INSERT OR IGNORE INTO segments (name) VALUES (?)", (name,))
        return int(con.execute("SELECT id FROM segments WHERE name = ?", (name,)).fetchone()[0])

    # -- the write path ----------------------------------------------------------------------
    def backlog_bytes(self) -> int:
        """Bytes of log not rolled yet (looked at most once a second)."""
        at, size = self._backlog
        now = time.monotonic()
        if now - at > 1.0:
            size = sum(e.stat().st_size for e in os.scandir(self.wal) if e.name.endswith(".wal")) if self.wal.is_dir() else 0
            self._backlog = (now, size)
        return size

    def append(self, events: pd.DataFrame) -> AppendResult:
        """Store contract events (a DataFrame as ``validate_events`` returns it)."""
        return self.append_rows(rows_of_frame(events.reindex(columns=list(COLUMNS))))

    def append_rows(self, rows: list[Row]) -> AppendResult:
        """Log the rows whose event ids are new; see the module docstring for the guarantees.
        Rows must have distinct event ids (the contract's check on a batch)."""
        if not rows:
            return AppendResult()
        if self.max_backlog_bytes and self.backlog_bytes() > self.max_backlog_bytes:
            raise StoreBusy(f"the event log holds {self.backlog_bytes() >> 20} MiB not rolled yet "
                            f"(limit {self.max_backlog_bytes >> 20} MiB): the roll is behind", retry_after=30)
        if self._waiting >= self.max_waiting:
            raise StoreBusy(f"{self._waiting} event batches are already waiting in this worker", retry_after=1)
        self._waiting += 1
        try:
            if not self._lock.acquire(timeout=self.lock_timeout):
                raise StoreBusy(f"the event store was busy for {self.lock_timeout:g} s", retry_after=1)
        finally:
            self._waiting -= 1
        try:
            return self._append_locked(rows)
        finally:
            self._lock.release()

    def _known(self, ids: list[str], mids: list[str]) -> tuple[set[str], set[str]]:
        """Which event ids, and which messages' sends, the index or this process's log has."""
        ids_seen: set[str] = set()
        sends_seen: set[str] = set()
        for own_ids, own_sends in self._unrolled.values():
            ids_seen.update(i for i in ids if i in own_ids)
            sends_seen.update(m for m in mids if m in own_sends)
        con = self._reader()
        if con is not None:
            try:
                ids_seen.update(self._owners(con, [i for i in ids if i not in ids_seen]))
                if mids:
                    sends_seen.update(self._send_owners(con, [m for m in mids if m not in sends_seen]))
            except sqlite3.OperationalError as exc:
                raise StoreBusy(f"the event index cannot be read now ({exc})", retry_after=1) from None
        return ids_seen, sends_seen

    def _append_locked(self, rows: list[Row]) -> AppendResult:
        known, has_send = self._known([r[0] for r in rows], [r[2] for r in rows if r[3] == "send"])
        new = [r for r in rows if r[0] not in known]
        refused = [r[0] for r in new if r[3] == "send" and r[2] in has_send]
        if refused:
            out = set(refused)
            new = [r for r in new if r[0] not in out]
        result = AppendResult(stored=len(new), duplicates=len(rows) - len(new) - len(refused), refused=refused)
        if not new:
            return result
        seg = self._current_segment()
        seg.write(orjson.dumps(new), self.fsync)  # on disk before it is answered
        own_ids, own_sends = self._unrolled.setdefault(seg.name, (set(), set()))
        own_ids.update(r[0] for r in new)
        own_sends.update(r[2] for r in new if r[3] == "send")
        return result

    def _current_segment(self) -> _Segment:
        seg = self._segment
        if seg is not None and (time.time() - seg.started >= self.segment_seconds
                                or len(self._unrolled.get(seg.name, ((),))[0]) >= self.segment_events):
            seg.close()
            self._unrolled.pop(seg.name, None)
            seg = None
        if seg is None:
            seg = self._segment = _Segment(self.wal)
        return seg

    def has_sealed(self) -> bool:
        """Whether a sealed segment waits for the roll (cheap: no segment is read)."""
        for p, fd in self._sealed():
            os.close(fd)
            return True
        return False

    def seal(self) -> None:
        """Close this process's open segment (shutdown, or before a roll that must include it)."""
        with self._lock:
            if self._segment is not None:
                self._segment.close()
                self._unrolled.pop(self._segment.name, None)
                self._segment = None

    def close(self) -> None:
        self.seal()
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    # -- the roll ----------------------------------------------------------------------------
    def roll(self, *, seal_own: bool = False, max_bytes: int = 64 << 20) -> RollResult | None:
        """Move sealed log segments into the inbox's Parquet files; None when another process is
        rolling. ``seal_own`` first seals this process's segment, so everything it took goes."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.root / "roll.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(lock_fd):
                return None
            t0 = time.perf_counter()
            if seal_own:
                self.seal()
            total = RollResult()
            fresh = not self.index_path.exists()
            con = self._open()
            if fresh and any(self.inbox.rglob("*.parquet")):
                self._rebuild(con)
            try:
                self._recover()
                segments = self._sealed()
                try:
                    for group in self._groups(segments, max_bytes):
                        self._roll_group(con, group, total)
                finally:
                    for _, fd in segments:
                        os.close(fd)
            finally:
                con.close()
            total.seconds = time.perf_counter() - t0
            if total.segments:
                log.info("rolled %d log segment(s): %d rows, %d to Parquet, %d written twice, %.1f s", total.segments,
                         total.rows_read, total.written, total.doubled, total.seconds)
            return total
        finally:
            os.close(lock_fd)

    def _sealed(self) -> list[tuple[Path, int]]:
        """Sealed segments (no writer holds them), oldest first, each opened and locked so that
        no other roll takes it; the caller closes the descriptors."""
        out: list[tuple[Path, int]] = []
        for p in sorted(self.wal.glob("*.wal")) if self.wal.is_dir() else []:
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                continue
            if _try_lock(fd):
                out.append((p, fd))
            else:
                os.close(fd)  # a live writer's segment
        return out

    @staticmethod
    def _groups(segments: list[tuple[Path, int]], max_bytes: int) -> Iterator[list[tuple[Path, int]]]:
        group: list[tuple[Path, int]] = []
        size = 0
        for p, fd in segments:
            n = os.fstat(fd).st_size
            if group and size + n > max_bytes:
                yield group
                group, size = [], 0
            group.append((p, fd))
            size += n
        if group:
            yield group

    def _roll_group(self, con: sqlite3.Connection, group: list[tuple[Path, int]], total: RollResult) -> None:
        names = [p.name for p, _ in group]
        roll_id = hashlib.sha256("\n".join(names).encode()).hexdigest()[:20]
        rows_by_seg: list[tuple[int, list[Row]]] = []
        for p, _ in group:  # read outside any lock: appends go on meanwhile
            rows, torn = _read_segment(p)
            total.torn_bytes += torn
            rows_by_seg.append((self._segment_id(con, p.name), rows))
        keep = self._claim(con, rows_by_seg, total)
        frame = frame_of(keep)
        days = frame["timestamp"].dt.strftime("%Y-%m-%d") if len(frame) else pd.Series([], dtype=object)
        day_list = sorted(days.unique())
        files = [self.inbox / d / f"events-{roll_id}.parquet" for d in day_list]
        intent = self.rolls / f"{roll_id}.json"
        self.rolls.mkdir(parents=True, exist_ok=True)
        _write_json(intent, {"segments": names, "files": [str(f.relative_to(self.root)) for f in files]})
        for f, d in zip(files, day_list):
            write_events_parquet(frame[days == d], f)
        self._finish_files(names, intent)
        total.segments += len(group)
        total.written += len(keep)
        total.files += files

    def _claim(self, con: sqlite3.Connection, rows_by_seg: list[tuple[int, list[Row]]], total: RollResult) -> list[Row]:
        """The rows each segment owns, claiming the ids nobody owns for the first segment that
        has them (in one sorted transaction). Owners never change once set, so they are read
        without the write lock; only the ids nobody owned are looked at again under it."""
        ids = list({r[0] for _, rows in rows_by_seg for r in rows})
        owners = self._owners(con, ids)
        unowned = [i for i in ids if i not in owners]
        claims: list[tuple[str, int]] = []
        new_sends: list[tuple[str, str]] = []
        con.execute("BEGIN IMMEDIATE")
        try:
            if unowned:
                owners.update(self._owners(con, unowned))
                mids = list({r[2] for _, rows in rows_by_seg for r in rows if r[3] == "send" and r[0] not in owners})
                send_of = self._send_owners(con, mids) if mids else {}
                first: dict[str, tuple] = {}  # two workers logged a send each: the earlier one is the send
                for _, rows in rows_by_seg:
                    for r in rows:
                        if r[3] == "send" and r[0] not in owners and r[2] not in send_of:
                            if r[2] not in first or (r[4], r[0]) < first[r[2]]:
                                first[r[2]] = (r[4], r[0])
                send_of.update((m, e) for m, (_, e) in first.items())
                for sid, rows in rows_by_seg:
                    for r in rows:
                        if r[0] in owners:
                            continue
                        if r[3] == "send" and send_of[r[2]] != r[0]:
                            continue  # the message's send is another event: a second send, not stored
                        owners[r[0]] = sid
                        claims.append((r[0], sid))
                        if r[3] == "send" and first.get(r[2], (0, None))[1] == r[0]:
                            new_sends.append((r[2], r[0]))
                con.executemany("INSERT INTO events VALUES (?, ?)", sorted(claims))
                con.executemany("INSERT OR IGNORE INTO sends VALUES (?, ?)", sorted(new_sends))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        keep: list[Row] = []
        for sid, rows in rows_by_seg:
            total.rows_read += len(rows)
            for r in rows:
                if owners.get(r[0]) == sid:
                    keep.append(r)
                    owners[r[0]] = -1  # a second copy in the same segment is a copy
                else:
                    total.doubled += 1
        return keep

    def _finish_files(self, names: list[str], intent: Path) -> None:
        """The roll's files are in place: remove its segments, then its journal."""
        for n in names:
            (self.wal / n).unlink(missing_ok=True)
        _fsync_dir(self.wal)
        intent.unlink(missing_ok=True)

    def _recover(self) -> None:
        """Finish or undo the rolls a crash interrupted (see the module docstring)."""
        if not self.rolls.is_dir():
            return
        for intent in sorted(self.rolls.glob("*.json")):
            plan = json.loads(intent.read_text())
            present = [n for n in plan["segments"] if (self.wal / n).exists()]
            if len(present) < len(plan["segments"]):  # its files were all in place: finish the removal
                self._finish_files(plan["segments"], intent)
                continue
            for f in plan["files"]:  # its files may be partial: remove them, the segments roll again
                (self.root / f).unlink(missing_ok=True)
            intent.unlink()
            log.warning("redoing roll %s interrupted by a crash (%d segments)", intent.stem, len(present))

    # -- reading -----------------------------------------------------------------------------
    def count(self) -> int:
        """Events stored: in the index, and in this process's open segment."""
        with self._lock:
            con = self._reader()
            own = list(set().union(*(i for i, _ in self._unrolled.values())))
            if con is None:
                return len(own)
            rolled = int(con.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            return rolled + len(own) - len(self._owners(con, own))


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
