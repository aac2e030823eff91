"""A self-contained HTML report about the latest nightly run (``sendtime report --out FILE``).

One file, no external assets: figures are PNGs embedded as base64 data URIs, CSS is inline.
The run, its metrics and logged figures come from MLflow through an explicit client (the
process-wide MLflow settings are never touched); engagement figures come from the published
snapshot's features and, when the run's events file is still there and small enough, from its
messages.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from sendtime import analysis
from sendtime.features.contract import read_events
from sendtime.features.messages import build_messages
from sendtime.features.store import load_features
from sendtime.serving.snapshots import NotReady, current_snapshot, read_manifest

#: Above this many bytes of events the report skips the message-level figures.
MAX_EVENTS_BYTES = 300_000_000
METRICS = (("val_roc_auc", "ROC AUC"), ("val_log_loss", "log loss"), ("val_brier", "Brier score"),
           ("val_ece", "expected calibration error (ECE)"))


def tracking_client(settings) -> MlflowClient:
    """An explicit MLflow client for the settings' stores; NotReady when the local store does not exist yet."""
    uri = settings.tracking_uri
    db = Path(unquote(uri[len("sqlite:///"):])) if uri.startswith("sqlite:///") else None
    if db is not None and not db.exists():  # do not let the client create an empty store
        raise NotReady(f"nothing trained yet: no MLflow store at {db} (run `sendtime nightly` first)")
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)


def latest_run(settings, client: MlflowClient | None = None):
    """The most recent nightly run that trained a model (an ``mlflow.entities.Run``)."""
    client = client or tracking_client(settings)
    try:
        exp = client.get_experiment_by_name(settings.experiment)
        runs = [] if exp is None else client.search_runs(
            [exp.experiment_id], filter_string="tags.model_version != ''", order_by=["attributes.start_time DESC"],
            max_results=1)
    except NotReady:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise NotReady(f"cannot read MLflow runs at {settings.tracking_uri}: {first}") from None
    if not runs:
        raise NotReady(f"nothing trained yet in experiment {settings.experiment!r}: run `sendtime nightly` first")
    return runs[0]


def champion_run(settings, client: MlflowClient | None = None):
    """(champion model version, the run that trained it), or (None, None) without a champion."""
    client = client or tracking_client(settings)
    try:
        mv = client.get_model_version_by_alias(settings.model_name, "champion")
    except Exception:
        return None, None
    return str(mv.version), client.get_run(mv.run_id) if mv.run_id else None


