"""Evidence of progress that is not a run directory: notebooks finished and quiz attempts.

Both live in ``runs/course/`` under the course root (see ``paths``), written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from .exercises import score
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


def mark_notebook(name: str, exercises: int | None = None) -> Path:
    """Record that notebook ``name`` (e.g. ``"2-1-1-tensors"``) ran to its last cell, and how many
    of its exercises passed. Every notebook's last cell calls this; ``course progress`` reads it.

    Writes ``{"<name>": {"when": ..., "passed": P, "total": T}}`` into
    ``runs/course/notebooks.json`` (other notebooks' entries are kept): ``T`` is ``exercises``
    when given (what the notebook declares), else the number of exercises checked in this kernel;
    ``P`` counts those whose latest ``check`` passed (``exercises.score``). Prints
    ``"<name>": P of T exercises done``. The notebook counts as done only when all passed.
    """
    name = Path(name).stem
    passed, total = score(exercises)
    path = course_dir() / "notebooks.json"
    done = read_json(path, {})
    if not isinstance(done, dict):
        done = {}
    done[name] = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "passed": passed, "total": total}
    write_json_atomic(path, done)
    print(f'"{name}": {passed} of {total} exercises done')
    return path


def notebooks_done() -> dict[str, str]:
    """``{notebook name: when it last ran to its end}`` (empty when nothing is recorded)."""
    done = read_json(course_dir() / "notebooks.json", {})
    return {str(k): str(v) for k, v in done.items()} if isinstance(done, dict) else {}


def quiz_attempts() -> list[dict]:
    """Every recorded quiz attempt, oldest first (see ``record_quiz``)."""
    attempts = read_json(course_dir() / "quiz.json", [])
    return [a for a in attempts if isinstance(a, dict)] if isinstance(attempts, list) else []


def record_quiz(attempt: dict) -> Path:
    """Append one attempt (``phase, date, score, total, passed, answers``) to
    ``runs/course/quiz.json``, a JSON list, rewritten atomically. A file that is not such a list is
    left alone (``ValueError``) rather than overwritten."""
    path = course_dir() / "quiz.json"
    attempts = []
    if path.exists():
        attempts = read_json(path, None)
        if not isinstance(attempts, list):
            raise ValueError(f"{path} is not a list of quiz attempts; move it aside to record new ones")
    write_json_atomic(path, [*attempts, attempt])
    return path
