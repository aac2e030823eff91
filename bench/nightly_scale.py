"""The whole nightly run at scale: generated history, `sendtime nightly` end to end, timed.

Generates (or reuses, from the scale benchmark's cache) a history of about ``--events`` events,
runs the real `sendtime nightly` on it in a fresh SENDTIME_HOME (SQLite MLflow store, as the
defaults), and records wall time per stage (from the run's own progress lines), the total and
the peak resident memory. Figures go to bench/results/nightly_scale.{json,md}.
Run: `make bench-nightly` or `python -m bench.nightly_scale --events 5e7`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=float, default=5e7, help="size of the generated history (events)")
    ap.add_argument("--users", type=float, default=0,
                    help="instead of --events: this many users (10e6 for the ten-million-user run), over --days")
    ap.add_argument("--days", type=int, default=48, help="history length with --users (48: about 20 events per user)")
    ap.add_argument("--distinct", type=float, default=1e6,
                    help="with --users: users simulated; the rest are copies of them under new ids")
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / ".cache" / "scale")
    args = ap.parse_args(argv)
    if not 1e4 <= args.events <= 2e9:
        ap.error("--events must be between 1e4 and 2e9")
    if args.users and not (1e3 <= args.users <= 1e9 and 1e3 <= args.distinct and 14 <= args.days <= 365):
        ap.error("--users must be in [1e3, 1e9], --distinct at least 1e3 and --days in [14, 365]")
    from bench.scale import AS_OF, generate, generate_users

    if args.users:
        folder = generate_users(int(args.users), args.days, int(min(args.distinct, args.users)), args.cache)
        home = args.cache / f"nightly-home-{args.users:.0e}u-{args.days}d".replace("+", "")
    else:
        folder = generate(int(args.events), args.cache)
        home = args.cache / f"nightly-home-{args.events:.0e}".replace("+", "")
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "SENDTIME_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    cmd = [sys.executable, "-m", "sendtime.cli", "nightly", "--events", str(folder / "events"),
           "--users", str(folder / "users.parquet"), "--as-of", AS_OF]
    t0 = time.perf_counter()
    stages = []
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT) as proc:
        for line in proc.stdout:
            stamp = time.perf_counter() - t0
            print(f"{stamp:7.1f}s  {line.rstrip()}", flush=True)
            stages.append((round(stamp, 1), line.rstrip()))
        rc = proc.wait()
    total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if rc != 0:
        raise SystemExit(f"nightly failed with exit code {rc}")
    import pyarrow.parquet as pq

    users = pq.ParquetFile(folder / "users.parquet").metadata.num_rows
    events = sum(pq.ParquetFile(f).metadata.num_rows for f in (folder / "events").glob("*.parquet"))
    out = {"events": events, "users": users, "seconds": total, "peak_rss_mib": peak, "stages": stages}
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"nightly_scale_{args.users:.0e}u".replace("+", "") if args.users else "nightly_scale"
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2))
    md = (f"| events | users | nightly run, end to end | peak RSS |\n|---|---|---|---|\n"
          f"| {events:,} | {users:,} | {total / 60:.1f} min | {peak:,.0f} MiB |\n")
    (RESULTS / f"{name}.md").write_text(md)
    print(md)
    return out


if __name__ == "__main__":
    main()
