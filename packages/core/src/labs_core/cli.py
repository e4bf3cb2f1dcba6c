"""What every command's ``main`` shares: flags parsed into a config, one-line errors, exit codes.

run_lab(prog, Config, build_plan, argv)   a lab's whole ``main``: the flags become a
                                          ``Config``, then ``run.execute(cfg, build_plan)``
run_command(prog, Config, action, argv)   any other command (``checkpoint-project export``,
                                          ``lab1-conv compare``): the flags, then ``action(cfg)``
Guard(prog)                               around both: a ``LabError`` (or an ``OSError``
                                          naming a file) is one line on stderr and exit code
                                          2, Ctrl-C exit code 130
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

from . import faults
from .errors import LabError, one_line

Subcommands = dict[str, Callable[[list[str]], int]]


class Guard:
    """``with Guard(prog) as guard: ...``, then ``return guard.code``. Errors a user can act on
    become one line on stderr and an exit code: a ``LabError`` 2 (or its own), a fault of the
    machine (a full disk, out of memory: ``faults.fault_line``) 1, Ctrl-C 130, SIGTERM 143. Under
    torchrun the processes leave together."""

    def __init__(self, prog: str):
        self.prog, self.code = prog, 0
        self.signals = faults.guarded()  # SIGTERM stops a run as Ctrl-C does: cleaned up, one line

    def __enter__(self) -> Guard:
        self.signals.__enter__()
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        from . import distributed

        try:
            self.signals.__exit__(None, None, None)
            if exc is None:
                with contextlib.suppress(RuntimeError):  # under torchrun, leave together: a peer
                    distributed.barrier()  # that exits early can abort the others
                return False
            if isinstance(exc, SystemExit):  # --help (0) or a bad flag (2, already printed)
                self.code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            elif isinstance(exc, LabError) and exc.exit_code == 0:  # NothingToDo: said once,
                if distributed.env_info().is_main:  # on stdout, not an error
                    print(f"{self.prog}: {one_line(exc)}", flush=True)
            elif isinstance(exc, LabError):
                self.say(f"error: {one_line(exc)}")
                self.code = exc.exit_code
            elif isinstance(exc, KeyboardInterrupt):  # Ctrl-C (130), SIGTERM (143)
                line, self.code = faults.stop_line(exc)
                self.say(line)
            elif (answer := faults.fault_line(exc)) is not None:  # a full disk, out of memory,
                self.say(f"error: {answer[0]}")  # a user's path that cannot be read
                self.code = answer[1]
            else:
                return False  # a bug: its traceback
            return True
        finally:
            distributed.shutdown()  # leave the process group (torchrun) cleanly; no-op otherwise

    def say(self, message: str) -> None:
        print(f"{self.prog}: {message}", file=sys.stderr)


def run_lab(
    prog: str,
    cfg_cls: type,
    build_plan: Callable,
    argv: list[str] | None = None,
    description: str = "",
    subcommands: Subcommands | None = None,
    preview: Callable[[object], bool] | None = None,
) -> int:
    """A lab's whole ``main``: ``PROG [flags]`` trains (``run.execute(cfg, build_plan)``);
    ``PROG NAME ...`` runs a subcommand (``lab0-mlp lesson tensors``), whose errors the same
    guard answers. ``preview(cfg)`` may
    handle a look that trains nothing (lab1's ``--shapes``) and return True."""
    from .config import parse_config
    from .run import execute

    argv = sys.argv[1:] if argv is None else list(argv)
    with Guard(prog) as guard:
        if subcommands and argv and argv[0] in subcommands:
            guard.code = subcommands[argv[0]](argv[1:])
        else:
            cfg = parse_config(cfg_cls, argv, prog, description)
            if not (preview and preview(cfg)):
                execute(cfg, build_plan)
    return guard.code


def run_command(
    prog: str,
    cfg_cls: type,
    action: Callable[[object], object],
    argv: list[str] | None = None,
    description: str = "",
) -> int:
    """A command other than training: its flags (a config class, declared like a lab's) parsed,
    then ``action(cfg)``, with the same one-line errors and exit codes."""
    from .config import parse_config

    with Guard(prog) as guard:
        action(parse_config(cfg_cls, argv, prog, description))
    return guard.code


def lessons_command(prog: str, lessons_module: str) -> Callable[[list[str]], int]:
    """The ``PROG lesson NAME`` subcommand over the ``LESSONS`` of ``lessons_module`` (imported
    only when a lesson runs: training never pays for the lessons' imports)."""

    def command(argv: list[str]) -> int:
        import importlib

        lessons = importlib.import_module(lessons_module).LESSONS
        if len(argv) != 1 or argv[0] not in lessons:
            raise LabError(f"usage: {prog} lesson {{{'|'.join(lessons)}}}")
        lessons[argv[0]]()
        return 0

    return command
