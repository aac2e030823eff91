"""Figures for analysts: shared by the notebooks in ``notebooks/`` and ``sendtime report``.

Every function returns a matplotlib :class:`~matplotlib.figure.Figure` built without pyplot
(no global figure list to leak into, nothing to close). The model figures (reliability curve,
feature importances) come from :mod:`sendtime.training.plots`, the same code the nightly run logs with.

Inputs are the tables the pipeline already has: the message table of
:func:`sendtime.features.messages.build_messages` (one row per send), a published feature table
(``user_features.parquet``, one row per user), off-policy metrics as logged to MLflow
(``val_ope_*`` by the nightly run, ``ope_*`` by ``sendtime evaluate --logged``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless, like training/plots.py
import matplotlib.ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sendtime.features.engagement import outcomes_at  # noqa: E402
from sendtime.features.messages import hour_of_week  # noqa: E402
from sendtime.training.plots import importance_figure, reliability_figure  # noqa: E402,F401  (re-exported)

WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
BLUE, ORANGE, GREY = "#3b7dd8", "#d8613b", "#9aa5b1"


def notebook_paths(env: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """(SENDTIME_HOME, SENDTIME_WORLD) for the notebooks.

    Environment variables win; otherwise what ``make demo`` creates (``.sendtime`` and
    ``out/world``), looked up in the working directory and, as Jupyter starts notebooks in
    their own folder, its parent.
    """
    env = os.environ if env is None else env

    def pick(key: str, default: str) -> Path:
        if env.get(key):
            return Path(env[key]).expanduser().resolve()
        for base in (Path.cwd(), Path.cwd().parent):
            if (base / default).exists():
                return (base / default).resolve()
        return (Path.cwd() / default).resolve()

    return pick("SENDTIME_HOME", ".sendtime"), pick("SENDTIME_WORLD", "out/world")


# ---------------------------------------------------------------- message-level tables


def message_outcomes(msgs: pd.DataFrame, cutoff: pd.Timestamp | None = None, horizon_hours: int = 24) -> pd.DataFrame:
    """Per message: first human open and click as seen from ``cutoff``, their local slots.

    Machine opens are classified as the model sees them (:func:`sendtime.features.engagement.outcomes_at`).
    Adds ``t_human``, ``hours_to_open``, ``opened`` (human open within the horizon), ``clicked``,
    ``machine_user``, ``fast_share``, ``open_how`` and ``click_how`` (local hour-of-week, -1 if none).
    """
    if cutoff is None:
        last = pd.concat([msgs["send_ts"], msgs["t_click"], msgs["t_open_human_flag"], msgs["t_open_unk_slow"]]).max()
        cutoff = last + pd.Timedelta(seconds=1)
    users, uidx = np.unique(msgs["user_id"].astype(str).to_numpy(), return_inverse=True)
    oc = outcomes_at(msgs, uidx, len(users), cutoff, horizon_hours)
    out = msgs.copy()
    t_human = pd.Series(pd.DatetimeIndex(oc.human_open_us.view("datetime64[us]"), tz="UTC"), index=msgs.index)
    out["t_human"] = t_human
    out["hours_to_open"] = ((t_human - msgs["send_ts"]) / pd.Timedelta(hours=1)).to_numpy(dtype=float, na_value=np.nan)
    out["opened"] = oc.opened
    out["clicked"] = oc.clicked
    out["machine_user"] = oc.is_machine_user[uidx]
    out["fast_share"] = oc.fast_share[uidx]
    for col, t in (("open_how", t_human), ("click_how", msgs["t_click"].where(msgs["t_click"] < cutoff))):
        how = np.full(len(msgs), -1, dtype=np.int16)
        ok = t.notna().to_numpy()
        if ok.any():
            how[ok] = hour_of_week(t[ok].reset_index(drop=True), msgs["timezone"][ok].reset_index(drop=True))
        out[col] = how
    return out


def _outcomes(msgs: pd.DataFrame) -> pd.DataFrame:
    return msgs if "open_how" in msgs.columns else message_outcomes(msgs)


# ---------------------------------------------------------------- engagement


def _heatmap(ax, grid: np.ndarray, label: str, fig: Figure) -> None:
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_yticks(range(7), WEEKDAYS)
    ax.set_xticks(range(0, 24, 2))
    ax.set_xlabel("local hour")
    fig.colorbar(im, ax=ax, label=label)


def engagement_heatmap(msgs: pd.DataFrame, what: str = "opens") -> Figure:
    """Human opens (or clicks) by the reader's local weekday x hour, from the message table.

    Counts follow when mail was sent as well as when people read: compare with
    :func:`profile_heatmap`, the exposure-corrected reading rate the model uses.
    """
    if what not in ("opens", "clicks"):
        raise ValueError(f"what must be 'opens' or 'clicks', got {what!r}")
    m = _outcomes(msgs)
    how = m["open_how" if what == "opens" else "click_how"].to_numpy()
    how = how[how >= 0]
    grid = np.bincount(how.astype(np.int64), minlength=168)[:168].reshape(7, 24)
    fig = Figure(figsize=(9, 3.6))
    ax = fig.add_subplot()
    _heatmap(ax, grid, what, fig)
    ax.set_title(f"Human {what} by local weekday and hour ({len(how):,} in total)")
    fig.tight_layout()
    return fig


def _row_mean(a: np.ndarray, rows: int = 200_000) -> np.ndarray:
    """The mean row of a (n, k) table, read ``rows`` at a time (a memory-mapped ten-million-user
    table is never copied whole, and its pages are released as it is read)."""
    from sendtime.features.mapped import release

    total = np.zeros(a.shape[1])
    for s in range(0, len(a), rows):
        total += np.asarray(a[s:s + rows], dtype=np.float64).sum(axis=0)
        release(a)
    return total / max(len(a), 1)


def profile_heatmap(lam: np.ndarray) -> Figure:
    """Mean exposure-corrected reading rate per local hour-of-week (a feature snapshot's profiles)."""
    grid = _row_mean(lam).reshape(7, 24)
    fig = Figure(figsize=(9, 3.6))
    ax = fig.add_subplot()
    _heatmap(ax, grid, "opens per hour", fig)
    ax.set_title(f"Reading rate by local weekday and hour (mean of {len(lam):,} user profiles)")
    fig.tight_layout()
    return fig


def machine_open_share(msgs: pd.DataFrame) -> Figure:
    """Users by share of their sends opened within minutes of delivery, split by what the
    machine-open mixture (:mod:`sendtime.features.machine_opens`) made of them.

    Takes the message table or a published feature table (``fast_open_share`` and
    ``is_machine_opener`` per user). A proxy that waits hours opens late and still lands on
    the machine side: the split is the mixture's, not a cut on this axis.
    """
    if "fast_open_share" in msgs.columns:
        share = msgs["fast_open_share"].to_numpy(dtype=float)
        machine_user = msgs["is_machine_opener"].to_numpy(dtype=float) > 0.5 if "is_machine_opener" in msgs.columns \
            else np.zeros(len(share), dtype=bool)
        n_sends = msgs["n_sends"].to_numpy() if "n_sends" in msgs.columns else np.ones(len(share))
        share, machine_user = share[n_sends > 0], machine_user[n_sends > 0]
    else:
        m = _outcomes(msgs).groupby("user_id")[["fast_share", "machine_user"]].first()
        share, machine_user = m["fast_share"].to_numpy(dtype=float), m["machine_user"].to_numpy(dtype=bool)
    machine = float(machine_user.mean()) if len(share) else float("nan")
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    bins = np.linspace(0, 1, 21)
    ax.hist([share[~machine_user], share[machine_user]], bins=bins, stacked=True, color=[BLUE, ORANGE],
            label=["human openers", "machine openers (mixture posterior >= 0.5)"])
    ax.set_xlabel("share of a user's sends opened within minutes of delivery")
    ax.set_ylabel("users")
    ax.set_title(f"Machine opens: {machine:.1%} of {len(share):,} users with sends are machine openers")
    ax.legend()
    fig.tight_layout()
    return fig


def time_to_open(msgs: pd.DataFrame, max_hours: int = 72) -> Figure:
    """Hours from send to first human open (machine opens excluded), for opened messages."""
    m = _outcomes(msgs)
    h = m["hours_to_open"].to_numpy(dtype=float)
    h = h[np.isfinite(h)]
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    ax.hist(np.clip(h, 0, max_hours), bins=np.arange(0, max_hours + 1, 1), color=BLUE)
    if len(h):
        med = float(np.median(h))
        ax.axvline(med, color=ORANGE, ls="--", label=f"median {med:.1f} h")
        ax.legend()
    ax.set_xlabel(f"hours from send to first human open (last bar: {max_hours} h or more)")
    ax.set_ylabel("messages")
    ax.set_title(f"Time to open ({len(h):,} human-opened messages)")
    fig.tight_layout()
    return fig


def history_length(msgs: pd.DataFrame) -> Figure:
    """Users by number of sends in their history (message table, or feature table's ``n_sends``)."""
    if "n_sends" in msgs.columns and "send_ts" not in msgs.columns:
        n = msgs["n_sends"].to_numpy(dtype=np.int64)
    else:
        n = msgs.groupby("user_id").size().to_numpy(dtype=np.int64)
    edges = [0, 1, 2, 4, 8, 16, 32, 64, 128, np.inf]
    labels = ["0", "1", "2-3", "4-7", "8-15", "16-31", "32-63", "64-127", "128+"]
    counts = pd.cut(pd.Series(n), edges, right=False, labels=labels).value_counts().reindex(labels, fill_value=0)
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    ax.bar(labels, counts.to_numpy(), color=BLUE)
    few = float((n <= 3).mean()) if len(n) else float("nan")
    ax.set_xlabel("sends in history")
    ax.set_ylabel("users")
    ax.set_title(f"Users by history length ({few:.0%} of {len(n):,} have 3 sends or fewer)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- model and lift


def capture_by_segment(table: pd.DataFrame) -> Figure:
    """Open rates per segment (status quo, sendtime, oracle) and the captured share of the gain.

    ``table`` is :func:`sendtime.simulation.evaluate.segment_capture`'s output.
    """
    x = np.arange(len(table))
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    for i, (col, color) in enumerate((("status_quo", GREY), ("sendtime", BLUE), ("oracle", ORANGE))):
        ax.bar(x + (i - 1) * 0.27, table[col], width=0.27, color=color, label=col.replace("_", " "))
    for xi, (cap, top) in enumerate(zip(table["capture"], table["oracle"])):
        ax.text(xi, top * 1.02, f"{cap:.0%}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(x, [f"{s}\n({n:,})" for s, n in zip(table["segment"], table["users"])])
    ax.set_ylabel("expected open rate")
    ax.set_title("Simulated world by segment (labels: share of the oracle's gain captured)")
    ax.set_ylim(0, float(table["oracle"].max()) * 1.18)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def policy_rates(rates: Mapping[str, float]) -> Figure:
    """Expected open rate of each policy on a simulated world (``sim_rate_*`` metrics)."""
    order = sorted(rates, key=lambda k: rates[k])
    fig = Figure(figsize=(7, 0.45 * len(order) + 1.4))
    ax = fig.add_subplot()
    colors = [BLUE if k == "sendtime" else (ORANGE if k == "oracle" else GREY) for k in order]
    ax.barh([k.replace("_", " ") for k in order], [rates[k] for k in order], color=colors)
    for i, k in enumerate(order):
        ax.text(rates[k], i, f" {rates[k]:.3f}", va="center", fontsize=9)
    ax.set_xlabel("expected open rate (simulator's truth)")
    ax.set_title("Policies on the simulated world")
    ax.set_xlim(0, max(rates.values()) * 1.18)
    fig.tight_layout()
    return fig


def ope_values(metrics: Mapping[str, float]) -> dict[str, float] | None:
    """Off-policy numbers from logged metrics (``val_ope_*`` or ``ope_*``), or None if absent."""
    for prefix in ("val_ope_", "ope_"):
        if f"{prefix}snips" in metrics and f"{prefix}status_quo_snips" in metrics:
            return {k[len(prefix):]: float(v) for k, v in metrics.items() if k.startswith(prefix)}
    return None


def lift_with_interval(off_policy_metrics) -> Figure:
    """Policy vs status-quo open rate (SNIPS) and the lift, with 95% bootstrap intervals.

    Takes the metrics logged by the nightly run (``val_ope_*``), by ``evaluate --logged``
    (``ope_*``), or a :class:`sendtime.training.offpolicy.OffPolicyReport`.
    """
    if hasattr(off_policy_metrics, "as_metrics"):
        rep = off_policy_metrics
        v = {**{k[4:]: val for k, val in rep.as_metrics().items()},
             "status_quo_snips_lo": rep.status_quo_ci[0], "status_quo_snips_hi": rep.status_quo_ci[1]}
    else:
        v = ope_values(off_policy_metrics)
        if v is None:
            raise ValueError("no off-policy metrics (val_ope_* or ope_*) in the run")
    fig = Figure(figsize=(9, 4))
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    names = ["status quo", "sendtime policy"]
    vals = [v["status_quo_snips"], v["snips"]]
    lo = [v.get("status_quo_snips_lo", np.nan), v.get("snips_lo", np.nan)]
    hi = [v.get("status_quo_snips_hi", np.nan), v.get("snips_hi", np.nan)]
    err = np.array([[max(val - low, 0) if np.isfinite(low) else 0 for val, low in zip(vals, lo)],
                    [max(high - val, 0) if np.isfinite(high) else 0 for val, high in zip(vals, hi)]])
    ax.bar(names, vals, yerr=err, capsize=8, color=[GREY, BLUE])
    for i, val in enumerate(vals):
        ax.text(i, val / 2, f"{val:.3f}", ha="center", color="white", fontweight="bold")
    ax.set_ylabel("open rate (self-normalized IPS)")
    ax.set_title(f"Off-policy open rate ({int(v.get('sends', 0)):,} logged sends)")
    lift = v.get("lift", np.nan)
    l_lo, l_hi = v.get("lift_lo", np.nan), v.get("lift_hi", np.nan)
    bx.axhline(0, color="grey", lw=1)
    if np.isfinite(l_lo) and np.isfinite(l_hi):
        bx.errorbar([0], [lift], yerr=[[lift - l_lo], [l_hi - lift]], fmt="o", color=BLUE, capsize=10, ms=9)
        bx.set_title(f"Lift {lift:+.1%}  [{l_lo:+.1%}, {l_hi:+.1%}]")
    else:
        bx.plot([0], [lift], "o", color=BLUE, ms=9)
        bx.set_title(f"Lift {lift:+.1%}")
    bx.set_xticks([0], ["policy vs status quo"])
    bx.set_xlim(-1, 1)
    bx.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    bx.set_ylabel("relative lift (95% bootstrap interval)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- campaign what-if


def hourly_volume(planned_counts: Sequence[int], caps: Sequence[int] | None, uncapped_counts: Sequence[int],
                  labels: Sequence[str] | None = None) -> Figure:
    """Sends per hour of a campaign: everyone at their best hour vs the plan under per-hour caps."""
    planned = np.asarray(planned_counts)
    uncapped = np.asarray(uncapped_counts)
    m = len(planned)
    x = np.arange(m)
    fig = Figure(figsize=(max(7, 0.38 * m + 2), 4))
    ax = fig.add_subplot()
    ax.bar(x - 0.2, uncapped, width=0.4, color=GREY, label="best hour, no caps")
    ax.bar(x + 0.2, planned, width=0.4, color=BLUE, label="plan under caps")
    if caps is not None:
        ax.step(np.append(x, m) - 0.5, np.append(np.asarray(caps), np.asarray(caps)[-1:]), where="post",
                color=ORANGE, ls="--", label="cap")
    if labels is not None:
        step = max(1, m // 12)
        ax.set_xticks(x[::step], [str(s) for s in list(labels)[::step]], rotation=45, ha="right")
    ax.set_xlabel("send hour")
    ax.set_ylabel("sends")
    ax.set_title("Campaign send volume per hour")
    ax.legend()
    fig.tight_layout()
    return fig


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
