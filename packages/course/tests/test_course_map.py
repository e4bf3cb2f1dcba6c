"""The map: the curriculum's order, real commands, real notebooks, valid evidence, 80 columns."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from course_testutils import (
    GOOD,
    NOTEBOOKS,
    SERIES,
    TOPICS,
    assert_fits,
    fake_notebook,
    run_from_command,
)

from labs_course.catalog import LABS, load_map, quiz_phases
from labs_course.progress import Ledger, command_value, parse_spec

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
        ("day1", "000"),
        ("phase0", "002"),
        ("phase1", "001"),
        ("series", "003"),
        ("topics", "004"),
    ]
    by_id = {s.id: s for s in sections}
    assert [i.title.split(":")[0] for i in by_id["day1"].items] == [
        f"Hour {n}" for n in range(1, 5)
    ]
    assert [i.title.split(":")[0] for i in by_id["phase0"].items[:7]] == [
        f"Lab {n}" for n in range(7)
    ]
    phase1 = [re.search(r"\((\w+)\)$", i.title) for i in by_id["phase1"].items[:7]]
    assert [m.group(1) for m in phase1 if m] == [
        "lab1_tensors",
        "lab2_modules",
        "lab3_training_loop",
        "lab4_data_loading",
        "lab5_gpu_mixed_precision",
        "lab6_cnn_classifier",
        "checkpoint_project",
    ]
    assert "quiz" in by_id["phase1"].items[-1].title.lower()
    assert [i.notebooks for i in by_id["series"].items] == [(n,) for n in SERIES]
    assert [i.notebooks for i in by_id["topics"].items] == [(n,) for n in TOPICS]
    assert [s.id for s in sections if s.checklist] == ["day1", "phase0", "phase1"]
    assert (
        by_id["phase0"].items[7].id == "phase0-overfit"
        and by_id["phase0"].items[8].id == "phase0-quiz"
    )


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
        assert words[0] in scripts, (
            f"{item.id}: {words[0]} is not a console script of the workspace"
        )
        for word in words[1:]:
            if word.startswith("--"):
                dest = word[2:].replace("-", "_")
                assert f'"{word}"' in source or re.search(rf"\b{dest}\s*:", source), (
                    f"{item.id}: {word}?"
                )


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
            assert all(lab in LABS for lab in spec.labs)
    assert item.done_when
    for action in item.next:
        if action.startswith("notebook:"):
            assert action in item.done_by
        else:
            assert action in item.commands, (
                f"{item.id}: the next step {action!r} is not one of its commands"
            )


@pytest.mark.parametrize(
    ("section", "item"),
    [(s, i) for s, i in ITEMS if i.next],
    ids=[i.id for _, i in ITEMS if i.next],
)
def test_the_next_commands_write_what_counts(section, item, home):
    """Running the item's next commands (runs faked from their flags, with results that reach every
    target) marks it done; each names a lab its evidence reads."""
    specs = [parse_spec(t) for t in item.done_by]
    for n, action in enumerate(item.next):
        if action.startswith("notebook:"):
            continue
        lab = command_value(action, "lab")
        assert any(s.kind == "run" and lab in s.labs for s in specs), f"{item.id}: {action}"
        run_from_command(home, action, f"run{n}", GOOD[lab])
    assert Ledger().status(item).done, item.id


def test_results_below_target_do_not_count(home):
    """The same runs with every result just short of its target leave each item not done."""
    low = {
        "test_acc": 0.5,
        "test_acc_tta": 0.5,
        "val_acc": 0.99,
        "train_loss": 0.5,
        "val_greedy_seq_acc": 0.5,
        "val_map_50": 0.5,
        "val_loss": 3.0,
        "phases": [{"gain": -0.1}, {"gain": -0.1}],
    }
    targeted = []
    for n, (_, item) in enumerate(ITEMS):
        if any(re.search(r"summary\.metrics\.\S+[<>]", t) for t in item.done_by) and item.next:
            targeted.append(item)
            for k, action in enumerate(a for a in item.next if not a.startswith("notebook:")):
                run_from_command(home, action, f"low{n}-{k}", low)
    assert len(targeted) >= 9
    ledger = Ledger()
    assert [i.id for i in targeted if ledger.status(i).done] == []


@pytest.mark.parametrize(
    "bad",
    [
        "run:",
        "run:lab9",
        "runs:lab0-mlp",
        "notebook:x loop=manual",
        "run:lab0-mlp loop",
        "run:lab0-mlp loop=",
        "quiz",
        "run:lab0-mlp summary.metrics.test_acc>=high",
        "runs:2/lab",
    ],
)
def test_bad_evidence_is_refused(bad):
    with pytest.raises(ValueError):
        parse_spec(bad)


def test_map_prints_every_item_with_status(course, home):
    fake_notebook(home, "2-1-1-tensors", 2, 2)
    code, out, err = course()
    assert code == 0 and err == ""
    assert_fits(out)
    for _, item in ITEMS:
        assert item.title in " ".join(out.split())
    assert "done     Hour 1: Tensors" in out and "not yet  Hour 2: Autograd" in out
    assert "$ uv run lab0-mlp lesson tensors" in out
    assert "uv run jupyter lab" in out
    assert "Next step (First day): Hour 2: Autograd" in out
    code, same, _ = course("map")
    assert code == 0 and same == out


def test_map_one_section(course):
    code, out, _ = course("map", "phase1")
    assert code == 0
    sections, _, step = out.partition("Next step")
    assert "Phase 1" in sections and "Hour 1" not in sections and "lab6_cnn_classifier" in sections
    assert step.startswith(
        " (First day): Hour 1: Tensors"
    )  # the course's one next step, all the same
