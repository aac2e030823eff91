"""The documentation site builds with --strict (every link and page resolves), and its API
reference is the service's own OpenAPI document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_site_builds_strict_with_the_api_reference(tmp_path):
    site = tmp_path / "site"
    mkdocs = Path(sys.executable).parent / "mkdocs"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([str(mkdocs), "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    spec = json.loads((site / "openapi.json").read_text())
    api = (site / "api" / "index.html").read_text()
    for path in spec["paths"]:
        assert f"<code>{path}</code>" in api, path
    for page in ("architecture", "proof-of-lift", "input-contract", "configuration", "operations", "scale"):
        assert (site / page / "index.html").exists(), page
    # the figures the proof-of-lift page shows are in the site, not links out of it
    assert (site / "reports" / "capture.png").exists()


def test_readme_is_a_front_door():
    """What it is, the two commands, one request, where to read more: a two-minute page."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 80
    assert "make demo" in text and "make test" in text and "/best_send_time" in text
    for link in ("docs/index.md", "docs/quickstart.md", "docs/proof-of-lift.md"):
        assert link in text and (ROOT / link).exists()
