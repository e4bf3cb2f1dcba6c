"""What the learner has done, from evidence on disk under the course root (see ``paths``):

- a finished run of a lab: ``runs/<lab>/<timestamp>/summary.json`` exists (``config.json`` beside it
  says how the run was asked for, ``summary.json`` how it ran);
- a notebook that ran to its last cell: ``runs/course/notebooks.json`` (``record.mark_notebook``);
- a passed quiz: ``runs/course/quiz.json`` (``record.record_quiz``).

The map's ``done_by`` strings say which evidence marks an item done (``parse_spec``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from . import record
from .catalog import LABS, Item
from .paths import root


@dataclass(frozen=True)
class Spec:
    kind: str  # "run", "notebook" or "quiz"
    target: str  # a lab or "*" (runs), a notebook name, a quiz phase
    # (key, patterns): the run's KEY must match one of the patterns (fnmatch: "*" = any value,
    # "cuda*" = cuda or cuda:1); (key, ()): the run has no KEY. KEY is config.json's (a.b: nested),
    # or summary.json's when it starts with "summary.".
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()


def parse_spec(text: str) -> Spec:
    """``run:LAB``, ``run:* KEY=V1|V2``, ``run:LAB KEY=*``, ``run:LAB !KEY``,
    ``run:* summary.device=cuda*``, ``notebook:NAME``, ``quiz:PHASE``. Raises ``ValueError`` on
    anything else."""
    kind, sep, rest = text.partition(":")
    words = rest.split()
    if not sep or kind not in ("run", "notebook", "quiz") or not words:
        raise ValueError(f"bad evidence {text!r}")
    target, conditions = words[0], words[1:]
    if kind != "run" and conditions:
        raise ValueError(f"bad evidence {text!r}: only runs take conditions")
    if kind == "run" and target != "*" and target not in LABS:
        raise ValueError(f"bad evidence {text!r}: no lab {target!r}")
    where = []
    for c in conditions:
        if c.startswith("!") and len(c) > 1 and "=" not in c:
            where.append((c[1:], ()))
            continue
        key, eq, values = c.partition("=")
        if not eq or not key or not values or "" in values.split("|"):
            raise ValueError(f"bad evidence {text!r}: condition {c!r}")
        where.append((key, tuple(values.split("|"))))
    return Spec(kind, target, tuple(where))


_MISSING = object()


def _as_text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def run_value(run: Path, key: str, cache: dict | None = None):
    """The value of ``key`` for a run folder (see ``Spec.where``), or ``_MISSING``."""
    cache = {} if cache is None else cache
    name, parts = "config.json", key.split(".")
    if parts[0] == "summary" and len(parts) > 1:
        name, parts = "summary.json", parts[1:]
    if name not in cache:
        cache[name] = record.read_json(run / name, None)
    value = cache[name]
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _matches(run: Path, where) -> bool:
    cache: dict = {}
    for key, patterns in where:
        value = run_value(run, key, cache)
        if not patterns:
            if value is not _MISSING:
                return False
        elif value is _MISSING or not any(fnmatch.fnmatchcase(_as_text(value), p) for p in patterns):
            return False
    return True


@dataclass(frozen=True)
class Status:
    done: bool
    evidence: str = ""  # what made it done, in words
    note: str = ""  # for an item not yet done: how far it got (a failed quiz)


class Ledger:
    """The learner's evidence, read once from the course root."""

    def __init__(self):
        self.root = root()
        self.runs_dir = self.root / "runs"
        self.notebooks = record.notebooks_done()
        self.attempts = record.quiz_attempts()
        self._runs: dict[str, list[tuple[float, Path]]] = {}
        self._status: dict[str, Status] = {}

    def finished_runs(self, lab: str) -> list[tuple[float, Path]]:
        """``(when it finished, run folder)`` for each run of ``lab`` with a summary.json, newest
        first."""
        if lab not in self._runs:
            found = []
            if (self.runs_dir / lab).is_dir():
                for run in (self.runs_dir / lab).iterdir():
                    try:
                        found.append(((run / "summary.json").stat().st_mtime, run))
                    except OSError:  # no summary.json: not finished (or not a run at all)
                        continue
            self._runs[lab] = sorted(found, reverse=True)
        return self._runs[lab]

    def _show(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def find(self, spec: Spec) -> str:
        """What satisfies ``spec``, in words; "" when nothing does."""
        if spec.kind == "notebook":
            when = self.notebooks.get(spec.target)
            return f"notebook {spec.target} ran to its end ({when[:16]})" if when else ""
        if spec.kind == "quiz":
            passed = [a for a in self.attempts if str(a.get("phase")) == spec.target and a.get("passed")]
            if not passed:
                return ""
            a = passed[-1]
            return f"quiz {spec.target} passed, {a.get('score')}/{a.get('total')} ({str(a.get('date'))[:16]})"
        newest = []
        for lab in LABS if spec.target == "*" else (spec.target,):
            for when, run in self.finished_runs(lab):
                if _matches(run, spec.where):
                    newest.append((when, run))
                    break
        if not newest:
            return ""
        run = max(newest)[1]
        shown = ", ".join(f"{k.removeprefix('summary.')}={_as_text(run_value(run, k))}"
                          for k, v in spec.where if v)
        return f"finished run {self._show(run)}" + (f" ({shown})" if shown else "")

    def status(self, item: Item) -> Status:
        if item.id not in self._status:
            self._status[item.id] = self._find_status(item)
        return self._status[item.id]

    def _find_status(self, item: Item) -> Status:
        for text in item.done_by:
            found = self.find(parse_spec(text))
            if found:
                return Status(True, found)
        note = ""
        for text in item.done_by:
            spec = parse_spec(text)
            tries = [a for a in self.attempts if spec.kind == "quiz" and str(a.get("phase")) == spec.target]
            if tries:
                a = tries[-1]
                note = f"last try {a.get('score')}/{a.get('total')} ({str(a.get('date'))[:16]})"
        return Status(False, note=note)
