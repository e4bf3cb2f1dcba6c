"""``course quiz PHASE``: ten multiple-choice questions in the terminal, scored, with the right
answer and why after each miss; 8 of 10 passes. Every completed attempt is recorded in
``runs/course/quiz.json`` (``record.record_quiz``), which ``course progress`` reads."""

from __future__ import annotations

import sys
import time

from .catalog import Question, Quiz
from .errors import CourseError
from .text import wrap


def parse_answers(text: str, quiz: Quiz) -> list[str]:
    """``"a,c,b,..."``: one letter per question, in order."""
    answers = [a.strip().lower() for a in text.split(",")]
    n = len(quiz.questions)
    if len(answers) != n:
        raise CourseError(f"--answers needs {n} comma-separated answers, one per question (got {len(answers)})")
    for i, (a, q) in enumerate(zip(answers, quiz.questions, strict=True), 1):
        if len(a) != 1 or a not in q.letters:
            raise CourseError(f"--answers: answer {i} is {a!r}; each answer is one of {', '.join(q.letters)}")
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


def run(quiz: Quiz, answers: list[str] | None = None, out=None) -> dict:
    """Ask (or take ``answers``), show each miss, and return the attempt to record."""
    out = out or sys.stdout
    total = len(quiz.questions)
    print(wrap(f"{quiz.title} ({total} questions, {quiz.pass_mark} right to pass)"), file=out)
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
    print(f"\nscore {score}/{total}: {'PASS' if passed else 'FAIL'} ({quiz.pass_mark} needed)", file=out)
    return {"phase": quiz.phase, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "score": score,
            "total": total, "passed": passed, "answers": given, "missed": missed}
