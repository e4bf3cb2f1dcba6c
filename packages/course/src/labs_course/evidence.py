"""The evidence language of the map's ``done_by`` strings, and how one run folder is read for it.

A spec names one kind of evidence:

- ``run:TARGET COND...``: a finished run (``runs/<lab>/<stamp>/summary.json``) of TARGET (a lab,
  ``LAB|LAB``, or ``*`` for any lab) that meets every condition;
- ``runs:N/KEY TARGET COND...``: N finished runs meeting the conditions whose values of KEY all
  differ, all of one lab (unless KEY is ``lab``: then N different labs);
- ``notebook:NAME``: the notebook's exercises all passed (``runs/course/notebooks.json``);
- ``quiz:PHASE``: a passed quiz.

A condition reads KEY from the run's ``config.json``, or from its ``summary.json`` when KEY starts
with ``summary.``; dots go into nested objects, a whole number into a list (``phases.-1.gain``):

- ``KEY=V1|V2``: the value matches one pattern (fnmatch: ``*`` any value, ``cuda*``); ``KEY!=V``
  the opposite; booleans read as ``true`` / ``false``;
- ``KEY>=X``, ``KEY<=X``, ``KEY>X``, ``KEY<X``: the value is a number (not a boolean) so compared;
- ``!KEY``: the run has no KEY.
"""

from __future__ import annotations

import fnmatch
import math
import operator
import re
from dataclasses import dataclass
from pathlib import Path

from . import record
from .catalog import LABS

MISSING = object()
_COMPARE = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_CONDITION = re.compile(r"^([A-Za-z_][\w.-]*?)(>=|<=|!=|>|<|=)(.+)$")


@dataclass(frozen=True)
class Condition:
    key: str
    op: str  # "=", "!=", ">=", "<=", ">", "<", or "absent"
    patterns: tuple[str, ...] = ()  # for "=" and "!="
    number: float = 0.0  # for the comparisons

    @property
    def numeric(self) -> bool:
        return self.op in _COMPARE

    def holds(self, value) -> bool:
        if self.op == "absent":
            return value is MISSING
        if value is MISSING:
            return False
        if self.numeric:
            return is_number(value) and _COMPARE[self.op](value, self.number)
        found = any(fnmatch.fnmatchcase(as_text(value), p) for p in self.patterns)
        return found if self.op == "=" else not found

    def __str__(self) -> str:
        if self.op == "absent":
            return f"!{self.key}"
        value = "|".join(self.patterns) if self.patterns else f"{self.number:g}"
        return f"{self.key}{self.op}{value}"


@dataclass(frozen=True)
class Spec:
    kind: str  # "run", "notebook" or "quiz" ("runs:N/KEY" is a "run" with count N)
    target: str  # labs ("a|b", "*"), a notebook name, a quiz phase
    where: tuple[Condition, ...] = ()
    count: int = 1
    distinct: str = ""  # runs:N/KEY: the KEY whose values must differ
    text: str = ""

    @property
    def labs(self) -> tuple[str, ...]:
        return LABS if self.target == "*" else tuple(self.target.split("|"))


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def as_text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def parse_condition(text: str, spec: str) -> Condition:
    if text.startswith("!") and len(text) > 1 and not re.search(r"[=<>]", text):
        return Condition(text[1:], "absent")
    m = _CONDITION.match(text)
    if not m:
        raise ValueError(f"bad evidence {spec!r}: condition {text!r}")
    key, op, value = m.groups()
    if op in _COMPARE:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"bad evidence {spec!r}: {text!r} compares with a number") from None
        if not math.isfinite(number):
            raise ValueError(f"bad evidence {spec!r}: {text!r} compares with a number")
        return Condition(key, op, number=number)
    patterns = tuple(value.split("|"))
    if "" in patterns or re.search(r"[<>=]", value):
        raise ValueError(f"bad evidence {spec!r}: condition {text!r}")
    return Condition(key, op, patterns)


def parse_spec(text: str) -> Spec:
    """Read one ``done_by`` string (see the module's docstring); ``ValueError`` on anything else."""
    kind, sep, rest = text.partition(":")
    words = rest.split()
    if not sep or kind not in ("run", "runs", "notebook", "quiz") or not words:
        raise ValueError(f"bad evidence {text!r}")
    count, distinct = 1, ""
    if kind == "runs":
        m = re.fullmatch(r"([2-9])/([A-Za-z_][\w.]*)", words[0])
        if not m or len(words) < 2:
            raise ValueError(f"bad evidence {text!r}: runs:N/KEY LABS, N from 2 to 9")
        count, distinct, words = int(m.group(1)), m.group(2), words[1:]
        kind = "run"
    target, conditions = words[0], words[1:]
    if kind != "run" and conditions:
        raise ValueError(f"bad evidence {text!r}: only runs take conditions")
    if kind == "run" and target != "*":
        for lab in target.split("|"):
            if lab not in LABS:
                raise ValueError(f"bad evidence {text!r}: no lab {lab!r}")
    where = tuple(parse_condition(c, text) for c in conditions)
    return Spec(kind, target, where, count, distinct, text)


class RunFolder:
    """One run folder's two JSON files, read once."""

    def __init__(self, path: Path, lab: str, when: float):
        self.path, self.lab, self.when = path, lab, when
        self._files: dict[str, object] = {}

    def value(self, key: str):
        """The value of ``key`` (see the module's docstring), or ``MISSING``."""
        if key == "lab":
            return self.lab
        name, parts = "config.json", key.split(".")
        if parts[0] == "summary" and len(parts) > 1:
            name, parts = "summary.json", parts[1:]
        if name not in self._files:
            self._files[name] = record.read_json(self.path / name, None)
        value = self._files[name]
        for part in parts:
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif (
                isinstance(value, list)
                and re.fullmatch(r"-?\d+", part)
                and -len(value) <= int(part) < len(value)
            ):
                value = value[int(part)]
            else:
                return MISSING
        return value

    def meets(self, conditions) -> bool:
        return all(c.holds(self.value(c.key)) for c in conditions)
