"""Writes the two cells every notebook opens with after its title: how to run it (locally and on
Colab, the link built from ``labs_course.links``) and the setup cell (install when missing, the
short-run switch, the data folder). ``uv run python notebooks/header.py`` rewrites them in every
notebook; a test checks they are current.

Conventions every notebook follows (see notebooks/README.md): cell 0 is its own title and intro;
cells 1-2 are these; ``QUICK`` (from ``LABS_QUICK=1``) shortens every run for CI; the last cell
calls ``labs_course.mark_notebook`` so ``course progress`` can see it ran to the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from labs_course.links import colab_url, pip_requirements

HERE = Path(__file__).parent
TAG = "labs-header"


def header_cells(name: str) -> list:
    run = (
        f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(name)})\n\n"
        "**Run it here:** from the repository root, `uv run jupyter lab`, then open "
        f"`notebooks/{name}`. **On Colab:** follow the badge; the next cell installs the packages "
        "(a minute or two), and *Runtime > Change runtime type > GPU* lights up the GPU cells.\n\n"
        "Run the cells top to bottom (*Run > Run All Cells* works). Exercises end in an `assert`: "
        "each ships with a working answer; delete it, write your own, and the `assert` tells you "
        "when you are right."
    )
    reqs = ",\n        ".join(repr(r) for r in pip_requirements())
    setup = (
        "# Setup: on Colab, install PyTorch Labs; in the repository's environment this does nothing.\n"
        "import importlib.util, os, subprocess, sys\n"
        "if importlib.util.find_spec(\"labs_core\") is None:\n"
        "    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\",\n"
        f"        {reqs}], check=True)\n"
        "\n"
        "from labs_course import data_dir\n"
        "\n"
        "QUICK = os.environ.get(\"LABS_QUICK\") == \"1\"  # CI's short-run mode: fewer steps, same code\n"
        "DATA = data_dir()  # real MNIST / Fashion-MNIST / CIFAR-10 are read from here when present"
    )
    md = nbformat.v4.new_markdown_cell(run)
    code = nbformat.v4.new_code_cell(setup)
    for cell in (md, code):
        cell.metadata["tags"] = [TAG]
        cell.pop("id", None)
    return [md, code]


def _strip(cell) -> dict:
    return {"cell_type": cell.cell_type, "source": cell.source}


def is_current(nb, name: str) -> bool:
    want = [_strip(c) for c in header_cells(name)]
    have = [_strip(c) for c in nb.cells[1:3]]
    return have == want


def apply(path: Path) -> bool:
    """Put the current header into ``path`` (after its title cell). Returns True if it changed."""
    nb = nbformat.read(path, as_version=4)
    if is_current(nb, path.name):
        return False
    body = [c for c in nb.cells[1:] if TAG not in c.get("metadata", {}).get("tags", [])]
    cells = header_cells(path.name)
    for c in cells:
        c["id"] = nbformat.v4.new_code_cell().id
    nb.cells = [nb.cells[0], *cells, *body]
    nbformat.write(nb, path)
    return True


if __name__ == "__main__":
    targets = [Path(a) for a in sys.argv[1:]] or sorted(HERE.glob("*.ipynb"))
    for p in targets:
        if apply(p):
            print(f"updated {p}")
