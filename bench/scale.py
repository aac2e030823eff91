"""Feature-build benchmark: Parquet events to per-user features, DuckDB engine vs pandas.

For each size it generates a simulated history (in user chunks written as a Parquet folder, so
generating does not hold the whole history in memory either), then runs, each in a fresh
process so that peak resident memory is the build's own:
- the DuckDB engine: contract + message table on DuckDB into user buckets, then the user features
  bucket by bucket with the compiled kernels (bit-identical to the numpy reference);
- the pandas reference (``sendtime.features.contract`` + ``build_messages``, same user features), on the
  sizes it can hold (``--pandas-max``), and checks that both give identical feature tables.
With ``--repeat N`` the DuckDB build runs N times per size: the table shows the median run (its
events/s), the range of times and the highest peak memory. Figures go to
bench/results/scale.{json,md}. Run: `make bench-scale` or
`python -m bench.scale --sizes 1e6 1e7 1e8 --repeat 3`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
AS_OF = "2026-04-13"
EVENTS_PER_USER = 39  # the default world over 90 days (measured)
CHUNK_USERS = 100_000
EVENTS_PER_BUCKET = 5_000_000  # the DuckDB engine's user buckets: memory holds one at a time


def generate(events: int, cache: Path) -> Path:
    """A Parquet folder of about ``events`` events (cached); users.parquet beside it."""
    from sendtime.simulation.simulate import simulate_world, world_config

    out = cache / f"events-{events:.0e}".replace("+", "")
    if (out / "DONE").exists():
        return out
    (out / "events").mkdir(parents=True, exist_ok=True)
    n_users = max(1000, events // EVENTS_PER_USER)
    users, written, k = [], 0, 0
    t0 = time.perf_counter()
    while written < n_users:
        n = min(CHUNK_USERS, n_users - written)
        w = simulate_world(world_config("default", n_users=n, days=90, seed=1000 + k, end=AS_OF))
        tag = f"c{k:03d}-"
        ev = w.events
        for c in ("event_id", "user_id", "message_id"):
            ev[c] = tag + ev[c].astype(str)
        ev.to_parquet(out / "events" / f"part-{k:04d}.parquet", index=False)
        u = w.users.copy()
        u["user_id"] = tag + u["user_id"].astype(str)
        users.append(u)
        written += n
        k += 1
        print(f"  generated {written:,}/{n_users:,} users ({time.perf_counter() - t0:.0f} s)", flush=True)
    pd.concat(users, ignore_index=True).to_parquet(out / "users.parquet", index=False)
    (out / "DONE").write_text("ok")
    return out


def generate_users(users: int, days: int, distinct: int, cache: Path) -> Path:
    """A Parquet folder of ``users`` users over ``days`` days (cached): ``distinct`` of them
    simulated in chunks, the rest their copies under new ids (simulating ten million users
    takes about an hour here; a copy is a Parquet write). Copies behave as their originals,
    which the timings do not mind: every id, event and message is its own row."""
    from sendtime.simulation.simulate import simulate_world, world_config

    out = cache / f"users-{users:.0e}-{days}d-{distinct:.0e}".replace("+", "")
    if (out / "DONE").exists():
        return out
    (out / "events").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = []
    for k in range(-(-min(distinct, users) // CHUNK_USERS)):
        n = min(CHUNK_USERS, distinct - k * CHUNK_USERS)
        w = simulate_world(world_config("default", n_users=n, days=days, seed=2000 + k, end=AS_OF))
        base.append((w.events, w.users))
        print(f"  simulated {sum(len(u) for _, u in base):,}/{distinct:,} distinct users ({time.perf_counter() - t0:.0f} s)", flush=True)
    users_out, written, part = [], 0, 0
    while written < users:
        ev, us = base[part % len(base)]
        take = min(len(us), users - written)
        tag = f"c{part:04d}-"
        keep = us["user_id"].iloc[:take]
        e = ev.loc[ev["user_id"].isin(keep)] if take < len(us) else ev
        e = e.assign(**{c: tag + e[c].astype(str) for c in ("event_id", "user_id", "message_id")})
        e.to_parquet(out / "events" / f"part-{part:04d}.parquet", index=False)
        users_out.append(us.iloc[:take].assign(user_id=tag + keep.astype(str)))
        written += take
        part += 1
        print(f"  wrote {written:,}/{users:,} users ({time.perf_counter() - t0:.0f} s)", flush=True)
    pd.concat(users_out, ignore_index=True).to_parquet(out / "users.parquet", index=False)
    (out / "DONE").write_text("ok")
    return out


def _build(engine: str, folder: str, out: str) -> None:
    """Child process: one feature build, its timings and its feature table."""
    from sendtime.features.contract import read_events, read_users
    from sendtime.features.engagement import build_user_features

    as_of = pd.Timestamp(AS_OF, tz="UTC")
    t0 = time.perf_counter()
    users = read_users(Path(folder) / "users.parquet").accepted
    if engine == "duckdb":
        import shutil

        from sendtime.features.duckdb_engine import bucket_loaders, build_messages_duckdb
        from sendtime.features.engagement import build_user_features_bucketed

        n_files = len(list((Path(folder) / "events").glob("*.parquet")))
        buckets = max(1, int(np.ceil(n_files * CHUNK_USERS * EVENTS_PER_USER / EVENTS_PER_BUCKET)))
        work = Path(out).parent / "buckets"
        shutil.rmtree(work, ignore_errors=True)
        res = build_messages_duckdb(Path(folder) / "events", users, as_of, temp_dir=Path(out).parent / "duckdb-tmp",
                                    buckets=buckets, bucket_dir=work, string_buckets=0)
        t_msgs = time.perf_counter() - t0
        uf = build_user_features_bucketed(bucket_loaders(work), users, as_of)
        _report(engine, res.read, int(uf.table["n_sends"].sum()), uf, t0, t_msgs, out)
        return
    else:
        from sendtime.features.messages import build_messages

        ev = read_events(Path(folder) / "events")
        read = ev.read
        msgs = build_messages(ev.accepted.loc[ev.accepted["timestamp"] < as_of], users)
        del ev
    t_msgs = time.perf_counter() - t0
    uf = build_user_features(msgs, users, as_of)
    _report(engine, read, len(msgs), uf, t0, t_msgs, out)


def _report(engine, read, messages, uf, t0, t_msgs, out) -> None:
    total = time.perf_counter() - t0
    uf.table.to_parquet(out)
    np.save(str(out) + ".lam.npy", uf.lam)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    print(json.dumps({"engine": engine, "events": read, "messages": messages, "users": len(uf.table),
                      "seconds": total, "messages_seconds": t_msgs, "events_per_second": read / total,
                      "peak_rss_mib": peak}))


def run_build(engine: str, folder: Path, work: Path) -> dict:
    out = work / f"features-{engine}-{folder.name}.parquet"
    cmd = [sys.executable, "-m", "bench.scale", "--child", engine, str(folder), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} build failed: {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["table"] = str(out)
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7], help="event counts to generate and build")
    ap.add_argument("--pandas-max", type=float, default=1e7, help="largest size the pandas reference also runs on")
    ap.add_argument("--repeat", type=int, default=1, help="DuckDB builds per size (the median is reported, and the range)")
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / ".cache" / "scale")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _build(*args.child)
        return {}
    if any(s < 1e4 or s > 2e9 for s in args.sizes):
        ap.error("--sizes must be between 1e4 and 2e9 events")
    if not 1 <= args.repeat <= 20:
        ap.error("--repeat must be between 1 and 20")
    args.cache.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in sorted(args.sizes):
        folder = generate(int(size), args.cache)
        print(f"{int(size):,} events: DuckDB engine", flush=True)
        runs = []
        for _ in range(args.repeat):
            runs.append(run_build("duckdb", folder, args.cache))
            print("  ", {k: v for k, v in runs[-1].items() if k != "table"}, flush=True)
        duck = dict(sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2])  # the median run
        duck["runs_seconds"] = [r["seconds"] for r in runs]
        duck["runs_peak_rss_mib"] = [r["peak_rss_mib"] for r in runs]
        row = {"size": int(size), "duckdb": duck}
        if size <= args.pandas_max:
            print(f"{int(size):,} events: pandas reference", flush=True)
            ref = run_build("pandas", folder, args.cache)
            print("  ", {k: v for k, v in ref.items() if k != "table"}, flush=True)
            a, b = pd.read_parquet(ref["table"]), pd.read_parquet(duck["table"])
            pd.testing.assert_frame_equal(a, b)
            np.testing.assert_array_equal(np.load(ref["table"] + ".lam.npy"), np.load(duck["table"] + ".lam.npy"))
            row.update(pandas=ref, identical=True, speedup=ref["seconds"] / duck["seconds"])
        rows.append(row)
    (RESULTS / "scale.json").write_text(json.dumps(rows, indent=2))
    lines = ["| events | users | DuckDB engine (bucketed): seconds | events/s | peak RSS | pandas: seconds | peak RSS | speed-up | identical |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d, p = r["duckdb"], r.get("pandas")
        spread = f" ({min(d['runs_seconds']):.1f}-{max(d['runs_seconds']):.1f} in {len(d['runs_seconds'])} runs)" \
            if len(d["runs_seconds"]) > 1 else ""
        lines.append(f"| {d['events']:,} | {d['users']:,} | {d['seconds']:.1f}{spread} | {d['events_per_second']:,.0f} | "
                     f"{max(d['runs_peak_rss_mib']):,.0f} MiB | " + (f"{p['seconds']:.1f} | {p['peak_rss_mib']:,.0f} MiB | "
                     f"{r['speedup']:.1f}x | yes |" if p else "- | - | - | - |"))
    (RESULTS / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return {"rows": rows}


if __name__ == "__main__":
    main()
