"""Data files that are not files: a FIFO (named pipe), a device, a socket.

Reading a FIFO waits for a writer that may never come, and ``/dev/zero`` never ends, so every data
file a command reads (text, CSV, IDX, CIFAR batches, cached sources, checkpoints) is checked here
first and such a path is refused in one line (exit 2) before anything is opened.
"""

from __future__ import annotations

import os
import stat

from .errors import LabError

KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def special_kind(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a folder, else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((name for test, name in KINDS if test(mode)), None)


def refuse_special(path: str | os.PathLike, what: str = "a data file") -> None:
    """One line, exit 2, for ``path`` naming a FIFO, device or socket where ``what`` belongs."""
    kind = special_kind(path)
    if kind is not None:
        raise LabError(
            f"{path} is {kind}, not a regular file; {what} must be a file (reading this "
            "could wait or run forever)"
        )
