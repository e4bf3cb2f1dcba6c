"""What the learner has done, from evidence on disk under the course root (see ``paths``):

- runs of the labs: ``runs/<lab>/<stamp>/`` with a ``summary.json`` (how the run went: its final
  metrics, test accuracy, device, precision) beside ``config.json`` (how it was asked for);
- notebooks whose exercises all passed: ``runs/course/notebooks.json``;
- passed quizzes: ``runs/course/quiz/`` (``record``).

The map's ``done_by`` strings say which evidence marks an item done (``evidence.parse_spec``): an
item with a deliverable is done only on evidence of the deliverable (a CIFAR-10 run's test
accuracy, an overfit run that reached 100%, a CUDA run in bf16 or fp16). An item not done says how
far the best evidence got, and the course has one next step: the first item not done, in the map's
order.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from . import record
from .catalog import Item, Section
from .evidence import MISSING, Condition, RunFolder, Spec, as_text, is_number, parse_spec
from .paths import root

__all__ = ["Ledger", "Spec", "Status", "Step", "parse_spec"]

# How a key reads in a sentence ("best CIFAR-10 test accuracy 0.72 ...").
LABELS = {
    "summary.metrics.test_acc": "test accuracy",
    "summary.metrics.test_acc_tta": "test accuracy with flip TTA",
    "summary.metrics.val_acc": "accuracy on the held-out samples",
    "summary.metrics.train_loss": "training loss",
    "summary.metrics.val_loss": "validation loss",
    "summary.metrics.val_greedy_seq_acc": "held-out whole-sequence accuracy",
    "summary.metrics.val_map_50": "mAP@0.5",
    "summary.metrics.phases.0.gain": "validation accuracy gained by the head phase",
    "summary.metrics.phases.1.gain": "validation accuracy gained by unfreezing",
}
DATASETS = {"cifar10": "CIFAR-10", "mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
# console script -> the lab whose runs it writes
SCRIPTS = {
    "lab0-mlp": "lab0-mlp",
    "lab1-conv": "lab1-conv",
    "lab3-transformer": "lab3-transformer",
    "lab5-detection": "lab5-detection",
    "checkpoint-project": "checkpoint-project",
}


@dataclass(frozen=True)
class Status:
    done: bool
    evidence: str = ""  # what made it done, in words
    note: str = ""  # for an item not yet done: how far the best evidence got


@dataclass(frozen=True)
class Step:
    """The course's next step: an item not done, and what to do for it."""

    section: Section
    item: Item
    actions: tuple[str, ...]  # commands (without `uv run`) and "notebook:NAME"


def _fmt(value) -> str:
    return f"{value:.4g}" if is_number(value) and isinstance(value, float) else as_text(value)


