"""Every notebook, in both renditions: the source (``solutions/<name>.ipynb``, worked answers) and
the learner's copy (``<name>.ipynb``, rendered from it by ``render.py``). Both are stored without
outputs and open with their current header; the learner's copy is what ``render.py`` makes of the
source today; both run top to bottom (``LABS_QUICK=1``) in a fresh kernel. The record a notebook
writes at its end shows every exercise passed in the solutions and none in the learner's copy.

With ``LABS_EXECUTED_DIR`` set, each executed learner copy is saved there as ``<name>.ipynb``,
outputs kept (the lesson site builds its pages from them).
"""

from __future__ import annotations

import json
import os
import re
import resource
import time
from pathlib import Path

import header
import nbformat
import pytest
import render

HERE = Path(__file__).parent
SOLUTIONS = HERE / "solutions"
RENDITIONS = sorted(HERE.glob("*.ipynb"))
SOURCES = sorted(SOLUTIONS.glob("*.ipynb"))
ONE_SOURCE = {p.stem for p in SOURCES}

SERIES = [
    "2-1-1-tensors",
    "2-1-2-autograd",
    "2-1-3-nn-module",
    "2-1-4-training-loop",
    "2-2-5-datasets-and-dataloaders",
    "2-2-6-mnist-project",
    "2-2-7-debugging-and-visualization",
    "2-3-8-saving-and-loading",
    "2-3-9-gpu-training",
    "2-3-10-fashion-mnist-project",
]
TOPICS = [
    "01_tensors_basics",
    "02_autograd_and_backprop",
    "03_nn_training_loop",
    "04_cnn_example",
    "05_custom_datasets",
    "06_advanced_pytorch",
]
LABS = ["3-transformer", "5-detection"]  # Phase 0's labs 3 and 5
# Notebooks still kept as one hand-edited file (none now: every notebook is one source in
# solutions/ with its learner rendition).
NOT_YET_ONE_SOURCE: set[str] = set()
# Notebooks about real data: their solutions run reads small IDX files (the real format, written
# here) from the data folder; their learner copy runs with no data and no network, the offline
# fallback, which must say so in its banner.
REAL_DATA = {
    "2-2-5-datasets-and-dataloaders": ("mnist", "digits"),
    "2-2-6-mnist-project": ("mnist", "digits"),
    "2-3-10-fashion-mnist-project": ("fashion-mnist", "shapes"),
}
REAL_DATA["05_custom_datasets"] = ("mnist", "digits")  # its torchvision.datasets.MNIST section
OFFLINE_BANNER = "OFFLINE"

_MARK = re.compile(r'mark_notebook\("([^"]+)"(?:,\s*exercises=(\d+))?\)')


def test_every_lesson_has_its_notebook():
    stems = {p.stem for p in RENDITIONS}
    assert set(SERIES + TOPICS + LABS) <= stems
    assert stems >= ONE_SOURCE, f"no rendition for {sorted(ONE_SOURCE - stems)}: run render.py"
    legacy = stems - ONE_SOURCE
    assert legacy <= NOT_YET_ONE_SOURCE, f"{sorted(legacy - NOT_YET_ONE_SOURCE)} need a source"


def _stored_clean(path: Path, solutions: bool) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} of {path} is stored with outputs"
            assert cell.execution_count is None, f"cell {i} of {path} has an execution count"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert header.is_current(nb, path.name, solutions), (
        f"run: uv run python notebooks/header.py {path}"
    )
    mark = _MARK.search(nb.cells[-1].source)
    assert mark and mark.group(1) == path.stem, (
        "the last cell records progress: mark_notebook(name)"
    )
    return nb


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_source_clean_and_rendition_current(path):
    nb = _stored_clean(path, solutions=True)
    numbers = render.declared_exercises(nb)
    assert numbers, f"{path} checks no exercise"
    assert numbers == list(range(1, len(numbers) + 1)), f"exercises numbered {numbers}: 1, 2, ..."
    declared = _MARK.search(nb.cells[-1].source).group(2)
    assert declared is not None and int(declared) == len(numbers), (
        f'the last cell should be mark_notebook("{path.stem}", exercises={len(numbers)})'
    )
    assert any(render.BEGIN in c.source for c in nb.cells if c.cell_type == "code")
    assert render.is_current(path), f"run: uv run python notebooks/render.py {path.stem}"


@pytest.mark.parametrize("path", RENDITIONS, ids=lambda p: p.stem)
def test_rendition_clean(path):
    nb = _stored_clean(path, solutions=False)
    if path.stem in ONE_SOURCE:
        for i, cell in enumerate(nb.cells):
            assert render.BEGIN not in cell.source and render.END not in cell.source, (
                f"cell {i} of {path} still holds a solution marker"
            )


