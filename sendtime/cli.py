"""The ``sendtime`` command line. Every command validates its input and, on failure, exits
non-zero with a one-line reason (no traceback). Anything unforeseen still ends in one line and
exit code 70, with the traceback kept in a crash file (see ``main``)."""

from __future__ import annotations

from dataclasses import replace

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Send-time optimization: simulate, train nightly, predict, evaluate and serve.",
)
console = Console(stderr=True, highlight=False)
out = Console(highlight=False)

EXIT_BAD_INPUT = 2
EXIT_NOT_READY = 3
EXIT_UNAVAILABLE = 4
EXIT_LOCKED = 5
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h): a bug, not bad input; the traceback is in a crash file

DEBUG_ENV = "SENDTIME_DEBUG"  # set (e.g. to 1) to get the raw traceback instead of a crash file


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def _settings():
    from sendtime.settings import Settings

    try:
        return Settings.from_env().prepare()
    except ValueError as exc:
        fail(str(exc))


def _date(text: Optional[str], option: str) -> Optional[pd.Timestamp]:
    """A date option as 00:00 UTC (None stays None), or a one-line refusal naming the form."""
    from sendtime.dates import parse_iso_date

    if text is None:
        return None
    try:
        return parse_iso_date(text, option)
    except ValueError as exc:
        fail(str(exc))


def _progress():
    t0 = time.time()

    from rich.markup import escape

    def say(msg: str) -> None:
        console.print(f"[dim]{time.time() - t0:7.1f}s[/] {escape(msg)}", soft_wrap=True)

    return say


def _known_errors():
    from sendtime.features.contract import ContractError
    from sendtime.serving.snapshots import NotReady
    from sendtime.training.registry import TrackingUnavailable

    return ContractError, NotReady, TrackingUnavailable


