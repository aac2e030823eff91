"""Randomized prompts replayed against real people's activity: a check no simulator wrote.

The real-data folder holds when real people were active (commits, e-mails sent, physical
activity by the hour), not send logs. A micro-randomized trial can still be replayed on top of
them: each person gets ``per_day`` prompts a day at uniformly random local times between
``hours``, and "responds" to a prompt when they were active within ``window_minutes`` after it;
the response time is the first such activity. That is the design of the public EMA and
micro-randomized studies (uniform send times, logged propensities, a response read off the
person's own behaviour), with real people's real rhythms behind the responses.

The first ``history_days`` are the history: the real nightly job trains (or publishes its
prior-only policy) on them. The held-out prompts are then scored by the published policy at
their local hour, exactly as the service's ``hour_scores`` would, and compared with the
hour-blind baseline the trials report: each person's own past response rate. Pooled ROC AUC of
both, the AUC inside a person (what the hour modulation alone adds), and a bootstrap over people
for the difference. Local time is written as UTC with every user in zone "UTC": the check is
about the hour inside a person, not about time zones.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from sendtime.nightly import run_nightly
from sendtime.serving.model_store import load_scorer
from sendtime.settings import Settings
from sendtime.simulation.real_rhythms import SOURCES, activity_instants
from sendtime.simulation.simulate import HELD_OUT_SOURCES
#: the replayed trial starts on this Monday (a whole number of weeks after each person's window,
#: so the local hour-of-week of every activity is kept)
START = pd.Timestamp("2026-01-05")
#: trial designs after the public studies: EMA prompting (10 a day for 10 days, a week of
#: history) and a micro-randomized trial (5 decision points a day for 6 weeks, a 30-minute
#: response window, 4 weeks of history)
DESIGNS = {
    "ema": {"days": 10, "history_days": 7, "per_day": 10, "window_minutes": 60},
    "mrt": {"days": 42, "history_days": 28, "per_day": 5, "window_minutes": 30},
}
# the null controls: the same trials with each person's answers shuffled over their own prompts,
# so the hour carries nothing and only the level does; sendtime must not lose to hour-blind there
DESIGNS.update({f"{k}-null": {**v, "shuffle": True} for k, v in list(DESIGNS.items())})


@dataclass
class ReplayConfig:
    source: str
    design: str = "custom"
    days: int = 10
    history_days: int = 7
    per_day: int = 10
    hours: tuple[int, int] = (8, 22)  # prompts between these local hours
    window_minutes: int = 60
    min_events: int = 10  # activities a person needs inside their window to take part
    max_people: int = 200
    shuffle: bool = False  # permute each person's answers over their prompts (the hour means nothing)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.design != "custom" and self.design not in DESIGNS:
            raise ValueError(f"unknown design {self.design!r}; choose from {', '.join(DESIGNS)}")
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}; choose from {', '.join(SOURCES)}")
        if not 1 <= self.history_days < self.days:
            raise ValueError(f"history_days must be in [1, days), got {self.history_days} of {self.days}")
        if not (0 <= self.hours[0] < self.hours[1] <= 24):
            raise ValueError(f"hours must be 0 <= start < end <= 24, got {self.hours}")
        if self.per_day < 1 or self.window_minutes < 1:
            raise ValueError("per_day and window_minutes must be positive")


@dataclass
class ReplayResult:
    config: ReplayConfig
    people: int
    history_sends: int
    held_out_sends: int
    response_rate: float
    policy: str  # the model version that scored, or "profiles" for the prior-only policy
    auc_sendtime: float
    auc_hour_blind: float
    auc_level: float  # sendtime's per-person mean score: its level alone
    auc_within_person: float  # mean over people of the AUC of sendtime's scores among their own prompts
    diff_low: float  # 90% bootstrap interval (over people) of auc_sendtime - auc_hour_blind
    diff_high: float
    hour_weight: float
    seconds: float
    extra: dict = field(default_factory=dict)

    def row(self) -> dict:
        c = asdict(self.config)
        c["hours"] = f"{self.config.hours[0]}-{self.config.hours[1]}"
        out = {**c, **{k: v for k, v in asdict(self).items() if k not in ("config", "extra")}, **self.extra}
        out["group"] = "held out" if self.config.source in HELD_OUT_SOURCES else "tuned on"
        return out


def design_config(design: str, source: str, seed: int = 0) -> ReplayConfig:
    """The named trial design for one real source."""
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; choose from {', '.join(DESIGNS)}")
    return ReplayConfig(source=source, design=design, seed=seed, **DESIGNS[design])


def _windows(act: pd.DataFrame, cfg: ReplayConfig) -> pd.DataFrame:
    """Each person's densest run of ``days`` days starting on a Monday, shifted onto START."""
    day = act["local"].dt.floor("D")
    monday0 = (day - pd.to_timedelta(day.dt.weekday, unit="D")).groupby(act["person"]).transform("min")
    d = ((day - monday0) / pd.Timedelta(days=1)).astype(np.int64).to_numpy()
    out = []
    for person, idx in act.groupby("person", sort=True).indices.items():
        per_day = np.bincount(d[idx])
        if len(per_day) < cfg.days:
            per_day = np.pad(per_day, (0, cfg.days - len(per_day)))
        c = np.concatenate([[0], np.cumsum(per_day)])
        starts = np.arange(0, len(per_day) - cfg.days + 1, 7)
        n = c[starts + cfg.days] - c[starts]
        if n.max() < cfg.min_events:
            continue
        s = int(starts[np.argmax(n)])
        first = monday0.iloc[idx[0]] + pd.Timedelta(days=s)
        sub = act.iloc[idx]
        sub = sub.loc[(sub["local"] >= first) & (sub["local"] < first + pd.Timedelta(days=cfg.days))]
        out.append(pd.DataFrame({"person": person, "local": START + (sub["local"] - first), "n": int(n.max())}))
    if not out:
        raise ValueError(f"no person of {cfg.source} has {cfg.min_events} activities in {cfg.days} days")
    w = pd.concat(out, ignore_index=True)
    keep = w.drop_duplicates("person").nlargest(cfg.max_people, "n")["person"]
    return w.loc[w["person"].isin(keep), ["person", "local"]].sort_values(["person", "local"], ignore_index=True)


