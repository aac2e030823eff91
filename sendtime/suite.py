"""Proof of lift on simulated worlds with known truth: the table in the README.

For each world preset and seed: simulate, run the real nightly job (MLflow, registry, publish)
into a private state folder, then judge the published predictions against the ground truth,
next to a reference policy (the straightforward RandomForest on open-hour histograms).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from features.contract import validate_events, validate_users
from sendtime.evaluate import evaluate_day, group_rates, machine_open_report, reference_policy
from sendtime.settings import Settings

WORLDS = ("default", "no-flags", "one-hour", "random-rhythms")
#: the bar each world must clear (capture of the oracle's gain over the status quo)
TARGETS = {"default": 0.75, "no-flags": 0.70, "one-hour": 0.60, "random-rhythms": 0.50}


@dataclass
class WorldResult:
    world: str
    seed: int
    users: int
    capture: float
    reference_capture: float
    rates: dict[str, float]
    cold: dict[str, float]
    machine: dict[str, float]
    metrics: dict[str, float]
    seconds: float

    def row(self) -> dict:
        return {
            "world": self.world, "seed": self.seed, "users": self.users,
            "capture": self.capture, "reference_capture": self.reference_capture,
            "status_quo": self.rates["status_quo"], "sendtime": self.rates["sendtime"],
            "reference": self.rates["reference_rf_histogram"], "oracle": self.rates["oracle"],
            "best_single_utc_hour": self.rates["best_single_utc_hour"],
            "cold_users": self.cold.get("users", 0), "cold_sendtime": self.cold.get("sendtime", np.nan),
            "cold_best_utc": self.cold.get("best_single_utc_hour", np.nan),
            "mpp_precision": self.machine["machine_open_precision"], "mpp_recall": self.machine["machine_open_recall"],
            "val_ece": self.metrics.get("ece", np.nan), "val_auc": self.metrics.get("roc_auc", np.nan),
            "seconds": self.seconds,
        }


def run_world(preset: str, seed: int, n_users: int, days: int, workdir: Path,
              say: Callable[[str], None] = print) -> WorldResult:
    from sendtime.nightly import run_nightly
    from sendtime.simulate import simulate_world, world_config, write_world

    t0 = time.time()
    wdir = workdir / f"{preset}-s{seed}"
    world = simulate_world(world_config(preset, n_users=n_users, days=days, seed=seed))
    write_world(world, wdir / "world")
    env = {**os.environ, "SENDTIME_HOME": str(wdir / "home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    settings = Settings.from_env(env)
    as_of = pd.Timestamp(world.config.end_ts)
    res = run_nightly(settings, wdir / "world" / "events.parquet", wdir / "world" / "users.parquet", as_of,
                      say=lambda m: say(f"[{preset} s{seed}] {m}"))
    pred = pd.read_parquet(res.predictions)
    day = str(pred["date"].iloc[0])
    ev, us = validate_events(world.events).accepted, validate_users(world.users).accepted
    rec = pred.set_index("user_id")["best_hour_local"]
    say(f"[{preset} s{seed}] training the reference policy")
    ref = reference_policy(ev, us, as_of, day, seed=seed)
    rep = evaluate_day(world.truth, us, world.status_quo_utc_hour, rec, day, events=ev,
                       extra_policies={"reference_rf_histogram": ref})
    sq, orc = rep.rates["status_quo"], rep.rates["oracle"]
    n_sends = ev.loc[ev["event_type"] == "send"].groupby("user_id").size().reindex(us["user_id"]).fillna(0)
    cold = group_rates(world.truth, us, rec, day, n_sends <= 3)
    machine = machine_open_report(ev, us, world.open_truth, as_of)
    return WorldResult(
        world=preset, seed=seed, users=n_users, capture=rep.capture,
        reference_capture=(rep.rates["reference_rf_histogram"] - sq) / (orc - sq),
        rates=rep.rates, cold=cold, machine=machine, metrics=res.metrics, seconds=time.time() - t0,
    )


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    g = rows.groupby("world", sort=False)
    out = pd.DataFrame({
        "capture_mean": g["capture"].mean(), "capture_min": g["capture"].min(), "capture_max": g["capture"].max(),
        "reference_mean": g["reference_capture"].mean(),
        "gain_over_reference": g["capture"].mean() - g["reference_capture"].mean(),
        "cold_sendtime": g["cold_sendtime"].mean(), "cold_best_utc": g["cold_best_utc"].mean(),
        "mpp_precision": g["mpp_precision"].mean(), "mpp_recall": g["mpp_recall"].mean(),
        "val_ece": g["val_ece"].mean(),
    })
    out["target"] = [TARGETS.get(w, np.nan) for w in out.index]
    out["meets_target"] = out["capture_min"] >= out["target"]
    return out.reset_index()


def markdown(summary: pd.DataFrame, rows: pd.DataFrame) -> str:
    lines = [
        "| world | capture (mean, min-max over seeds) | target | reference RF on histograms | gain over reference | users with <=3 sends: sendtime vs best UTC hour | MPP precision / recall | validation ECE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.itertuples():
        lines.append(
            f"| {r.world} | {r.capture_mean:.3f} ({r.capture_min:.3f}-{r.capture_max:.3f}) | {r.target:.2f} | "
            f"{r.reference_mean:.3f} | {r.gain_over_reference:+.3f} | {r.cold_sendtime:.3f} vs {r.cold_best_utc:.3f} | "
            f"{r.mpp_precision:.3f} / {r.mpp_recall:.3f} | {r.val_ece:.4f} |"
        )
    n = int(rows["users"].iloc[0])
    lines.append("")
    lines.append(f"{n:,} users per world, seeds {sorted(rows['seed'].unique().tolist())}; "
                 f"{rows['seconds'].sum() / 60:.1f} minutes in all.")
    return "\n".join(lines)


def capture_figure(rows: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worlds = list(dict.fromkeys(rows["world"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(worlds))
    for off, col, label, color in ((-0.18, "capture", "sendtime", "#3b7dd8"), (0.18, "reference_capture", "reference (RF on histograms)", "#cfd8e3")):
        means = [rows.loc[rows["world"] == w, col].mean() for w in worlds]
        ax.bar(x + off, means, width=0.36, label=label, color=color)
        for i, w in enumerate(worlds):
            ax.plot([x[i] + off] * len(rows.loc[rows["world"] == w]), rows.loc[rows["world"] == w, col], "k.", ms=4)
    for i, w in enumerate(worlds):
        if w in TARGETS:
            ax.hlines(TARGETS[w], x[i] - 0.4, x[i] + 0.4, colors="#d8613b", linestyles="--")
    ax.set_xticks(x, worlds)
    ax.set_ylabel("capture of the oracle's gain")
    ax.set_title("Share of the possible lift captured (dots: seeds, dashes: targets)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def run_suite(worlds: list[str], seeds: list[int], n_users: int, days: int, out_dir: Path,
              say: Callable[[str], None] = print) -> pd.DataFrame:
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "worlds"
    results = []
    for preset in worlds:
        for seed in seeds:
            r = run_world(preset, seed, n_users, days, work, say)
            say(f"[{preset} s{seed}] capture {r.capture:.3f} (reference {r.reference_capture:.3f}) in {r.seconds:.0f}s")
            results.append(r.row())
            pd.DataFrame(results).to_csv(out_dir / "capture_runs.csv", index=False)
    rows = pd.DataFrame(results)
    summary = summarize(rows)
    summary.to_csv(out_dir / "capture_summary.csv", index=False)
    (out_dir / "capture.md").write_text(markdown(summary, rows) + "\n")
    fig = capture_figure(rows)
    fig.savefig(out_dir / "capture.png", dpi=110)
    (out_dir / "capture.json").write_text(json.dumps({"users": n_users, "days": days, "seeds": seeds, "worlds": worlds}))
    return summary
