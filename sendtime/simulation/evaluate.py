"""Policy evaluation against a simulated world's ground truth.

For a prediction date, each policy picks one send hour per user; its value is the mean of the
user's *true* open probability at that local hour-of-week. The headline number is the share of
the oracle's gain over the status quo that the recommendations capture:
``(recommended - status_quo) / (oracle - status_quo)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sendtime.features.contract import read_events, read_users
from sendtime.features.engagement import outcomes_at
from sendtime.features.messages import OUTCOME_COLUMNS, build_messages, hour_of_week, micros, micros_of
from sendtime.features.outcomes import human_unflagged_open
from sendtime.simulation.simulate import night_hours


@dataclass
class PolicyReport:
    date: str
    users: int
    rates: dict[str, float]  # policy -> expected open rate
    capture: float

    def table(self) -> pd.DataFrame:
        sq, orc = self.rates["status_quo"], self.rates["oracle"]
        rows = []
        for k, v in self.rates.items():
            cap = (v - sq) / (orc - sq) if orc > sq else float("nan")
            rows.append({"policy": k, "open_rate": v, "lift_vs_status_quo": v / sq - 1 if sq else float("nan"), "capture": cap})
        return pd.DataFrame(rows)


def load_world(world_dir: str | Path) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    world_dir = Path(world_dir)
    for name in ("truth.parquet", "world.json", "users.parquet"):
        if not (world_dir / name).exists():
            raise FileNotFoundError(f"{world_dir} is not a simulated world: {name} is missing (make one with `sendtime simulate`)")
    truth = pd.read_parquet(world_dir / "truth.parquet")
    meta = json.loads((world_dir / "world.json").read_text())
    users = read_users(world_dir / "users.parquet").accepted
    return truth, meta, users


def truth_matrix(truth: pd.DataFrame, user_ids: pd.Index, column: str = "p_open") -> np.ndarray:
    """(n_users, 168) true open probabilities (or another truth ``column``) in ``user_ids`` order."""
    t = truth.pivot(index="user_id", columns="how", values=column).reindex(index=user_ids, columns=range(168))
    if t.isna().any().any():
        raise ValueError("ground truth lacks some users or hours")
    return t.to_numpy()


def most_frequent_open_hour(events: pd.DataFrame, users: pd.DataFrame, fallback: int) -> pd.Series:
    """Each user's most frequent local open hour, every open counted (the common heuristic)."""
    opens = events.loc[events["event_type"] == "open", ["user_id", "timestamp"]]
    tz = opens["user_id"].map(users.set_index("user_id")["timezone"]).fillna("UTC")
    hours = pd.Series(hour_of_week(opens["timestamp"], tz) % 24, index=opens.index)
    mode = pd.DataFrame({"user_id": opens["user_id"], "h": hours}).groupby("user_id")["h"].agg(lambda s: s.value_counts().idxmax())
    return mode.reindex(users["user_id"]).fillna(fallback).astype(int)


