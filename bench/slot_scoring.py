"""Scoring the 168-slot table: scikit-learn's predict_proba against the compiled slot traversal.

Runs the real nightly (default settings) on a generated history (the scale benchmark's cache),
loads its champion and feature snapshot as the service does, and scores the same users' 168-slot
rows, side by side in one run:
- the hour-aware forest alone: ``predict_proba`` vs :class:`sendtime.serving.slot_forest.SlotForest`;
- the whole published table: the blend's own ``predict_proba`` on every row (the straightforward
  way), ``Scorer.full_table`` with the compiled traversal switched off, and with it on (the default).
Prints and saves bench/results/slot_scoring.{json,md}: rows per second, ratios, the largest
|difference| in P(open) and the share of users whose best hour is the same.
Run: `make bench-slots` or `python -m bench.slot_scoring --events 1e6 --users 20000`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def _timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=float, default=1e6, help="size of the generated history (events)")
    ap.add_argument("--users", type=int, default=20_000, help="users whose 168 slots are scored")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each way (the best counts)")
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / ".cache" / "scale")
    args = ap.parse_args(argv)
    if args.users < 100 or args.repeat < 1:
        ap.error("--users must be at least 100 and --repeat at least 1")
    from bench.scale import AS_OF, generate
    from sendtime.nightly import run_nightly
    from sendtime.serving.model_store import load_scorer
    from sendtime.serving.scoring import blend_parts
    from sendtime.serving.slot_forest import SlotForest
    from sendtime.settings import Settings

    folder = generate(int(args.events), args.cache)
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SENDTIME_", "MLFLOW_"))}
        settings = Settings.from_env({**env, "SENDTIME_HOME": home})
        t0 = time.perf_counter()
        run_nightly(settings, folder / "events", folder / "users.parquet", pd.Timestamp(AS_OF, tz="UTC"),
                    say=lambda m: None)
        print(f"nightly on {args.events:,.0f} events: {time.perf_counter() - t0:.0f} s", flush=True)
        scorer, _ = load_scorer(settings)
    n = min(args.users, len(scorer.features.table))
    rows = np.repeat(np.arange(n), 168)
    how = np.tile(np.arange(168), n)
    X = scorer.features.model_frame(rows, how)[scorer.input_columns]
    parts = blend_parts(scorer.model)
    hourly = parts[0][0] if parts is not None else scorer.model
    fast = SlotForest.of(hourly)
    if fast is None:
        raise SystemExit("the champion is not the forest pipeline: nothing to compare")
    Xf = X.to_numpy(dtype=np.float32)
    fast.predict(Xf[:168], 168, *scorer._slot_layout)  # compile once, outside the timing
    ref, t_ref = _timed(lambda: hourly.predict_proba(X)[:, 1], args.repeat)
    got, t_fast = _timed(lambda: fast.predict(Xf, 168, *scorer._slot_layout), args.repeat)
    blend_ref, t_blend = _timed(lambda: scorer.model.predict_proba(X)[:, 1], args.repeat)

    def table(compiled: bool):
        scorer.compiled = compiled
        full = scorer.features
        try:
            scorer.features = _first_users(full, n)  # the first n users, as above
            return scorer.full_table()
        finally:
            scorer.features = full

    table_slow, t_table_slow = _timed(lambda: table(False), args.repeat)
    table_fast, t_table_fast = _timed(lambda: table(True), args.repeat)
    rows_n = n * 168
    out = {
        "date": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d"),
        "events": int(args.events), "users_scored": int(n), "rows": int(rows_n),
        "trees": int(len(fast.roots)), "nodes": int(len(fast.nodes)), "cpus": os.cpu_count(),
        "forest_predict_proba_rows_per_s": rows_n / t_ref,
        "forest_compiled_rows_per_s": rows_n / t_fast,
        "forest_ratio": t_ref / t_fast,
        "forest_max_abs_diff": float(np.abs(got - ref).max()),
        "forest_same_best_hour": float((got.reshape(n, 168).argmax(1) == ref.reshape(n, 168).argmax(1)).mean()),
        "blend_predict_proba_rows_per_s": rows_n / t_blend,
        "table_uncompiled_rows_per_s": rows_n / t_table_slow,
        "table_compiled_rows_per_s": rows_n / t_table_fast,
        "table_ratio_vs_predict_proba": t_blend / t_table_fast,
        "table_ratio_vs_uncompiled": t_table_slow / t_table_fast,
        "table_max_abs_diff": float(np.abs(table_fast - blend_ref.reshape(n, 168)).max()),
        "table_same_best_hour": float((table_fast.argmax(1) == blend_ref.reshape(n, 168).argmax(1)).mean()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "slot_scoring.json").write_text(json.dumps(out, indent=2))
    md = [f"# Scoring the 168-slot table ({out['date']}, {out['cpus']} CPUs)", "",
          f"{n:,} users x 168 slots = {rows_n:,} rows; champion of the default nightly on {int(args.events):,} "
          f"generated events: {out['trees']} trees, {out['nodes']:,} nodes. Best of {args.repeat} runs.", "",
          "| what | rows/s | ratio | max abs diff in P | same best hour |", "|---|---|---|---|---|",
          f"| hour-aware forest: predict_proba | {out['forest_predict_proba_rows_per_s']:,.0f} | 1.00 | | |",
          f"| hour-aware forest: compiled slot traversal | {out['forest_compiled_rows_per_s']:,.0f} | "
          f"{out['forest_ratio']:.2f} | {out['forest_max_abs_diff']:.1e} | {out['forest_same_best_hour']:.4f} |",
          f"| whole table: the blend's predict_proba on every row | {out['blend_predict_proba_rows_per_s']:,.0f} | 1.00 | | |",
          f"| whole table: full_table, not compiled | {out['table_uncompiled_rows_per_s']:,.0f} | "
          f"{t_blend / t_table_slow:.2f} | | |",
          f"| whole table: full_table (default) | {out['table_compiled_rows_per_s']:,.0f} | "
          f"{out['table_ratio_vs_predict_proba']:.2f} | {out['table_max_abs_diff']:.1e} | {out['table_same_best_hour']:.4f} |"]
    (RESULTS / "slot_scoring.md").write_text("\n".join(md) + "\n")
    print("\n".join(md), flush=True)
    return out


def _first_users(uf, n: int):
    """The snapshot cut to its first ``n`` users (the table's rows and their profiles)."""
    from dataclasses import replace

    return replace(uf, table=uf.table.iloc[:n], lam=uf.lam[:n])


if __name__ == "__main__":
    main()
