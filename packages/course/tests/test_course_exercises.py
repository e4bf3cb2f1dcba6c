"""The exercise checks (``labs_course.check``) and the notebook record that counts them."""

from __future__ import annotations

import json

import pytest

from labs_course import check, exercises, mark_notebook


@pytest.fixture(autouse=True)
def fresh_tally():
    exercises.reset()
    yield
    exercises.reset()


def _missing():
    return answer_not_written  # noqa: F821 - the learner has not written it yet


def _unfinished():
    raise NotImplementedError


def _wrong():
    raise AssertionError("1 + 1 is 2\nnot 3")  # what a notebook's failed assert raises


@pytest.mark.parametrize(
    "test", [_missing, _unfinished, _wrong, lambda: False, lambda: 0, lambda: 1 / 0]
)
def test_a_failing_check_says_not_yet_in_one_line_and_does_not_raise(test, capsys):
    assert check(3, test, "use permute") is False
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("exercise 3: not yet - use permute")
    assert exercises.tally() == {3: False}


def test_a_failed_assert_adds_its_message_to_the_hint(capsys):
    check(2, _wrong, "add")
    assert capsys.readouterr().out == "exercise 2: not yet - add (1 + 1 is 2 not 3)\n"


@pytest.mark.parametrize("test", [lambda: None, lambda: True, lambda: [0]])
def test_a_passing_check_says_done(test, capsys):
    assert check(1, test, "never shown") is True
    assert capsys.readouterr().out == "exercise 1: done\n"


def test_the_tally_keeps_each_exercises_latest_result(capsys):
    check(2, lambda: False, "h")
    check(1, lambda: True, "h")
    check(2, lambda: True, "h")
    check(3, lambda: False, "h")
    assert exercises.tally() == {1: True, 2: True, 3: False}
    assert exercises.score() == (2, 3)
    assert exercises.score(5) == (2, 5)  # declared: exercises 4 and 5 never ran
    assert exercises.score(1) == (1, 1)


def test_keyboard_interrupt_is_not_swallowed():
    def stop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        check(1, stop, "h")


def test_mark_notebook_records_passed_out_of_total(home, capsys):
    check(1, lambda: True, "h")
    check(2, lambda: False, "h")
    path = mark_notebook("2-1-1-tensors", exercises=3)
    assert path == home / "runs" / "course" / "notebooks.json"
    entry = json.loads(path.read_text())["2-1-1-tensors"]
    assert (entry["passed"], entry["total"]) == (1, 3)
    assert len(entry["when"]) == len("2026-01-01 10:00:00")
    assert capsys.readouterr().out.endswith('"2-1-1-tensors": 1 of 3 exercises done\n')


def test_mark_notebook_counts_the_tally_when_nothing_is_declared_and_keeps_others(home, capsys):
    mark_notebook("notebooks/solutions/2-1-2-autograd.ipynb")
    check(1, lambda: True, "h")
    check(2, lambda: True, "h")
    mark_notebook("2-1-1-tensors")
    record = json.loads((home / "runs" / "course" / "notebooks.json").read_text())
    assert record["2-1-2-autograd"]["total"] == 0
    assert (record["2-1-1-tensors"]["passed"], record["2-1-1-tensors"]["total"]) == (2, 2)
