"""Serving benchmark against real `bentoml serve` processes on 127.0.0.1.

Measures, in one run and side by side:
- 10,000-user requests: answers per second from the precomputed 168-slot table vs scoring the
  RandomForest per request (the same service with SENDTIME_SCORE_TABLE=0), on the trained world;
- with a 10,000,000-user snapshot (the trained users repeated under new ids, its serving table
  written by the nightly's writer) and 2 workers: start to first answer, resident memory (PSS and
  RSS, after start and after the load), 10,000-user requests of random known users, and
  single-user latency at a fixed 100 requests per second, alone and beside 10,000-new-user
  7-day requests from another client process.

Every request loop is bounded in count and time and targets loopback only.
Run: `make bench` (or `python -m bench.serving --help`). Figures go to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WINDOW = {"window_start": "2026-04-14T00:00:00Z", "window_end": "2026-04-15T00:00:00Z"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, **extra) -> dict[str, str]:
    env = {**os.environ, "SENDTIME_HOME": str(home), "SENDTIME_RELOAD_SECONDS": "0",
           "SENDTIME_EXPLORATION_RATE": "0.05", "SENDTIME_HOLDOUT_SHARE": "0.05", **extra}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    return env


def prepare_state(users: int, days: int, cache: Path) -> Path:
    """A trained state folder (simulated world + nightly run), cached between runs."""
    home = cache / f"home-{users}-{days}"
    if (home / "published" / "CURRENT").exists():
        return home
    world = cache / f"world-{users}-{days}"
    py = [sys.executable, "-m", "sendtime.cli"]
    subprocess.run(py + ["simulate", "--users", str(users), "--days", str(days), "--out", str(world)], check=True, env=_env(home))
    subprocess.run(py + ["nightly", "--events", str(world / "events.parquet"), "--users", str(world / "users.parquet"),
                         "--as-of", "2026-04-13"], check=True, env=_env(home))
    return home


@contextmanager
def server(home: Path, log: Path, **extra):
    port = free_port()
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "sendtime.cli", "serve", "--port", str(port)], env=_env(home, **extra),
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        first = None
        deadline = time.time() + 180
        body = {"users": [{"user_id": "u000001"}], **WINDOW}
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.post(f"{base}/best_send_time", json=body, timeout=5).status_code == 200:
                    first = time.perf_counter() - t0
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        if first is None:
            raise RuntimeError("server did not answer within 180 s")
        yield base, proc, first
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def batch_throughput(base: str, ids: list[str] | list[list[str]], requests: int, concurrency: int) -> dict:
    """10,000-user requests, ``concurrency`` at a time; ``ids`` one user list or several (each
    request takes the next: other users, other pages of a large table)."""
    lists = ids if ids and isinstance(ids[0], list) else [ids]
    # encoded once: the figure is the service's throughput, not the client's JSON encoder's
    bodies = [json.dumps({"users": [{"user_id": u} for u in one], **WINDOW}).encode() for one in lists]
    headers = {"content-type": "application/json"}

    async def run() -> list[float]:
        async with httpx.AsyncClient(timeout=120) as c:
            lat: list[float] = []
            sem = asyncio.Semaphore(concurrency)

            async def one(i: int):
                async with sem:
                    t = time.perf_counter()
                    r = await c.post(f"{base}/best_send_time", content=bodies[i % len(bodies)], headers=headers)
                    r.raise_for_status()
                    lat.append(time.perf_counter() - t)

            await one(0)  # warm-up
            lat.clear()
            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(requests)))
            lat.append(time.perf_counter() - t0)
            return lat

    lat = asyncio.run(run())
    wall = lat.pop()
    n = len(lists[0])
    return {"users_per_request": n, "requests": requests, "concurrency": concurrency,
            "answers_per_second": n * requests / wall, "mean_request_seconds": float(np.mean(lat))}


WEEK = {"window_start": "2026-04-14T00:00:00Z", "window_end": "2026-04-21T00:00:00Z"}
ZONES = ("America/New_York", "Europe/Berlin", "Asia/Tokyo", "America/Los_Angeles", "Australia/Sydney")


def heavy_body(n: int = 10_000) -> bytes:
    """n users the snapshot does not know, each with a time zone, and a 7-day window."""
    users = [{"user_id": f"new-{i:06d}", "timezone": ZONES[i % len(ZONES)]} for i in range(n)]
    return json.dumps({"users": users, **WEEK}).encode()


def _heavy_loop(base: str, body: bytes, stop, out, path: str = "/best_send_time") -> None:
    """Back-to-back heavy requests until ``stop`` is set (a process of its own: parsing 10,000
    answers must not hold the light client's interpreter)."""
    with httpx.Client(timeout=300) as c:
        while not stop.is_set():
            t = time.perf_counter()
            r = c.post(f"{base}{path}", content=body, headers={"content-type": "application/json"})
            out.put((time.perf_counter() - t, r.status_code))


def heavy_beside_light(base: str, ids: list[str], seconds: float, body: bytes | None = None,
                       path: str = "/best_send_time", max_seconds: float | None = None) -> dict:
    """Single-user latency at 100 rps while heavy requests (by default 10,000-user 7-day
    requests of new users) run back to back beside it, from another client process (a
    scheduler's big campaign and its transactional sends at once)."""
    import multiprocessing as mp

    body = heavy_body() if body is None else body
    with httpx.Client(timeout=300) as c:  # alone first: how long one heavy request takes
        t = time.perf_counter()
        alone = c.post(f"{base}{path}", content=body, headers={"content-type": "application/json"})
        alone_s = time.perf_counter() - t
        alone.raise_for_status()
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_heavy_loop, args=(base, body, stop, out, path), daemon=True)
    proc.start()
    try:
        time.sleep(1.0)  # the heavy client is running before the light one starts
        light = single_user_latency(base, ids, rate=100, seconds=seconds, max_seconds=max_seconds)
    finally:
        stop.set()
        proc.join(timeout=300)
    heavy = []
    while not out.empty():
        heavy.append(out.get())
    return {"heavy_alone_seconds": alone_s, "heavy_requests_beside": len(heavy),
            "heavy_mean_seconds": float(np.mean([h[0] for h in heavy])) if heavy else None,
            "heavy_errors": sum(1 for h in heavy if h[1] != 200), "light": light}