def replay_events(act: pd.DataFrame, cfg: ReplayConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(events, users, prompts) of the replayed trial; ``prompts`` has one row per send with
    its outcome, for judging."""
    rng = np.random.default_rng(cfg.seed)
    w = _windows(act, cfg)
    people = np.sort(w["person"].unique())
    h0, h1 = cfg.hours
    n_days, k = cfg.days, cfg.per_day
    rows = []
    for j, person in enumerate(people):
        minutes = rng.uniform(h0 * 60, h1 * 60, size=(n_days, k))
        t = START + pd.to_timedelta((np.arange(n_days)[:, None] * 1440 + minutes).ravel(), unit="min")
        t = t.sort_values().floor("s")
        mine = w.loc[w["person"] == person, "local"].to_numpy()
        nxt = np.searchsorted(mine, t.to_numpy(), side="left")
        got = nxt < len(mine)
        first = np.where(got, mine[np.minimum(nxt, len(mine) - 1)], np.datetime64("NaT"))
        responded = got & ((first - t.to_numpy()) < np.timedelta64(cfg.window_minutes, "m"))
        delay = np.where(responded, first - t.to_numpy(), np.timedelta64(0, "s"))
        if cfg.shuffle:
            perm = rng.permutation(len(t))
            responded, delay = responded[perm], delay[perm]
            first = t.to_numpy() + delay
        rows.append(pd.DataFrame({"user_id": f"p{j:04d}", "person": str(person), "send_ts": t,
                                  "responded": responded, "open_ts": np.where(responded, first, np.datetime64("NaT"))}))
    prompts = pd.concat(rows, ignore_index=True)
    prompts["message_id"] = [f"m{i:07d}" for i in range(len(prompts))]
    prop = 1.0 / (h1 - h0)  # a uniform draw over the prompting hours: each hour equally likely
    utc = lambda s: pd.to_datetime(s).dt.tz_localize("UTC")  # noqa: E731 (local time written as UTC)
    sends = pd.DataFrame({"user_id": prompts["user_id"], "message_id": prompts["message_id"], "event_type": "send",
                          "timestamp": utc(prompts["send_ts"]), "machine_open": pd.NA, "propensity": prop})
    r = prompts.loc[prompts["responded"]]
    opens = pd.DataFrame({"user_id": r["user_id"], "message_id": r["message_id"], "event_type": "open",
                          "timestamp": utc(r["open_ts"]), "machine_open": False, "propensity": np.nan})
    events = pd.concat([sends, opens], ignore_index=True).sort_values("timestamp", kind="stable", ignore_index=True)
    events.insert(0, "event_id", [f"e{i:08d}" for i in range(len(events))])
    events["machine_open"] = events["machine_open"].astype("boolean")
    users = pd.DataFrame({"user_id": [f"p{j:04d}" for j in range(len(people))], "timezone": "UTC", "segment": cfg.source})
    return events, users, prompts


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def judge(test: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """AUCs of ``score`` and ``blind`` against ``responded`` on held-out prompts, pooled and
    inside each person, with a bootstrap over people for the pooled difference."""
    y = test["responded"].to_numpy(dtype=int)
    s, b = test["score"].to_numpy(), test["blind"].to_numpy()
    level = test.groupby("user_id")["score"].transform("mean").to_numpy()  # sendtime without its hour modulation
    within = [_auc(g["responded"].to_numpy(dtype=int), g["score"].to_numpy()) for _, g in test.groupby("user_id")]
    rng = np.random.default_rng(seed)
    groups = list(test.groupby("user_id").indices.values())
    diffs = []
    for _ in range(n_boot):
        idx = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        d = _auc(y[idx], s[idx]) - _auc(y[idx], b[idx])
        if np.isfinite(d):
            diffs.append(d)
    lo, hi = (np.quantile(diffs, [0.05, 0.95]) if diffs else (np.nan, np.nan))
    bands = {}
    if "confidence" in test and test["user_id"].nunique() >= 9:  # thirds of the people by their answers' confidence
        conf = test.groupby("user_id")["confidence"].first()
        third = pd.qcut(conf.rank(method="first"), 3, labels=False).reindex(test["user_id"]).to_numpy()
        for k in range(3):
            m = third == k
            bands[f"auc_sendtime_confidence_{k + 1}of3"] = _auc(y[m], s[m])
            bands[f"auc_hour_blind_confidence_{k + 1}of3"] = _auc(y[m], b[m])
    return {**bands, "auc_sendtime": _auc(y, s), "auc_hour_blind": _auc(y, b), "auc_level": _auc(y, level), "auc_within_person": float(np.nanmean(within)),
            "diff_low": float(lo), "diff_high": float(hi)}


def run_replay(cfg: ReplayConfig, realdata_dir: str | Path, workdir: Path | None = None,
               say: Callable[[str], None] = print) -> ReplayResult:
    """Replay the trial, run the nightly on its history, judge the held-out prompts."""

    t0 = time.time()
    events, users, prompts = replay_events(activity_instants(cfg.source, Path(realdata_dir)), cfg)
    as_of = START + pd.Timedelta(days=cfg.history_days)
    hist = prompts["send_ts"] < as_of
    say(f"[{cfg.source}] {users.shape[0]} people, {int(hist.sum()):,} history and {int((~hist).sum()):,} held-out "
        f"prompts, {prompts['responded'].mean():.0%} answered")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        ev_path, us_path = tmp / "events.parquet", tmp / "users.parquet"
        events.loc[events["timestamp"] < as_of.tz_localize("UTC")].to_parquet(ev_path, index=False)
        users.to_parquet(us_path, index=False)
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        env["SENDTIME_HOME"] = str(tmp / "home")
        settings = Settings.from_env(env)
        res = run_nightly(settings, ev_path, us_path, as_of.tz_localize("UTC"), say=lambda m: say(f"[{cfg.source}] {m}"))
        scorer, _ = load_scorer(settings)
        test = prompts.loc[~hist].reset_index(drop=True)
        cold, req = scorer.users(test["user_id"].tolist())
        how = (test["send_ts"].dt.day_of_week * 24 + test["send_ts"].dt.hour).to_numpy(dtype=np.int64)
        test["score"] = scorer.score_requested(cold, req, how[:, None])[:, 0]
        test["confidence"] = req.confidence
    past = prompts.loc[hist].groupby("user_id")["responded"].mean()
    test["blind"] = test["user_id"].map(past).fillna(prompts.loc[hist, "responded"].mean()).to_numpy()
    j = judge(test, seed=cfg.seed)
    bands = {k: j.pop(k) for k in list(j) if "_confidence_" in k}
    return ReplayResult(config=cfg, people=int(users.shape[0]), history_sends=int(hist.sum()), held_out_sends=len(test),
                        response_rate=float(prompts["responded"].mean()), policy=str(scorer.model_version),
                        hour_weight=float(res.metrics.get("hour_weight", np.nan)), seconds=time.time() - t0,
                        extra=bands, **j)


def markdown(rows: pd.DataFrame) -> str:
    lines = ["| design | source | group | people | days (history) | prompts/day | answered | policy | hour weight | "
             "AUC sendtime | AUC hour-blind | difference (90% CI over people) | AUC inside a person | "
             "AUC by confidence third, low / mid / high (sendtime vs hour-blind) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows.to_dict("records"):
        lines.append(f"| {r['design']} | {r['source']} | {r['group']} | {r['people']} | {r['days']} ({r['history_days']}) | {r['per_day']} | "
                     f"{r['response_rate']:.0%} | {r['policy']} | {r['hour_weight']:.2f} | {r['auc_sendtime']:.3f} | "
                     f"{r['auc_hour_blind']:.3f} | {r['auc_sendtime'] - r['auc_hour_blind']:+.3f} "
                     f"({r['diff_low']:+.3f} to {r['diff_high']:+.3f}) | {r['auc_within_person']:.3f} | "
                     + " / ".join(f"{r.get(f'auc_sendtime_confidence_{k}of3', np.nan):.2f} vs "
                                  f"{r.get(f'auc_hour_blind_confidence_{k}of3', np.nan):.2f}" for k in (1, 2, 3)) + " |")
    return "\n".join(lines)


def run_replays(designs: list[str], sources: list[str], realdata_dir: str | Path, out_dir: Path,
                say: Callable[[str], None] = print, seed: int = 0) -> pd.DataFrame:
    """Every design x source; writes replay.csv, replay.md and replay.png to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for design in designs:
        for source in sources:
            r = run_replay(design_config(design, source, seed), realdata_dir, say=say)
            say(f"[{design} {source}] AUC sendtime {r.auc_sendtime:.3f} vs hour-blind {r.auc_hour_blind:.3f}")
            rows.append(r.row())
            pd.DataFrame(rows).to_csv(out_dir / "replay.csv", index=False)
    df = pd.DataFrame(rows)
    (out_dir / "replay.md").write_text(markdown(df) + "\n")
    replay_figure(df).savefig(out_dir / "replay.png", dpi=110)
    return df


def replay_figure(rows: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['design']}\n{r['source']}" + ("\n(held out)" if r["group"] == "held out" else "") for r in rows.to_dict("records")]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rows) + 2), 4))
    ax.bar(x - 0.18, rows["auc_sendtime"], width=0.36, label="sendtime (hour scores)", color="#3b7dd8")
    ax.bar(x + 0.18, rows["auc_hour_blind"], width=0.36, label="hour-blind (past response rate)", color="#cfd8e3")
    ax.axhline(0.5, color="k", lw=0.6)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0.4, max(0.8, float(np.nanmax(rows[["auc_sendtime", "auc_hour_blind"]].to_numpy())) + 0.05))
    ax.set_ylabel("ROC AUC on held-out prompts")
    ax.set_title("Randomized prompts replayed on real people's activity")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig
