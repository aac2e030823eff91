"""Proof of lift on simulated worlds with known truth: the table in the README.

For each world (a preset and seed, or a member of the world family drawn by
:func:`sendtime.simulation.simulate.family_config`): simulate, run the real nightly job (MLflow, registry,
publish) into a private state folder, then judge the published predictions against the ground
truth, next to a reference policy (the straightforward RandomForest on open-hour histograms).
Family members with seeds from ``HELD_OUT_SEED_FROM`` on are held out of all tuning and are
reported apart from the members the methods were developed on.
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

from sendtime.features.contract import validate_events, validate_users
from sendtime.nightly import run_nightly
from sendtime.settings import Settings
from sendtime.simulation.evaluate import (
    capture_by_confidence,
    evaluate_day,
    group_rates,
    machine_open_report,
    penalty_tradeoff,
    reference_policy,
    tradeoff_figure,
)
from sendtime.simulation.real_rhythms import default_realdata_dir
from sendtime.simulation.simulate import (
    HELD_OUT_SEED_FROM,
    family_config,
    simulate_world,
    world_config,
    write_world,
)
from sendtime.training.registry import TrackingUnavailable, configure

WORLDS = ("default", "no-flags", "one-hour", "random-rhythms")
#: a world name with this suffix is the same world with its activity withheld from the nightly
#: (``activity`` against ``activity-without-activity``: what the activity events are worth)
WITHOUT_ACTIVITY = "-without-activity"
#: a world name with this suffix runs the nightly with SENDTIME_OBJECTIVE=click and is judged on
#: the true click probabilities (``desk-clicks-click``); suffixes combine as <preset>[-without-activity][-click]
CLICK_OBJECTIVE = "-click"
#: ... with SENDTIME_OBJECTIVE=conversion, judged on the true conversion probabilities
CONVERSION_OBJECTIVE = "-conversion"
#: ... with SENDTIME_OBJECTIVE=value, judged on the true expected revenue
VALUE_OBJECTIVE = "-value"
#: ... with SENDTIME_CHANNEL=push, judged on the true push-tap probabilities (``push-push``)
PUSH_CHANNEL = "-push"


@dataclass(frozen=True)
class WorldName:
    """A suite world name, <preset>[-without-activity][-click|-conversion|-value][-push], taken apart."""

    preset: str
    objective: str = "open"
    activity: bool = True
    channel: str = "email"

    @property
    def truth_column(self) -> str:
        if self.channel == "push":
            return "p_push"
        return {"open": "p_open", "click": "p_click", "conversion": "p_conversion", "value": "expected_value"}[self.objective]


def parse_world(name: str) -> WorldName:
    """The preset, objective, activity and channel of a suite world name."""
    base, channel, objective = name, "email", "open"
    if base.endswith(PUSH_CHANNEL) and base != PUSH_CHANNEL[1:]:
        base, channel = base.removesuffix(PUSH_CHANNEL), "push"
    for suffix, obj in ((CLICK_OBJECTIVE, "click"), (CONVERSION_OBJECTIVE, "conversion"), (VALUE_OBJECTIVE, "value")):
        if base.endswith(suffix):
            base, objective = base.removesuffix(suffix), obj
    return WorldName(base.removesuffix(WITHOUT_ACTIVITY), objective, not base.endswith(WITHOUT_ACTIVITY), channel)
#: the bar each world must clear (capture of the oracle's gain over the status quo)
TARGETS = {"default": 0.75, "no-flags": 0.70, "one-hour": 0.60, "random-rhythms": 0.50,
           "real-email": 0.50, "no-flags-late": 0.70,
           # issue 17: click and conversion objectives 0.60, the push channel 0.70
           "desk-clicks-click": 0.60, "shoppers-conversion": 0.60, "push-push": 0.70}


@dataclass
class WorldResult:
    world: str
    seed: int
    group: str  # "preset", "family: tuned on" or "family: held out"
    config: dict
    users: int
    capture: float
    reference_capture: float
    rates: dict[str, float]
    cold: dict[str, float]
    machine: dict[str, float]
    metrics: dict[str, float]
    seconds: float
    tradeoff: pd.DataFrame | None = None  # what each unsubscribe penalty buys (worlds with unsubscribe risk by hour)

    def row(self) -> dict:
        c = self.config
        return {
            "world": self.world, "seed": self.seed, "group": self.group, "users": self.users,
            "days": c["days"], "rhythm": c["rhythm"].split(":")[0] + (":" + c["rhythm"].split(":")[1] if ":" in c["rhythm"] else ""),
            "mpp_share": c["mpp_share"], "flags": "absent" if not c["machine_flags"] else ("partial" if c["flag_share"] < 1 else "present"),
            "late_fetch_share": c["late_fetch_share"], "eager_share": c["eager_share"],
            "activity_per_week": c.get("activity_per_week", 0.0) if parse_world(self.world).activity else 0.0,
            "objective": parse_world(self.world).objective, "channel": parse_world(self.world).channel,
            "capture": self.capture, "reference_capture": self.reference_capture,
            "status_quo": self.rates["status_quo"], "sendtime": self.rates["sendtime"],
            "reference": self.rates["reference_rf_histogram"], "oracle": self.rates["oracle"],
            "best_single_utc_hour": self.rates["best_single_utc_hour"],
            "cold_users": self.cold.get("users", 0), "cold_sendtime": self.cold.get("sendtime", np.nan),
            "cold_best_utc": self.cold.get("best_single_utc_hour", np.nan),
            "mpp_precision": self.machine["machine_open_precision"], "mpp_recall": self.machine["machine_open_recall"],
            "mpp_user_precision": self.machine.get("machine_user_precision", np.nan),
            "mpp_user_recall": self.machine.get("machine_user_recall", np.nan),
            "hour_weight": self.metrics.get("hour_weight", np.nan),
            **{k: v for k, v in self.metrics.items() if k.startswith("capture_confidence_")},
            "val_ece": self.metrics.get("ece", np.nan), "val_auc": self.metrics.get("roc_auc", np.nan),
            "seconds": self.seconds,
        }


def world_of(name: str, seed: int, n_users: int, days: int):
    """(config, group) of a preset name, or of ``family`` (the seed picks the member; its
    history length is drawn too)."""

    if name == "family":
        group = "family: held out" if seed >= HELD_OUT_SEED_FROM else "family: tuned on"
        return family_config(seed, n_users=n_users), group
    return world_config(parse_world(name).preset, n_users=n_users, days=days, seed=seed), "preset"


def run_world(preset: str, seed: int, n_users: int, days: int, workdir: Path,
              say: Callable[[str], None] = print) -> WorldResult:

    t0 = time.time()
    wdir = workdir / f"{preset}-s{seed}"
    config, group = world_of(preset, seed, n_users, days)
    world = simulate_world(config)
    name = parse_world(preset)
    if name.truth_column not in world.truth.columns:  # e.g. "-conversion" on a world without conversions
        raise ValueError(f"world {preset!r}: preset {name.preset!r} has no {name.truth_column} to judge it on")
    write_world(world, wdir / "world")
    env = {**os.environ, "SENDTIME_HOME": str(wdir / "home"), "SENDTIME_OBJECTIVE": name.objective,
           "SENDTIME_CHANNEL": name.channel}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    settings = Settings.from_env(env)
    as_of = pd.Timestamp(world.config.end_ts)
    activity = wdir / "world" / "activity.parquet"
    use_activity = world.activity is not None and name.activity
    res = run_nightly(settings, wdir / "world" / "events.parquet", wdir / "world" / "users.parquet", as_of,
                      say=lambda m: say(f"[{preset} s{seed}] {m}"), activity_path=activity if use_activity else None)
    pred = pd.read_parquet(res.predictions)
    day = str(pred["date"].iloc[0])
    ev, us = validate_events(world.events).accepted, validate_users(world.users).accepted
    rec = pred.set_index("user_id")["best_hour_local"]
    say(f"[{preset} s{seed}] training the reference policy")
    ref = reference_policy(ev, us, as_of, day, seed=seed)
    truth = world.truth.assign(p_open=world.truth[name.truth_column])  # judged on the served objective and channel
    rep = evaluate_day(truth, us, world.status_quo_utc_hour, rec, day, events=ev,
                       extra_policies={"reference_rf_histogram": ref})
    sq, orc = rep.rates["status_quo"], rep.rates["oracle"]
    n_sends = ev.loc[ev["event_type"] == "send"].groupby("user_id").size().reindex(us["user_id"]).fillna(0)
    cold = group_rates(truth, us, rec, day, n_sends <= 3)
    bands = capture_by_confidence(truth, us, world.status_quo_utc_hour, pred, day)
    machine = machine_open_report(ev, us, world.open_truth, as_of, user_truth=world.user_truth)
    tradeoff = None
    risk = json.loads((res.published / "manifest.json").read_text()).get("negative_risk_by_local_hour")
    if config.night_unsub_risk > 0 and risk is not None and name.objective == "open" and name.channel == "email":
        tradeoff = penalty_tradeoff(world.truth, us, world.status_quo_utc_hour, pred, np.asarray(risk), day)
    return WorldResult(
        world=preset, seed=seed, group=group, config=config.to_dict(), users=n_users, capture=rep.capture,
        reference_capture=(rep.rates["reference_rf_histogram"] - sq) / (orc - sq),
        rates=rep.rates, cold=cold, machine=machine, metrics={**res.metrics, **bands}, seconds=time.time() - t0,
        tradeoff=tradeoff,
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


def family_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per group of worlds (presets, family tuned on, family held out): median and worst case."""
    out = []
    for group, g in rows.groupby("group", sort=False):
        out.append({
            "group": group, "worlds": len(g),
            "capture_median": g["capture"].median(), "capture_worst": g["capture"].min(),
            "reference_median": g["reference_capture"].median(),
            "mpp_open_precision_worst": g["mpp_precision"].min(), "mpp_open_recall_worst": g["mpp_recall"].min(),
            "mpp_user_precision_worst": g["mpp_user_precision"].min(), "mpp_user_recall_worst": g["mpp_user_recall"].min(),
            "hour_weight_median": g["hour_weight"].median(),
        })
    return pd.DataFrame(out)


def family_markdown(fam: pd.DataFrame, rows: pd.DataFrame) -> str:
    lines = ["| worlds | n | capture: median (worst) | reference RF: median | machine opens P / R (worst) | machine-open users P / R (worst) | hour weight (median) |",
             "|---|---|---|---|---|---|---|"]
    for r in fam.itertuples():
        lines.append(f"| {r.group} | {r.worlds} | {r.capture_median:.3f} ({r.capture_worst:.3f}) | {r.reference_median:.3f} | "
                     f"{r.mpp_open_precision_worst:.3f} / {r.mpp_open_recall_worst:.3f} | "
                     f"{r.mpp_user_precision_worst:.3f} / {r.mpp_user_recall_worst:.3f} | {r.hour_weight_median:.1f} |")
    lines += ["", "| world | seed | group | days | rhythm | MPP share | flags | late fetch | eager | capture | reference | "
              "capture by confidence (low / mid / high third) | machine opens P / R | hour weight |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows.to_dict("records"):
        bands = " / ".join(f"{r.get(f'capture_confidence_{b}of3', np.nan):.2f}" for b in (1, 2, 3))
        lines.append(f"| {r['world']} | {r['seed']} | {r['group']} | {r['days']} | {r['rhythm']} | {r['mpp_share']:.2f} | "
                     f"{r['flags']} | {r['late_fetch_share']:.2f} | {r['eager_share']:.2f} | {r['capture']:.3f} | "
                     f"{r['reference_capture']:.3f} | {bands} | {r['mpp_precision']:.3f} / {r['mpp_recall']:.3f} | "
                     f"{r['hour_weight']:.1f} |")
    return "\n".join(lines)


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

    rows = rows.assign(world=np.where(rows["world"] == "family", rows["group"].str.replace("family: ", "family\n"), rows["world"]))
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


def missing_realdata_warning(family_seeds: list[int]) -> str | None:
    """What to say when family members are asked for without the real-data folder: they then
    draw no real people's rhythms, so a seed is a different world than on a machine with it."""
    root = default_realdata_dir()
    if not family_seeds or root.is_dir():
        return None
    return (f"warning: no real-data folder at {root} (set SENDTIME_REALDATA): family members draw no real "
            "people's rhythms, so a member is not the world it is on a machine that has the folder")


def run_suite(worlds: list[str], seeds: list[int], n_users: int, days: int, out_dir: Path,
              say: Callable[[str], None] = print, family_seeds: list[int] | None = None) -> pd.DataFrame:
    """Every preset x seed, then every family member in ``family_seeds``; returns the preset
    summary (the family's is in ``family_summary.csv`` and ``capture.md``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "worlds"
    results = []
    plan = [(p, s) for p in worlds for s in seeds] + [("family", s) for s in (family_seeds or [])]
    warning = missing_realdata_warning(family_seeds or [])
    if warning:
        say(warning)
    for preset, seed in plan:
        r = run_world(preset, seed, n_users, days, work, say)
        say(f"[{preset} s{seed}] capture {r.capture:.3f} (reference {r.reference_capture:.3f}) in {r.seconds:.0f}s")
        results.append(r.row())
        pd.DataFrame(results).to_csv(out_dir / "capture_runs.csv", index=False)
        if r.tradeoff is not None:
            write_tradeoff(r, out_dir, say)
    rows = pd.DataFrame(results)
    summary = summarize(rows.loc[rows["group"] == "preset"]) if (rows["group"] == "preset").any() else pd.DataFrame()
    fam = family_summary(rows)
    summary.to_csv(out_dir / "capture_summary.csv", index=False)
    fam.to_csv(out_dir / "family_summary.csv", index=False)
    text = markdown(summary, rows.loc[rows["group"] == "preset"]) + "\n\n" if len(summary) else ""
    (out_dir / "capture.md").write_text(text + family_markdown(fam, rows) + "\n")
    fig = capture_figure(rows)
    fig.savefig(out_dir / "capture.png", dpi=110)
    (out_dir / "capture.json").write_text(json.dumps({"users": n_users, "days": days, "seeds": seeds, "worlds": worlds,
                                                      "family_seeds": family_seeds or []}))
    log_suite(rows, fam, out_dir, say)
    return summary


def write_tradeoff(r: WorldResult, out_dir: Path, say: Callable[[str], None] = print) -> None:
    """The unsubscribe penalty's trade-off of one world: a table (CSV and Markdown) and a figure."""
    stem = out_dir / f"tradeoff_{r.world}_s{r.seed}"
    t = r.tradeoff
    t.to_csv(stem.with_suffix(".csv"), index=False)
    lines = ["| penalty (opens per unsubscribe) | true open rate | capture | unsubscribes and complaints per 1,000 sends | sends at night (23:00-05:59) |",
             "|---|---|---|---|---|"]
    for row in t.itertuples():
        lines.append(f"| {row.penalty} | {row.open_rate:.4f} | {row.capture:.3f} | {row.unsubscribes_per_1000:.2f} | {row.night_share:.1%} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig = tradeoff_figure(t, f"{r.world} (seed {r.seed}): opens against unsubscribes")
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    base = t.loc[t["penalty"] == "0"].iloc[0]
    say(f"[{r.world} s{r.seed}] unsubscribe trade-off: open-only {base.unsubscribes_per_1000:.2f} per 1,000 sends; "
        + ", ".join(f"penalty {x.penalty}: {x.unsubscribes_per_1000:.2f} (capture {x.capture:.3f})"
                    for x in t.itertuples() if x.penalty not in ("status quo", "0")))


def log_suite(rows: pd.DataFrame, fam: pd.DataFrame, out_dir: Path, say: Callable[[str], None] = print) -> None:
    """The suite's tables and figure as one run of the ``sendtime-suite`` experiment, in the
    MLflow store of the environment's settings (SENDTIME_HOME's SQLite store by default)."""
    import mlflow

    settings = Settings.from_env()
    try:
        configure(settings.tracking_uri, settings.registry_uri, "sendtime-suite", settings.artifact_root)
    except TrackingUnavailable as exc:
        say(f"suite not logged to MLflow: {exc}")
        return
    with mlflow.start_run(run_name=f"suite: {len(rows)} worlds"):
        for r in fam.itertuples():
            slug = r.group.replace("family: ", "family_").replace(" ", "_")
            mlflow.log_metrics({f"{slug}_capture_median": r.capture_median, f"{slug}_capture_worst": r.capture_worst,
                                f"{slug}_mpp_open_precision_worst": r.mpp_open_precision_worst,
                                f"{slug}_mpp_open_recall_worst": r.mpp_open_recall_worst})
        mlflow.log_table(rows, "suite/capture_runs.json")
        for name in ("capture.md", "capture.png", "family_summary.csv"):
            if (out_dir / name).exists():
                mlflow.log_artifact(str(out_dir / name), artifact_path="suite")
