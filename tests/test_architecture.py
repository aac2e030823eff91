"""The house stays as drawn: import-linter's contracts (.importlinter) and one namespace."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """Layers (entry points > serving | training > features > settings), serving never imports
    training, and no import loop inside features: a broken contract names the import."""
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and proc.stdout.count("KEPT") >= 4


def test_one_top_level_name_in_site_packages():
    """Installing sendtime adds `sendtime` and nothing generic (no `features`, `serving`, ...)."""
    assert distribution("sendtime").read_text("top_level.txt").split() == ["sendtime"]


def test_product_imports_only_the_namespace(tmp_path):
    """Every module of the product loads from `sendtime.*`: not one leftover `features.x`
    import (which would load a second copy of a module from the checkout's root folders)."""
    code = ("import sys, sendtime.cli, sendtime.nightly, sendtime.serving.service, sendtime.simulation.suite\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('features', 'training', 'serving'))\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