def single_user_latency(base: str, ids: list[str], rate: float, seconds: float, lanes: int = 4,
                        max_seconds: float | None = None) -> dict:
    """Open-loop load: requests leave on a fixed schedule over ``lanes`` warm keep-alive
    connections (a scheduler's connection pool), whatever the answers' timing. With
    ``max_seconds``, requests not sent by then are not sent (a server that holds them for
    seconds would otherwise keep the run going for many minutes)."""

    async def run():
        lat, codes = [], []
        n = int(rate * seconds)
        clients = [httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)) for _ in range(lanes)]
        try:
            for c in clients:  # warm the connections
                for _ in range(5):
                    await c.post(f"{base}/best_send_time", json={"users": [{"user_id": ids[0]}], **WINDOW})
            start = time.perf_counter() + 0.05

            async def lane(k: int) -> None:
                c = clients[k]
                for i in range(k, n, lanes):
                    if max_seconds is not None and time.perf_counter() > start + max_seconds:
                        return
                    delay = start + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    body = {"users": [{"user_id": ids[i % len(ids)]}], **WINDOW}
                    t = time.perf_counter()
                    try:
                        r = await c.post(f"{base}/best_send_time", json=body)
                        codes.append(r.status_code)
                    except httpx.HTTPError:
                        codes.append(-1)
                    lat.append(time.perf_counter() - t)

            await asyncio.gather(*(lane(k) for k in range(lanes)))
            return np.array(lat), np.array(codes), time.perf_counter() - start
        finally:
            for c in clients:
                await c.aclose()

    lat, codes, wall = asyncio.run(run())
    ms = lat * 1000
    return {"rate_target": rate, "requests": int(len(lat)), "achieved_rate": len(lat) / wall, "lanes": lanes,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
            "errors": int((codes != 200).sum()), "status_503": int((codes == 503).sum())}


def _published_priors(home: Path) -> tuple[dict, object]:
    """Every zone's answer for unknown users, as the nightly run publishes them, and the Scorer."""
    from dataclasses import replace

    from sendtime.serving.model_store import load_scorer
    from sendtime.settings import Settings

    settings = replace(Settings.from_env(_env(home)), use_score_table=False)
    scorer, _ = load_scorer(settings)
    return scorer.published_priors(settings.default_timezone), scorer


def ensure_serving_table(home: Path) -> None:
    """Give a cached state folder's snapshot its serving table if an older version published it."""
    from sendtime.features.store import prior_to_dict
    from sendtime.serving.serving_table import SERVING, write_serving_table
    from sendtime.serving.snapshots import current_snapshot

    snap = current_snapshot(home / "published")
    if (snap / SERVING / "meta.json").exists():
        return
    priors, scorer = _published_priors(home)
    write_serving_table(snap / SERVING, scorer.features.table, np.load(snap / "scores.npy", mmap_mode="r"),
                        model_version=scorer.model_version, as_of=scorer.as_of, priors=priors,
                        prior=prior_to_dict(scorer.prior), input_columns=list(scorer.input_columns))


