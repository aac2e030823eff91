"""Event intake: `POST /events` on a real `sendtime serve`, 1,000-event SendGrid batches.

Side by side in one run:
- per batch, in one process: the straightforward intake this replaced (the importer and the
  contract on pandas, one Parquet file and a SQLite insert per batch) against the plain-Python
  mapping and the write-ahead log;
- over HTTP on 127.0.0.1, with 1 worker (the default) and with 2: events/s and latency seen by
  a plain `http.client` platform (keep-alive connections in their own processes, bodies
  serialized beforehand so that the client spends little of the shared CPU);
- the roll of what was taken into the inbox: time and number of files.
Figures go to bench/results/events.{json,md}. Run: `make bench-events` or `python -m bench.events --help`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.serving import RESULTS, ROOT, prepare_state, server

T0 = 1776000000  # 2026-04-12


def sendgrid_batch(b: int, n: int = 1000, tag: str = "bench") -> list[dict]:
    """A webhook batch as SendGrid posts it: deliveries, opens (some machine), clicks."""
    out = []
    for i in range(n):
        kind = ("delivered", "open", "click")[i % 3]
        m = f"{tag}{b}x{i // 3}"
        rec = {"email": f"user{(b * 7919 + i // 3) % 200_000}@example.com", "timestamp": T0 + b * 5 + (i % 3) * 90,
               "event": kind, "sg_event_id": f"{tag}-{b}-{i}", "sg_message_id": f"{m}.filter0001p3las1-1-65E3F1A0-1.0",
               "smtp-id": f"<{m}@ismtpd0001p1lon1.sendgrid.net>", "category": ["spring-sale"]}
        if kind == "open":
            rec["sg_machine_open"] = (i % 4) == 0
            rec["useragent"] = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)"
            rec["ip"] = "17.58.0.1"
        if kind == "click":
            rec["url"] = "https://shop.example/spring"
        out.append(rec)
    return out


def in_process(batches: int) -> dict:
    """CPU time per batch: the straightforward intake against the one the route runs."""
    from sendtime.features.importers import import_sendgrid, write_events_parquet
    from sendtime.serving.event_store import EventStore
    from sendtime.serving.webhooks import take_sendgrid_batch

    data = [sendgrid_batch(b, tag="inproc") for b in range(batches)]
    tmp = Path(tempfile.mkdtemp(prefix="sendtime-bench-events-"))
    try:
        con = sqlite3.connect(tmp / "index.sqlite", isolation_level=None)
        con.execute("CREATE TABLE events (event_id TEXT PRIMARY KEY) WITHOUT ROWID")
        plain_ms, new_ms = [], []
        for k, records in enumerate(data):
            t = time.perf_counter()
            imported = import_sendgrid(records, require_sends=False)
            ids = imported.events["event_id"].tolist()
            con.execute("BEGIN IMMEDIATE")
            seen = {r[0] for r in con.execute(f"SELECT event_id FROM events WHERE event_id IN ({','.join('?' * len(ids))})", ids)}
            new = imported.events[~imported.events["event_id"].isin(seen)]
            write_events_parquet(new, tmp / "inbox" / f"events-{k}.parquet")
            con.executemany("INSERT INTO events VALUES (?)", ((e,) for e in new["event_id"]))
            con.execute("COMMIT")
            plain_ms.append((time.perf_counter() - t) * 1000)
        store = EventStore(tmp / "store")
        for records in data:
            t = time.perf_counter()
            take_sendgrid_batch(records, store, "email", "")
            new_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        rolled = store.roll(seal_own=True)
        roll_s = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    a, b = float(np.median(plain_ms)), float(np.median(new_ms))
    return {"batches": batches, "straightforward_ms_p50": a, "straightforward_ms_p99": float(np.percentile(plain_ms, 99)),
            "wal_ms_p50": b, "wal_ms_p99": float(np.percentile(new_ms, 99)), "ratio": a / b,
            "roll_seconds": roll_s, "rolled_events": rolled.written, "rolled_files": len(rolled.files)}


def _platform(port: int, bodies: list[bytes], stop_at: float, q) -> None:
    """One keep-alive connection posting its bodies until the deadline; latencies and events."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lat, codes, events = [], {}, 0
    i = 0
    while time.time() < stop_at:
        body = bodies[i % len(bodies)]
        i += 1
        t = time.perf_counter()
        try:
            conn.request("POST", "/events", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            code = r.status
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            code = -1
        lat.append(time.perf_counter() - t)
        codes[code] = codes.get(code, 0) + 1
        if code == 200:
            events += 1000
    q.put((lat, codes, events))


def over_http(home: Path, log: Path, workers: int, connections: int, seconds: float, tag: str) -> dict:
    shutil.rmtree(home / "events", ignore_errors=True)
    n = 400  # distinct batches per connection: new events every time (a replay would be cheaper)
    with server(home, log, SENDTIME_WORKERS=str(workers)) as (base, proc, _first):
        port = int(base.rsplit(":", 1)[1])
        bodies = [[json.dumps(sendgrid_batch(c * n + b, tag=tag)).encode() for b in range(n)] for c in range(connections)]
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        warm = [ctx.Process(target=_platform, args=(port, bodies[c][-5:], time.time() + 2, q)) for c in range(connections)]
        for p in warm:
            p.start()
        for _ in warm:
            q.get()
        stop_at = time.time() + seconds
        t0 = time.perf_counter()
        procs = [ctx.Process(target=_platform, args=(port, bodies[c][:-5], stop_at, q)) for c in range(connections)]
        for p in procs:
            p.start()
        parts = [q.get() for _ in procs]
        wall = time.perf_counter() - t0
        for p in procs:
            p.join()
        t = time.perf_counter()
        roll = json.loads(_post(port, "/admin/roll"))
        roll_s = time.perf_counter() - t
    lat = np.array([x for p in parts for x in p[0]]) * 1000
    codes: dict[str, int] = {}
    for p in parts:
        for k, v in p[1].items():
            codes[str(k)] = codes.get(str(k), 0) + v
    events = sum(p[2] for p in parts)
    files = sorted(str(f.relative_to(home / "events" / "inbox")) for f in (home / "events" / "inbox").rglob("*.parquet"))
    return {"workers": workers, "connections": connections, "seconds": wall, "events_per_second": events / wall,
            "batches": int(len(lat)), "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(lat.max()), "status_counts": codes, "roll_call_seconds": roll_s,
            "rolled_by_the_call": roll.get("written"), "inbox_files": len(files)}


def _post(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", path, b"{}", {"Content-Type": "application/json"})
    return conn.getresponse().read()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="duration of each HTTP run")
    ap.add_argument("--connections", type=int, default=4, help="platform connections (each its own process)")
    ap.add_argument("--batches", type=int, default=200, help="batches for the in-process comparison")
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / ".cache")
    args = ap.parse_args(argv)
    if not 1 <= args.connections <= 64 or args.seconds <= 0 or args.batches < 10:
        ap.error("--connections must be 1-64, --seconds > 0, --batches >= 10")
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    out: dict = {"machine": {"cores": os.cpu_count()}}
    print("in process: the straightforward intake vs the write-ahead log ...", flush=True)
    out["in_process"] = in_process(args.batches)
    print(json.dumps(out["in_process"], indent=1), flush=True)
    home = prepare_state(2000, 60, args.cache)
    for workers in (1, 2):
        print(f"over HTTP, {workers} worker(s), {args.connections} connections, {args.seconds:g} s ...", flush=True)
        out[f"http_{workers}"] = over_http(home, args.cache / f"serve-events-{workers}.log", workers, args.connections,
                                           args.seconds, tag=f"w{workers}")
        print(json.dumps(out[f"http_{workers}"], indent=1), flush=True)
    (RESULTS / "events.json").write_text(json.dumps(out, indent=2))
    (RESULTS / "events.md").write_text(markdown(out))
    print(markdown(out))
    return out