def logged_png(client: MlflowClient, run_id: str, path: str) -> bytes | None:
    """A PNG logged with the run (e.g. ``plots/reliability.png``), or None if it is not there."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return Path(client.download_artifacts(run_id, path, tmp)).read_bytes()
    except Exception:
        return None


def logged_json(client: MlflowClient, run_id: str, path: str):
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(Path(client.download_artifacts(run_id, path, tmp)).read_text())
    except Exception:
        return None


def run_messages(run, snapshot_table: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame | None:
    """The run's messages (events before the as-of date), if its events file is still readable."""

    path = Path(run.data.tags.get("events_path", ""))
    if not str(path) or not path.exists():
        return None
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    if size > MAX_EVENTS_BYTES:
        return None
    try:
        events = read_events(path).accepted
    except Exception:
        return None
    events = events.loc[events["timestamp"] < as_of]
    if events.empty or not (events["event_type"] == "send").any():
        return None
    users = snapshot_table.reset_index()[["user_id", "timezone"]]
    return build_messages(events, users)


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#1f2933}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;border-bottom:1px solid #d9e2ec;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0} td,th{padding:.25em .8em;border-bottom:1px solid #e4e7eb;text-align:left}
th{background:#f5f7fa} td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#137333;font-weight:bold} .warn{color:#b3261e;font-weight:bold} .muted{color:#7b8794}
figure{margin:1em 0} figure img{max-width:100%} figcaption{color:#52606d;font-size:.9em}
"""


def _img(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td class='num'>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _frame(df: pd.DataFrame, fmt: str = "{:.4f}") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = ""
    for _, r in df.iterrows():
        cells = "".join(
            f"<td class='num'>{html.escape(fmt.format(v) if isinstance(v, (float, np.floating)) else str(v))}</td>"
            for v in r
        )
        body += f"<tr>{cells}</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _num(x, fmt: str = "{:.4f}") -> str:
    return fmt.format(x) if x is not None and np.isfinite(x) else "n/a"


def write_report(settings, out_path) -> Path:
    """Write the HTML report about the latest nightly run to ``out_path``; returns its path.

    Raises :class:`sendtime.serving.snapshots.NotReady` when nothing has been trained yet.
    """
    out_path = Path(out_path)
    client = tracking_client(settings)
    run = latest_run(settings, client)
    champ_version, champ = champion_run(settings, client)
    tags, metrics = run.data.tags, run.data.metrics
    version = tags.get("model_version", "?")
    as_of = pd.Timestamp(tags.get("as_of") or run.data.params.get("as_of"))
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of
    promoted = tags.get("promoted") == "true"
    started = pd.Timestamp(run.info.start_time, unit="ms", tz="UTC")
    parts: list[str] = []

    parts.append(f"<h1>sendtime nightly report: {html.escape(str(as_of.date()))}</h1>")
    parts.append(f"<p class='muted'>MLflow run {html.escape(run.info.run_id)} ({html.escape(run.info.run_name or '')}), "
                 f"started {started:%Y-%m-%d %H:%M} UTC; experiment {html.escape(settings.experiment)}, "
                 f"model {html.escape(settings.model_name)}</p>")
    decision = "promoted to champion" if promoted else "kept as challenger"
    parts.append("<h2>Decision</h2>")
    parts.append(_table([
        ("as-of date", str(as_of.date())),
        ("model version trained", f"v{version}"),
        ("gate decision", decision),
        ("reason", tags.get("gate_reason", "n/a")),
        ("current champion", f"v{champ_version}" if champ_version else "none"),
        ("training rows / validation rows", f"{run.data.params.get('train_rows', '?')} / {run.data.params.get('validation_rows', '?')}"),
        ("validation weeks from", str(run.data.params.get("validation_start", "n/a"))[:10]),
    ]).replace(f"<td class='num'>{decision}</td>",
               f"<td class='num'><span class='{'ok' if promoted else 'warn'}'>{decision}</span></td>"))

    parts.append("<h2>Validation metrics</h2>")
    rows = [[label, _num(metrics.get(key))] for key, label in METRICS]
    header = ["metric", f"v{version} (this run)"]
    if champ is not None and champ.info.run_id != run.info.run_id:
        header.append(f"champion v{champ_version} (its own run)")
        for r, (key, _) in zip(rows, METRICS):
            r.append(_num(champ.data.metrics.get(key)))
    parts.append(_frame(pd.DataFrame(rows, columns=header)))
    parts.append("<p class='muted'>On the run's validation weeks (later than every training row). "
                 "Lower is better except ROC AUC.</p>")

    ope = analysis.ope_values(metrics)
    parts.append("<h2>Lift over the status quo (off-policy, logged randomized sends)</h2>")
    if ope is not None:
        parts.append(f"<p>Policy open rate {_num(ope.get('snips'))} "
                     f"[{_num(ope.get('snips_lo'))}, {_num(ope.get('snips_hi'))}] vs status quo "
                     f"{_num(ope.get('status_quo_snips'))}: lift <b>{_num(ope.get('lift'), '{:+.1%}')}</b> "
                     f"[{_num(ope.get('lift_lo'), '{:+.1%}')}, {_num(ope.get('lift_hi'), '{:+.1%}')}] "
                     f"(95% bootstrap over users and days, {int(ope.get('sends', 0)):,} logged sends, "
                     f"{int(ope.get('matched', 0)):,} agreeing with the policy).</p>")
        parts.append(_img(analysis.figure_png(analysis.lift_with_interval(metrics)),
                          "Self-normalized IPS open rate of the policy and the status quo, and the relative lift"))
    else:
        parts.append("<p class='muted'>Not logged: the history holds too few sends with propensities.</p>")

    rates = {k[len("sim_rate_"):]: v for k, v in metrics.items() if k.startswith("sim_rate_")}
    if "sim_capture" in metrics:
        parts.append("<h2>Simulated world (ground truth known)</h2>")
        parts.append(f"<p>Share of the oracle's gain over the status quo captured: <b>{metrics['sim_capture']:.3f}</b>.</p>")
        if rates:
            parts.append(_img(analysis.figure_png(analysis.policy_rates(rates)),
                              "Expected open rate of each policy on the prediction date"))
        if "machine_open_precision" in metrics:
            parts.append(f"<p>Machine-open classification: precision {metrics['machine_open_precision']:.3f}, "
                         f"recall {metrics.get('machine_open_recall', float('nan')):.3f}.</p>")

    model_run = champ if champ is not None else run
    parts.append(f"<h2>Champion model v{html.escape(str(champ_version or version))}</h2>")
    for path, caption in (("plots/reliability.png", "Calibration: predicted vs observed open rate on validation weeks"),
                          ("plots/feature_importance.png", "Feature importances of the champion forest"),
                          ("plots/validation_by_hour.png", "Validation sends by local hour: observed vs predicted")):
        png = logged_png(client, model_run.info.run_id, path)
        if png is not None:
            parts.append(_img(png, caption))

    parts.append("<h2>Engagement</h2>")
    try:
        folder = current_snapshot(settings.published_dir)
        manifest = read_manifest(folder)

        uf = load_features(folder / "features")
    except (NotReady, OSError, ValueError, KeyError) as exc:
        parts.append(f"<p class='muted'>No published snapshot to read: {html.escape(str(exc))}</p>")
    else:
        sources = uf.table["source"].value_counts()
        parts.append(f"<p>Published snapshot {html.escape(folder.name)}: {len(uf.table):,} users "
                     f"({int(sources.get('model', 0)):,} with history, {int(sources.get('prior', 0)):,} on the prior), "
                     f"scored with v{html.escape(str(manifest.get('model_version')))}.</p>")
        parts.append(_img(analysis.figure_png(analysis.profile_heatmap(uf.lam)),
                          "Exposure-corrected reading rate by local weekday and hour (what the model learns from)"))
        msgs = run_messages(run, uf.table, as_of)
        if msgs is not None:
            m = analysis.message_outcomes(msgs, as_of, settings.horizon_hours)
            for fig, caption in ((analysis.engagement_heatmap(m, "opens"), "Human opens by local weekday and hour"),
                                 (analysis.engagement_heatmap(m, "clicks"), "Clicks by local weekday and hour"),
                                 (analysis.time_to_open(m), "Hours from send to first human open")):
                parts.append(_img(analysis.figure_png(fig), caption))
        parts.append(_img(analysis.figure_png(analysis.machine_open_share(uf.table)),
                          "Users by share of sends opened within minutes of delivery"))
        parts.append(_img(analysis.figure_png(analysis.history_length(uf.table)), "Users by number of sends"))

    doc = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
           f"<title>sendtime report {html.escape(str(as_of.date()))}</title><style>{CSS}</style></head><body>"
           + "\n".join(parts) + "</body></html>\n")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(out_path)
    return out_path