class _Tiled:
    """Rows of a table repeated to ``n`` rows (row i is row i mod len(src)), read on demand."""

    def __init__(self, src: np.ndarray, n: int) -> None:
        self.src, self.n = src, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx) -> np.ndarray:
        return np.asarray(self.src[np.asarray(idx) % len(self.src)])


def big_user_home(src: Path, dst: Path, n_users: int) -> Path:
    """A state folder whose published snapshot has ``n_users`` users (the trained snapshot's
    users repeated under new ids) and only what the service reads: manifest and serving table,
    written by the nightly's own writer (its quantization report included)."""
    from sendtime.features.store import prior_to_dict
    from sendtime.serving.serving_table import SERVING, write_serving_table
    from sendtime.serving.snapshots import current_snapshot, publish_pointer

    if (dst / "published" / "CURRENT").exists():
        return dst
    snap = current_snapshot(src / "published")
    priors, scorer = _published_priors(src)
    (dst / "published").mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "mlflow.db", dst / "mlflow.db")  # artifacts stay where the runs logged them
    name = f"big-{n_users}"
    out = dst / "published" / name
    small = scorer.features.table[["timezone", "timezone_source", "source", "confidence"]]
    idx = np.arange(n_users) % len(small)
    big = small.iloc[idx].copy()
    big.index = pd.Index([f"m{i:08d}" for i in range(n_users)], name="user_id")
    t = time.perf_counter()
    report = write_serving_table(out / SERVING, big, _Tiled(np.load(snap / "scores.npy", mmap_mode="r"), n_users),
                                 model_version=scorer.model_version, as_of=scorer.as_of, priors=priors,
                                 prior=prior_to_dict(scorer.prior), input_columns=list(scorer.input_columns))
    print(f"serving table for {n_users:,} users written in {time.perf_counter() - t:.0f} s: {report}", flush=True)
    manifest = json.loads((snap / "manifest.json").read_text())
    manifest.update(users=n_users, serving_quantization=report)
    (out / "manifest.json").write_text(json.dumps(manifest))
    publish_pointer(dst / "published", name)
    return dst


def memory_mib(pid: int) -> dict:
    """Resident memory of a process tree: the sum of each process's RSS (shared pages counted
    in every process that maps them) and of its PSS (each shared page split among its mappers:
    the tree's real share of physical memory)."""
    import psutil

    p = psutil.Process(pid)
    procs = [p, *p.children(recursive=True)]
    rss = pss = 0
    for c in procs:
        try:
            rss += c.memory_info().rss
            pss += c.memory_full_info().pss
        except psutil.Error:
            pass
    return {"processes": len(procs), "rss_sum_mib": rss / 2**20, "pss_sum_mib": pss / 2**20}


