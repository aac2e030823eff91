"""Append-only store of the events the service receives (``POST /events``), in the contract.

Why: the nightly run already reads a folder of contract Parquet files (``--events``), so a
webhook batch is kept as exactly that, and ``sendtime nightly --events
$SENDTIME_HOME/events/inbox`` trains on what arrived. Layout under ``SENDTIME_HOME/events/``:

- ``inbox/events-<hash>.parquet``: one typed contract file per batch that brought new events,
  named by a hash of those events;
- ``index.sqlite``: the event ids stored, and the messages that have their send. It lives
  outside the inbox, so no reader of the folder takes it for events, and is rebuilt from the
  inbox when missing.

Email platforms retry a webhook until they get a 2xx, so the same batch can arrive twice, or
overlap an earlier one: appending stores only event ids not seen before (a replay adds
nothing; the first version of an id wins), and refuses a second send for a message that
already has one (SendGrid's ``processed`` and ``delivered`` can arrive in different batches).

Concurrency and crashes: an append holds SQLite's write lock (``BEGIN IMMEDIATE``) from "which
ids are new?" to "they are recorded", so two requests, in threads or in separate worker
processes, cannot both store the same event. The file is written under a temporary name (no
reader picks up ``.tmp``), renamed into place, and only then are its ids committed. A crash in
between leaves a file whose ids are not indexed; the platform's retry then computes the same
new events, the same file name, and replaces it with identical content.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sendtime.features.importers import COLUMNS, write_events_parquet

SECOND_SEND = "second send for message_id (the store already has its send)"
_PROBES = {
    "events": "SELECT p.v FROM probe p JOIN events e ON e.event_id = p.v",
    "sends": "SELECT p.v FROM probe p JOIN sends s ON s.message_id = p.v",
}


@dataclass
class AppendResult:
    stored: int = 0  # new events written
    duplicates: int = 0  # event ids already in the store
    refused: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["event_id", "reason"]))
    file: Path | None = None


def _content_hash(events: pd.DataFrame) -> str:
    """A hash of the events themselves (not of Parquet bytes, which vary with library versions)."""
    h = hashlib.sha256()
    for row in events.sort_values("event_id", kind="stable").itertuples(index=False, name=None):
        h.update(json.dumps([None if pd.isna(v) else str(v) for v in row]).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


class EventStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.inbox = self.root / "inbox"
        self.index_path = self.root / "index.sqlite"
        self._lock = threading.Lock()  # threads of one process queue here, not on SQLite's busy wait

    # -- index -------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        self.inbox.mkdir(parents=True, exist_ok=True)
        fresh = not self.index_path.exists()
        con = sqlite3.connect(self.index_path, timeout=60, isolation_level=None)
        con.execute("CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY, file TEXT NOT NULL) WITHOUT ROWID")
        con.execute("CREATE TABLE IF NOT EXISTS sends (message_id TEXT PRIMARY KEY, event_id TEXT NOT NULL) WITHOUT ROWID")
        if fresh and any(self.inbox.glob("*.parquet")):
            self._rebuild(con)
        return con

    def _rebuild(self, con: sqlite3.Connection) -> None:
        """Index every event already in the inbox (the index was deleted or lost)."""
        import pyarrow.parquet as pq

        con.execute("BEGIN IMMEDIATE")
        try:
            for f in sorted(self.inbox.glob("*.parquet")):
                t = pq.read_table(f, columns=["event_id", "event_type", "message_id"]).to_pandas()
                self._record(con, t, f.name)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    @staticmethod
    def _record(con: sqlite3.Connection, events: pd.DataFrame, file: str) -> None:
        con.executemany("INSERT OR IGNORE INTO events VALUES (?, ?)", ((e, file) for e in events["event_id"]))
        sends = events[events["event_type"] == "send"]
        con.executemany("INSERT OR IGNORE INTO sends VALUES (?, ?)", zip(sends["message_id"], sends["event_id"]))

    @staticmethod
    def _known(con: sqlite3.Connection, table: str, values: list[str]) -> set[str]:
        """Which of ``values`` the index holds (``table``: "events" by id, "sends" by message)."""
        con.execute("CREATE TEMP TABLE IF NOT EXISTS probe (v TEXT PRIMARY KEY)")
        con.execute("DELETE FROM probe")
        con.executemany("INSERT OR IGNORE INTO probe VALUES (?)", ((v,) for v in values))
        return {r[0] for r in con.execute(_PROBES[table])}

    # -- the one write path ------------------------------------------------------------------
    def append(self, events: pd.DataFrame) -> AppendResult:
        """Store the contract events not stored yet; see the module docstring for the guarantees."""
        events = events.reindex(columns=list(COLUMNS))
        if events.empty:
            return AppendResult()
        with self._lock:
            con = self._connect()
            try:
                con.execute("BEGIN IMMEDIATE")
                try:
                    result = self._append_locked(con, events)
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            finally:
                con.close()
        return result

    def _append_locked(self, con: sqlite3.Connection, events: pd.DataFrame) -> AppendResult:
        seen = self._known(con, "events", events["event_id"].astype(str).unique().tolist())
        is_dup = events["event_id"].isin(seen)
        new = events.loc[~is_dup]
        is_send = new["event_type"] == "send"
        has_send = self._known(con, "sends", new.loc[is_send, "message_id"].astype(str).unique().tolist())
        second = is_send & new["message_id"].isin(has_send)
        refused = pd.DataFrame({"event_id": new.loc[second, "event_id"].to_numpy(), "reason": SECOND_SEND})
        new = new.loc[~second]
        result = AppendResult(stored=len(new), duplicates=int(is_dup.sum()), refused=refused)
        if new.empty:
            return result
        name = f"events-{_content_hash(new)[:32]}.parquet"
        result.file = write_events_parquet(new, self.inbox / name)
        self._record(con, new, name)
        return result

    def count(self) -> int:
        """Events stored (from the index)."""
        con = self._connect()
        try:
            return int(con.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        finally:
            con.close()