def evaluate_day(
    truth: pd.DataFrame,
    users: pd.DataFrame,
    status_quo_utc_hour: int,
    recommended_hour: pd.Series,
    day: str,
    events: pd.DataFrame | None = None,
    extra_policies: dict[str, pd.Series] | None = None,
) -> PolicyReport:
    """Expected open rate of each policy for sends on local date ``day``."""
    ids = pd.Index(users["user_id"])
    T = truth_matrix(truth, ids)
    n = len(ids)
    date = pd.Timestamp(day)
    wd = date.weekday()
    pick = np.arange(n)
    tz = users["timezone"].fillna("UTC").to_numpy()

    def rate_utc(hour: int) -> float:
        inst = pd.Series([date.tz_localize("UTC") + pd.Timedelta(hours=hour)] * n)
        how = hour_of_week(inst, tz)
        return float(T[pick, how].mean())

    def rate_local(hours: pd.Series) -> float:
        h = hours.reindex(ids)
        if h.isna().any():
            raise ValueError(f"{int(h.isna().sum())} users have no recommended hour")
        return float(T[pick, wd * 24 + h.to_numpy(dtype=int)].mean())

    rates = {"status_quo": rate_utc(status_quo_utc_hour)}
    utc_rates = [rate_utc(h) for h in range(24)]
    rates["best_single_utc_hour"] = max(utc_rates)
    if events is not None:
        best_local = int(np.argmax(T[:, wd * 24: wd * 24 + 24].mean(0)))
        rates["most_frequent_open_hour"] = rate_local(most_frequent_open_hour(events, users, best_local))
    for name, hours in (extra_policies or {}).items():
        rates[name] = rate_local(hours)
    rates["sendtime"] = rate_local(recommended_hour)
    rates["oracle"] = float(T[:, wd * 24: wd * 24 + 24].max(1).mean())
    sq, orc = rates["status_quo"], rates["oracle"]
    capture = (rates["sendtime"] - sq) / (orc - sq) if orc > sq else float("nan")
    return PolicyReport(date=day, users=n, rates=rates, capture=capture)


PENALTIES = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


def penalty_tradeoff(truth: pd.DataFrame, users: pd.DataFrame, status_quo_utc_hour: int, predictions: pd.DataFrame,
                     risk: np.ndarray, day: str, penalties: tuple[float, ...] = PENALTIES) -> pd.DataFrame:
    """What each unsubscribe penalty buys on ``day``: the hour each user gets when hours are ranked
    by the published scores minus the penalty times the published risk by local hour, judged on
    the true open and unsubscribe probabilities (per 1,000 sends), beside the status quo."""
    ids = pd.Index(users["user_id"])
    T, U = truth_matrix(truth, ids), truth_matrix(truth, ids, "p_unsubscribe")
    wd = pd.Timestamp(day).weekday()
    pred = predictions.set_index("user_id").reindex(ids)
    scores = np.stack(pred["hour_scores"].to_numpy()).astype(np.float64)  # (n, 24) local hours of the day
    pick = np.arange(len(ids))
    tz = users["timezone"].fillna("UTC").to_numpy()
    inst = pd.Series([pd.Timestamp(day).tz_localize("UTC") + pd.Timedelta(hours=status_quo_utc_hour)] * len(ids))
    sq_how = hour_of_week(inst, tz)
    sq_open, orc = float(T[pick, sq_how].mean()), float(T[:, wd * 24: wd * 24 + 24].max(1).mean())
    rows = [{"penalty": "status quo", "open_rate": sq_open, "capture": 0.0,
             "unsubscribes_per_1000": 1000 * float(U[pick, sq_how].mean()), "night_share": float(np.mean(night_hours()[sq_how % 24]))}]
    for lam in penalties:
        h = (scores - lam * np.asarray(risk, dtype=np.float64)[None, :]).argmax(axis=1)
        o = float(T[pick, wd * 24 + h].mean())
        rows.append({"penalty": f"{lam:g}", "open_rate": o, "capture": (o - sq_open) / (orc - sq_open) if orc > sq_open else np.nan,
                     "unsubscribes_per_1000": 1000 * float(U[pick, wd * 24 + h].mean()), "night_share": float(np.mean(night_hours()[h]))})
    return pd.DataFrame(rows)


