"""Single-user latency while heavy requests run beside it, on the default settings (1 worker).

Side by side in one run, on the same trained snapshot: the service as configured now (8
request threads per worker, 10,000-user requests scored and serialized in slices) and with
`SENDTIME_THREADS=1`, BentoML's own default, under which requests of a worker run one at a time.
For each: single users at 100 requests/s alone; then beside back-to-back 10,000-new-user 7-day
`/best_send_time` requests; then beside back-to-back 10,000-user 7-day `/plan_campaign` requests
with an hourly cap. The heavy client is its own process; the light one an open-loop `httpx`
client (requests leave on schedule whatever the answers' timing). Both share the machine's
cores with the server, which a scheduler on another machine would not.
Figures go to bench/results/heavy_light.{json,md}. Run: `make bench-heavy` or `python -m bench.heavy_light --help`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd

from bench.serving import RESULTS, ROOT, WEEK, ZONES, heavy_beside_light, prepare_state, server, single_user_latency


def heavy_bodies(known: list[str], n: int = 10_000) -> dict[str, tuple[str, bytes]]:
    new = [{"user_id": f"new-{i:06d}", "timezone": ZONES[i % len(ZONES)]} for i in range(n)]
    mixed = [{"user_id": known[i % len(known)] if i < len(known) else f"plan-{i:06d}"} for i in range(n)]
    return {
        "best_send_time, 10,000 new users, 7 days": ("/best_send_time", json.dumps({"users": new, **WEEK}).encode()),
        "plan_campaign, 10,000 users, 7 days, hourly cap": ("/plan_campaign", json.dumps({"users": mixed, **WEEK, "hourly_cap": 200}).encode()),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2_000, help="users in the trained world")
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--seconds", type=float, default=15.0, help="duration of each 100 rps single-user run")
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / ".cache")
    args = ap.parse_args(argv)
    if args.users < 1_000 or args.seconds <= 0:
        ap.error("--users must be at least 1,000 and --seconds > 0")
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    home = prepare_state(args.users, args.days, args.cache)
    ids = pd.read_parquet(next((home / "published").glob("*/features/user_features.parquet")))["user_id"].tolist()
    bodies = heavy_bodies(ids)
    out: dict = {"machine": {"cores": os.cpu_count()}, "users_trained": len(ids), "runs": {}}
    for label, extra in (("now (8 threads)", {}), ("BentoML default (SENDTIME_THREADS=1)", {"SENDTIME_THREADS": "1"})):
        with server(home, args.cache / "serve-heavy-light.log", **extra) as (base, _proc, _first):
            run = {"alone": single_user_latency(base, ids, rate=100, seconds=args.seconds)}
            print(label, "alone", json.dumps(run["alone"]), flush=True)
            for what, (path, body) in bodies.items():
                run[what] = heavy_beside_light(base, ids, args.seconds, body=body, path=path, max_seconds=3 * args.seconds)
                print(label, what, json.dumps(run[what]), flush=True)
        out["runs"][label] = run
    (RESULTS / "heavy_light.json").write_text(json.dumps(out, indent=2))
    (RESULTS / "heavy_light.md").write_text(markdown(out))
    print(markdown(out))
    return out


def markdown(out: dict) -> str:
    lines = [f"# Single users beside heavy requests ({time.strftime('%Y-%m-%d')}, {out['machine']['cores']} CPUs, 1 worker)", "",
             "Single users at 100 requests/s (open loop, 4 keep-alive connections); heavy requests back to back from another process.", "",
             "| service | single users | p50 ms | p99 ms | achieved rps (of 100) | heavy request (mean s, beside) |", "|---|---|---|---|---|---|"]
    for label, run in out["runs"].items():
        a = run["alone"]
        lines.append(f"| {label} | alone | {a['p50_ms']:.1f} | {a['p99_ms']:.1f} | {a['achieved_rate']:.0f} | |")
        for what, r in run.items():
            if what == "alone":
                continue
            lt = r["light"]
            lines.append(f"| {label} | beside {what} | {lt['p50_ms']:.1f} | **{lt['p99_ms']:.1f}** | {lt['achieved_rate']:.0f} "
                         f"| {r['heavy_mean_seconds']:.2f} ({r['heavy_requests_beside']} requests, {r['heavy_errors']} errors) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
