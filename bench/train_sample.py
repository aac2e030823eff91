"""How many training rows the forest needs: fit time and validation metrics by sample size.

Builds one training set from a generated history (the scale benchmark's cache), then fits the
production forest on nested samples of its training rows (seeded) and scores every fit on the
same validation rows. Prints and saves bench/results/train_sample.{json,md,png}.
Run: `make bench-train` or `python -m bench.train_sample --rows 25000 50000 100000 200000 400000`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=float, default=1e6, help="size of the generated history (events)")
    ap.add_argument("--rows", type=int, nargs="+", default=[25_000, 50_000, 100_000, 200_000, 400_000])
    ap.add_argument("--trees", type=int, default=120)
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / ".cache" / "scale")
    args = ap.parse_args(argv)
    if min(args.rows) < 1000:
        ap.error("--rows must be at least 1,000")
    from bench.scale import AS_OF, generate
    from sendtime.features.contract import read_users
    from sendtime.features.duckdb_engine import build_messages_duckdb
    from sendtime.training.dataset import build_training_set
    from sendtime.training.model import ForestParams, classification_metrics, make_pipeline

    folder = generate(int(args.events), args.cache)
    as_of = pd.Timestamp(AS_OF, tz="UTC")
    users = read_users(folder / "users.parquet").accepted
    msgs = build_messages_duckdb(folder / "events", users, as_of).messages
    ts = build_training_set(msgs, users, as_of, 24, 14, 7, max_rows=3 * max(args.rows), random_state=0,
                            progress=lambda m: print(" ", m, flush=True))
    X_tr, y_tr = ts.X[ts.train_mask], ts.y[ts.train_mask]
    X_val, y_val = ts.X[ts.val_mask], ts.y[ts.val_mask]
    print(f"{len(X_tr):,} training rows available, {len(X_val):,} validation rows", flush=True)
    order = np.random.default_rng(0).permutation(len(X_tr))
    out = []
    for n in sorted(r for r in args.rows if r <= len(X_tr)) + ([len(X_tr)] if max(args.rows) > len(X_tr) else []):
        idx = order[:n]
        t0 = time.perf_counter()
        model = make_pipeline(ForestParams(n_estimators=args.trees, max_depth=14, min_samples_leaf=100, n_jobs=-1))
        model.fit(X_tr.iloc[idx], y_tr[idx])
        fit = time.perf_counter() - t0
        m = classification_metrics(y_val, model.predict_proba(X_val)[:, 1])
        row = {"rows": int(n), "fit_seconds": fit, **{k: float(v) for k, v in m.items() if k != "rows"}}
        out.append(row)
        print(row, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_sample.json").write_text(json.dumps(out, indent=2))
    lines = ["| training rows | fit (s) | ROC AUC | log loss | ECE |", "|---|---|---|---|---|"]
    lines += [f"| {r['rows']:,} | {r['fit_seconds']:.1f} | {r['roc_auc']:.4f} | {r['log_loss']:.4f} | {r['ece']:.4f} |" for r in out]
    (RESULTS / "train_sample.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot(out, RESULTS / "train_sample.png")
    return out


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["rows"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(n, [r["fit_seconds"] for r in rows], "o-")
    a.set_xscale("log")
    a.set_xlabel("training rows")
    a.set_ylabel("forest fit, seconds (2 cores)")
    b.plot(n, [r["roc_auc"] for r in rows], "o-", label="ROC AUC")
    b.set_xscale("log")
    b.set_xlabel("training rows")
    b.set_ylabel("validation ROC AUC")
    c = b.twinx()
    c.plot(n, [r["log_loss"] for r in rows], "s--", color="tab:red", label="log loss")
    c.set_ylabel("validation log loss")
    fig.suptitle("Training sample size: cost and validation metrics")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
