"""What every lab's ``main`` shares: the error guard and the run directory."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .checkpoint import atomic_write_bytes
from .errors import LabError, one_line, out_of_memory


def main_guard(prog: str, fn: Callable[[], int | None]) -> int:
    """Run ``fn``; a ``LabError`` (or an ``OSError`` naming a file: a folder where a file belongs, no
    permission) becomes one line on stderr and exit code 2, Ctrl-C exit code 130."""
    from . import distributed

    try:
        code = fn() or 0
        with contextlib.suppress(RuntimeError):  # under torchrun, leave together: a peer
            distributed.barrier()  # that exits early can abort the others
        return code
    except LabError as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a user's path that cannot be read or written (a folder, no permission)
        if exc.filename is None:
            raise
        print(f"{prog}: error: {exc.filename}: {exc.strerror or one_line(exc)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:  # an allocation a flag made too large: one line
        if (message := out_of_memory(exc)) is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()  # leave the process group (torchrun) cleanly; no-op otherwise


def run_lab(prog: str, cfg_cls: type, train: Callable, argv: list[str] | None = None, description: str = "",
            subcommands: dict[str, Callable[[list[str]], int]] | None = None) -> int:
    """A lab's whole ``main``: parse ``cfg_cls`` from the flags and ``train(cfg)``, or run a
    subcommand (``lab0-mlp lesson ...``); every user error ends in one line and exit code 2."""
    from .config import parse_config

    argv = sys.argv[1:] if argv is None else list(argv)

    def run() -> int:
        if subcommands and argv and argv[0] in subcommands:
            return subcommands[argv[0]](argv[1:])
        try:
            cfg = parse_config(cfg_cls, argv, prog, description)
        except SystemExit as exc:  # --help (0) or a bad flag (2, message already printed)
            return int(exc.code or 0)
        train(cfg)
        return 0

    return main_guard(prog, run)


def lessons_command(prog: str, load: Callable[[], dict[str, Callable[[], None]]]) -> Callable[[list[str]], int]:
    """The ``PROG lesson NAME`` subcommand over the lessons ``load()`` returns (imported lazily)."""

    def command(argv: list[str]) -> int:
        lessons = load()
        if len(argv) != 1 or argv[0] not in lessons:
            raise LabError(f"usage: {prog} lesson {{{'|'.join(lessons)}}}")
        lessons[argv[0]]()
        return 0

    return command


def new_run_dir(lab: str, root: str | Path = "runs") -> Path:
    """A fresh ``runs/<lab>/<timestamp>`` path (with a suffix if that exists); not created yet."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / lab / stamp
    n = 1
    while path.exists():
        path = Path(root) / lab / f"{stamp}-{n}"
        n += 1
    return path


def find_latest_checkpoint(lab: str, root: str | Path = "runs") -> Path:
    """The newest ``runs/<lab>/*/checkpoints/last.pt`` (what ``--resume`` with no path means)."""
    candidates = sorted(Path(root, lab).glob("*/checkpoints/last.pt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise LabError(f"--resume: no earlier run with a checkpoint under {Path(root, lab)} (give a PATH)")
    return candidates[-1]


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically, so a crash never leaves half a file."""
    data = (json.dumps(obj, indent=2, default=str) + "\n").encode()
    atomic_write_bytes(path, lambda f: f.write(data))
