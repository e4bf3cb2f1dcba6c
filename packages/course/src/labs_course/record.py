"""Evidence of progress that is not a run directory: notebooks finished and quiz attempts.

Both live in ``runs/course/`` under the course root (see ``paths``): ``notebooks.json`` (written
by ``mark_notebook``) and ``quiz/``, one file per attempt (so attempts at once never lose one).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .exercises import score
from .paths import root, runs_dir


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


@dataclass(frozen=True)
class NotebookRecord:
    when: str
    passed: int | None  # None: an old record (a plain timestamp), before exercises were counted
    total: int | None

    @property
    def done(self) -> bool:
        return self.total is not None and self.total >= 1 and self.passed == self.total


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def warn_stderr(message: str) -> None:
    print(f"course: warning: {message}", file=sys.stderr)


def notebook_records(warn=None) -> dict[str, NotebookRecord]:
    """Every notebook in ``runs/course/notebooks.json``: ``{"<name>": {"when": ..., "passed": P,
    "total": T}}`` (``mark_notebook``). An old value (a timestamp string) is kept as not done; an
    entry with wrong types is left out with a one-line warning."""
    warn = warn or warn_stderr
    path = course_dir() / "notebooks.json"
    if not path.exists():
        return {}
    done = read_json(path, None)
    if not isinstance(done, dict):
        warn(f"ignored {_shown(path)}: not a JSON object of notebooks")
        return {}
    out, bad = {}, []
    for name, value in done.items():
        if isinstance(value, str):
            out[str(name)] = NotebookRecord(value, None, None)
        elif (
            isinstance(value, dict)
            and isinstance(value.get("when"), str)
            and _whole(value.get("passed"))
            and _whole(value.get("total"))
            and value["passed"] <= value["total"]
        ):
            out[str(name)] = NotebookRecord(value["when"], value["passed"], value["total"])
        else:
            bad.append(str(name))
    if bad:
        warn(f"ignored {', '.join(bad)} in {_shown(path)}: wrong fields (when, passed, total)")
    return out


def notebooks_done() -> dict[str, str]:
    """``{notebook name: when}`` for each notebook whose exercises all passed."""
    return {name: r.when for name, r in notebook_records(lambda message: None).items() if r.done}


def attempt_problem(a) -> str:
    """Why ``a`` is not a well-formed quiz attempt ("" when it is one)."""
    if not isinstance(a, dict):
        return "not a JSON object"
    for key, kind in (("phase", str), ("date", str), ("passed", bool)):
        if not isinstance(a.get(key), kind):
            return f"{key!r} is not a {kind.__name__}"
    for key in ("score", "total"):
        if not _whole(a.get(key)):
            return f"{key!r} is not a whole number"
    if a["total"] < 1 or a["score"] > a["total"]:
        return "the score is not between 0 and the total"
    if not isinstance(a.get("answers", []), list):
        return "'answers' is not a list"
    if a["passed"] and a["score"] < _pass_mark(a["phase"], a["total"]):
        return "passed with a score below the pass mark"
    return ""


def _pass_mark(phase: str, total: int) -> int:
    from .catalog import load_quiz  # the banks say their pass mark; an unknown phase needs 80%

    try:
        quiz = load_quiz(phase)
    except Exception:  # noqa: BLE001 - any phase without a bank
        return -(-total * 8 // 10)
    return quiz.pass_mark if total == quiz.draw else -(-total * quiz.pass_mark // quiz.draw)


def _shown(path: Path) -> str:
    try:
        return path.relative_to(root()).as_posix()
    except ValueError:
        return str(path)


def quiz_dir() -> Path:
    return course_dir() / "quiz"


def quiz_attempts(warn=None) -> list[dict]:
    """Every recorded quiz attempt, oldest first: one file per attempt in ``runs/course/quiz/``,
    plus the list of an older ``runs/course/quiz.json``. A file (or an entry of the old list) that
    is not a well-formed attempt is left out with a one-line warning: it never counts as a pass."""
    warn = warn or warn_stderr
    found = []
    legacy = course_dir() / "quiz.json"
    if legacy.exists():
        old = read_json(legacy, None)
        if not isinstance(old, list):
            warn(f"ignored {_shown(legacy)}: not a list of quiz attempts")
            old = []
        problems = [attempt_problem(a) for a in old]
        found += [a for a, why in zip(old, problems, strict=True) if not why]
        if any(problems):
            why = next(w for w in problems if w)
            warn(f"ignored {sum(map(bool, problems))} attempt(s) in {_shown(legacy)}: {why}")
    folder = quiz_dir()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        a = read_json(path, _MISSING)
        why = "not valid JSON" if a is _MISSING else attempt_problem(a)
        if why:
            warn(f"ignored {_shown(path)}: {why}")
        else:
            found.append(a)
    return sorted(found, key=lambda a: a["date"])


_MISSING = object()


def record_quiz(attempt: dict) -> Path:
    """Write one attempt (``phase, date, score, total, passed, seed, questions, answers, missed``)
    to a file of its own in ``runs/course/quiz/``, under a name no other attempt can take, so two
    attempts at once never lose one."""
    folder = quiz_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fd, tmp = tempfile.mkstemp(prefix=f".{stamp}-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(attempt, f, indent=2)
            f.write("\n")
        name = Path(tmp).name.removeprefix(".").removesuffix(".tmp")
        path = folder / f"{name}-{os.getpid()}.json"
        try:
            os.link(tmp, path)  # fails rather than replace: the name is this attempt's alone
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: the unique name is enough
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