def tradeoff_figure(table: pd.DataFrame, title: str = ""):
    """Opens against unsubscribes, one point per penalty, the status quo marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    sq = table.loc[table["penalty"] == "status quo"].iloc[0]
    rest = table.loc[table["penalty"] != "status quo"]
    ax.plot(rest["unsubscribes_per_1000"], rest["open_rate"], "o-", color="#3b7dd8", label="sendtime, by penalty")
    for r in rest.itertuples():
        ax.annotate(r.penalty, (r.unsubscribes_per_1000, r.open_rate), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.plot([sq["unsubscribes_per_1000"]], [sq["open_rate"]], "s", color="#d8613b", label="status quo")
    ax.set_xlabel("true unsubscribes and complaints per 1,000 sends")
    ax.set_ylabel("true open rate")
    ax.set_title(title or "What the unsubscribe penalty trades")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def capture_by_confidence(truth: pd.DataFrame, users: pd.DataFrame, status_quo_utc_hour: int, predictions: pd.DataFrame,
                          day: str, bands: int = 3) -> dict[str, float]:
    """Capture of the oracle's gain within equal-count bands of the answers' ``confidence``
    (users with a sent history only): if confidence means something, capture rises with it."""
    pred = predictions.set_index("user_id")
    conf = pred["confidence"].reindex(users["user_id"]).to_numpy(dtype=float)
    has = np.isfinite(conf) & (conf > 0)
    out: dict[str, float] = {}
    if has.sum() < bands * 20:
        return out
    edges = np.quantile(conf[has], np.linspace(0, 1, bands + 1))
    band = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bands - 1)
    for b in range(bands):
        sub = users.loc[has & (band == b)]
        rep = evaluate_day(truth, sub, status_quo_utc_hour, pred["best_hour_local"], day)
        out[f"capture_confidence_{b + 1}of{bands}"] = rep.capture
        out[f"confidence_{b + 1}of{bands}_from"] = float(edges[b])
    return out


def evaluate_predictions(world_dir: str | Path, predictions_path: str | Path,
                         events: pd.DataFrame | None = None) -> PolicyReport:
    truth, meta, users = load_world(world_dir)
    pred = pd.read_parquet(predictions_path)
    missing = {"user_id", "best_hour_local", "date"} - set(pred.columns)
    if missing:
        raise ValueError(f"predictions file {predictions_path} lacks column(s): {', '.join(sorted(missing))}")
    days = pred["date"].unique()
    if len(days) != 1:
        raise ValueError(f"predictions file must hold one date, found {len(days)}")
    if events is None:
        events = read_events(Path(world_dir) / "events.parquet").accepted
    rec = pred.set_index("user_id")["best_hour_local"]
    return evaluate_day(truth, users, int(meta["status_quo_utc_hour"]), rec, str(days[0]), events=events)


def log_world_evaluation(tracking_uri: str, run_id: str, world_dir: str | Path, predictions_path: str | Path,
                         as_of: pd.Timestamp) -> PolicyReport:
    """Judge a nightly run's predictions against the world's truth and log the judgement to
    that run (``sim_*`` metrics, the policy table, machine-open precision and recall), so the
    MLflow UI and ``sendtime report`` show it beside the run. The nightly itself knows nothing
    of simulated worlds: the judge is called after it (``sendtime evaluate --log-run``)."""
    from mlflow import MlflowClient

    world_dir = Path(world_dir)
    events = read_events(world_dir / "events.parquet").accepted
    rep = evaluate_predictions(world_dir, predictions_path, events=events)
    client = MlflowClient(tracking_uri=tracking_uri)
    metrics = {f"sim_rate_{k}": v for k, v in rep.rates.items()} | {"sim_capture": rep.capture}
    if (world_dir / "open_truth.parquet").exists():
        users = read_users(world_dir / "users.parquet").accepted
        metrics |= machine_open_report(events, users, pd.read_parquet(world_dir / "open_truth.parquet"), as_of)
    for k, v in metrics.items():
        if np.isfinite(v):
            client.log_metric(run_id, k, float(v))
    client.log_table(run_id, rep.table(), "evaluation/simulated_world.json")
    return rep


def segment_capture(truth: pd.DataFrame, users: pd.DataFrame, predictions: pd.DataFrame,
                    status_quo_utc_hour: int) -> pd.DataFrame:
    """Per segment of a simulated world: open rates of the status quo, sendtime and the oracle,
    and the share of the oracle's gain captured (one row per segment, plus ``all``)."""
    rec = predictions.set_index("user_id")["best_hour_local"]
    day = str(predictions["date"].iloc[0])
    seg = users["segment"].fillna("unknown") if "segment" in users.columns else pd.Series("all", index=users.index)
    rows = []
    for name, sub in [("all", users), *((s, users.loc[seg == s]) for s in sorted(seg.unique()))]:
        rep = evaluate_day(truth, sub, status_quo_utc_hour, rec, day)
        rows.append({"segment": name, "users": len(sub), "status_quo": rep.rates["status_quo"],
                     "sendtime": rep.rates["sendtime"], "oracle": rep.rates["oracle"], "capture": rep.capture})
    return pd.DataFrame(rows)


