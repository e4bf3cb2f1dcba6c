"""Checkpoints: plain dicts of tensors and primitives, written atomically, loaded safely.

``torch.load(path, weights_only=True)`` is the only way we read them, so opening a checkpoint can
never run code. Writing goes to a temporary file in the same folder, is fsynced, then renamed over
the target: a crash while saving leaves the previous good file where it was.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from .errors import LabError

FORMAT_VERSION = 1


def atomic_write_bytes(path: str | os.PathLike, write) -> None:
    """Call ``write(fileobj)`` on a temp file next to ``path``, fsync it, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def library_versions() -> dict:
    import numpy

    return {
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),
        "numpy": str(numpy.__version__),
        "platform": platform.platform(),
    }


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Save ``state`` (plus format version and library versions) atomically."""
    full = {"format_version": FORMAT_VERSION, "versions": library_versions(), **state}
    atomic_write_bytes(path, lambda f: torch.save(full, f))


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; any failure becomes one clear ``LabError``."""
    path = Path(path)
    if not path.is_file():
        raise LabError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, a pickle that wants to run code...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LabError(f"checkpoint {path} is corrupt or not a PyTorch Labs checkpoint ({reason[:200]})") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise LabError(f"checkpoint {path} is not a PyTorch Labs checkpoint (no 'model' entry)")
    return state


def strip_prefix(state_dict: dict, prefixes=("module.", "_orig_mod.")) -> dict:
    """Remove wrapper prefixes (DDP's ``module.``, torch.compile's ``_orig_mod.``) from keys."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        out[key] = value
    return out


def load_model_state(model: nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """``load_state_dict`` that explains a wrong architecture in one line instead of a traceback."""
    state_dict = strip_prefix(state_dict)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and hasattr(state_dict[k], "shape") and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches {_few(mismatched)}")
        raise LabError(f"{source} does not fit this model: " + "; ".join(parts))
    model.load_state_dict(state_dict)


def _few(items: list[str], n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)})"
