"""`write_report`: one self-contained HTML file about the latest nightly run."""

from __future__ import annotations

import re

import pytest


def test_report_on_trained_home(trained, tmp_path):
    from sendtime.report import write_report

    settings, result = trained
    out = write_report(settings, tmp_path / "report" / "nightly.html")
    assert out == tmp_path / "report" / "nightly.html"
    assert sorted(p.name for p in out.parent.iterdir()) == ["nightly.html"]
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert f"v{result.model_version}" in text
    assert result.run_id in text
    for label in ("ROC AUC", "log loss", "Brier", "ECE"):
        assert label in text
    assert f"{result.metrics['roc_auc']:.4f}" in text and f"{result.metrics['log_loss']:.4f}" in text
    assert result.reason in text
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', text)) >= 4
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text, re.I)
    assert "<link" not in text and "<script" not in text


def test_report_not_ready_on_empty_home(tmp_path):
    from sendtime.report import write_report
    from sendtime.settings import Settings
    from sendtime.serving.snapshots import NotReady

    home = tmp_path / "empty"
    home.mkdir()
    settings = Settings.from_env({"SENDTIME_HOME": str(home)})
    with pytest.raises(NotReady) as err:
        write_report(settings, tmp_path / "r.html")
    assert "\n" not in str(err.value) and "nightly" in str(err.value)
    assert not (tmp_path / "r.html").exists()
    assert list(home.iterdir()) == []
