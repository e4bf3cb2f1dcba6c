"""The quiz pools and `course quiz`: draws and shuffles, scoring, the pass mark, misses explained,
the pool for teachers, and attempts recorded without loss."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from course_testutils import assert_fits, right, wrong

from labs_course import quiz, record
from labs_course.catalog import load_quiz, quiz_phases

# What each pool must cover: every topic of Phase 1's quiz list (its document) and of Phase 0's
# "done when", with CNNs, checkpoints, early stopping, schedules and clipping.
TOPICS = {
    "0": [
        "the training loop",
        "debugging",
        "shape failures",
        "device failures",
        "dtype failures",
        "optimization failures",
        "one script for any model and dataset",
        "convolution",
        "attention",
        "pretrained backbones",
        "detection",
        "checkpoints",
        "seeds and determinism",
        "learning-rate schedules",
        "gradient clipping",
    ],
    "1": [
        "tensors and broadcasting",
        "tensor operations",
        "autograd",
        "nn.Module internals",
        "the training loop",
        "data loading",
        "GPU practice",
        "mixed precision",
        "CNNs",
        "checkpoints",
        "early stopping",
        "learning-rate schedules",
        "gradient clipping",
    ],
}


def attempts(home):
    folder = home / "runs" / "course" / "quiz"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


@pytest.mark.parametrize("phase", ["0", "1"])
def test_pool_is_well_formed(phase):
    assert phase in quiz_phases()
    pool = load_quiz(phase)
    assert pool.phase == phase and pool.pass_mark == 8 and pool.draw == 10
    assert len(pool.questions) >= 30
    assert len({q.id for q in pool.questions}) == len(pool.questions)
    assert len({q.text for q in pool.questions}) == len(pool.questions)
    for q in pool.questions:
        assert q.text and q.topic
        assert (
            len(q.choices) == 4 and len(set(q.choices)) == 4 and all(c.strip() for c in q.choices)
        )
        assert len(q.answer) == 1 and q.answer in q.letters  # exactly one right answer
        assert q.why and "\n" not in q.why and len(q.why) <= 200  # a one-line explanation
    topics = {q.topic for q in pool.questions}
    assert not set(TOPICS[phase]) - topics, f"uncovered: {set(TOPICS[phase]) - topics}"


def test_reviewed_wording():
    one = {q.id: q for q in load_quiz("1").questions}
    assert "a CPU tensor" in one["move"].text
    zero = {q.id: q for q in load_quiz("0").questions}
    assert "running statistics" in zero["freeze"].why and "eval()" in zero["freeze"].why
    assert zero["conv-size"].choice(zero["conv-size"].answer) == "16x16"
    assert one["conv-params"].choice(one["conv-params"].answer) == "448"  # 16 * 3 * 3 * 3 + 16
    assert one["batches"].choice(one["batches"].answer) == "16"  # ceil(1000 / 64)
    assert one["grad-value"].choice(one["grad-value"].answer) == "tensor(12.)"


@pytest.mark.parametrize("phase", ["0", "1"])
def test_a_draw_is_reproducible_and_shuffled(phase):
    pool = load_quiz(phase)
    by_id = {q.id: q for q in pool.questions}
    first = quiz.draw(pool, 7)
    assert first == quiz.draw(pool, 7)  # --seed N: the same questions and choices
    assert len(first.questions) == 10 and len({q.id for q in first.questions}) == 10
    draws = [quiz.draw(pool, seed) for seed in range(40)]
    assert len({tuple(q.id for q in d.questions) for d in draws}) == 40  # each draw differs
    assert len({q.id for d in draws for q in d.questions}) == len(pool.questions)  # all get asked
    letters: dict[str, set] = {}
    for d in draws:
        for q in d.questions:
            original = by_id[q.id]
            assert sorted(q.choices) == sorted(original.choices)
            assert q.choice(q.answer) == original.choice(original.answer)  # the answer moved along
            letters.setdefault(q.id, set()).add(q.answer)
    assert sum(len(s) > 1 for s in letters.values()) > len(letters) // 2  # choices are shuffled


def test_retaking_by_memory_fails(course, home):
    """The right letters of one draw do not pass another."""
    scores = []
    for seed in range(1, 6):
        code, out, _ = course("quiz", "1", "--seed", str(seed), "--answers", right("1", 0))
        assert code == 0
        scores.append(int(out.split("score ")[1].split("/")[0]))
    assert max(scores) < 8


@pytest.mark.parametrize("phase", ["0", "1"])
def test_all_right_passes_and_is_recorded(course, home, phase):
    code, out, err = course("quiz", phase, "--seed", "11", "--answers", right(phase, 11))
    assert code == 0 and err == ""
    assert "score 10/10: PASS" in out and "--seed 11" in out
    assert_fits(out)
    [a] = attempts(home)
    assert a["phase"] == phase and a["score"] == 10 and a["total"] == 10 and a["passed"] is True
    assert a["answers"] == right(phase, 11).split(",") and a["missed"] == [] and a["date"]
    assert a["seed"] == 11 and a["questions"] == [
        q.id for q in quiz.draw(load_quiz(phase), 11).questions
    ]


def test_seven_fails_eight_passes(course, home):
    code, out, _ = course("quiz", "1", "--seed", "3", "--answers", wrong("1", 3, 3))
    assert code == 0  # a completed quiz exits 0, passed or not
    assert "score 7/10: FAIL" in out
    assert (
        out.count("\n  right: ") == 3 and out.count("\n  why: ") == 3
    )  # each miss: the answer and why
    first_q = quiz.draw(load_quiz("1"), 3).questions[0]
    assert f"right: {first_q.answer}) {first_q.choice(first_q.answer)}"[:60] in " ".join(
        out.split()
    )
    assert_fits(out)
    code, out, _ = course(
        "quiz", "1", "--seed", "3", "--answers", wrong("1", 3, 2).upper().replace(",", ", ")
    )
    assert code == 0 and "score 8/10: PASS" in out
    first, second = sorted(attempts(home), key=lambda a: a["score"])
    assert (first["score"], first["passed"], second["score"], second["passed"]) == (
        7,
        False,
        8,
        True,
    )
    assert len(first["missed"]) == 3


def test_without_a_seed_each_attempt_draws_afresh(course, home, monkeypatch):
    seeds = iter([5, 9])
    monkeypatch.setattr(quiz, "new_seed", lambda: next(seeds))
    for answer in ("b", "b"):
        monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join([answer] * 10) + "\n"))
        assert course("quiz", "0")[0] == 0
    a, b = attempts(home)
    assert {a["seed"], b["seed"]} == {5, 9} and a["questions"] != b["questions"]


def test_interactive(course, home, monkeypatch):
    drawn = quiz.draw(load_quiz("0"), 4)
    answers = right("0", 4).split(",")
    miss = "a" if answers[2] != "a" else "b"
    typed = ["", "z", answers[0].upper() + " ", answers[1], miss] + answers[
        3:
    ]  # asked again after "" and z
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(typed) + "\n"))
    code, out, err = course("quiz", "0", "--seed", "4")
    assert code == 0 and err == ""
    assert out.count("please type one of a, b, c, d") == 2
    q = drawn.questions[2]
    assert "3/10" in out and f"right: {q.answer}) " in out and q.why.split()[0] in out
    assert "score 9/10: PASS" in out
    assert_fits(out)
    [a] = attempts(home)
    assert a["answers"] == [*answers[:2], miss, *answers[3:]] and a["missed"] == [q.id]


def test_interactive_input_ends_early(course, home, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("b\nc\n"))
    code, _, err = course("quiz", "0", "--seed", "1")
    assert code == 2 and err.count("\n") == 1 and "question 3" in err
    assert not (home / "runs" / "course" / "quiz").exists()


@pytest.mark.parametrize("phase", ["0", "1"])
def test_the_pool_for_teachers(course, home, phase):
    code, out, err = course("quiz", phase, "--pool")
    assert code == 0 and err == ""
    assert_fits(out)
    pool = load_quiz(phase)
    flat = " ".join(out.split())
    for q in pool.questions:
        assert f"[{q.id}]" in out
        assert " ".join(f"* {q.answer}) {q.choice(q.answer)}".split()) in flat
    assert sum(line.startswith(" * ") for line in out.splitlines()) == len(pool.questions)
    assert not (home / "runs" / "course").exists()  # printing the pool is not an attempt


def test_two_attempts_at_once_keep_both(home, monkeypatch):
    """The second attempt is recorded while the first is being written: both stay."""
    real_dump = json.dump
    calls = []

    def dump_and_interleave(obj, f, **kw):
        calls.append(obj)
        if len(calls) == 1:
            record.record_quiz({**obj, "score": 3, "passed": False})
        return real_dump(obj, f, **kw)

    monkeypatch.setattr(json, "dump", dump_and_interleave)
    attempt = quiz.run(
        quiz.draw(load_quiz("1"), 2), right("1", 2).split(","), out=io.StringIO(), seed=2
    )
    record.record_quiz(attempt)
    monkeypatch.setattr(json, "dump", real_dump)
    kept = record.quiz_attempts()
    assert sorted(a["score"] for a in kept) == [3, 10]


def test_many_processes_at_once_lose_nothing(tmp_path):
    script = Path(sys.executable).with_name("course")
    env = {**os.environ, "LABS_ROOT": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [str(script), "quiz", "1", "--seed", str(s), "--answers", right("1", s)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for s in range(8)
    ]
    threads = [threading.Thread(target=p.wait, kwargs={"timeout": 120}) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.returncode for p in procs] == [0] * 8
    assert sorted(a["seed"] for a in attempts(tmp_path)) == list(range(8))


BAD_RECORDS = [
    ({"passed": "yes"}, "'passed' is not a bool"),
    ({"score": "10"}, "'score' is not a whole number"),
    ({"score": True}, "'score' is not a whole number"),
    ({"phase": 1}, "'phase' is not a str"),
    ({"score": 3}, "below the pass mark"),
    ({"score": 12}, "not between 0 and the total"),
]


@pytest.mark.parametrize(("change", "why"), BAD_RECORDS, ids=[w for _, w in BAD_RECORDS])
def test_a_record_with_wrong_types_is_ignored(course, home, change, why):
    folder = home / "runs" / "course" / "quiz"
    folder.mkdir(parents=True)
    good = {
        "phase": "1",
        "date": "2026-02-16 10:00:00",
        "score": 10,
        "total": 10,
        "passed": True,
        "answers": ["a"] * 10,
    }
    (folder / "bad.json").write_text(json.dumps({**good, **change}))
    code, out, err = course("progress")
    assert code == 0
    assert "not yet  Phase 1 quiz" in out and "quiz 1 passed" not in out
    assert err.count("\n") == 1 and err.startswith(
        "course: warning: ignored runs/course/quiz/bad.json"
    )
    assert why in err
    (folder / "good.json").write_text(json.dumps(good))
    code, out, _ = course("progress")
    assert "done     Phase 1 quiz" in out


def test_damaged_and_old_records(course, home):
    course_dir = home / "runs" / "course"
    (course_dir / "quiz").mkdir(parents=True)
    (course_dir / "quiz" / "cut.json").write_text("{not json")
    old = {"phase": "0", "date": "2026-02-15 10:00:00", "score": 9, "total": 10, "passed": True}
    (course_dir / "quiz.json").write_text(json.dumps([old, {"phase": "1", "passed": True}]))
    code, out, err = course("progress")
    assert code == 0 and "done     Phase 0 quiz" in out and "not yet  Phase 1 quiz" in out
    assert (
        err.count("\n") == 2
        and "cut.json: not valid JSON" in err
        and "1 attempt(s) in runs/course/quiz.json" in err
    )
    code, out, err = course("quiz", "1", "--seed", "1", "--answers", right("1", 1))
    assert (
        code == 0
        and "PASS" in out
        and (course_dir / "quiz" / "cut.json").read_text() == "{not json"
    )
    assert len(list((course_dir / "quiz").glob("*.json"))) == 2  # the new one beside cut.json
