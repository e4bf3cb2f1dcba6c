"""The learning log: date-stamped entries in LEARNING.md at the course root (``paths.root``: the
repository root, or ``$LABS_ROOT``), whatever the current folder, like every other record.

An entry is a ``## YYYY-MM-DD HH:MM`` heading and the text under it. A new entry is appended with a
single write to the end of the file (opened for appending, so what is there is never rewritten); if
that write fails or falls short, the file is cut back to its old length, so a failure leaves it as
it was. A missing file is created with a heading first.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

from .errors import CourseError
from .paths import root

NAME = "LEARNING.md"
HEADING = (
    '# Learning log\n\nWhat I learned, one dated entry at a time (`course log "..."` adds one).\n'
)
ENTRY = re.compile(r"^## (\d{4}-\d{2}-\d{2}(?: \d{2}:\d{2})?)[ \t]*$", re.MULTILINE)


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def append(text: str, folder: Path | None = None) -> Path:
    """Add ``text`` as a new entry stamped with the local date and time. Raises ``CourseError``
    (the file unchanged) when the text is empty or the file cannot be written."""
    text = text.strip()
    if not text:
        raise CourseError('the entry is empty: course log "what I learned"')
    path = (folder or root()) / NAME
    existed = path.exists()
    entry = f"\n## {time.strftime('%Y-%m-%d %H:%M')}\n\n{text}\n"
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CourseError(f"cannot write {path}: {_why(exc)}") from None
    size = 0
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            data = HEADING + entry
        else:
            data = ("" if os.pread(fd, 1, size - 1) == b"\n" else "\n") + entry
        payload = data.encode("utf-8")
        written = os.write(fd, payload)
        if written != len(payload):
            raise OSError(0, f"only {written} of {len(payload)} bytes written")
        os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        os.close(fd)
        if not existed:
            path.unlink(missing_ok=True)
        raise CourseError(f"cannot write {path}: {_why(exc)} (the file is unchanged)") from None
    os.close(fd)
    return path


def entries(folder: Path | None = None) -> list[tuple[str, str]]:
    """Every ``(stamp, text)`` entry of LEARNING.md, oldest first; [] when there is no file."""
    path = (folder or root()) / NAME
    try:
        content = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CourseError(f"cannot read {path}: {_why(exc)}") from None
    heads = list(ENTRY.finditer(content))
    out = []
    for head, nxt in zip(heads, [*heads[1:], None], strict=True):
        body = content[head.end() : nxt.start() if nxt else len(content)]
        out.append((head.group(1), body.strip()))
    return out
