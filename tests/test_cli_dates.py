"""Dates on the command line mean one thing: ISO 8601 ``YYYY-MM-DD`` for every date option of
every command, anything else refused in one line that shows the expected form."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from sendtime.cli import EXIT_BAD_INPUT, app
from sendtime.dates import parse_iso_date
from sendtime.nightly import parse_as_of

FEB_1 = pd.Timestamp("2026-02-01 00:00", tz="UTC")

# every date option of every command, with the other arguments it needs to get that far
DATE_OPTIONS = {
    "nightly --as-of": (["nightly", "--events", "e.parquet", "--users", "u.parquet", "--as-of"], "--as-of"),
    "predict --date": (["predict", "--out", "p.parquet", "--date"], "--date"),
    "predict --as-of": (["predict", "--out", "p.parquet", "--date", "2026-02-01", "--as-of"], "--as-of"),
    "evaluate --since": (["evaluate", "--logged", "--events", "e.parquet", "--users", "u.parquet", "--as-of", "2026-02-08", "--since"], "--since"),
    "evaluate --as-of": (["evaluate", "--logged", "--events", "e.parquet", "--users", "u.parquet", "--since", "2026-02-01", "--as-of"], "--as-of"),
    "simulate --end": (["simulate", "--out", "w", "--end"], "--end"),
}

REFUSED = [
    "01/02/2026",  # 1 February or 2 January? pd.Timestamp said 2 January
    "02/01/2026",
    "31/10/2026",  # pd.Timestamp said 31 October
    "10/31/2026",
    "2026/02/01",
    "01.02.2026",
    "2026-2-1",
    "2026-02-1",
    "2026-02-30",
    "2026-13-01",
    "2026-00-10",
    "0000-01-01",
    "20260201",
    "2026-02-01T00:00",
    "2026-02-01 00:00",
    "2026-02-01Z",
    " 2026-02-01",
    "26-02-01",
    "Feb 1 2026",
    "today",
    "",
]


@pytest.fixture()
def runner(tmp_path, monkeypatch):
    """A CliRunner in an empty folder with a private state home (nothing may be written there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SENDTIME_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "home" / "bentoml"))
    return CliRunner()


@pytest.mark.parametrize("bad", REFUSED)
@pytest.mark.parametrize("where", list(DATE_OPTIONS))
def test_non_iso_dates_are_refused_in_one_line(runner, tmp_path, where, bad):
    args, option = DATE_OPTIONS[where]
    r = runner.invoke(app, [*args, bad])
    assert r.exit_code == EXIT_BAD_INPUT, (r.output, r.exception)
    assert isinstance(r.exception, SystemExit)  # a refusal, not a crash
    lines = r.stderr.splitlines()
    assert lines == [f"error: {option} must be a date in ISO 8601 form YYYY-MM-DD (e.g. 2026-10-31), got {bad!r}"]
    assert r.stdout == ""
    assert not (tmp_path / "home").exists()  # refused before any state is touched
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("bad", REFUSED)
def test_parser_refuses_the_same(bad):
    with pytest.raises(ValueError, match=r"^--when must be a date in ISO 8601 form YYYY-MM-DD \(e\.g\. 2026-10-31\), got "):
        parse_iso_date(bad, "--when")
    with pytest.raises(ValueError, match=r"^--as-of must be a date in ISO 8601 form YYYY-MM-DD"):
        parse_as_of(bad)


def test_iso_date_is_midnight_utc_of_that_day():
    ts = parse_iso_date("2026-02-01", "--date")
    assert ts == FEB_1 and str(ts.tz) == "UTC"
    assert (ts.year, ts.month, ts.day, ts.hour, ts.minute) == (2026, 2, 1, 0, 0)
    assert parse_as_of("2026-02-01") == FEB_1
    assert parse_iso_date("2024-02-29", "--date") == pd.Timestamp("2024-02-29", tz="UTC")  # a real leap day


def test_nightly_as_of_means_1_february(runner, monkeypatch):
    import sendtime.cli as cli
    import sendtime.nightly as nightly

    seen = {}

    def fake_run_nightly(settings, events, users, as_of, **kwargs):
        seen["as_of"] = as_of
        raise ValueError("stop here")

    monkeypatch.setattr(cli, "_settings", lambda: object())
    monkeypatch.setattr(nightly, "run_nightly", fake_run_nightly)
    r = runner.invoke(app, ["nightly", "--events", "e.parquet", "--users", "u.parquet", "--as-of", "2026-02-01"])
    assert r.exit_code == EXIT_BAD_INPUT and "stop here" in r.stderr
    assert seen["as_of"] == FEB_1


def test_predict_date_and_as_of_mean_1_february(runner, monkeypatch, tmp_path):
    import sendtime.serving.model_store as model_store

    import sendtime.cli as cli

    seen = {}

    class FakeScorer:
        model_version = "9"

        def predict_day(self, day):
            seen["day"] = day
            return pd.DataFrame({"user_id": ["u"], "best_hour_local": [9], "source": ["model"]})

    monkeypatch.setattr(cli, "_settings", lambda: object())
    monkeypatch.setattr(model_store, "load_scorer", lambda settings: (FakeScorer(), None))
    r = runner.invoke(app, ["predict", "--date", "2026-02-01", "--out", str(tmp_path / "p.parquet")])
    assert r.exit_code == 0, (r.output, r.exception)
    assert seen["day"] == FEB_1.date()
    assert "for 2026-02-01" in " ".join(r.stdout.split())


def test_evaluate_since_and_as_of_mean_what_they_say(runner, monkeypatch):
    import sendtime.cli as cli
    import sendtime.offline as offline

    seen = {}

    class Report:
        def lines(self):
            return ["fake report"]

    def fake_evaluate_logged(settings, events, users, since, as_of, status_quo_hour, say=None, activity_path=None):
        seen.update(since=since, as_of=as_of)
        return Report()

    monkeypatch.setattr(cli, "_settings", lambda: object())
    monkeypatch.setattr(offline, "evaluate_logged", fake_evaluate_logged)
    r = runner.invoke(app, ["evaluate", "--logged", "--events", "e.parquet", "--users", "u.parquet",
                            "--since", "2026-02-01", "--as-of", "2026-03-02"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert seen == {"since": FEB_1, "as_of": pd.Timestamp("2026-03-02", tz="UTC")}


def test_simulate_end_means_1_february(runner, tmp_path):
    r = runner.invoke(app, ["simulate", "--users", "20", "--days", "7", "--end", "2026-02-01", "--out", str(tmp_path / "w")])
    assert r.exit_code == 0, (r.output, r.exception)
    assert "from 2026-01-25 to 2026-02-01 (as-of)" in " ".join(r.stdout.split())  # rich wraps at 80 columns
    sends = pd.read_parquet(tmp_path / "w" / "events.parquet")["timestamp"]
    assert sends.max() < FEB_1 <= sends.max() + pd.Timedelta(days=7)
