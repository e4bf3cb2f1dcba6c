"""Output that fits an 80-column terminal."""

from __future__ import annotations

import textwrap

WIDTH = 79


def wrap(text: str, indent: str = "", hang: str | None = None) -> str:
    """``text`` wrapped to WIDTH columns: the first line starts with ``indent``, the others with
    ``hang`` (default: as many spaces). Words (commands, paths) are never broken."""
    hang = " " * len(indent) if hang is None else hang
    lines = textwrap.wrap(
        " ".join(text.split()),
        WIDTH,
        initial_indent=indent,
        subsequent_indent=hang,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return "\n".join(lines) if lines else indent.rstrip()