def random_known_ids(n_users: int, k: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"m{i:08d}" for i in rng.choice(n_users, size=k, replace=False)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20_000, help="users in the trained world")
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--big", type=int, default=10_000_000, help="users in the large snapshot (0 to skip)")
    ap.add_argument("--seconds", type=float, default=20.0, help="duration of each 100 rps single-user run")
    ap.add_argument("--workers", type=int, default=2, help="service worker processes")
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / ".cache")
    args = ap.parse_args(argv)
    if args.users < 10_000:
        ap.error("--users must be at least 10,000 (the batch test sends 10,000 users)")
    if args.big and args.big < 100_000:
        ap.error("--big must be 0 or at least 100,000 users")
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    home = prepare_state(args.users, args.days, args.cache)
    ensure_serving_table(home)
    ids = pd.read_parquet(next((home / "published").glob("*/features/user_features.parquet")))["user_id"].tolist()[:10_000]
    out: dict = {"machine": {"cores": os.cpu_count()}, "users_trained": args.users, "workers": args.workers}

    workers = str(args.workers)
    with server(home, args.cache / "serve-table.log", SENDTIME_WORKERS=workers) as (base, proc, first):
        out["table_batch"] = batch_throughput(base, ids, requests=20, concurrency=args.workers)
        print(f"table, {args.users:,}-user snapshot, 10k-user requests:", out["table_batch"], flush=True)
    # the straightforward way: scikit-learn's predict_proba on each request's user-slots
    with server(home, args.cache / "serve-model.log", SENDTIME_SCORE_TABLE="0", SENDTIME_COMPILED_SCORING="0",
                SENDTIME_WORKERS=workers) as (base, proc, first):
        out["model_batch"] = batch_throughput(base, ids, requests=4, concurrency=args.workers)
        print("per-request RandomForest, 10k-user requests:", out["model_batch"], flush=True)
    out["table_vs_model_ratio"] = out["table_batch"]["answers_per_second"] / out["model_batch"]["answers_per_second"]

    if args.big:
        big = big_user_home(home, args.cache / f"home-big-{args.big}", args.big)
        subprocess.run(["sync"], check=False)
        with server(big, args.cache / "serve-big.log", SENDTIME_WORKERS=workers) as (base, proc, first):
            b = out["big"] = {"users": args.big, "start_to_first_answer_seconds": first,
                              "memory_after_start": memory_mib(proc.pid)}
            print(f"{args.big:,}-user snapshot, start to first answer {first:.1f} s,", b["memory_after_start"], flush=True)
            lists = [random_known_ids(args.big, 10_000, seed) for seed in range(20)]
            b["batch"] = batch_throughput(base, lists, requests=40, concurrency=args.workers)
            print("  10k-user requests of random known users:", b["batch"], flush=True)
            single = random_known_ids(args.big, 5_000, 99)
            b["single_user_100rps"] = single_user_latency(base, single, rate=100, seconds=args.seconds)
            print("  single user at 100 rps:", b["single_user_100rps"], flush=True)
            b["heavy_beside_light"] = heavy_beside_light(base, single, seconds=args.seconds)
            print("  single user at 100 rps beside 10k-new-user 7-day requests:", b["heavy_beside_light"], flush=True)
            b["memory_after_load"] = memory_mib(proc.pid)
            print("  memory after the load:", b["memory_after_load"], flush=True)

    (RESULTS / "serving.json").write_text(json.dumps(out, indent=2))
    lines = [
        "| measure | figure | goal |", "|---|---|---|",
        f"| 10,000-user request, table, {args.users:,}-user snapshot ({args.workers} workers) | "
        f"{out['table_batch']['answers_per_second']:,.0f} answers/s | |",
        f"| 10,000-user request, RandomForest per request | {out['model_batch']['answers_per_second']:,.0f} answers/s | |",
        f"| table vs per-request RandomForest | {out['table_vs_model_ratio']:.1f}x | >= 20x |",
    ]
    if "big" in out:
        b = out["big"]
        su, hb = b["single_user_100rps"], b["heavy_beside_light"]
        q = json.loads((args.cache / f"home-big-{args.big}" / "published" / f"big-{args.big}" / "manifest.json").read_text())
        q = q["serving_quantization"]
        lines += [
            f"| {args.big:,} users, {args.workers} workers: start to first answer | {b['start_to_first_answer_seconds']:.1f} s | <= 10 s |",
            f"| resident memory after start: PSS total (RSS summed over {b['memory_after_start']['processes']} processes) | "
            f"{b['memory_after_start']['pss_sum_mib']:,.0f} MiB ({b['memory_after_start']['rss_sum_mib']:,.0f}) | <= 3,072 MiB |",
            f"| resident memory after the load below: PSS total (RSS summed) | {b['memory_after_load']['pss_sum_mib']:,.0f} MiB "
            f"({b['memory_after_load']['rss_sum_mib']:,.0f}) | <= 3,072 MiB |",
            f"| 10,000-user requests of random known users | {b['batch']['answers_per_second']:,.0f} answers/s | >= 300,000 |",
            f"| single user at 100 rps: p50 / p99 | {su['p50_ms']:.1f} / {su['p99_ms']:.1f} ms | p99 <= 10 ms |",
            f"| single user at 100 rps: errors / 503s | {su['errors']} / {su['status_503']} of {su['requests']} | 0 |",
            f"| 10,000 new users (with zones), 7-day window, one request alone | {hb['heavy_alone_seconds']:.2f} s | |",
            f"| single user at 100 rps beside such requests back to back: p50 / p99 | {hb['light']['p50_ms']:.1f} / "
            f"{hb['light']['p99_ms']:.1f} ms at {hb['light']['achieved_rate']:.0f} rps ({hb['heavy_requests_beside']} heavy "
            f"requests, mean {hb['heavy_mean_seconds'] or 0:.2f} s) | p99 <= 10 ms |",
            f"| beside them: errors / 503s | {hb['light']['errors']} / {hb['light']['status_503']} of {hb['light']['requests']} | 0 |",
            f"| uint8 table: same best hour of the week / of each local day ({q['users_checked']:,} users) | "
            f"{q['week_best_same']:.2%} / {q['day_best_same']:.2%} | |",
            f"| uint8 table: P lost by a day's pick, worst / mean; largest error in P | {q['day_max_p_lost']:.5f} / "
            f"{q['day_mean_p_lost']:.6f}; {q['max_abs_error']:.5f} | |",
        ]
    (RESULTS / "serving.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
