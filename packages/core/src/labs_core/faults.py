"""What the machine, not the user, can do to a run, each answered in one line.

    a full disk, a quota,     ``write_fault``: a failed write (``OSError`` ENOSPC, EDQUOT, EROFS,
    a read-only file system   EFBIG, or torch.save's "unexpected pos" / "file write failed" from a
                              partial write) becomes a ``MachineFault`` naming the file and saying
                              the previous version is kept
    SIGTERM, SIGHUP           ``guarded`` / ``signals_raise``: raise ``Terminated`` where the run
    (schedulers, containers,  is, so the clean-up of Ctrl-C runs (lock released, temp files
    ``kill``)                 removed); inside an atomic write (``deferred``) a signal waits until
                              the file is whole, so a stop never costs the last checkpoint
    out of memory             ``fault_line``: ``MemoryError``, the CPU allocator's "can't allocate
                              memory", ``torch.OutOfMemoryError`` become one line
    a run stopped before      ``discard_unfinished``: what it wrote is removed, so the retry is
    its first epoch           not refused as "already holds a run"

``cli.Guard`` prints ``fault_line(exc)`` and exits with ``FAULT_EXIT`` (1): the command was
fine, the machine could not carry it out. Ctrl-C exits 130 and SIGTERM 143 (128 + the signal).
"""

from __future__ import annotations

import contextlib
import errno
import re
import shutil
import signal
import threading
from pathlib import Path

from .errors import LabError, one_line

FAULT_EXIT = 1
DISK_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EFBIG: "file too large for this file system",
}
# What torch.save (its zip writer) says when a write of the file under it fails part-way.
PARTIAL_WRITE = re.compile(
    r"unexpected pos|file write failed|PytorchStreamWriter failed", re.IGNORECASE
)
OOM = re.compile(
    r"can't allocate memory|out of memory|not enough memory|std::bad_alloc|"
    r"Storage size calculation overflowed",
    re.IGNORECASE,
)


class MachineFault(LabError):
    """The command was right but the machine could not carry it out (disk full, out of memory)."""

    exit_code = FAULT_EXIT


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP) arrived: stop like Ctrl-C, with the signal's exit code."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ---------------------------------------------------------------- signals
_state = threading.local()
_HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_for(signum: int) -> None:
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)


def _handler(signum, frame) -> None:
    if getattr(_state, "deferring", 0):
        _state.pending = signum  # raised when the write in progress is whole
        return
    _raise_for(signum)


@contextlib.contextmanager
def signals_raise():
    """For a command's life: SIGTERM and SIGHUP raise ``Terminated``, SIGINT ``KeyboardInterrupt``
    (as Python's own handler does), each deferred while an atomic write is in progress. Outside
    the main thread (where handlers cannot be set), and for a signal that has a handler of its
    own or is ignored, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.getsignal(sig) for sig in _HANDLED}
    for sig, old in before.items():
        # Only where Python's own behaviour stands: someone else's handling (a notebook's Ctrl-C,
        # a debugger) stays, and so does an ignored signal (``nohup`` ignores SIGHUP).
        if old is (signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL):
            signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig, old in before.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def deferred():
    """A signal that arrives inside this block is raised at its end, once the file is whole."""
    _state.deferring = getattr(_state, "deferring", 0) + 1
    try:
        yield
    finally:
        _state.deferring -= 1
        pending = getattr(_state, "pending", None)
        if pending is not None and not _state.deferring:
            _state.pending = None
            _raise_for(pending)


@contextlib.contextmanager
def guarded():
    """What ``cli.Guard`` wraps a command in: ``signals_raise``, and a writer thread's full
    disk (TensorBoard writes from a thread of its own) kept from printing a traceback; the main
    thread meets the same error at its next write and ends in one line."""
    before = threading.excepthook

    def hook(args) -> None:
        if args.exc_value is not None and disk_reason(args.exc_value, Path.cwd()) is not None:
            return
        before(args)

    threading.excepthook = hook
    try:
        with signals_raise():
            yield
    finally:
        threading.excepthook = before


def stop_line(exc: KeyboardInterrupt) -> tuple[str, int]:
    """Ctrl-C: ``interrupted``, 130; SIGTERM: ``terminated (SIGTERM)``, 143."""
    if isinstance(exc, Terminated):
        return f"terminated ({signal.Signals(exc.signum).name})", 128 + exc.signum
    return "interrupted", 130


# ---------------------------------------------------------------- writes
def disk_reason(exc: BaseException, folder: Path) -> str | None:
    """Why a write into ``folder`` failed, when the disk is the cause; None for anything else."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return DISK_ERRNOS[exc.errno]
    if isinstance(exc, RuntimeError) and PARTIAL_WRITE.search(str(exc)):
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return "the write stopped part-way"
        return "no space left on device" if free < 1 << 20 else "the write stopped part-way"
    return None