def machine_open_report(events: pd.DataFrame, users: pd.DataFrame, open_truth: pd.DataFrame, as_of: pd.Timestamp,
                        default_tz: str = "UTC", user_truth: pd.DataFrame | None = None) -> dict[str, float]:
    """Precision and recall of the machine-open classification against the simulator's truth:
    of individual opens, and (with ``user_truth``) of machine-open users with a settled send.

    An open is a machine open when flagged so, or, unflagged, when it is the one of the first
    two unflagged opens of a message to a user the mixture calls a machine opener that is not
    the human one, and the message has no flagged machine open (the rule of
    :func:`sendtime.features.outcomes.human_unflagged_open`).
    """

    msgs = build_messages(events, users, default_tz)
    index = pd.Index(pd.concat([users["user_id"], msgs["user_id"]]).unique())
    uidx = index.get_indexer(msgs["user_id"])
    oc = outcomes_at(msgs, uidx, len(index), as_of, 24)
    machine_user = pd.Series(oc.is_machine_user, index=index)
    human_unk = human_unflagged_open(micros(msgs["send_ts"]), msgs["send_how"].to_numpy(dtype=np.int64),
                                     {c: micros(msgs[c]) for c in OUTCOME_COLUMNS}, uidx, oc.is_machine_user,
                                     micros_of(as_of))
    human_unk = pd.Series(human_unk, index=msgs["message_id"].to_numpy())
    opens = events.loc[(events["event_type"] == "open") & (events["timestamp"] < as_of)]
    opens = opens.loc[opens["message_id"].isin(msgs["message_id"])]
    flag = opens["machine_open"]
    unflagged = flag.isna()
    rank = opens["timestamp"].where(unflagged).groupby(opens["message_id"]).rank(method="first")
    flagged_machine = opens["message_id"].isin(opens.loc[(flag == True).fillna(False), "message_id"])  # noqa: E712
    by_machine_user = opens["user_id"].map(machine_user).fillna(False).astype(bool)
    is_human_unk = micros(opens["timestamp"]) == opens["message_id"].map(human_unk).to_numpy(dtype=np.int64)
    predicted = (flag == True).fillna(False) | (unflagged & by_machine_user & (rank <= 2) & ~is_human_unk  # noqa: E712
                                                & ~flagged_machine)
    truth = opens["event_id"].map(open_truth.set_index("event_id")["is_machine"]).fillna(False).astype(bool)
    tp = int((predicted & truth).sum())
    out = {
        "machine_open_precision": tp / max(int(predicted.sum()), 1),
        "machine_open_recall": tp / max(int(truth.sum()), 1),
        "opens": float(len(opens)),
    }
    if user_truth is not None:
        settled = (msgs["send_ts"] < as_of - pd.Timedelta(hours=24)).groupby(msgs["user_id"]).any()
        ids = settled.index[settled.to_numpy()]
        is_mpp = user_truth.set_index("user_id")["is_mpp"].reindex(ids).fillna(False).astype(bool).to_numpy()
        called = machine_user.reindex(ids).fillna(False).astype(bool).to_numpy()
        tpu = int((called & is_mpp).sum())
        out["machine_user_precision"] = tpu / max(int(called.sum()), 1) if called.any() or is_mpp.any() else 1.0
        out["machine_user_recall"] = tpu / max(int(is_mpp.sum()), 1) if is_mpp.any() else 1.0
        if not called.any() and not is_mpp.any():
            out["machine_open_precision"] = out["machine_open_precision"] if predicted.any() else 1.0
        out["machine_users"] = float(is_mpp.sum())
    if not truth.any() and not predicted.any():  # nothing to find and nothing found: perfect
        out["machine_open_precision"] = out["machine_open_recall"] = 1.0
    return out


