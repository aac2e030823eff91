"""The analyst notebooks run top to bottom on the trained sample world and are committed clean."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
NAMES = ["01_engagement.ipynb", "02_model_report.ipynb", "03_campaign_what_if.ipynb"]


def test_notebooks_committed_without_outputs():
    import nbformat

    assert [p.name for p in NOTEBOOKS] == NAMES
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs: clear them"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, trained, world_dir, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    settings, _ = trained
    # the kernel inherits this process's environment
    monkeypatch.setenv("SENDTIME_HOME", str(settings.home))
    monkeypatch.setenv("SENDTIME_WORLD", str(world_dir))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    path = Path(__file__).resolve().parent.parent / "notebooks" / name
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()  # raises on a failing cell
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{name} produced no figure"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
