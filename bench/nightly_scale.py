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


#: the nightly's steps, each from the first progress line that contains its marker
STEPS = (("start, read and check the inputs", ""), ("aggregate events into messages", "reading events from"),
         ("message extras, risk, profile search", "contract: read"), ("training", "building training rows"),
         ("serving features", "building serving features"), ("score the 168-slot table", "scoring all 168"),
         ("predictions", "score table written"), ("feature snapshot, serving table", "predictions for"),
         ("publish and log", "serving table written"))


def steps(stages: list, total: float) -> list[dict]:
    """Wall time and peak resident memory of each of :data:`STEPS` (from the stamped lines; a
    line's peak is the largest sample since the line before it)."""
    starts, at = [], 0
    for name, marker in STEPS:
        hit = next((i for i in range(at, len(stages)) if marker in stages[i][1]), None)
        if hit is not None:
            starts.append((name, hit))
            at = hit
    out = []
    for j, (name, i) in enumerate(starts):
        end = starts[j + 1][1] if j + 1 < len(starts) else len(stages)
        t_end = stages[end][0] if end < len(stages) else total
        # memory seen up to this step's last line, and up to the next step's first line
        peak = max((s[2] for s in stages[i + 1:end + 1]), default=0)
        out.append({"step": name, "seconds": round(t_end - stages[i][0], 1), "peak_rss_mib": peak})
    return out


class RssWatch:
    """Samples a process's resident memory twice a second: the latest value and the largest
    since the last :meth:`take`."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        import threading

        self.path, self.now, self.most = f"/proc/{pid}/status", 0.0, 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                with open(self.path) as f:
                    kib = next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
            except (OSError, StopIteration):
                continue
            with self._lock:
                self.now = kib / 1024
                self.most = max(self.most, self.now)

    def take(self) -> tuple[float, float]:
        with self._lock:
            out = (self.now, self.most)
            self.most = self.now
        return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


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
        rss = RssWatch(proc.pid)
        for line in proc.stdout:
            stamp = time.perf_counter() - t0
            now, most = rss.take()
            print(f"{stamp:7.1f}s {now:6,.0f} MiB (max {most:6,.0f})  {line.rstrip()}", flush=True)
            stages.append((round(stamp, 1), line.rstrip(), round(most)))
        rc = proc.wait()
        rss.stop()
    total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if rc != 0:
        raise SystemExit(f"nightly failed with exit code {rc}")
    import pyarrow.parquet as pq

    users = pq.ParquetFile(folder / "users.parquet").metadata.num_rows
    events = sum(pq.ParquetFile(f).metadata.num_rows for f in (folder / "events").glob("*.parquet"))
    out = {"events": events, "users": users, "seconds": total, "peak_rss_mib": peak, "stages": stages,
           "steps": steps(stages, total)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"nightly_scale_{args.users:.0e}u".replace("+", "") if args.users else "nightly_scale"
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2))
    md = (f"| events | users | nightly run, end to end | peak RSS |\n|---|---|---|---|\n"
          f"| {events:,} | {users:,} | {total / 60:.1f} min | {peak:,.0f} MiB |\n\n"
          "| step | minutes | share | peak resident memory (MiB) |\n|---|---|---|---|\n"
          + "".join(f"| {s['step']} | {s['seconds'] / 60:.1f} | {s['seconds'] / total:.0%} | {s['peak_rss_mib']:,} |\n"
                    for s in out["steps"]))
    (RESULTS / f"{name}.md").write_text(md)
    print(md)
    return out


if __name__ == "__main__":
    main()