def markdown(out: dict) -> str:
    ip = out["in_process"]
    lines = [f"# POST /events ({time.strftime('%Y-%m-%d')}, {out['machine']['cores']} CPUs)", "",
             "1,000-event SendGrid batches (deliveries, opens, clicks), all events new.", "",
             "| in one process, per batch | p50 ms | p99 ms |", "|---|---|---|",
             f"| straightforward: importer + contract on pandas, a Parquet file and a SQLite insert per batch | {ip['straightforward_ms_p50']:.1f} | {ip['straightforward_ms_p99']:.1f} |",
             f"| now: plain-Python mapping, write-ahead log (fsync) | {ip['wal_ms_p50']:.1f} | {ip['wal_ms_p99']:.1f} |",
             f"| ratio | **{ip['ratio']:.1f}x** | |", "",
             f"Rolling those {ip['rolled_events']:,} events into the inbox: {ip['roll_seconds']:.1f} s, {ip['rolled_files']} file(s).", "",
             "| over HTTP (real `sendtime serve`, plain http.client platform) | events/s | p50 ms | p99 ms | max ms | statuses | inbox files after the roll |",
             "|---|---|---|---|---|---|---|"]
    for w in (1, 2):
        h = out.get(f"http_{w}")
        if h:
            lines.append(f"| {w} worker{'s' if w > 1 else ''}{' (default)' if w == 1 else ''}, {h['connections']} connections, {h['seconds']:.0f} s "
                         f"| {h['events_per_second']:,.0f} | {h['p50_ms']:.1f} | {h['p99_ms']:.1f} | {h['max_ms']:.0f} "
                         f"| {h['status_counts']} | {h['inbox_files']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