def write_fault(exc: BaseException, path: Path) -> MachineFault | None:
    """The one-line fault for a failed write of ``path`` (its temp file already removed), or None
    when the disk is not the cause. The previous ``path`` is kept: writes are atomic."""
    reason = disk_reason(exc, path.parent)
    if reason is None:
        return None
    kept = f"; the previous {path.name} is kept" if path.exists() else ""
    return MachineFault(f"cannot write {path}: {reason}{kept}")


def append_fault(exc: BaseException, what: str, folder: Path) -> MachineFault | None:
    """The same for an append-only log (TensorBoard's event file, whose records carry checksums,
    so a record cut short by a full disk is skipped by every reader)."""
    reason = disk_reason(exc, folder)
    return MachineFault(f"cannot write {what}: {reason}") if reason is not None else None


# ---------------------------------------------------------------- out of memory
def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and bool(OOM.search(str(exc)))


def memory_line(exc: BaseException) -> str:
    """``out of memory (tried to allocate 3.6 TiB)`` and what to do."""
    match = re.search(r"allocate (\d+) bytes", str(exc))
    size = f" (tried to allocate {format_bytes(int(match.group(1)))})" if match else ""
    match = re.search(r"[Tt]ried to allocate ([0-9.]+ [KMGT]?i?B)", str(exc)) if not size else None
    size = f" (tried to allocate {match.group(1)})" if match else size
    return (
        f"out of memory{size}; use a smaller --batch-size, model or data, or a machine with more "
        "memory (the last checkpoint written, if any, is kept)"
    )


def format_bytes(n: float) -> str:
    """``3.6 TiB``, ``812.0 MiB``, ``64 B``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def fault_line(exc: BaseException) -> tuple[str, int] | None:
    """The line and exit code for an exception the machine caused (disk, memory), or for an
    ``OSError`` naming a user's path (exit 2); None for anything else (a bug: shown whole)."""
    if is_out_of_memory(exc):
        return memory_line(exc), FAULT_EXIT
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename is not None else ""
        if exc.errno in DISK_ERRNOS:
            return f"{where}{DISK_ERRNOS[exc.errno]}", FAULT_EXIT
        if exc.filename is not None:  # a user's path that cannot be read or written
            return f"{where}{exc.strerror or one_line(exc)}", 2
    if isinstance(exc, RuntimeError) and PARTIAL_WRITE.search(str(exc)):
        return f"a write stopped part-way ({one_line(exc)[:120]}); is the disk full?", FAULT_EXIT
    return None


def discard_unfinished(run_dir: Path | None) -> None:
    """After a run stopped before its first epoch was saved (no checkpoint, no summary, no
    finder report): remove what it wrote (config.json, an empty metrics.jsonl, tb/), so the
    folder does not hold a "run" that refuses the retry. A folder holding anything of worth
    is left as it is."""
    if run_dir is None or not run_dir.is_dir():
        return
    from .rundir import RUN_FILES

    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.glob("*.pt")):
        return
    worth = [name for name in RUN_FILES if name not in ("config.json", "metrics.jsonl")]
    if any((run_dir / name).exists() for name in worth):
        return
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size:
        return
    for name in ("config.json", "metrics.jsonl"):
        with contextlib.suppress(OSError):
            (run_dir / name).unlink(missing_ok=True)
    for name in ("tb", "checkpoints"):
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name, ignore_errors=True)
