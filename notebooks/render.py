"""Writes each learner notebook from its one source, as nbgrader does.

The source ``notebooks/solutions/<name>.ipynb`` holds the worked answers and runs with every check
passing. In its code cells an answer sits between a line ``# BEGIN SOLUTION`` and a line
``# END SOLUTION``; the lines right after ``# END SOLUTION`` that start with ``# LEARNER: `` are the
learner's placeholder (prefix removed, e.g. ``# LEARNER: y = None  # your code here``). Without
them the answer becomes ``# YOUR CODE HERE``. Markers keep the indentation they are written at.

``uv run python notebooks/render.py`` writes ``notebooks/<name>.ipynb`` for every source (or for
the names given): markers gone, answers replaced, the learner's header (``header.py``), no
outputs. ``--check`` writes nothing and exits 1 when a rendition is not current. A source whose
markers do not pair up, or whose rendition would not compile, stops it with one line and exit 2.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import header
import nbformat

HERE = Path(__file__).parent
SOLUTIONS = HERE / "solutions"
BEGIN, END, LEARNER = "# BEGIN SOLUTION", "# END SOLUTION", "# LEARNER: "
PLACEHOLDER = "# YOUR CODE HERE"
_CHECK = re.compile(r"\bcheck\(\s*(\d+)\s*,")


class RenderError(ValueError):
    """A source that cannot be rendered (unpaired markers, a rendition that would not compile)."""


def learner_source(source: str, where: str = "cell") -> str:
    """``source`` (one code cell) with every solution block replaced by its placeholder."""
    out: list[str] = []
    lines = source.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped == END or stripped.startswith(LEARNER.strip()):
            raise RenderError(f"{where}: '{stripped}' without a '{BEGIN}' before it")
        if stripped != BEGIN:
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        j = i + 1
        while j < len(lines) and lines[j].strip() != END:
            if lines[j].strip() == BEGIN:
                raise RenderError(f"{where}: '{BEGIN}' inside another solution block")
            j += 1
        if j == len(lines):
            raise RenderError(f"{where}: '{BEGIN}' without an '{END}' after it")
        k = j + 1
        placeholder = []
        while k < len(lines) and lines[k].lstrip().startswith(LEARNER.rstrip()):
            text = lines[k].lstrip()[len(LEARNER.rstrip()) :]
            placeholder.append(indent + text.removeprefix(" ") if text.strip() else "")
            k += 1
        out.extend(placeholder or [indent + PLACEHOLDER])
        i = k
    return "\n".join(out)


def _compiles(source: str, where: str) -> None:
    from IPython.core.inputtransformer2 import TransformerManager

    python = TransformerManager().transform_cell(source)  # %magics and !shell lines to Python
    try:
        compile(python, where, "exec")
    except SyntaxError as err:
        raise RenderError(
            f"{where}: the learner's version does not compile ({err.msg}, line {err.lineno}); "
            f"give the block a '{LEARNER}' placeholder such as 'raise NotImplementedError'"
        ) from None


def render(source_nb, name: str):
    """The learner's rendition of the notebook ``source_nb`` (named ``name``, e.g.
    ``"2-1-1-tensors.ipynb"``); ``source_nb`` is left as it is."""
    nb = copy.deepcopy(source_nb)
    ids = [c.get("id") for c in nb.cells[1:3]]
    nb = header.with_header(nb, name, solutions=False)
    for cell, cid in zip(nb.cells[1:3], ids, strict=True):
        if cid:
            cell["id"] = cid  # the source's ids: the rendition is the same bytes every time
    for i, cell in enumerate(nb.cells):
        where = f"{name} cell {i}"
        if cell.cell_type == "code":
            cell.source = learner_source(cell.source, where)
            _compiles(cell.source, where)
            cell.outputs = []
            cell.execution_count = None
        elif BEGIN in cell.source or END in cell.source:
            raise RenderError(f"{where}: solution markers belong in code cells only")
    return nb


def declared_exercises(nb) -> list[int]:
    """The exercise numbers the notebook checks (``check(N, ...)`` in its code cells), sorted."""
    found = {int(n) for c in nb.cells if c.cell_type == "code" for n in _CHECK.findall(c.source)}
    return sorted(found)


def rendition_text(source_path: Path) -> str:
    """What ``notebooks/<name>.ipynb`` should contain, rendered from ``source_path``."""
    nb = nbformat.read(source_path, as_version=4)
    text = nbformat.writes(render(nb, source_path.name))
    return text if text.endswith("\n") else text + "\n"  # as nbformat.write ends a file


def is_current(source_path: Path) -> bool:
    target = HERE / source_path.name
    return target.exists() and target.read_text() == rendition_text(source_path)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check_only = "--check" in args
    names = [a for a in args if a != "--check"]
    sources = [SOLUTIONS / Path(n).with_suffix(".ipynb").name for n in names] or sorted(
        SOLUTIONS.glob("*.ipynb")
    )
    stale = []
    try:
        for src in sources:
            if not src.exists():
                raise RenderError(f"no source {src} (sources live in notebooks/solutions/)")
            text = rendition_text(src)
            target = HERE / src.name
            if target.exists() and target.read_text() == text:
                continue
            stale.append(target)
            if not check_only:
                target.write_text(text)
                print(f"wrote {target}")
    except RenderError as err:
        print(f"render: {err}", file=sys.stderr)
        return 2
    if check_only and stale:
        print(
            "not current (run: uv run python notebooks/render.py): "
            + ", ".join(p.name for p in stale),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
