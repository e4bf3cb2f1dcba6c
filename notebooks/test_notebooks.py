"""Every notebook: stored without outputs, opens with the current header, and runs top to bottom
(in the short-run mode, ``LABS_QUICK=1``) in a fresh kernel, ending with its progress record."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

HERE = Path(__file__).parent
NOTEBOOKS = sorted(HERE.glob("*.ipynb"))

SERIES = ["2-1-1-tensors", "2-1-2-autograd", "2-1-3-nn-module", "2-1-4-training-loop",
          "2-2-5-datasets-and-dataloaders", "2-2-6-mnist-project", "2-2-7-debugging-and-visualization",
          "2-3-8-saving-and-loading", "2-3-9-gpu-training", "2-3-10-fashion-mnist-project"]
TOPICS = ["01_tensors_basics", "02_autograd_and_backprop", "03_nn_training_loop", "04_cnn_example",
          "05_custom_datasets", "06_advanced_pytorch"]


def test_every_lesson_has_its_notebook():
    assert sorted(p.stem for p in NOTEBOOKS) == sorted(SERIES + TOPICS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_clean_with_current_header(path):
    import header

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} of {path.name} is stored with outputs"
            assert cell.execution_count is None, f"cell {i} of {path.name} is stored with an execution count"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert header.is_current(nb, path.name), f"run: uv run python notebooks/header.py {path}"
    assert f'mark_notebook("{path.stem}")' in nb.cells[-1].source, "the last cell records progress"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_top_to_bottom(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("LABS_QUICK", "1")
    monkeypatch.setenv("LABS_ROOT", str(tmp_path))  # runs, data and progress go here, not into the checkout
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny models: one thread is fastest, and steady on a busy machine
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    done = json.loads((tmp_path / "runs" / "course" / "notebooks.json").read_text())
    assert path.stem in done
    assert not (HERE / "runs").exists() and "runs" not in os.listdir(HERE)