def reference_policy(events: pd.DataFrame, users: pd.DataFrame, as_of: pd.Timestamp, day: str,
                     max_rows: int = 200_000, seed: int = 0) -> pd.Series:
    """The straightforward approach, for comparison: a RandomForest on each user's open-hour
    histogram (every open counted) plus the candidate local send hour, labelled opened within
    24 h, argmax over the day's 24 hours."""
    from sklearn.ensemble import RandomForestClassifier

    tz_of = users.set_index("user_id")["timezone"].fillna("UTC")
    ev = events.loc[events["timestamp"] < as_of]
    opens = ev.loc[ev["event_type"] == "open"]
    hours = hour_of_week(opens["timestamp"], opens["user_id"].map(tz_of).fillna("UTC")) % 24
    ids = pd.Index(users["user_id"])
    counts = np.zeros((len(ids), 24))
    np.add.at(counts, (ids.get_indexer(opens["user_id"]), hours), 1.0)
    total = counts.sum(1, keepdims=True)
    hist = np.hstack([counts / np.maximum(total, 1), total])

    sends = ev.loc[(ev["event_type"] == "send") & (ev["timestamp"] < as_of - pd.Timedelta(hours=24))]
    first_open = opens.groupby("message_id")["timestamp"].min()
    delay = sends["message_id"].map(first_open) - sends["timestamp"]
    y = (delay <= pd.Timedelta(hours=24)).fillna(False).to_numpy().astype(int)
    rows = ids.get_indexer(sends["user_id"])
    ok = rows >= 0
    send_hour = hour_of_week(sends["timestamp"], sends["user_id"].map(tz_of).fillna("UTC")) % 24
    X = np.hstack([hist[rows[ok]], send_hour[ok, None]])
    y = y[ok]
    if len(y) > max_rows:
        pick = np.random.default_rng(seed).choice(len(y), max_rows, replace=False)
        X, y = X[pick], y[pick]
    rf = RandomForestClassifier(n_estimators=100, min_samples_leaf=50, n_jobs=-1, random_state=seed).fit(X, y)
    grid = np.hstack([np.repeat(hist, 24, axis=0), np.tile(np.arange(24), len(ids))[:, None]])
    p = rf.predict_proba(grid)[:, 1].reshape(len(ids), 24)
    return pd.Series(p.argmax(1), index=ids)


def group_rates(truth: pd.DataFrame, users: pd.DataFrame, recommended_hour: pd.Series, day: str,
                members: pd.Series) -> dict[str, float]:
    """For a group of users: the recommendations' rate vs the best single UTC hour for that group."""
    sub = users.loc[users["user_id"].isin(members[members].index)]
    if sub.empty:
        return {"users": 0.0}
    ids = pd.Index(sub["user_id"])
    T = truth_matrix(truth, ids)
    date = pd.Timestamp(day)
    tz = sub["timezone"].fillna("UTC").to_numpy()
    best_utc = max(
        float(T[np.arange(len(ids)), hour_of_week(pd.Series([date.tz_localize("UTC") + pd.Timedelta(hours=h)] * len(ids)), tz)].mean())
        for h in range(24)
    )
    rec = recommended_hour.reindex(ids).to_numpy(dtype=int)
    return {"users": float(len(ids)), "sendtime": float(T[np.arange(len(ids)), date.weekday() * 24 + rec].mean()),
            "best_single_utc_hour": best_utc}
