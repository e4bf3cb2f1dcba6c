"""The map: the curriculum's order, real commands, real notebooks, valid evidence, 80 columns."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from course_testutils import NOTEBOOKS, SERIES, TOPICS, assert_fits

from labs_course import mark_notebook
from labs_course.catalog import LABS, load_map, quiz_phases
from labs_course.progress import parse_spec

PACKAGES = Path(__file__).resolve().parents[2]  # packages/


def console_scripts() -> set[str]:
    scripts = set()
    for project in PACKAGES.glob("*/pyproject.toml"):
        scripts |= set(tomllib.loads(project.read_text()).get("project", {}).get("scripts", {}))
    return scripts


def workspace_source() -> str:
    return "\n".join(p.read_text() for p in PACKAGES.glob("*/src/**/*.py"))


ITEMS = [(s, i) for s in load_map() for i in s.items]


def test_sections_follow_the_documents():
    sections = load_map()
    assert [(s.id, s.source) for s in sections] == [
        ("day1", "000"), ("phase0", "002"), ("phase1", "001"), ("series", "003"), ("topics", "004")]
    by_id = {s.id: s for s in sections}
    assert [i.title.split(":")[0] for i in by_id["day1"].items] == [f"Hour {n}" for n in range(1, 5)]
    assert [i.title.split(":")[0] for i in by_id["phase0"].items[:7]] == [f"Lab {n}" for n in range(7)]
    phase1 = [re.search(r"\((\w+)\)$", i.title) for i in by_id["phase1"].items[:7]]
    assert [m.group(1) for m in phase1 if m] == [
        "lab1_tensors", "lab2_modules", "lab3_training_loop", "lab4_data_loading",
        "lab5_gpu_mixed_precision", "lab6_cnn_classifier", "checkpoint_project"]
    assert "quiz" in by_id["phase1"].items[-1].title.lower()
    assert [i.notebooks for i in by_id["series"].items] == [(n,) for n in SERIES]
    assert [i.notebooks for i in by_id["topics"].items] == [(n,) for n in TOPICS]
    assert [s.id for s in sections if s.checklist] == ["phase0", "phase1"]


def test_ids_are_unique():
    ids = [i.id for _, i in ITEMS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("section", "item"), ITEMS, ids=[i.id for _, i in ITEMS])
def test_item_names_real_notebooks_and_commands(section, item):
    assert item.title and item.what and (item.commands or item.notebooks)
    for name in item.notebooks:
        assert name in NOTEBOOKS, f"{item.id}: no notebook {name}"
    scripts = console_scripts()
    source = workspace_source()
    for command in item.commands:
        words = shlex.split(command)
        assert words[0] in scripts, f"{item.id}: {words[0]} is not a console script of the workspace"
        for word in words[1:]:
            if word.startswith("--"):
                dest = word[2:].replace("-", "_")
                assert f'"{word}"' in source or re.search(rf"\b{dest}\s*:", source), f"{item.id}: {word}?"


@pytest.mark.parametrize(("section", "item"), ITEMS, ids=[i.id for _, i in ITEMS])
def test_evidence_is_valid(section, item):
    assert item.done_by
    for text in item.done_by:
        spec = parse_spec(text)
        if spec.kind == "notebook":
            assert spec.target in NOTEBOOKS
        elif spec.kind == "quiz":
            assert spec.target in quiz_phases()
        else:
            assert spec.target == "*" or spec.target in LABS
    if section.checklist:
        assert item.done_when


@pytest.mark.parametrize("bad", ["run:", "run:lab9", "runs:lab0-mlp", "notebook:x loop=manual",
                                 "run:lab0-mlp loop", "run:lab0-mlp loop=", "quiz"])
def test_bad_evidence_is_refused(bad):
    with pytest.raises(ValueError):
        parse_spec(bad)


def test_map_prints_every_item_with_status(course, home):
    mark_notebook("2-1-1-tensors")
    code, out, err = course()
    assert code == 0 and err == ""
    assert_fits(out)
    for _, item in ITEMS:
        assert item.title in " ".join(out.split())
    assert "done     Hour 1: Tensors" in out and "not yet  Hour 2: Autograd" in out
    assert "$ uv run lab0-mlp lesson tensors" in out
    assert "uv run jupyter lab" in out
    code, same, _ = course("map")
    assert code == 0 and same == out


def test_map_one_section(course):
    code, out, _ = course("map", "phase1")
    assert code == 0
    assert "Phase 1" in out and "Hour 1" not in out and "lab6_cnn_classifier" in out