class Ledger:
    """The learner's evidence, read once from the course root."""

    def __init__(self, warn=None):
        self.root = root()
        self.runs_dir = self.root / "runs"
        self.notebooks = record.notebook_records(warn)
        self.attempts = record.quiz_attempts(warn)
        self._runs: dict[str, list[RunFolder]] = {}
        self._status: dict[str, Status] = {}

    # -- runs ---------------------------------------------------------------------------------

    def finished_runs(self, lab: str) -> list[RunFolder]:
        """Each run of ``lab`` with a summary.json, newest first."""
        if lab not in self._runs:
            found = []
            if (self.runs_dir / lab).is_dir():
                for run in (self.runs_dir / lab).iterdir():
                    try:
                        found.append(RunFolder(run, lab, (run / "summary.json").stat().st_mtime))
                    except OSError:  # no summary.json: not finished (or not a run at all)
                        continue
            self._runs[lab] = sorted(found, key=lambda r: (r.when, r.path.name), reverse=True)
        return self._runs[lab]

    def show(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def _runs_for(self, spec: Spec) -> list[RunFolder]:
        runs = [r for lab in spec.labs for r in self.finished_runs(lab)]
        return sorted(runs, key=lambda r: (r.when, r.path.name), reverse=True)

    def _shown(self, run: RunFolder, spec: Spec) -> str:
        parts = []
        for c in spec.where:
            if c.op == "absent" or (c.op == "=" and c.patterns == ("*",)):
                continue
            name = c.key.removeprefix("summary.").removeprefix("metrics.")
            parts.append(f"{name}={_fmt(run.value(c.key))}")
        return f"{self.show(run.path)}" + (f" ({', '.join(parts)})" if parts else "")

    def _label(self, spec: Spec, c: Condition) -> str:
        label = LABELS.get(c.key, c.key.removeprefix("summary.").removeprefix("metrics."))
        dataset = next(
            (d for d in spec.where if d.key == "dataset" and d.op == "=" and len(d.patterns) == 1),
            None,
        )
        if dataset and dataset.patterns[0] in DATASETS:
            label = f"{DATASETS[dataset.patterns[0]]} {label}"
        return label

    def _groups(self, spec: Spec, runs: list[RunFolder]) -> list[list[RunFolder]]:
        """``runs:N/KEY``: per lab (across labs for KEY=lab), the newest run of each KEY value."""
        pools = (
            [runs]
            if spec.distinct == "lab"
            else [[r for r in runs if r.lab == lab] for lab in spec.labs]
        )
        groups = []
        for pool in pools:
            seen: dict[str, RunFolder] = {}
            for run in pool:
                seen.setdefault(as_text(run.value(spec.distinct)), run)
            groups.append(list(seen.values()))
        return sorted(groups, key=len, reverse=True)

    def found_values(self, spec: Spec) -> list[str]:
        """``runs:N/KEY``: the values of KEY that the best group of matching runs already has."""
        matching = [r for r in self._runs_for(spec) if r.meets(spec.where)]
        groups = self._groups(spec, matching)
        return [as_text(r.value(spec.distinct)) for r in groups[0]] if groups else []

    def _check_runs(self, spec: Spec) -> Status:
        runs = self._runs_for(spec)
        matching = [r for r in runs if r.meets(spec.where)]
        if spec.count == 1 and matching:
            return Status(True, f"finished run {self._shown(matching[0], spec)}")
        if spec.count > 1 and matching:
            best = self._groups(spec, matching)[0]
            if len(best) >= spec.count:
                shown = [
                    f"{self.show(r.path)} ({spec.distinct}={as_text(r.value(spec.distinct))})"
                    for r in best[: spec.count]
                ]
                return Status(True, "finished runs " + " and ".join(shown))
            have = ", ".join(
                f"{spec.distinct}={as_text(r.value(spec.distinct))} in {self.show(r.path)}"
                for r in best
            )
            return Status(
                False,
                note=(
                    f"{len(best)} of the {spec.count} different {spec.distinct} values "
                    f"needed: {have}"
                ),
            )
        return Status(False, note=self._near_miss(spec, runs))

    def _near_miss(self, spec: Spec, runs: list[RunFolder]) -> str:
        """How close the runs came: the best value of a result the right kind of run missed, or
        what keeps the closest run from being of the right kind."""
        result = [c for c in spec.where if c.numeric and c.key.startswith("summary.")]
        fixed = [c for c in spec.where if c not in result]
        near = [r for r in runs if r.meets(fixed)]
        if not near:
            if not runs:
                return ""
            closest = min(runs, key=lambda r: sum(not c.holds(r.value(c.key)) for c in fixed))
            failed = [c for c in fixed if not c.holds(closest.value(c.key))]
            has = ", ".join(
                (
                    f"{c.key}={_fmt(closest.value(c.key))}"
                    if closest.value(c.key) is not MISSING
                    else f"no {c.key}"
                )
                for c in failed
            )
            needs = ", ".join(map(str, failed))
            return f"{self.show(closest.path)} does not count: {has} (needs {needs})"
        for c in result:
            if any(c.holds(r.value(c.key)) for r in near):
                continue
            valued = [r for r in near if is_number(r.value(c.key))]
            label = self._label(spec, c)
            if not valued:
                return f"{label}: not reported by {self.show(near[0].path)}"
            pick = max if c.op in (">=", ">") else min
            best = pick(valued, key=lambda r: r.value(c.key))
            return (
                f"best {label} {_fmt(best.value(c.key))} in {self.show(best.path)}, "
                f"target {c.op} {c.number:g}"
            )
        return (
            f"{len(near)} run(s) of the right kind (newest {self.show(near[0].path)}), "
            "none with all of: " + ", ".join(str(c) for c in result)
        )

    # -- notebooks and quizzes ------------------------------------------------------------------

    def _check_notebook(self, name: str) -> Status:
        rec = self.notebooks.get(name)
        if rec is None:
            return Status(False)
        if rec.done:
            return Status(
                True,
                f"notebook {name}: {rec.passed} of {rec.total} exercises done ({rec.when[:16]})",
            )
        if rec.total is None:
            return Status(
                False,
                note=(
                    f"notebook {name} ran ({rec.when[:16]}) before exercises were counted: "
                    "run it again"
                ),
            )
        return Status(
            False,
            note=f"notebook {name}: {rec.passed} of {rec.total} exercises done ({rec.when[:16]})",
        )

    def _check_quiz(self, phase: str) -> Status:
        tries = [a for a in self.attempts if a["phase"] == phase]
        passed = [a for a in tries if a["passed"]]
        if passed:
            a = passed[-1]
            return Status(
                True, f"quiz {phase} passed, {a['score']}/{a['total']} ({a['date'][:16]})"
            )
        if tries:
            a = tries[-1]
            return Status(False, note=f"last try {a['score']}/{a['total']} ({a['date'][:16]})")
        return Status(False)

    def check(self, spec: Spec) -> Status:
        if spec.kind == "notebook":
            return self._check_notebook(spec.target)
        if spec.kind == "quiz":
            return self._check_quiz(spec.target)
        return self._check_runs(spec)

    # -- items and the next step ----------------------------------------------------------------

    def status(self, item: Item) -> Status:
        if item.id not in self._status:
            found = [self.check(parse_spec(text)) for text in item.done_by]
            done = next((s for s in found if s.done), None)
            note = next((s.note for s in found if s.note), "")
            self._status[item.id] = done or Status(False, note=note)
        return self._status[item.id]

    def actions(self, item: Item) -> tuple[str, ...]:
        """What to do for ``item``: its ``next`` list (commands whose evidence a ``runs:N/KEY``
        spec already has are left out), else the first notebook or quiz that counts."""
        if item.next:
            specs = [parse_spec(t) for t in item.done_by]
            left = []
            for action in item.next:
                if not action.startswith("notebook:") and any(
                    s.count > 1 and command_value(action, s.distinct) in self.found_values(s)
                    for s in specs
                ):
                    continue
                left.append(action)
            return tuple(left or item.next)
        for text in item.done_by:
            spec = parse_spec(text)
            if spec.kind == "notebook":
                return (f"notebook:{spec.target}",)
            if spec.kind == "quiz":
                return (f"course quiz {spec.target}",)
        return item.commands[:1]

    def next_step(self, sections: list[Section]) -> Step | None:
        """The first item not done, in the map's order (None when every item is done)."""
        for section in sections:
            for item in section.items:
                if not self.status(item).done:
                    return Step(section, item, self.actions(item))
        return None


def command_value(command: str, key: str) -> str | None:
    """What ``command`` (a lab's command line) sets ``key`` to: ``lab`` from its script, else the
    value after ``--key`` (``True`` as ``true`` for a bare flag); None when it does not say."""
    words = shlex.split(command)
    if key == "lab":
        return SCRIPTS.get(words[0])
    flag = "--" + key.replace("_", "-")
    for i, word in enumerate(words):
        if word == flag:
            nxt = words[i + 1] if i + 1 < len(words) else ""
            return "true" if not nxt or nxt.startswith("--") else nxt
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None