@app.command()
def simulate(
    out_dir: Path = typer.Option(..., "--out", help="Folder to write events, users and ground truth into."),
    users: int = typer.Option(2000, "--users", min=1, max=50_000_000, help="Number of users."),
    days: int = typer.Option(90, "--days", min=7, max=3650, help="Days of history."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    world: str = typer.Option("default", "--world", help="Preset: default, no-flags, one-hour, random-rhythms, flat; "
                              "or family (the seed draws every assumption, the history length included; seeds >= 1000 are held out)."),
    end: Optional[str] = typer.Option(None, "--end", help="As-of date the history ends at (YYYY-MM-DD)."),
) -> None:
    """Write a synthetic world (events, users, ground truth) in the input contract."""
    from sendtime.simulation.simulate import simulate_world, world_config, write_world

    overrides = {"n_users": users, "days": days, "seed": seed}
    if end is not None:  # WorldConfig reads `end` with pd.Timestamp, which guesses: check it here
        overrides["end"] = _date(end, "--end").strftime("%Y-%m-%d")
    try:
        if world == "family":
            from sendtime.simulation.simulate import family_config

            cfg = family_config(seed, n_users=users)
            if end is not None:
                cfg = replace(cfg, end=overrides["end"])
        else:
            cfg = world_config(world, **overrides)
    except ValueError as exc:
        fail(str(exc))
    say = _progress()
    w = simulate_world(cfg, progress=say)
    paths = write_world(w, out_dir)
    n_send = int((w.events["event_type"] == "send").sum())
    out.print(
        f"world '{world}': {len(w.users):,} users, {len(w.events):,} events ({n_send:,} sends) "
        f"from {cfg.start_ts.date()} to {cfg.end_ts.date()} (as-of), status-quo hour {w.status_quo_utc_hour:02d}:00 UTC"
    )
    if w.activity is not None:
        out.print(f"activity: {len(w.activity):,} sessions and page views (nightly --activity {paths['activity']})")
    out.print(f"written to {paths['events'].parent}")


@app.command()
def nightly(
    events: Path = typer.Option(..., "--events", help="Events: Parquet file or folder, or CSV."),
    users: Path = typer.Option(..., "--users", help="Users: Parquet or CSV with user_id, timezone."),
    as_of: str = typer.Option(..., "--as-of", help="Cutoff date YYYY-MM-DD: only events before it are used."),
    force: bool = typer.Option(False, "--force", help="Train again even if this as-of date already ran on identical inputs."),
    engine: Optional[str] = typer.Option(
        None, "--engine", help="Feature engine: auto (DuckDB for typed Parquet, else pandas), duckdb or pandas. Default: SENDTIME_ENGINE or auto."),
    activity: Optional[Path] = typer.Option(
        None, "--activity", help="Activity not tied to a message (user_id, event_type session/app_open/page_view/purchase, timestamp): Parquet or CSV."),
) -> None:
    """Validate, build features, train, gate and promote, and publish tomorrow's predictions."""
    import dataclasses

    from sendtime.nightly import AlreadyDone, run_nightly
    from sendtime.runguard import RunLocked
    from sendtime.training.train import NothingToLearn
    from sendtime.settings import ENGINES

    cutoff = _date(as_of, "--as-of")
    settings = _settings()
    if engine is not None:
        if engine.strip().lower() not in ENGINES:
            fail(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        settings = dataclasses.replace(settings, engine=engine.strip().lower())
    ContractError, NotReady, TrackingUnavailable = _known_errors()
    try:
        r = run_nightly(settings, events, users, cutoff, say=_progress(), force=force, activity_path=activity)
    except AlreadyDone as exc:
        out.print(str(exc))
        raise typer.Exit(0)
    except RunLocked as exc:
        fail(str(exc), EXIT_LOCKED)
    except TrackingUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except NothingToLearn as exc:
        fail(f"nothing trained: {exc}", EXIT_NOT_READY)
    except (ContractError, ValueError, FileNotFoundError, NotReady) as exc:
        fail(str(exc))
    m = r.metrics
    out.print("\n[bold]nightly run complete[/]")
    out.print(f"  {r.events.summary('events')}")
    out.print(f"  {r.users.summary('users')}")
    for what, path in r.rejects.items():
        out.print(f"  rejected {what} written to {path}")
    out.print(f"  validation: ROC AUC {m['roc_auc']:.4f}  log loss {m['log_loss']:.4f}  Brier {m['brier']:.4f}  ECE {m['ece']:.4f}")
    verdict = "promoted to champion" if r.promoted else "kept as challenger"
    out.print(f"  model v{r.model_version} {verdict}: {r.reason}")
    out.print(f"  predictions for {r.as_of.date()} (champion v{r.champion_version}): {r.predictions}")
    out.print(f"  MLflow run {r.run_id} in {settings.tracking_uri}")
    out.print(f"  took {r.seconds:.1f}s")


@app.command(name="roll-events")
def roll_events(
    quiet: bool = typer.Option(False, "--quiet", help="Print nothing when there was nothing to roll."),
) -> None:
    """Move the sealed segments of the event log (POST /events) into $SENDTIME_HOME/events/inbox,
    the folder the nightly run reads. Segments a running server still writes stay in the log."""
    from sendtime.serving.event_store import EventStore

    settings = _settings()
    store = EventStore(settings.home / "events")
    try:
        got = store.roll()
    except (OSError, ValueError) as exc:
        fail(f"cannot roll the event log in {store.root}: {exc}")
    if got is None:
        fail("another process is rolling the event log right now; try again in a minute", EXIT_LOCKED)
    if got.segments or not quiet:
        out.print(f"rolled {got.segments} segment(s): {got.written:,} events into {len(got.files)} file(s) under {store.inbox}"
                  + (f"; {got.doubled:,} copies already stored were dropped" if got.doubled else "")
                  + (f"; {got.torn_bytes:,} bytes of an unanswered, torn record skipped" if got.torn_bytes else ""))


@app.command(name="import")
def import_cmd(
    fmt: str = typer.Option(..., "--format", help="sendgrid, mailchimp, ses, onesignal (push, e-mail, SMS) or csv."),
    source: Path = typer.Option(..., "--in", help="The platform's export or webhook dump."),
    out_file: Path = typer.Option(..., "--out", help="Contract events Parquet to write (rejects go beside it)."),
    user_ids: Optional[str] = typer.Option(None, "--user-ids", help="email (default) or sha256 of the address (sendgrid, mailchimp, ses); external_id (default) or onesignal_id (onesignal)."),
    salt: Optional[str] = typer.Option(None, "--salt", help="Salt for --user-ids sha256."),
    send_time: Optional[str] = typer.Option(None, "--send-time", help="mailchimp: the campaign's send time, ISO 8601 with offset."),
    column: list[str] = typer.Option([], "--column", help="csv: CONTRACT=SOURCE column name (repeatable)."),
    event_type: list[str] = typer.Option([], "--event-type", help="csv: SOURCE=CONTRACT event type value (repeatable)."),
    timestamp_format: Optional[str] = typer.Option(None, "--timestamp-format", help="csv: strftime format of the timestamps."),
    timezone: Optional[str] = typer.Option(None, "--timezone", help="csv: IANA zone of naive timestamps."),
) -> None:
    """Turn an email platform's events (see docs/importers.md) into the event contract."""
    from sendtime.features.contract import ContractError
    from sendtime.features.importers import import_events

    def pairs(items: list[str], what: str) -> dict[str, str]:
        out_map = {}
        for item in items:
            if "=" not in item or not item.split("=", 1)[0].strip():
                fail(f"{what} must look like NAME=VALUE, got {item!r}")
            k, v = item.split("=", 1)
            out_map[k.strip()] = v.strip()
        return out_map

    options = {k: v for k, v in {"user_ids": user_ids, "salt": salt, "send_time": send_time,
                                 "timestamp_format": timestamp_format, "timezone": timezone}.items() if v is not None}
    if column:
        options["columns"] = pairs(column, "--column")
    if event_type:
        options["event_types"] = pairs(event_type, "--event-type")
    try:
        res = import_events(fmt, source, out_file, **options)
    except (ContractError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    out.print(f"{res['format']}: read {res['read']:,} = accepted {res['accepted']:,} + rejected {res['rejected']:,}")
    for reason, n in sorted(res["reasons"].items(), key=lambda kv: -kv[1]):
        out.print(f"  rejected {n:,}: {reason}")
    out.print(f"  events -> {res['events']}\n  rejects -> {res['rejects']}")


@app.command()
def report(
    out_file: Path = typer.Option(Path("out/report.html"), "--out", help="HTML file to write (self-contained)."),
) -> None:
    """A self-contained HTML report of the latest nightly run: metrics, lift, calibration, engagement."""
    settings = _settings()
    ContractError, NotReady, TrackingUnavailable = _known_errors()
    from sendtime.report import write_report

    if out_file.suffix.lower() not in (".html", ".htm"):
        fail(f"--out must be an .html file, got {out_file}")
    try:
        path = write_report(settings, out_file)
    except NotReady as exc:
        fail(str(exc), EXIT_NOT_READY)
    except TrackingUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    out.print(f"report of the latest nightly run -> {path}")


@app.command()
def build(
    version: Optional[str] = typer.Option(None, "--version", help="Bento version (default: generated)."),
) -> None:
    """Build the service's Bento (`bentoml build` with bentofile.yaml and pinned runtime dependencies)."""
    from sendtime.bento import build as build_bento

    if version is not None and not version.replace("-", "").replace("_", "").replace(".", "").isalnum():
        fail(f"--version may hold letters, digits, '.', '-' and '_' only, got {version!r}")
    home = os.environ.get("BENTOML_HOME") or str(_settings().bentoml_home)
    try:
        tag = build_bento(bentoml_home=home, version=version)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        fail(str(exc))
    out.print(f"built Bento {tag} in the Bento store {home}")
    out.print(f"  serve it:        BENTOML_HOME={home} bentoml serve {tag} --host 127.0.0.1 --port 3000")
    out.print(f"  containerize it: BENTOML_HOME={home} bentoml containerize {tag}")


@app.command(name="import-activity")
def import_activity_cmd(
    fmt: str = typer.Option("segment", "--format", help="segment (Segment or RudderStack calls as JSON lines)."),
    source: Path = typer.Option(..., "--in", help="The calls, one JSON object per line (.jsonl or .jsonl.gz)."),
    out_file: Path = typer.Option(..., "--out", help="Activity Parquet to write (rejects go beside it)."),
    users_out: Optional[Path] = typer.Option(None, "--users-out", help="Also write user_id, timezone from the calls' device zones (CSV or Parquet)."),
    user_ids: str = typer.Option("userId", "--user-ids", help="userId (default), email or sha256 of traits.email (as the mail importers' --user-ids)."),
    salt: str = typer.Option("", "--salt", help="Salt for --user-ids sha256."),
) -> None:
    """Turn a product-analytics stream (see docs/importers.md) into the activity table for nightly --activity."""
    from sendtime.features.contract import ContractError
    from sendtime.features.importers.segment import import_segment

    if fmt.strip().lower() not in ("segment", "rudderstack"):
        fail(f"unknown --format {fmt!r}: use segment (RudderStack writes the same calls)")
    try:
        res = import_segment(source, user_ids=user_ids, salt=salt)
    except (ContractError, OSError, ValueError) as exc:
        fail(str(exc))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    res.activity.to_parquet(tmp, index=False)
    tmp.replace(out_file)
    rejects = out_file.with_name(f"{out_file.stem}_rejects.csv")
    res.rejects.to_csv(rejects, index=False)
    out.print(res.summary())
    for reason, n in res.rejects["reason"].value_counts().items():
        out.print(f"  rejected {n:,}: {reason}")
    out.print(f"  activity -> {out_file}\n  rejects -> {rejects}")
    if users_out is not None:
        users_out.parent.mkdir(parents=True, exist_ok=True)
        if users_out.suffix.lower() == ".csv":
            res.users.to_csv(users_out, index=False)
        else:
            res.users.to_parquet(users_out, index=False)
        out.print(f"  users ({len(res.users):,} with a device zone) -> {users_out}")


@app.command()
def predict(
    date: str = typer.Option(..., "--date", help="Local date to score, YYYY-MM-DD."),
    out_file: Path = typer.Option(..., "--out", help="Parquet file to write."),
    events: Optional[Path] = typer.Option(None, "--events", help="Rebuild features from these events instead of the last nightly run."),
    users: Optional[Path] = typer.Option(None, "--users", help="Users table (with --events)."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Feature cutoff YYYY-MM-DD (with --events); default: the date."),
    activity: Optional[Path] = typer.Option(None, "--activity", help="Activity table (with --events), as given to the nightly."),
) -> None:
    """Score the 24 local hours of a date for every user; write best hour and all scores."""
    day_start = _date(date, "--date")
    cutoff = _date(as_of, "--as-of")
    if cutoff is None:
        cutoff = day_start
    day = day_start.date()
    settings = _settings()
    ContractError, NotReady, TrackingUnavailable = _known_errors()
    if (events is None) != (users is None):
        fail("--events and --users go together")
    if activity is not None and events is None:
        fail("--activity needs --events and --users (without them the published features are used)")
    try:
        from sendtime.serving.model_store import load_champion, load_scorer
        from sendtime.serving.scoring import Scorer

        if events is None:
            scorer, _ = load_scorer(settings)
        else:
            from sendtime.features.contract import read_events, read_users
            from sendtime.features.engagement import build_user_features
            from sendtime.features.messages import build_messages
            from sendtime.serving.model_store import champion_profile_params

            ev, us = read_events(events), read_users(users)
            console.print(ev.summary("events"))
            console.print(us.summary("users"))
            msgs = build_messages(ev.accepted.loc[ev.accepted["timestamp"] < cutoff], us.accepted, settings.default_timezone)
            act = None
            if activity is not None:
                from sendtime.features.activity import load_activity

                act = load_activity(activity, us.accepted, settings.default_timezone, say=console.print)
            uf = build_user_features(msgs, us.accepted, cutoff, champion_profile_params(settings), settings.default_timezone,
                                     activity=act)
            model, version, columns = load_champion(settings.tracking_uri, settings.registry_uri, settings.model_name)
            scorer = Scorer(model=model, model_version=version, input_columns=columns, features=uf)
        preds = scorer.predict_day(day)
    except NotReady as exc:
        fail(str(exc), EXIT_NOT_READY)
    except (ContractError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    preds.to_parquet(out_file, index=False)
    by_source = preds["source"].value_counts().to_dict()
    out.print(f"{len(preds):,} users scored for {day} with model v{scorer.model_version} ({by_source}) -> {out_file}")


@app.command()
def evaluate(
    world: Optional[Path] = typer.Option(None, "--world", help="Folder written by `sendtime simulate` (with --predictions)."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Parquet written by `sendtime predict` or the nightly run."),
    logged: bool = typer.Option(False, "--logged", help="Off-policy estimate from logged sends with propensities (IPS, SNIPS, lift, bootstrap CIs)."),
    holdout: bool = typer.Option(False, "--holdout", help="The live service's lift on its holdout (control group), per outcome, with bootstrap CIs (with --events, --users, --since, --as-of)."),
    events: Optional[Path] = typer.Option(None, "--events", help="Events with send propensities (with --logged)."),
    users: Optional[Path] = typer.Option(None, "--users", help="Users table (with --logged)."),
    since: Optional[str] = typer.Option(None, "--since", help="Start of the evaluated period, YYYY-MM-DD; the policy uses features as of it (with --logged)."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="End of the logged period, YYYY-MM-DD (with --logged)."),
    status_quo_hour: Optional[int] = typer.Option(None, "--status-quo-hour", min=0, max=23, help="UTC hour of the status quo (default: the most frequent send hour)."),
    activity: Optional[Path] = typer.Option(None, "--activity", help="Activity table, as given to the nightly (with --logged)."),
    log_run: bool = typer.Option(False, "--log-run", help="Also log the judgement (capture, policy rates, machine-open precision/recall) to the MLflow run of the published snapshot (with --world)."),
) -> None:
    """Judge recommendations: against a simulated world's truth, off-policy on logged sends, or on the live holdout."""
    since_ts, as_of_ts = _date(since, "--since"), _date(as_of, "--as-of")
    ContractError, NotReady, TrackingUnavailable = _known_errors()
    settings = _settings()
    try:
        if logged and holdout:
            fail("give --logged or --holdout, not both")
        if holdout:
            if not (events and users and since_ts is not None and as_of_ts is not None):
                fail("--holdout needs --events, --users, --since and --as-of")
            from sendtime.holdout import evaluate_holdout

            hrep = evaluate_holdout(settings, events, users, since_ts, as_of_ts, say=_progress())
            for line in hrep.lines():
                out.print(line)
            return
        if logged:
            if not (events and users and since_ts is not None and as_of_ts is not None):
                fail("--logged needs --events, --users, --since and --as-of")
            from sendtime.offline import evaluate_logged

            rep = evaluate_logged(settings, events, users, since_ts, as_of_ts, status_quo_hour, say=_progress(),
                                  activity_path=activity)
            for line in rep.lines():
                out.print(line)
            return
        if not (world and predictions):
            fail("give --world and --predictions, or --logged with --events, --users, --since, --as-of")
        from sendtime.simulation.evaluate import evaluate_predictions, log_world_evaluation

        if log_run:
            import pandas as pd

            from sendtime.serving.snapshots import current_snapshot, read_manifest

            manifest = read_manifest(current_snapshot(settings.published_dir))
            rep = log_world_evaluation(settings.tracking_uri, manifest["run_id"], world, predictions,
                                       pd.Timestamp(manifest["as_of"]))
            out.print(f"logged to MLflow run {manifest['run_id']} (the published snapshot's nightly run)")
        else:
            rep = evaluate_predictions(world, predictions)
    except NotReady as exc:
        fail(str(exc), EXIT_NOT_READY)
    except (ContractError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    out.print(f"date {rep.date}, {rep.users:,} users")
    out.print(rep.table().to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    out.print(f"[bold]capture of the oracle's gain over the status quo: {rep.capture:.3f}[/]")


@app.command()
def suite(
    out_dir: Path = typer.Option(Path("reports"), "--out", help="Folder for capture.md, CSVs and capture.png."),
    users: int = typer.Option(20_000, "--users", min=100, max=5_000_000, help="Users per world."),
    days: int = typer.Option(180, "--days", min=21, max=3650, help="Days of history per world."),
    seeds: str = typer.Option("0,1", "--seeds", help="Comma-separated seeds."),
    worlds: str = typer.Option("default,no-flags,one-hour,random-rhythms", "--worlds",
                               help="Comma-separated world presets ('' for none); '<preset>-without-activity' is the "
                                    "same world with its activity withheld, '<preset>-click' trains for clicks and is judged on them."),
    family: int = typer.Option(0, "--family", min=0, max=1000, help="Family members to add, seeds 0..N-1 (tuned on)."),
    held_out: int = typer.Option(0, "--held-out", min=0, max=1000,
                                 help="Held-out family members to add, seeds 1000..1000+N-1 (never used for tuning)."),
) -> None:
    """Proof of lift: simulate each world, run the nightly job, judge against the truth and a reference policy."""
    from sendtime.simulation.simulate import HELD_OUT_SEED_FROM, PRESETS
    from sendtime.simulation.suite import parse_world, run_suite

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        fail(f"--seeds must be comma-separated integers, got {seeds!r}")
    world_list = [w.strip() for w in worlds.split(",") if w.strip()]
    unknown = [w for w in world_list if parse_world(w).preset not in PRESETS]
    family_seeds = list(range(family)) + list(range(HELD_OUT_SEED_FROM, HELD_OUT_SEED_FROM + held_out))
    if unknown or (world_list and not seed_list) or not (world_list or family_seeds):
        fail(f"unknown or empty --worlds {unknown or worlds!r} (and no --family/--held-out); choose from {', '.join(PRESETS)}")
    summary = run_suite(world_list, seed_list, users, days, out_dir, say=_progress(), family_seeds=family_seeds)
    out.print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    out.print(f"table: {out_dir / 'capture.md'}  plot: {out_dir / 'capture.png'}")


@app.command()
def replay(
    out_dir: Path = typer.Option(Path("reports/replay"), "--out", help="Folder for replay.md, replay.csv and replay.png."),
    designs: str = typer.Option("ema,mrt,ema-null,mrt-null", "--designs",
                                help="Comma-separated trial designs (ema, mrt; -null: answers shuffled, the hour means nothing)."),
    sources: str = typer.Option("git,studentlife,enron,radoslaw", "--sources",
                                help="Comma-separated real activity sources (git, studentlife, enron, radoslaw)."),
    realdata: Optional[Path] = typer.Option(None, "--realdata", help="Real-data folder (default: SENDTIME_REALDATA or ../shared/realdata)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the prompt times."),
) -> None:
    """Randomized prompts replayed on real people's activity: sendtime's hour scores vs the hour-blind baseline."""
    from sendtime.simulation.real_replay import DESIGNS, run_replays
    from sendtime.simulation.real_rhythms import SOURCES, default_realdata_dir

    d_list = [d.strip() for d in designs.split(",") if d.strip()]
    s_list = [s.strip() for s in sources.split(",") if s.strip()]
    bad = [d for d in d_list if d not in DESIGNS] + [s for s in s_list if s not in SOURCES]
    if bad or not d_list or not s_list:
        fail(f"unknown or empty design/source {bad or (designs, sources)}; designs: {', '.join(DESIGNS)}; sources: {', '.join(SOURCES)}")
    root = realdata or default_realdata_dir()
    if not root.is_dir():
        fail(f"real-data folder {root} does not exist (pass --realdata or set SENDTIME_REALDATA)")
    rows = run_replays(d_list, s_list, root, out_dir, say=_progress(), seed=seed)
    out.print(rows[["design", "source", "group", "people", "policy", "auc_sendtime", "auc_hour_blind", "auc_within_person"]]
              .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    out.print(f"table: {out_dir / 'replay.md'}  plot: {out_dir / 'replay.png'}")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(3000, "--port", min=1, max=65535, help="Port."),
) -> None:
    """Start the HTTP API (BentoML) with the champion model and the published features."""
    settings = _settings()
    from sendtime.serving.snapshots import NotReady, current_snapshot

    try:
        current_snapshot(settings.published_dir)
    except NotReady as exc:
        fail(str(exc), EXIT_NOT_READY)
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "bentoml", "serve", "sendtime.serving.service:SendTime", "--host", host, "--port", str(port)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    console.print(f"serving on http://{host}:{port} (docs at /docs)")
    raise typer.Exit(_hand_over(cmd, env, str(root)))


def _hand_over(cmd: list[str], env: dict[str, str], cwd: str) -> int:
    """Become the server: on POSIX exec it, so the PID a supervisor holds is the server's and
    SIGTERM reaches it (a child would be left running, holding the port). Without exec, run it
    as a child and pass SIGTERM/SIGINT on."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.chdir(cwd)
        os.execve(cmd[0], cmd, env)  # does not return
    return _run_forwarding_signals(cmd, env, cwd)


def _run_forwarding_signals(cmd: list[str], env: Optional[dict[str, str]], cwd: str) -> int:
    """Run ``cmd`` as a child until it ends, forwarding SIGTERM/SIGINT so stopping us stops it;
    its exit status comes back (killed by signal N: 128 + N, as a shell reports it)."""
    import signal

    child: list[subprocess.Popen] = []
    pending: list[int] = []  # signals that came before the child existed

    def forward(signum: int, _frame) -> None:
        if not child:
            pending.append(signum)
        elif child[0].poll() is None:
            try:
                child[0].send_signal(signum)
            except (OSError, ValueError):  # gone already, or a signal this platform cannot send
                pass

    previous = {}
    for name in ("SIGTERM", "SIGINT"):
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, forward)
    try:
        child.append(subprocess.Popen(cmd, env=env, cwd=cwd))
        for signum in pending:
            forward(signum, None)
        rc = child[0].wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return rc if rc >= 0 else 128 - rc


_SECRET_OPTIONS = ("--salt",)


def _command_line(argv: list[str]) -> str:
    """The command line for a crash file, with secret option values masked."""
    import shlex

    shown, hide_next = [], False
    for arg in argv:
        if hide_next:
            shown.append("***")
            hide_next = False
        elif arg in _SECRET_OPTIONS:
            shown.append(arg)
            hide_next = True
        elif arg.split("=", 1)[0] in _SECRET_OPTIONS and "=" in arg:
            shown.append(arg.split("=", 1)[0] + "=***")
        else:
            shown.append(arg)
    return shlex.join(["sendtime", *shown])


def _command_name(argv: list[str]) -> str:
    """The subcommand being run (the first word that is not an option), safe for a file name."""
    import re

    name = next((a for a in argv if not a.startswith("-")), "sendtime")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "sendtime"


def _crash_dirs() -> list[Path]:
    """Where crash files may go: the state folder's runs dir, then the system temp dir. Reading
    the settings may itself be what is broken, so that must not fail here."""
    import tempfile

    dirs = []
    try:
        from sendtime.settings import Settings

        dirs.append(Settings.from_env().runs_dir)
    except Exception:
        pass
    dirs.append(Path(tempfile.gettempdir()))
    return dirs


def _write_crash_file(text: str, command: str, stamp: str) -> Optional[Path]:
    """Write ``text`` to a new crash file; its path, or None if no folder would take it."""
    for folder in _crash_dirs():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(100):
                path = folder / f"crash-{stamp}-{command}{f'-{n}' if n else ''}.txt"
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    continue
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(text)
                return path
        except OSError:
            continue
    return None


def _report_crash(exc: BaseException) -> int:
    """Keep the traceback of an unexpected exception in a crash file and say so in one line."""
    import datetime
    import traceback

    from rich.markup import escape

    argv = sys.argv[1:]
    command = _command_name(argv)
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = "(unknown)"
    text = (f"sendtime {command}: unexpected {type(exc).__name__}\n"
            f"command line: {_command_line(argv)}\n"
            f"working directory: {cwd}\n"
            f"time (UTC): {now.isoformat(timespec='seconds')}\n"
            f"python: {sys.version.split()[0]} ({sys.executable})\n\n{trace}")
    path = _write_crash_file(text, command, stamp)
    what = " ".join(f"{type(exc).__name__}: {exc}".split())
    if len(what) > 300:
        what = what[:297] + "..."
    if path is None:  # nowhere to keep it: the traceback goes to stderr rather than nowhere
        sys.stderr.write(trace)
        where = "no crash file could be written; traceback above"
    else:
        where = f"full traceback in {path}"
    console.print(f"[bold red]error:[/] internal error in 'sendtime {escape(command)}': {escape(what)}; {escape(where)}",
                  soft_wrap=True)
    return EXIT_INTERNAL


def _interrupted(exc: BaseException) -> bool:
    """Whether this exit is typer's answer to Ctrl-C (Exit(130) raised from KeyboardInterrupt)."""
    seen = exc
    for _ in range(5):
        seen = seen.__cause__ or seen.__context__
        if seen is None:
            return False
        if isinstance(seen, KeyboardInterrupt):
            return True
    return False


def main() -> None:
    """The console entry point: ``app`` plus a last line of defence. An exception no command
    turned into a one-line ``fail`` becomes one line and exit code 70, its traceback kept in a
    crash file. Usage errors, --help and typer.Exit codes are left as they are; Ctrl-C stays
    exit 130 and says so in one line.
    With SENDTIME_DEBUG set the exception is raised as is. (Tests invoking ``app`` through
    CliRunner never come here, so they still see the real exception.)"""
    if os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off"):
        app()
        return
    try:
        app()
    except SystemExit as exc:
        if exc.code == EXIT_INTERRUPTED and _interrupted(exc):
            console.print("interrupted", soft_wrap=True)
        raise
    except KeyboardInterrupt:  # outside a command (typer handles it inside one)
        console.print("interrupted", soft_wrap=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        try:
            code = _report_crash(exc)
        except Exception:  # the reporting itself broke: never hide the original
            import traceback

            traceback.print_exception(type(exc), exc, exc.__traceback__)
            code = EXIT_INTERNAL
        sys.exit(code)


if __name__ == "__main__":
    main()
