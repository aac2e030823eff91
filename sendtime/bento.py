"""`sendtime build`: the Bento of the service, with the runtime dependencies pinned.

The pins come from requirements.lock minus what only development and the Spark engine need,
so the container carries what serving imports and nothing it does not.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: installed for tests, notebooks and the Spark engine, never imported by the service
DEV_ONLY = {
    "pyspark", "py4j", "pytest", "hypothesis", "schemathesis", "bandit", "pip-audit", "ipykernel", "ipython",
    "jupyter-client", "jupyter-core", "nbclient", "nbformat", "debugpy", "pytest-timeout", "pytest-xdist", "execnet",
    "import-linter", "grimp", "mkdocs", "mkdocs-material", "mkdocs-material-extensions", "mkdocs-get-deps",
    "pymdown-extensions", "ghp-import", "watchdog", "paginate", "babel", "backrefs", "mergedeep", "pyyaml-env-tag",
}


def runtime_requirements(lock: Path = ROOT / "requirements.lock") -> list[str]:
    """Pinned lines of the lock file that the service's runtime needs."""
    out = []
    for line in lock.read_text().splitlines():
        name = re.split(r"[=<>@ ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
        if line.strip() and not line.startswith("#") and name not in DEV_ONLY:
            out.append(line.strip())
    return out


def build(bentoml_home: str | None = None, version: str | None = None) -> str:
    """Run `bentoml build` in the project root; returns the Bento tag (name:version)."""
    req = ROOT / "deploy" / "bento-requirements.txt"
    req.parent.mkdir(exist_ok=True)
    req.write_text("\n".join(runtime_requirements()) + "\n")
    env = dict(os.environ)
    if bentoml_home:
        env["BENTOML_HOME"] = bentoml_home
    cmd = [str(Path(sys.executable).parent / "bentoml"), "build", "-f", str(ROOT / "bentofile.yaml"), "-o", "tag"]
    if version:
        cmd += ["--version", version]
    proc = subprocess.run(cmd + [str(ROOT)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"bentoml build failed: {lines[-1] if lines else proc.returncode}")
    tag = proc.stdout.strip().splitlines()[-1].strip()
    return tag.removeprefix("__tag__:")