def _upscaled_digits():
    """The bundled 8x8 digits scaled up to 28x28: MNIST's format and size, real handwriting."""
    import torch
    import torch.nn.functional as F

    from labs_core.data import load_dataset

    digits = load_dataset("digits")
    x = torch.cat([digits.train[0], digits.test[0]]).float()
    y = torch.cat([digits.train[1], digits.test[1]])
    big = (
        F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).round().clamp(0, 255)
    )
    return big.to(torch.uint8)[:, 0], y


def _mirror_symmetric_shapes(n: int, seed: int = 0):
    """``n`` 28x28 images of ten shapes that a left-right flip keeps (as it keeps a shoe or a
    shirt), each at a random place, size and brightness, with noise: where a CNN should beat
    logistic regression, as on Fashion-MNIST."""
    import torch

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    y = torch.arange(n) % 10
    cy, cx = (
        14 + torch.randint(-4, 5, (n, 1, 1), generator=g),
        14 + torch.randint(-4, 5, (n, 1, 1), generator=g),
    )
    r = torch.randint(3, 9, (n, 1, 1), generator=g).float()
    dy, dx = (yy - cy).abs(), (xx - cx).abs()
    dist = (dy**2 + dx**2).sqrt()
    masks = [
        dist <= r,
        (dist <= r) & (dist >= r - 2),
        (dy <= r) & (dx <= r),
        ((dy <= r) & (dx <= r)) & ~((dy <= r - 2) & (dx <= r - 2)),
        (dy <= 1.5) & (dx <= r),
        (dx <= 1.5) & (dy <= r),
        ((dy <= 1.5) | (dx <= 1.5)) & (dist <= r),
        ((dy - dx).abs() <= 1.5) & (dist <= r),
        (yy - cy <= r) & (yy - cy >= -r) & (dx <= (yy - cy + r) / 2),
        ((dy**2 + (dx - r / 2) ** 2).sqrt() <= r / 3),
    ]
    pick = torch.stack(masks)[y, torch.arange(n)]  # (n, 28, 28): each image's own shape
    bright = torch.randint(90, 256, (n, 1, 1), generator=g).float()
    img = pick.float() * bright + 80 * torch.rand(n, 28, 28, generator=g)
    return img.clamp(0, 255).to(torch.uint8), y


def write_idx_dataset(folder: Path, kind: str, train: int = 1200, test: int = 400) -> None:
    """The four MNIST-format IDX files in ``folder``: ``kind`` "digits" (real handwriting, scaled
    up) or "shapes" (mirror-symmetric shapes); ``train`` and ``test`` images."""
    import torch

    from labs_core.data import write_idx
    from labs_core.data.mnist import FILES

    x, y = _upscaled_digits() if kind == "digits" else _mirror_symmetric_shapes(train + test)
    folder.mkdir(parents=True, exist_ok=True)
    for split, part in {"train": slice(0, train), "test": slice(train, train + test)}.items():
        write_idx(folder / FILES[f"{split}_images"], x[part].numpy())
        write_idx(folder / FILES[f"{split}_labels"], y[part].to(torch.uint8).numpy())


def _execute(path: Path, tmp_path: Path, monkeypatch) -> tuple[nbformat.NotebookNode, dict]:
    from nbclient import NotebookClient

    monkeypatch.setenv("LABS_QUICK", "1")
    monkeypatch.setenv(
        "LABS_ROOT", str(tmp_path)
    )  # runs, data and progress go here, not into the checkout
    # the kernel's own inline backend, so figures are saved in the outputs (the lesson site shows
    # them); Agg would draw them nowhere
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv(
        "OMP_NUM_THREADS", "1"
    )  # tiny models: one thread is fastest, and steady on a busy machine
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):  # no network: downloads
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # fail at once, as offline
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    solutions = path.parent.name == "solutions"
    if solutions and path.stem in REAL_DATA:
        folder, kind = REAL_DATA[path.stem]
        write_idx_dataset(tmp_path / "data" / folder, kind)
    nb = nbformat.read(path, as_version=4)
    wall, cpu = time.perf_counter(), _children_cpu()
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    times = os.environ.get("LABS_NOTEBOOK_TIMES")  # a file: one line per run, for sizing quick mode
    if times:
        with open(times, "a") as f:
            f.write(
                f"{path.parent.name}/{path.name}\twall {time.perf_counter() - wall:.1f} s\t"
                f"kernel cpu {_children_cpu() - cpu:.1f} s\n"
            )
    record = json.loads((tmp_path / "runs" / "course" / "notebooks.json").read_text())
    assert not (HERE / "runs").exists() and "runs" not in os.listdir(HERE)
    return nb, record


