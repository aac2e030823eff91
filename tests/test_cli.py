"""The command line end to end on a tiny world, --help everywhere, and one-line failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import AS_OF, make_env

COMMANDS = ["simulate", "nightly", "predict", "evaluate", "serve", "import", "import-activity", "report", "build", "roll-events"]


def run(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    full_env = {**base, **(env or {})}
    return subprocess.run([sys.executable, "-m", "sendtime.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=300)


@pytest.mark.parametrize("cmd", [None, *COMMANDS])
def test_help(cmd):
    r = run([cmd, "--help"] if cmd else ["--help"])
    assert r.returncode == 0
    assert "Usage" in r.stdout


def test_whole_pipeline_through_the_cli(tmp_path):
    env = make_env(tmp_path / "home")
    world = tmp_path / "world"
    r = run(["simulate", "--users", "300", "--days", "42", "--seed", "3", "--end", AS_OF, "--out", str(world)], env)
    assert r.returncode == 0, r.stderr
    # the state lands in SENDTIME_HOME, wherever the command runs from
    r = run(["nightly", "--events", str(world / "events.parquet"), "--users", str(world / "users.parquet"), "--as-of", AS_OF], env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "read" in r.stdout and "promoted to champion" in r.stdout
    assert (tmp_path / "home" / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    out = tmp_path / "pred.parquet"
    r = run(["predict", "--date", "2026-04-14", "--out", str(out)], env)
    assert r.returncode == 0, r.stderr
    pred = pd.read_parquet(out)
    users = pd.read_parquet(world / "users.parquet")
    assert set(pred["user_id"]) == set(users["user_id"])  # every user gets a row
    assert pred["best_hour_local"].between(0, 23).all()
    assert pred["hour_scores"].map(len).eq(24).all()
    assert set(pred["source"]) == {"model", "prior"}
    assert (pred["model_version"] == "1").all()
    r = run(["evaluate", "--world", str(world), "--predictions", str(out), "--log-run"], env)
    assert r.returncode == 0, r.stderr
    assert "oracle" in r.stdout and "capture" in r.stdout
    # the judgement lands in the nightly's run (the nightly itself knows nothing of worlds)
    from mlflow import MlflowClient

    run_id = json.loads((tmp_path / "home" / "published" / (tmp_path / "home" / "published" / "CURRENT").read_text().strip()
                         / "manifest.json").read_text())["run_id"]
    metrics = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}").get_run(run_id).data.metrics
    capture = float(r.stdout.rsplit("capture of the oracle's gain over the status quo:", 1)[1].split()[0])
    assert metrics["sim_capture"] == pytest.approx(capture, abs=1e-3)
    assert 0.0 <= metrics["machine_open_recall"] <= 1.0
    r = run(["evaluate", "--logged", "--events", str(world / "events.parquet"), "--users", str(world / "users.parquet"),
             "--since", "2026-03-30", "--as-of", AS_OF], env)
    assert r.returncode == 0, r.stderr
    assert "SNIPS" in r.stdout and "lift over the status quo" in r.stdout
    # the same night again: nothing to do, nothing promoted twice, same published outputs
    current = (tmp_path / "home" / "published" / "CURRENT").read_text()
    r = run(["nightly", "--events", str(world / "events.parquet"), "--users", str(world / "users.parquet"), "--as-of", AS_OF], env)
    assert r.returncode == 0, r.stderr
    assert "already run on identical inputs" in r.stdout
    assert (tmp_path / "home" / "published" / "CURRENT").read_text() == current
    # forced, it trains again and registers a second version
    r = run(["nightly", "--events", str(world / "events.parquet"), "--users", str(world / "users.parquet"), "--as-of", AS_OF, "--force"], env)
    assert r.returncode == 0, r.stderr
    assert "model v2" in r.stdout


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["simulate", "--out", "x", "--world", "moon"], 2, "unknown world preset"),
        (["simulate", "--out", "x", "--users", "0"], 2, "Invalid value"),
        (["nightly", "--events", "missing.parquet", "--users", "missing.parquet", "--as-of", "2026-01-01"], 2, "not found"),
        (["nightly", "--events", "missing.parquet", "--users", "u.parquet", "--as-of", "someday"], 2, "--as-of"),
        (["predict", "--date", "2026-13-45", "--out", "p.parquet"], 2, "--date"),
        (["predict", "--date", "2026-04-14", "--out", "p.parquet"], 3, "sendtime nightly"),
        (["evaluate", "--world", ".", "--predictions", "p.parquet"], 2, "not a simulated world"),
        (["evaluate", "--logged", "--events", "e.parquet"], 2, "--logged needs"),
        (["serve", "--port", "0"], 2, "Invalid value"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(tmp_path, args, code, fragment):
    r = run(args, make_env(tmp_path / "home"), cwd=tmp_path)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert fragment in r.stderr
    assert "Traceback" not in r.stderr
    if code != 2 or "Invalid value" not in fragment:
        assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1


def test_contract_break_stops_nightly(tmp_path):
    pd.DataFrame({"event_id": ["a"], "user_id": ["u"], "event_type": ["send"], "timestamp": ["2026-01-01T00:00:00Z"]}).to_csv(tmp_path / "e.csv", index=False)
    pd.DataFrame({"user_id": ["u"], "timezone": ["UTC"]}).to_csv(tmp_path / "u.csv", index=False)
    r = run(["nightly", "--events", str(tmp_path / "e.csv"), "--users", str(tmp_path / "u.csv"), "--as-of", "2026-02-01"], make_env(tmp_path / "home"))
    assert r.returncode == 2
    assert "lacks required column(s): message_id" in r.stderr


def test_import_then_nightly_reads_the_result(tmp_path):
    """A SendGrid export through `sendtime import`: counts printed, rejects written, and the
    Parquet it writes is what the contract (and the DuckDB engine) reads."""
    from sendtime.features.contract import read_events
    from sendtime.features.duckdb_engine import usable

    src = Path(__file__).parent / "formats" / "sendgrid_events.json"
    out = tmp_path / "sg" / "events.parquet"
    r = run(["import", "--format", "sendgrid", "--in", str(src), "--out", str(out)])
    assert r.returncode == 0, r.stderr
    assert "read" in r.stdout and "accepted" in r.stdout
    ev = read_events(out)
    assert ev.n_accepted > 0 and ev.n_rejected == 0
    assert usable(out) is None
    assert (tmp_path / "sg" / "events_rejects.csv").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--format", "hotmail"], "unknown format"),
    (["--format", "csv", "--column", "nonsense"], "NAME=VALUE"),
    (["--format", "sendgrid", "--send-time", "2026-04-01T00:00:00Z"], "no option send_time"),
])
def test_import_bad_options_are_one_line_errors(tmp_path, args, fragment):
    src = Path(__file__).parent / "formats" / "sendgrid_events.json"
    r = run(["import", "--in", str(src), "--out", str(tmp_path / "e.parquet"), *args])
    assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr


def test_report_command(trained, tmp_path):
    settings, _ = trained
    out = tmp_path / "r.html"
    r = run(["report", "--out", str(out)], {"SENDTIME_HOME": str(settings.home)})
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert "data:image/png;base64," in html and "<html" in html.lower()
    r = run(["report", "--out", str(tmp_path / "r.txt")], {"SENDTIME_HOME": str(settings.home)})
    assert r.returncode == 2 and ".html" in r.stderr
    r = run(["report", "--out", str(out)], {"SENDTIME_HOME": str(tmp_path / "empty")})
    assert r.returncode == 3 and "Traceback" not in r.stderr


def test_a_missing_activity_file_stops_nightly_in_one_line(tmp_path, world_dir):
    r = run(["nightly", "--events", str(world_dir / "events.parquet"), "--users", str(world_dir / "users.parquet"),
             "--as-of", "2026-04-13", "--activity", str(tmp_path / "sessions.parquet")], make_env(tmp_path / "home"))
    assert r.returncode == 2 and "activity file not found" in r.stderr and "Traceback" not in r.stderr


def test_import_activity_writes_the_activity_its_rejects_and_the_users_zones(tmp_path):
    sample = Path(__file__).resolve().parent / "formats" / "segment_calls.jsonl"
    r = run(["import-activity", "--in", str(sample), "--out", str(tmp_path / "act" / "activity.parquet"),
             "--users-out", str(tmp_path / "zones.csv")], make_env(tmp_path / "home"))
    assert r.returncode == 0, r.stderr
    assert "read 13 = activity 6 + not activity 1 + rejected 6" in r.stdout
    assert len(pd.read_parquet(tmp_path / "act" / "activity.parquet")) == 6
    assert len(pd.read_csv(tmp_path / "act" / "activity_rejects.csv")) == 6
    assert pd.read_csv(tmp_path / "zones.csv")["timezone"].tolist() == ["Europe/Berlin", "Asia/Tokyo"]
    bad = run(["import-activity", "--format", "amplitude", "--in", str(sample), "--out", str(tmp_path / "x.parquet")])
    assert bad.returncode == 2 and "unknown --format" in bad.stderr
