"""The course's data files, read and checked: the map (``data/map.toml``) and the quiz banks
(``data/quiz_phase<N>.toml``). Reading them needs only the standard library (``tomllib``)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources

from .errors import CourseError

#: Every lab that writes runs/<lab>/<timestamp>/ (the ``lab`` of its config).
LABS = ("lab0-mlp", "lab1-conv", "lab3-transformer", "lab5-detection", "checkpoint-project")
LETTERS = "abcdefgh"


def read_data(name: str) -> dict:
    """A TOML file of ``labs_course/data/``."""
    return tomllib.loads(resources.files("labs_course").joinpath("data", name).read_text("utf-8"))


@dataclass(frozen=True)
class Item:
    id: str
    title: str
    what: str
    commands: tuple[str, ...]
    notebooks: tuple[str, ...]
    also: str
    done_by: tuple[str, ...]
    done_when: str
    next: tuple[str, ...] = ()  # the next step's actions: commands and "notebook:NAME"


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    source: str
    intro: str
    checklist: bool
    items: tuple[Item, ...]


def load_map() -> list[Section]:
    sections = []
    for s in read_data("map.toml")["sections"]:
        items = []
        for i in s["items"]:
            notebooks = tuple(i.get("notebooks", ()))
            done_by = tuple(i.get("done_by", ())) or tuple(f"notebook:{n}" for n in notebooks)
            when = i.get("done_when") or (
                " or ".join(f"the {n} notebook" for n in notebooks) + " with every exercise done"
            )
            items.append(
                Item(
                    i["id"],
                    i["title"],
                    i["what"].strip(),
                    tuple(i.get("commands", ())),
                    notebooks,
                    i.get("also", "").strip(),
                    done_by,
                    when,
                    tuple(i.get("next", ())),
                )
            )
        sections.append(
            Section(
                s["id"],
                s["title"],
                s["source"],
                s.get("intro", "").strip(),
                bool(s.get("checklist", False)),
                tuple(items),
            )
        )
    return sections


@dataclass(frozen=True)
class Question:
    id: str
    topic: str
    text: str
    choices: tuple[str, ...]
    answer: str  # a letter: "a" is choices[0]
    why: str

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.choices)]

    def choice(self, letter: str) -> str:
        return self.choices[LETTERS.index(letter)]


@dataclass(frozen=True)
class Quiz:
    phase: str
    title: str
    pass_mark: int
    draw: int  # questions per attempt, drawn from the pool
    questions: tuple[Question, ...]  # the whole pool


def quiz_phases() -> list[str]:
    """The phases that have a question bank, from the data files' names."""
    data = resources.files("labs_course").joinpath("data")
    names = [
        p.name
        for p in data.iterdir()
        if p.name.startswith("quiz_phase") and p.name.endswith(".toml")
    ]
    return sorted(n.removeprefix("quiz_phase").removesuffix(".toml") for n in names)


def load_quiz(phase: str) -> Quiz:
    phases = quiz_phases()
    if phase not in phases:
        raise CourseError(
            f"unknown phase {phase!r}; the quizzes are for phase {' and '.join(phases)}"
        )
    raw = read_data(f"quiz_phase{phase}.toml")
    questions = tuple(
        Question(
            q["id"],
            q.get("topic", ""),
            q["text"].strip(),
            tuple(q["choices"]),
            q["answer"].strip().lower(),
            q["why"].strip(),
        )
        for q in raw["questions"]
    )
    draw = int(raw.get("draw", len(questions)))
    return Quiz(str(raw["phase"]), raw["title"], int(raw["pass_mark"]), draw, questions)