def _children_cpu() -> float:
    """CPU seconds of finished child processes (a kernel counts once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _printed(nb) -> str:
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.get("output_type") == "stream"
    )


def _shown(nb) -> str:
    """Markdown the notebook displayed (``display(Markdown(...))``)."""
    return "".join(
        str(o.get("data", {}).get("text/markdown", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_solutions_pass_every_check(path, tmp_path, monkeypatch):
    nb, record = _execute(path, tmp_path, monkeypatch)
    entry = record[path.stem]
    assert entry["total"] >= 1 and entry["passed"] == entry["total"], entry
    printed = _printed(nb) + _shown(nb)
    assert "not yet" not in printed, [ln for ln in printed.splitlines() if "not yet" in ln]
    if path.stem in REAL_DATA:
        assert OFFLINE_BANNER not in printed, "the real-format files were there: no fallback"


@pytest.mark.parametrize("path", RENDITIONS, ids=lambda p: p.stem)
def test_learner_copy_runs_top_to_bottom(path, tmp_path, monkeypatch):
    nb, record = _execute(path, tmp_path, monkeypatch)
    entry = record[path.stem]
    if path.stem in ONE_SOURCE:
        total = len(render.declared_exercises(nb))
        assert entry == {**entry, "passed": 0, "total": total}, entry
        printed = _printed(nb)
        for n in range(1, total + 1):
            assert f"exercise {n}: not yet - " in printed, f"exercise {n} printed no 'not yet'"
    if path.stem in REAL_DATA:
        assert OFFLINE_BANNER in _printed(nb) + _shown(nb), "offline, the fallback must say so"
    executed = os.environ.get("LABS_EXECUTED_DIR")
    if executed:
        Path(executed).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, Path(executed) / path.name)


def _one_cell_notebook(source: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# T"),
        *header.header_cells("t.ipynb", solutions=True),
        nbformat.v4.new_code_cell(source),
    ]
    for i, cell in enumerate(nb.cells):
        cell.setdefault(
            "id", f"cell-{i}"
        )  # header cells come without ids (apply() gives them theirs)
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", text="old output")]
    nb.cells[-1].execution_count = 3
    return nb


def test_render_replaces_solutions_keeping_indentation_and_placeholders():
    source = (
        "x = 1\n# BEGIN SOLUTION\ny = x + 1\n# END SOLUTION\n# LEARNER: y = None  # your code\n"
        "def f(a):\n    # BEGIN SOLUTION\n    return a * 2\n    # END SOLUTION\n"
        "    # LEARNER: raise NotImplementedError\n\n# BEGIN SOLUTION\nz = 3\n# END SOLUTION\n"
        "check(1, lambda: y == 2, 'add one')"
    )
    want = (
        "x = 1\ny = None  # your code\ndef f(a):\n    raise NotImplementedError\n\n"
        "# YOUR CODE HERE\ncheck(1, lambda: y == 2, 'add one')"
    )
    assert render.learner_source(source) == want
    nb = render.render(_one_cell_notebook(source), "t.ipynb")
    cell = nb.cells[-1]
    assert cell.source == want and cell.outputs == [] and cell.execution_count is None
    assert header.is_current(nb, "t.ipynb", solutions=False)
    assert render.declared_exercises(nb) == [1]


@pytest.mark.parametrize(
    "source, message",
    [
        ("# BEGIN SOLUTION\ny = 1", "without an '# END SOLUTION'"),
        ("y = 1\n# END SOLUTION", "without a '# BEGIN SOLUTION'"),
        ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "inside another"),
        ("# LEARNER: y = None", "without a '# BEGIN SOLUTION'"),
        ("def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION", "does not compile"),
    ],
)
def test_render_refuses_broken_markers_and_learner_code_that_does_not_compile(source, message):
    with pytest.raises(render.RenderError, match=message):
        render.render(_one_cell_notebook(source), "t.ipynb")


def test_render_main_check_mode_reports_a_stale_rendition(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(render, "HERE", tmp_path)
    monkeypatch.setattr(render, "SOLUTIONS", tmp_path / "solutions")
    (tmp_path / "solutions").mkdir()
    nbformat.write(
        _one_cell_notebook("# BEGIN SOLUTION\ny = 1\n# END SOLUTION"),
        tmp_path / "solutions" / "t.ipynb",
    )
    assert render.main(["--check"]) == 1 and not (tmp_path / "t.ipynb").exists()
    assert render.main([]) == 0 and "# YOUR CODE HERE" in (tmp_path / "t.ipynb").read_text()
    assert render.main(["--check"]) == 0
    assert render.main(["missing"]) == 2 and "no source" in capsys.readouterr().err
