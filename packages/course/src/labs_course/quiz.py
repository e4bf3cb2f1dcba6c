"""``course quiz PHASE``: ten multiple-choice questions drawn from the phase's pool, their choices
shuffled, asked in the terminal and scored, with the right answer and why after each miss; 8 of 10
passes. A seed fixes the draw (``--seed N``; without one a fresh seed is picked and recorded).
Every completed attempt is recorded in ``runs/course/quiz/`` (``record.record_quiz``), which
``course progress`` reads."""

from __future__ import annotations

import dataclasses
import random
import sys
import time

from .catalog import LETTERS, Question, Quiz
from .errors import CourseError
from .text import wrap


def draw(quiz: Quiz, seed: int) -> Quiz:
    """The attempt that ``seed`` makes: ``quiz.draw`` questions of the pool in a random order, each
    with its choices shuffled (the right letter moved with its choice)."""
    rng = random.Random(f"{quiz.phase}:{seed}")
    asked = []
    for q in rng.sample(quiz.questions, min(quiz.draw, len(quiz.questions))):
        order = rng.sample(range(len(q.choices)), len(q.choices))
        right = LETTERS.index(q.answer)
        asked.append(
            dataclasses.replace(
                q, choices=tuple(q.choices[i] for i in order), answer=LETTERS[order.index(right)]
            )
        )
    return dataclasses.replace(quiz, questions=tuple(asked))


def new_seed() -> int:
    return random.SystemRandom().randrange(1_000_000)


def show_pool(quiz: Quiz, out=None) -> None:
    """Every question of the pool, with its right answer and why (for teachers)."""
    out = out or sys.stdout
    print(
        wrap(
            f"{quiz.title}: the whole pool, {len(quiz.questions)} questions (an attempt draws "
            f"{quiz.draw}, {quiz.pass_mark} right to pass; the right answer is marked *)"
        ),
        file=out,
    )
    for n, q in enumerate(quiz.questions, 1):
        print(f"\n{n}. [{q.id}] ({q.topic})", file=out)
        print(wrap(q.text, "   "), file=out)
        for letter, choice in zip(q.letters, q.choices, strict=True):
            mark = "*" if letter == q.answer else " "
            print(wrap(choice, f" {mark} {letter}) ", "      "), file=out)
        print(wrap(q.why, "   why: ", "        "), file=out)


def parse_answers(text: str, quiz: Quiz) -> list[str]:
    """``"a,c,b,..."``: one letter per question, in order."""
    answers = [a.strip().lower() for a in text.split(",")]
    n = len(quiz.questions)
    if len(answers) != n:
        raise CourseError(
            f"--answers needs {n} comma-separated answers, one per question (got {len(answers)})"
        )
    for i, (a, q) in enumerate(zip(answers, quiz.questions, strict=True), 1):
        if len(a) != 1 or a not in q.letters:
            raise CourseError(
                f"--answers: answer {i} is {a!r}; each answer is one of {', '.join(q.letters)}"
            )
    return answers


def ask(q: Question, number: int, total: int, out) -> str:
    """Show question ``number`` and read a letter from stdin until it is a valid one."""
    head = f"{number}/{total}" + (f"  ({q.topic})" if q.topic else "")
    print(f"\n{head}", file=out)
    print(wrap(q.text), file=out)
    for letter, choice in zip(q.letters, q.choices, strict=True):
        print(wrap(choice, f"  {letter}) "), file=out)
    while True:
        print(f"your answer ({'/'.join(q.letters)}): ", end="", file=out, flush=True)
        line = sys.stdin.readline()
        if not line:
            raise CourseError(f"the input ended at question {number}; nothing recorded")
        answer = line.strip().lower()
        if len(answer) == 1 and answer in q.letters:
            return answer
        print(f"  please type one of {', '.join(q.letters)}", file=out)


def explain(q: Question, given: str, out, show_question: bool) -> None:
    if show_question:
        print(wrap(q.text, "  "), file=out)
        print(wrap(q.choice(given), f"  you: {given}) ", "       "), file=out)
    print(wrap(q.choice(q.answer), f"  right: {q.answer}) ", "         "), file=out)
    print(wrap(q.why, "  why: ", "       "), file=out)


def run(quiz: Quiz, answers: list[str] | None = None, out=None, seed: int = 0) -> dict:
    """Ask the drawn ``quiz`` (or take ``answers``), show each miss, and return the attempt to
    record (``seed`` made the draw)."""
    out = out or sys.stdout
    total = len(quiz.questions)
    print(
        wrap(
            f"{quiz.title} ({total} questions, {quiz.pass_mark} right to pass; draw {seed}: "
            f"course quiz {quiz.phase} --seed {seed} asks the same)"
        ),
        file=out,
    )
    if answers is None:
        print("Answer each with its letter and Enter.", file=out)
    given, missed = [], []
    for i, q in enumerate(quiz.questions, 1):
        if answers is None:
            a = ask(q, i, total, out)
            if a == q.answer:
                print("  right.", file=out)
            else:
                print("  not quite.", file=out)
                explain(q, a, out, show_question=False)
        else:
            a = answers[i - 1]
            if a != q.answer:
                print(f"\n{i}/{total}: missed", file=out)
                explain(q, a, out, show_question=True)
        given.append(a)
        if a != q.answer:
            missed.append(q.id)
    score = total - len(missed)
    passed = score >= quiz.pass_mark
    print(
        f"\nscore {score}/{total}: {'PASS' if passed else 'FAIL'} ({quiz.pass_mark} needed)",
        file=out,
    )
    return {
        "phase": quiz.phase,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "score": score,
        "total": total,
        "passed": passed,
        "seed": seed,
        "questions": [q.id for q in quiz.questions],
        "answers": given,
        "missed": missed,
    }
