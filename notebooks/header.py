"""Writes the two cells every notebook opens with after its title: how to run it (locally and on
Colab, the link built from ``labs_course.links``) and the setup cell (install when missing, the
short-run switch, the data folder, ``check`` for the exercises). ``uv run python
notebooks/header.py`` rewrites them in every source notebook (``notebooks/solutions/``; for a
notebook not yet kept that way, in ``notebooks/`` itself); ``render.py`` puts the learner's
version into each rendition; a test checks they are current.

Conventions every notebook follows (see notebooks/README.md): cell 0 is its own title and intro;
cells 1-2 are these; ``QUICK`` (from ``LABS_QUICK=1``) shortens every run for CI; the last cell
calls ``labs_course.mark_notebook`` so ``course progress`` can see how many exercises passed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from labs_course.links import BRANCH, PACKAGES, REPOSITORY, colab_url

HERE = Path(__file__).parent
TAG = "labs-header"


def header_cells(name: str, solutions: bool = False) -> list:
    """The two header cells of notebook ``name`` (``"2-1-1-tensors.ipynb"``): the learner's
    rendition by default, the worked-answers source (``notebooks/solutions/``) with ``solutions``.
    """
    where = f"solutions/{name}" if solutions else name
    if solutions:
        exercises = (
            f"**This is the worked-answers copy** of `notebooks/{name}`: every exercise is solved"
            " and every check says `done`. It is the one source of both copies: answers sit"
            " between `# BEGIN SOLUTION` and `# END SOLUTION`, and `uv run python"
            " notebooks/render.py` writes the learner's copy from it. Try the exercises there"
            " first."
        )
    else:
        exercises = (
            "**Exercises** come unsolved: write your answer where a cell says `# YOUR CODE HERE`"
            " (or replace the `None`), then run the check below it. It prints `exercise N: done`,"
            " or `exercise N: not yet - ` and a hint, and never stops the notebook, so *Run All*"
            " always reaches the end; the last cell records how many you have done. Worked"
            f" answers: `notebooks/solutions/{name}` (look after you have tried)."
        )
    run = (
        "[![Open in"
        f" Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(where)})\n\n**Run"
        " it here:** from the repository root, `uv run jupyter lab`, then open"
        f" `notebooks/{where}`. **On Colab:** follow the badge; the next cell installs the packages"
        " (a minute or two), and *Runtime > Change runtime type > GPU* lights up the GPU"
        " cells.\n\nRun the cells top to bottom (*Run > Run All Cells* works). " + exercises
    )
    folders = "".join(f'\n        "{name}": "{folder}",' for name, folder in PACKAGES)
    setup = (
        "# Setup: on Colab, install PyTorch Labs; in the repository's environment this does"
        " nothing.\n"
        "import importlib.util, os, subprocess, sys\n"
        "\n"
        'if importlib.util.find_spec("labs_core") is None:\n'
        f'    repo = "git+{REPOSITORY}@{BRANCH}#subdirectory=packages/"\n'
        f"    folders = {{{folders}\n    }}\n"
        '    packages = [f"{name} @ {repo}{folder}" for name, folder in folders.items()]\n'
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages],'
        " check=True)\n"
        "\n"
        "from labs_course import check, data_dir  # check(N, test, hint): one exercise's verdict\n"
        "\n"
        'QUICK = os.environ.get("LABS_QUICK") == "1"  # CI\'s short-run mode: fewer steps, same'
        " code\n"
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


def is_current(nb, name: str, solutions: bool = False) -> bool:
    want = [_strip(c) for c in header_cells(name, solutions)]
    have = [_strip(c) for c in nb.cells[1:3]]
    return have == want


def with_header(nb, name: str, solutions: bool = False):
    """``nb`` with its header cells (after the title) replaced by the current ones."""
    body = [c for c in nb.cells[1:] if TAG not in c.get("metadata", {}).get("tags", [])]
    cells = header_cells(name, solutions)
    nb.cells = [nb.cells[0], *cells, *body]
    return nb


def apply(path: Path) -> bool:
    """Put the current header into ``path`` (after its title cell); a notebook under
    ``solutions/`` gets the worked-answers header. Returns True if it changed."""
    solutions = path.parent.name == "solutions"
    nb = nbformat.read(path, as_version=4)
    if is_current(nb, path.name, solutions):
        return False
    nb = with_header(nb, path.name, solutions)
    for c in nb.cells[1:3]:
        c["id"] = nbformat.v4.new_code_cell().id
    nbformat.write(nb, path)
    return True


if __name__ == "__main__":
    sources = {p.name for p in (HERE / "solutions").glob("*.ipynb")}
    kept = [p for p in HERE.glob("*.ipynb") if p.name not in sources]  # not yet one-source
    targets = [Path(a) for a in sys.argv[1:]] or sorted(
        [*(HERE / "solutions").glob("*.ipynb"), *kept]
    )
    for p in targets:
        if apply(p):
            print(f"updated {p}")
