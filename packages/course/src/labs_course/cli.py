"""course: follow PyTorch Labs as a course.

  course                       the map: every lab and lesson of the curriculum,
                               what teaches it here, and your status
  course map [SECTION]         one section: day1 phase0 phase1 series topics
  course quiz PHASE            ten questions drawn from the phase's pool, in
                               the terminal (PHASE: 0 or 1)
  course quiz PHASE --seed N --answers a,c,b,...   draw N without prompts
  course quiz PHASE --pool     the whole pool with its answers (teachers)
  course progress              the checklists, from your evidence, and the
                               next step
  course log "what I learned"  add a dated entry to LEARNING.md (course root)
  course log [--last N]        print its last N entries (default 5)
  course site [--out DIR]      the course as a static website: the map, one page
                               per notebook (run, with its figures), the labs

Exit codes: 0 when the command did its job (a completed quiz exits 0, passed
or failed: it prints PASS or FAIL); 2 for bad input, in one line on stderr;
130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from . import learnlog, quiz, record, site
from .catalog import Section, load_map, load_quiz, quiz_phases
from .errors import CourseError
from .paths import root
from .progress import Ledger
from .text import wrap

PROG = "course"
STATUS = {True: "done     ", False: "not yet  "}
PAD = " " * 11


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (``course: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def _item_lines(item, status) -> list[str]:
    lines = [wrap(item.title, "  " + STATUS[status.done], PAD), wrap(item.what, PAD)]
    lines += [wrap(f"$ uv run {c}", PAD, PAD + "    ") for c in item.commands]
    if item.notebooks:
        lines.append(wrap("notebooks: " + ", ".join(item.notebooks), PAD, PAD + " " * 11))
    if item.also:
        lines.append(wrap("also: " + item.also, PAD, PAD + " " * 6))
    return lines


def _section_head(section: Section, ledger: Ledger) -> list[str]:
    done = sum(ledger.status(i).done for i in section.items)
    head = wrap(f"{section.title} (document {section.source}): {done} of {len(section.items)} done")
    return [head, "-" * max(len(line) for line in head.splitlines())]


def _next_lines(ledger: Ledger, sections: list[Section]) -> list[str]:
    """The course's one next step: the first item not done, in the map's order."""
    step = ledger.next_step(sections)
    if step is None:
        return [wrap("Next step: none. Every item of the course is done.")]
    out = [wrap(f"Next step ({step.section.title.split(':')[0]}): {step.item.title}")]
    for action in step.actions:
        if action.startswith("notebook:"):
            name = action.split(":", 1)[1]
            out.append(
                wrap(
                    f"open notebooks/{name}.ipynb (uv run jupyter lab) and run it to the "
                    "end, every exercise done",
                    "    ",
                    "      ",
                )
            )
        else:
            out.append(wrap(f"$ uv run {action}", "    ", " " * 8))
    out.append(wrap(f"counts as done with: {step.item.done_when}", "    ", "      "))
    status = ledger.status(step.item)
    if status.note:
        out.append(wrap(f"so far: {status.note}", "    ", "      "))
    return out


def show_map(section_id: str | None) -> int:
    all_sections = sections = load_map()
    if section_id:
        known = [s.id for s in sections]
        if section_id not in known:
            raise CourseError(f"unknown section {section_id!r}; choose one of {', '.join(known)}")
        sections = [s for s in sections if s.id == section_id]
    ledger = Ledger()
    out = [
        wrap(
            "PyTorch Labs as a course: every lab and lesson of the curriculum, the command and "
            "notebook that teach it here, and your status. Run commands from the repository "
            "root; open notebooks with `uv run jupyter lab` (folder notebooks/). "
            "`course progress` says what made each checklist item done."
        )
    ]
    for s in sections:
        out += ["", *_section_head(s, ledger)]
        if s.intro:
            out.append(wrap(s.intro, "  "))
        for item in s.items:
            out += _item_lines(item, ledger.status(item))
    out += ["", *_next_lines(ledger, all_sections)]
    if not section_id:
        out += [
            "",
            wrap('Also: `course quiz 0|1`, `course progress`, `course log "what I learned"`.'),
        ]
    print("\n".join(out))
    return 0


def show_progress() -> int:
    sections = load_map()
    ledger = Ledger()
    out = [wrap(f"Your progress, from the evidence under {ledger.runs_dir}")]
    for s in sections:
        if not s.checklist:
            continue
        out += ["", *_section_head(s, ledger)]
        for item in s.items:
            status = ledger.status(item)
            out.append(wrap(item.title, "  " + STATUS[status.done], PAD))
            if status.done:
                out.append(wrap(f"evidence: {status.evidence}", PAD, PAD + " " * 10))
            else:
                out.append(wrap(f"needs: {item.done_when}", PAD, PAD + " " * 7))
                if status.note:
                    out.append(wrap(f"so far: {status.note}", PAD, PAD + " " * 8))
    others = [i for s in sections if not s.checklist for i in s.items]
    done = sum(ledger.status(i).done for i in others)
    out += [
        "",
        wrap(
            f"The ten lessons and the topic notebooks: {done} of {len(others)} done "
            "(`course` shows them)."
        ),
        "",
        *_next_lines(ledger, sections),
    ]
    print("\n".join(out))
    return 0


def run_quiz(phase: str, answers_text: str | None, seed: int | None, pool: bool) -> int:
    bank = load_quiz(phase)
    if pool:
        if answers_text is not None or seed is not None:
            raise CourseError("--pool prints the whole pool; it takes no --answers or --seed")
        quiz.show_pool(bank)
        return 0
    if answers_text is not None and seed is None:
        raise CourseError("--answers needs --seed N: the answers are for the draw that seed makes")
    if seed is not None and seed < 0:
        raise CourseError(f"--seed must be 0 or more (got {seed})")
    seed = quiz.new_seed() if seed is None else seed
    drawn = quiz.draw(bank, seed)
    answers = quiz.parse_answers(answers_text, drawn) if answers_text is not None else None
    attempt = quiz.run(drawn, answers, seed=seed)
    try:
        path = record.record_quiz(attempt)
    except OSError as exc:
        raise CourseError(f"the attempt was not recorded: {exc}") from None
    try:
        shown = path.relative_to(root()).as_posix()
    except ValueError:
        shown = str(path)
    print(wrap(f"recorded in {shown}; `course progress` shows it."))
    return 0


def run_log(words: list[str], last: int | None) -> int:
    if words:
        if last is not None:
            raise CourseError(
                "--last goes with reading the log (course log --last N), not with a new entry"
            )
        path = learnlog.append(" ".join(words))
        count = len(learnlog.entries(path.parent))
        print(wrap(f"added entry {count} to {learnlog.NAME} in {path.parent}"))
        return 0
    n = 5 if last is None else last
    if n < 1:
        raise CourseError(f"--last must be at least 1 (got {n})")
    found = learnlog.entries()
    if not found:
        print(
            wrap(
                f"No entries in {learnlog.NAME} in {root()} yet. "
                'Add one: course log "what I learned"'
            )
        )
        return 0
    shown = found[-n:]
    out = [wrap(f"The last {len(shown)} of {len(found)} entries of {learnlog.NAME}, in {root()}:")]
    for stamp, body in shown:
        out.append(f"\n{stamp}")
        out += [wrap(line, "  ") if line.strip() else "" for line in body.splitlines()]
    print("\n".join(out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    m = sub.add_parser(
        "map",
        help="the course map (the default command)",
        description=(
            "Every lab and lesson of the curriculum documents, in order, with "
            "the command and notebook that teach it here and your status."
        ),
    )
    m.add_argument(
        "section", nargs="?", help="only this section: day1, phase0, phase1, series or topics"
    )
    phases = " or ".join(quiz_phases())
    q = sub.add_parser(
        "quiz",
        help=f"take a phase's quiz ({phases})",
        description=(
            "Ten multiple-choice questions drawn from the phase's pool of "
            "30 or more, their choices shuffled. After each miss: the right answer and "
            "why. "
            "8 of 10 passes. The attempt is recorded in runs/course/quiz/. "
            "A completed quiz exits 0, passed or failed (it prints PASS or FAIL)."
        ),
    )
    q.add_argument("phase", metavar="PHASE", help=f"the phase: {phases}")
    q.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="draw N: the same questions and choices every time (default: a fresh draw)",
    )
    q.add_argument(
        "--answers",
        metavar="a,c,b,...",
        help="answer every question of draw --seed N at once, in order (for scripts)",
    )
    q.add_argument(
        "--pool",
        action="store_true",
        help="print the whole pool with the right answers and why (for teachers)",
    )
    sub.add_parser(
        "progress",
        help="your checklists, from evidence; the next step",
        description=(
            "The first day, the Phase 0 labs and the Phase 1 checklist, in the "
            "map's order, each marked done only on evidence of its deliverable: a run under "
            "runs/ whose summary.json reached the target, a notebook whose exercises all "
            "passed, a passed quiz. Then the course's one next step."
        ),
    )
    lg = sub.add_parser(
        "log",
        help="add to or read LEARNING.md at the course root",
        description=(
            "With TEXT: append a date-stamped entry to LEARNING.md at the "
            "course root (the repository root, or $LABS_ROOT), whatever the current "
            "folder (created with a heading when missing). Without: print the last "
            "entries."
        ),
    )
    lg.add_argument("text", nargs="*", metavar="TEXT", help="what you learned (quote it, or not)")
    lg.add_argument("--last", type=int, metavar="N", help="how many entries to print (default 5)")
    site.add_parser(sub)
    return p


def dispatch(args: argparse.Namespace) -> int:
    if args.command in (None, "map"):
        return show_map(getattr(args, "section", None))
    if args.command == "quiz":
        return run_quiz(args.phase, args.answers, args.seed, args.pool)
    if args.command == "progress":
        return show_progress()
    if args.command == "site":
        return site.run(args)
    return run_log(args.text, args.last)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad flag (2, its one line already printed)
        return exc.code if isinstance(exc.code, int) else 0
    try:
        return dispatch(args)
    except CourseError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):  # `course | head`: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; nothing recorded", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
