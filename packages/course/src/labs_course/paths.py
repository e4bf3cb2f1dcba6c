"""Where the course keeps a learner's things: one root folder, found the same way from a terminal
(``course progress`` in the repository) and from a notebook (whose working folder is
``notebooks/``).

The root is ``$LABS_ROOT`` when set, else the nearest folder at or above the working folder that
holds the workspace's ``pyproject.toml``, else the working folder itself (a Colab session).
"""

from __future__ import annotations

import os
from pathlib import Path


def root(start: str | Path | None = None) -> Path:
    env = os.environ.get("LABS_ROOT")
    if env:
        return Path(env)
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        project = folder / "pyproject.toml"
        if project.is_file() and "[tool.uv.workspace]" in project.read_text(errors="replace"):
            return folder
    return here


def runs_dir(start: str | Path | None = None) -> Path:
    """``runs/`` under the root: where every lab writes its runs by default."""
    return root(start) / "runs"


def data_dir(start: str | Path | None = None) -> Path:
    """``data/`` under the root: where the labs download datasets (``--data-dir data``)."""
    return root(start) / "data"
