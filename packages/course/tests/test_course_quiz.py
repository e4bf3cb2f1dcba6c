"""The quiz banks and `course quiz`: scoring, the pass mark, misses explained, attempts recorded."""

from __future__ import annotations

import io
import json
import sys

import pytest
from course_testutils import RIGHT, assert_fits

from labs_course.catalog import load_quiz, quiz_phases


def flip(answers: str, n: int) -> str:
    """``answers`` with the first ``n`` answers made wrong."""
    letters = answers.split(",")
    for i in range(n):
        letters[i] = "a" if letters[i] != "a" else "b"
    return ",".join(letters)


def attempts(home):
    return json.loads((home / "runs" / "course" / "quiz.json").read_text())


@pytest.mark.parametrize("phase", ["0", "1"])
def test_bank_is_well_formed(phase):
    assert phase in quiz_phases()
    quiz = load_quiz(phase)
    assert quiz.phase == phase and quiz.pass_mark == 8
    assert len(quiz.questions) == 10
    assert len({q.id for q in quiz.questions}) == 10
    for q in quiz.questions:
        assert q.text and q.topic
        assert len(q.choices) == 4 and len(set(q.choices)) == 4 and all(c.strip() for c in q.choices)
        assert len(q.answer) == 1 and q.answer in q.letters  # exactly one right answer
        assert q.why and "\n" not in q.why and len(q.why) <= 110  # a one-line explanation
    assert RIGHT[phase] == ",".join(q.answer for q in quiz.questions)


@pytest.mark.parametrize("phase", ["0", "1"])
def test_all_right_passes_and_is_recorded(course, home, phase):
    code, out, err = course("quiz", phase, "--answers", RIGHT[phase])
    assert code == 0 and err == ""
    assert "score 10/10: PASS" in out
    assert_fits(out)
    [a] = attempts(home)
    assert a["phase"] == phase and a["score"] == 10 and a["total"] == 10 and a["passed"] is True
    assert a["answers"] == RIGHT[phase].split(",") and a["missed"] == [] and a["date"]


def test_seven_fails_eight_passes(course, home):
    code, out, _ = course("quiz", "1", "--answers", flip(RIGHT["1"], 3))
    assert code == 0  # a completed quiz exits 0, passed or not
    assert "score 7/10: FAIL" in out
    assert out.count("\n  right: ") == 3 and out.count("\n  why: ") == 3  # each miss: the answer and why
    assert "right: d) (3, 4)" in out
    assert_fits(out)
    code, out, _ = course("quiz", "1", "--answers", flip(RIGHT["1"], 2).upper().replace(",", ", "))
    assert code == 0 and "score 8/10: PASS" in out
    first, second = attempts(home)
    assert (first["score"], first["passed"], second["score"], second["passed"]) == (7, False, 8, True)
    assert len(first["missed"]) == 3


def test_interactive(course, home, monkeypatch):
    answers = RIGHT["0"].split(",")
    answers[2] = "a"  # one miss (the output-size question)
    typed = ["", "z", "B "] + answers[1:]  # an empty line and a stray letter are asked again
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(typed) + "\n"))
    code, out, err = course("quiz", "0")
    assert code == 0 and err == ""
    assert out.count("please type one of a, b, c, d") == 2
    assert "3/10" in out and "right: b) 16x16" in out and "floor((32 + 2*1 - 3) / 2) + 1" in out
    assert "score 9/10: PASS" in out
    assert_fits(out)
    [a] = attempts(home)
    assert a["answers"] == ["b", *answers[1:]] and a["missed"] == ["conv-size"]


def test_interactive_input_ends_early(course, home, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("b\nc\n"))
    code, _, err = course("quiz", "0")
    assert code == 2 and err.count("\n") == 1 and "question 3" in err
    assert not (home / "runs" / "course" / "quiz.json").exists()


def test_a_damaged_record_is_left_alone(course, home):
    path = home / "runs" / "course" / "quiz.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    code, out, err = course("quiz", "1", "--answers", RIGHT["1"])
    assert code == 2 and "PASS" in out and err.startswith("course: error: the attempt was not recorded")
    assert path.read_text() == "{not json"
