"""The last line of defence: an exception no command expected ends in one line and exit code 70
(EX_SOFTWARE), the traceback kept in a crash file; SENDTIME_DEBUG=1 shows it raw instead."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sendtime.cli import EXIT_INTERNAL, app
from tests.conftest import make_env

NIGHTLY = ["nightly", "--events", "e.parquet", "--users", "u.parquet", "--as-of", "2026-02-01"]
# the console entry point, with one function made to fail the way a bug would
BROKEN = "import sendtime.cli as c, sendtime.nightly as n; {patch}; c.main()"
DIVIDE_BY_ZERO = "n.run_nightly = lambda *a, **k: 1/0"
CRASH_LINE = re.compile(r"^error: internal error in 'sendtime nightly': ZeroDivisionError: division by zero; "
                        r"full traceback in (?P<path>\S+crash-\d{8}T\d{6}Z-nightly\.txt)$")


def run(code: str | None, args: list[str], home: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "SENDTIME_DEBUG")}
    env.update(make_env(home), **extra)
    if code is None:  # the installed console script itself
        script = Path(sys.executable).with_name("sendtime")
        cmd = [str(script)] if script.exists() else [sys.executable, "-m", "sendtime.cli"]
    else:
        cmd = [sys.executable, "-c", code]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, cwd=home.parent, timeout=300)


def crash_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("crash-*.txt")) if folder.is_dir() else []


def test_unexpected_exception_is_one_line_exit_70_and_a_crash_file(tmp_path):
    home = tmp_path / "home"
    r = run(BROKEN.format(patch=DIVIDE_BY_ZERO), NIGHTLY, home)
    assert r.returncode == EXIT_INTERNAL == 70, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    m = CRASH_LINE.match(lines[0])
    assert m, lines[0]
    path = Path(m["path"])
    assert path.parent == home / "runs"  # the state folder's runs dir
    assert crash_files(home / "runs") == [path]
    text = path.read_text()
    assert "command line: sendtime nightly --events e.parquet --users u.parquet --as-of 2026-02-01" in text
    assert "Traceback (most recent call last):" in text
    assert "ZeroDivisionError: division by zero" in text.splitlines()[-1]
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.slow  # a fresh interpreter each; the main path is tested above
def test_crash_file_falls_back_to_temp_when_settings_cannot_be_read(tmp_path):
    """If reading the settings is what breaks, the crash file still gets written (temp dir)."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    tmp.mkdir()
    patch = ("import sendtime.settings as s; "
             "s.Settings.from_env = classmethod(lambda cls, env=None: (_ for _ in ()).throw(RuntimeError('settings broken')))")
    r = run(BROKEN.format(patch=patch), NIGHTLY, home, TMPDIR=str(tmp))
    assert r.returncode == EXIT_INTERNAL, (r.stdout, r.stderr)
    [line] = r.stderr.splitlines()
    assert "RuntimeError: settings broken" in line
    [path] = crash_files(tmp)
    assert str(path) in line and "RuntimeError: settings broken" in path.read_text()
    assert not (home / "runs").exists()


@pytest.mark.slow  # a fresh interpreter each; the main path is tested above
def test_secret_option_values_stay_out_of_the_crash_file(tmp_path):
    home = tmp_path / "home"
    code = BROKEN.format(patch="import sendtime.features.importers as i; i.import_events = lambda *a, **k: 1/0")
    r = run(code, ["import", "--format", "sendgrid", "--in", "x.json", "--out", "o.parquet", "--salt", "s3cret"], home)
    assert r.returncode == EXIT_INTERNAL, r.stderr
    [path] = crash_files(home / "runs")
    assert path.name.endswith("-import.txt")
    text = path.read_text()
    assert "s3cret" not in text and "--salt '***'" in text


def test_debug_env_shows_the_traceback_instead(tmp_path):
    home = tmp_path / "home"
    r = run(BROKEN.format(patch=DIVIDE_BY_ZERO), NIGHTLY, home, SENDTIME_DEBUG="1")
    assert r.returncode == 1, r.stderr
    assert "Traceback (most recent call last):" in r.stderr
    assert r.stderr.rstrip().splitlines()[-1] == "ZeroDivisionError: division by zero"
    assert crash_files(home / "runs") == []


def test_ctrl_c_is_exit_130_in_one_line(tmp_path):
    home = tmp_path / "home"
    code = BROKEN.format(patch="exec('def stop(*a, **k):\\n    raise KeyboardInterrupt'); n.run_nightly = stop")
    r = run(code, NIGHTLY, home)
    assert r.returncode == 130, r.stderr
    assert r.stderr.splitlines() == ["interrupted"]
    assert crash_files(home / "runs") == []


@pytest.mark.slow  # each a fresh interpreter; the same exits are covered in-process by test_cli*.py
@pytest.mark.parametrize("args, code, fragment", [
    (["--help"], 0, "Usage"),
    (["nightly", "--help"], 0, "Usage"),
    (["nightly"], 2, "Missing option"),
    (["nightly", *NIGHTLY[1:-1], "01/02/2026"], 2, "YYYY-MM-DD"),
    (["no-such-command"], 2, "No such command"),
    (["serve", "--port", "0"], 2, "Invalid value"),
    (["predict", "--date", "2026-04-14", "--out", "p.parquet"], 3, "sendtime nightly"),  # typer.Exit(3)
])
def test_the_entry_point_leaves_ordinary_exits_alone(tmp_path, args, code, fragment):
    home = tmp_path / "home"
    r = run(None, args, home)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert fragment in r.stdout + r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    assert crash_files(home / "runs") == []


def test_cli_runner_still_sees_the_real_exception(tmp_path, monkeypatch):
    """Tests that invoke ``app`` directly are not behind the last line of defence."""
    import sendtime.cli as cli
    import sendtime.nightly as nightly

    monkeypatch.setattr(cli, "_settings", lambda: object())
    monkeypatch.setattr(nightly, "run_nightly", lambda *a, **k: 1 / 0)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, NIGHTLY)
    assert isinstance(r.exception, ZeroDivisionError)
    assert r.exit_code == 1
