"""Evidence of progress that is not a run directory: notebooks finished and quiz attempts.

Both live in ``runs/course/`` under the course root (see ``paths``), written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from .paths import runs_dir


def course_dir() -> Path:
    return runs_dir() / "course"


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def mark_notebook(name: str) -> Path:
    """Record that notebook ``name`` (e.g. ``"2-1-1-tensors"``) ran to its last cell. Every
    notebook's last cell calls this; ``course progress`` reads it."""
    name = Path(name).stem
    path = course_dir() / "notebooks.json"
    done = read_json(path, {})
    if not isinstance(done, dict):
        done = {}
    done[name] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json_atomic(path, done)
    return path
