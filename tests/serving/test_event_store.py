"""The event store's promises under crashes: a torn record, a retry logged by two workers, a
roll killed half-way, and a real `sendtime serve` with two workers killed mid-stream while the
platform keeps retrying. Each time: every acknowledged event in the inbox, none twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from sendtime.features.contract import read_events
from sendtime.serving import event_store as es
from sendtime.serving.event_store import EventStore, StoreBusy
from tests.conftest import descendants, free_port, home_env, wait_ready

T0 = pd.Timestamp("2026-03-03T23:00:00Z").value // 1000  # rows span two UTC days


def rows(tag: str, n: int, start: int = 0) -> list[tuple]:
    return [(f"{tag}-{i}", f"u{i % 7}", f"{tag}-m{i}", "send", T0 + i * 120_000_000, None, None) for i in range(start, start + n)]


def inbox_ids(store: EventStore) -> pd.Series:
    return read_events(store.inbox).accepted["event_id"]


def test_a_torn_record_is_skipped_and_everything_acknowledged_is_kept(tmp_path):
    store = EventStore(tmp_path)
    for k in range(3):
        assert store.append_rows(rows(f"b{k}", 50)).stored == 50
    seg = store.wal / store._segment.name
    store.seal()
    with open(seg, "ab") as fh:  # the process died in the middle of a fourth write
        fh.write(es._HEADER.pack(5000, 123) + b'[["half')
    got = store.roll()
    assert (got.written, got.doubled, got.segments) == (150, 0, 1) and got.torn_bytes > 0
    ids = inbox_ids(store)
    assert len(ids) == 150 and ids.is_unique
    assert sorted(p.parent.name for p in store.inbox.rglob("*.parquet")) == ["2026-03-03", "2026-03-04"]
    assert not list(store.wal.glob("*.wal")) and not list(store.rolls.glob("*"))


def test_a_retry_logged_by_two_workers_is_rolled_once(tmp_path):
    one, two = EventStore(tmp_path), EventStore(tmp_path)  # two processes share only the folder
    assert one.append_rows(rows("x", 40)).stored == 40
    assert two.append_rows(rows("x", 40, start=20)).stored == 40  # the retry went to the other worker
    assert one.append_rows(rows("x", 40)).duplicates == 40  # the same worker knows its own log
    one.seal(), two.seal()
    got = one.roll()
    assert (got.written, got.doubled) == (60, 20)
    ids = inbox_ids(one)
    assert len(ids) == 60 and ids.is_unique
    # after the roll every worker finds the ids in the index
    assert two.append_rows(rows("x", 60)).duplicates == 60


def test_a_second_send_logged_by_another_worker_is_not_stored(tmp_path):
    one, two = EventStore(tmp_path), EventStore(tmp_path)
    a = [("s1", "u1", "m1", "send", T0, None, None)]
    b = [("s2", "u1", "m1", "send", T0 + 1, None, None)]  # another send event for the same message
    assert one.append_rows(a).stored == 1 and two.append_rows(b).stored == 1
    one.seal(), two.seal()
    one.roll()
    assert inbox_ids(one).tolist() == ["s1"]


def test_a_roll_killed_half_way_is_redone_without_doubles(tmp_path, monkeypatch):
    store = EventStore(tmp_path)
    assert store.append_rows(rows("r", 120)).stored == 120  # two UTC days: two files
    store.seal()
    real = es.write_events_parquet
    calls = []

    def dies_after_one(frame, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")  # the process dies between the two files
        return real(frame, path)

    monkeypatch.setattr(es, "write_events_parquet", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        store.roll()
    assert len(list(store.inbox.rglob("*.parquet"))) == 1 and len(list(store.rolls.glob("*.json"))) == 1
    monkeypatch.setattr(es, "write_events_parquet", real)
    again = EventStore(tmp_path).roll()  # the next process's roll finds the journal
    assert again.written == 120
    ids = inbox_ids(store)
    assert len(ids) == 120 and ids.is_unique and not list(store.rolls.glob("*.json"))


def test_back_pressure_refuses_with_a_retry_time_and_stores_nothing(tmp_path):
    store = EventStore(tmp_path, max_backlog_bytes=1)
    store.append_rows(rows("p", 10))  # the log is empty before this one: it is taken
    store._backlog = (0.0, 0)  # look at the folder again now
    with pytest.raises(StoreBusy) as busy:
        store.append_rows(rows("q", 10))
    assert busy.value.retry_after >= 1 and "not rolled yet" in str(busy.value)
    store.roll(seal_own=True)
    assert inbox_ids(store).str.startswith("p-").all()


def _serve(env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(log, "a") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "sendtime.cli", "serve", "--port", str(port)], env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    wait_ready(proc, base, log)
    return proc, base


def test_a_server_killed_mid_stream_loses_and_doubles_nothing(trained, private_home, tmp_path):
    """Two workers take 1,000-event batches from four platform connections that retry until
    they get a 200 (and re-send a few they already got one for); the whole server is killed
    with SIGKILL mid-stream and started again."""
    env = {**home_env(private_home), "SENDTIME_WORKERS": "2"}
    log = tmp_path / "serve.log"
    proc, base = _serve(env, log)
    state = {"base": base}
    batches = [[{"email": f"k{b}-{i % 97}@example.com", "timestamp": 1772546400 + i, "event": "delivered",
                 "sg_event_id": f"kill-{b}-{i}", "sg_message_id": f"kill{b}x{i}.filter0001-1"} for i in range(1000)]
               for b in range(48)]
    acked: set[int] = set()
    errors: list[str] = []

    def platform(mine: list[int]) -> None:
        with httpx.Client(timeout=10) as http:
            for k, b in enumerate(mine + mine[:2]):  # the last two are re-sent after their 200
                while True:
                    try:
                        r = http.post(f"{state['base']}/events", json=batches[b])
                    except httpx.HTTPError:
                        time.sleep(0.2)
                        continue
                    if r.status_code == 200:
                        acked.add(b)
                        break
                    if r.status_code == 503:
                        time.sleep(float(r.headers.get("retry-after", "1")))
                        continue
                    errors.append(f"{r.status_code} {r.text[:200]}")
                    return

    threads = [threading.Thread(target=platform, args=(list(range(c, 48, 4)),)) for c in range(4)]
    for t in threads:
        t.start()
    while len(acked) < 12:
        time.sleep(0.05)
    for pid in descendants(proc.pid) | {proc.pid}:  # the workers too (they run in sessions of their own)
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)
    at_kill = len(acked)
    proc, state["base"] = _serve(env, log)
    for t in threads:
        t.join(timeout=240)
    assert not errors and len(acked) == 48 and 12 <= at_kill < 48
    workers = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGTERM)  # a clean stop rolls what each worker logged
    proc.wait(timeout=60)
    deadline = time.time() + 30
    while any(Path(f"/proc/{p}").exists() for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    EventStore(private_home / "events").roll()  # and whatever a killed worker left sealed
    stored = read_events(private_home / "events" / "inbox").accepted
    ids = stored.loc[stored["event_id"].str.startswith("kill-"), "event_id"]
    assert ids.is_unique and len(ids) == 48_000


def test_roll_events_command_moves_sealed_segments_and_says_when_it_cannot(tmp_path):
    import fcntl

    from tests.conftest import make_env

    home = tmp_path / "home"
    store = EventStore(home / "events")
    store.append_rows(rows("cli", 30))
    store.seal()
    live = EventStore(home / "events")
    live.append_rows(rows("live", 5))  # a running server's open segment stays in the log
    env = {**make_env(home)}
    cmd = [sys.executable, "-m", "sendtime.cli", "roll-events"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "rolled 1 segment(s): 30 events" in done.stdout
    assert sorted(inbox_ids(store)) == sorted(r[0] for r in rows("cli", 30))
    with open(home / "events" / "roll.lock", "a") as held:  # another roll is running
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert busy.returncode == 5 and busy.stderr.count("error:") == 1 and "another process is rolling" in busy.stderr


def test_an_index_from_before_the_log_is_rebuilt_from_the_inbox(tmp_path):
    """A home written by the store before the log: one Parquet file per batch in a flat inbox
    and an index of ids and files. Its events stay known: a replay adds nothing."""
    import sqlite3

    from sendtime.features.importers import write_events_parquet
    from sendtime.serving.event_store import frame_of

    old = rows("v1", 20)
    write_events_parquet(frame_of(old), tmp_path / "inbox" / "events-0123abcd.parquet")
    con = sqlite3.connect(tmp_path / "index.sqlite")
    con.execute("CREATE TABLE events (event_id TEXT PRIMARY KEY, file TEXT NOT NULL) WITHOUT ROWID")
    con.executemany("INSERT INTO events VALUES (?, 'events-0123abcd.parquet')", ((r[0],) for r in old))
    con.commit()
    con.close()
    store = EventStore(tmp_path)
    got = store.append_rows(rows("v1", 25))
    assert (got.stored, got.duplicates) == (5, 20)
    store.roll(seal_own=True)
    ids = inbox_ids(store)
    assert len(ids) == 25 and ids.is_unique and (tmp_path / "index-before-the-log.sqlite").exists()
