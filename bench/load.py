"""Load test: at least 100,000 requests, single users mixed with 1,000-user batches, against a
real `bentoml serve` on 127.0.0.1. Bounded in count and time; loopback only.

Run: `make load` (or `python -m bench.load --help`). Figures go to bench/results/load.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np

from bench.serving import RESULTS, ROOT, WINDOW, prepare_state, server


async def _run(base: str, ids: list[str], total: int, batch_share: float, lanes: int, max_seconds: float) -> dict:
    lat = {"single": [], "batch": []}
    codes: dict[int, int] = {}
    next_i = 0
    deadline = time.perf_counter() + max_seconds
    rng = np.random.default_rng(0)
    kinds = np.where(rng.random(total) < batch_share, "batch", "single")

    async def lane(k: int) -> None:
        nonlocal next_i
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=1)) as c:
            while time.perf_counter() < deadline:
                i = next_i
                if i >= total:
                    return
                next_i += 1
                if kinds[i] == "batch":
                    start = (i * 1000) % (len(ids) - 1000)
                    users = [{"user_id": u} for u in ids[start:start + 1000]]
                else:
                    users = [{"user_id": ids[i % len(ids)]}]
                t = time.perf_counter()
                try:
                    r = await c.post(f"{base}/best_send_time", json={"users": users, **WINDOW})
                    code = r.status_code
                except httpx.HTTPError:
                    code = -1
                lat[str(kinds[i])].append(time.perf_counter() - t)
                codes[code] = codes.get(code, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(lane(k) for k in range(lanes)))
    wall = time.perf_counter() - t0
    out = {"requests": int(sum(codes.values())), "seconds": wall, "requests_per_second": sum(codes.values()) / wall,
           "status_counts": {str(k): v for k, v in sorted(codes.items())},
           "errors": int(sum(v for k, v in codes.items() if k != 200)), "lanes": lanes, "batch_share": batch_share}
    for kind, xs in lat.items():
        if xs:
            ms = np.array(xs) * 1000
            out[kind] = {"count": len(xs), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                         "max_ms": float(ms.max())}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--batch-share", type=float, default=0.01, help="share of requests that carry 1,000 users")
    ap.add_argument("--lanes", type=int, default=8, help="concurrent keep-alive connections")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=1200, help="stop after this long whatever the count")
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / ".cache")
    args = ap.parse_args(argv)
    if not 0 <= args.batch_share <= 1 or args.requests < 1 or args.lanes < 1:
        ap.error("--batch-share must be in [0, 1]; --requests and --lanes at least 1")
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    home = prepare_state(args.users, args.days, args.cache)
    import pandas as pd

    ids = pd.read_parquet(next((home / "published").glob("*/features/user_features.parquet")))["user_id"].tolist()
    with server(home, args.cache / "serve-load.log", SENDTIME_WORKERS=str(args.workers)) as (base, proc, first):
        out = asyncio.run(_run(base, ids, args.requests, args.batch_share, args.lanes, args.max_seconds))
    out["workers"] = args.workers
    (RESULTS / "load.json").write_text(json.dumps(out, indent=2))
    lines = ["| measure | figure |", "|---|---|",
             f"| requests (1,000-user batches: {args.batch_share:.0%}) | {out['requests']:,} in {out['seconds']:.0f} s ({out['requests_per_second']:,.0f}/s) |",
             f"| errors | {out['errors']} (status counts {out['status_counts']}) |"]
    for kind in ("single", "batch"):
        if kind in out:
            lines.append(f"| {kind}: p50 / p99 / max | {out[kind]['p50_ms']:.1f} / {out[kind]['p99_ms']:.1f} / {out[kind]['max_ms']:.1f} ms |")
    (RESULTS / "load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
