"""Checkpoints: plain dicts of tensors and primitives, written atomically, loaded safely.

``torch.load(path, weights_only=True)`` is the only way we read them, so opening a checkpoint can
never run code. Writing goes to a temporary file in the same folder, is fsynced, then renamed over
the target: a crash while saving leaves the previous good file where it was.
"""

from __future__ import annotations

import os
import pickle
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from . import faults
from .errors import LabError, NothingToDo, one_line
from .files import refuse_special

FORMAT_VERSION = 1
TMP_SUFFIX = ".tmp"  # atomic writes' temp files: ``.<name>.<random>.tmp`` beside the target


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """A text report (UTF-8) written atomically."""
    data = text.encode()
    atomic_write_bytes(path, lambda f: f.write(data))


def atomic_write_bytes(path: str | os.PathLike, write) -> None:
    """Call ``write(fileobj)`` on a temp file next to ``path``, fsync it, then rename it into place.
    On any failure the temp file is removed and ``path`` stays as it was; a full or read-only disk
    is a ``faults.MachineFault`` naming ``path``."""

    def write_to(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    atomic_write_file(path, write_to)


def atomic_write_file(path: str | os.PathLike, write_to) -> None:
    """``write_to(temp_name)`` (for writers that take a file name: a profiler's trace), then the
    temp file, beside ``path``, renamed into place. A signal (SIGTERM, Ctrl-C) arriving meanwhile
    waits until the file is whole; on a failure the temp file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with faults.deferred():
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
            os.close(fd)
            write_to(tmp)
            os.replace(tmp, path)
        except BaseException as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            fault = faults.write_fault(
                exc, path
            )  # a full or read-only disk: one line, not a traceback
            if fault is not None:
                raise fault from None
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


# What a checkpoint must hold to be resumed (``Trainer.load_state_dict`` reads these).
RESUME_KEYS = ("model", "optimizer", "epoch", "global_step", "best", "rng")


def refuse_finished(state: dict, cfg) -> None:
    """Stop a resume that would add nothing to the checkpoint's run, before anything is written
    (``NothingToDo``: one line, exit code 0, the finished run's files untouched): its epochs reach
    ``--epochs``, its steps reach ``--max-steps``, or it stopped early and the same ``--patience``
    would stop it again at once. A plan that goes further continues."""
    epochs, steps = int(state.get("epoch", 0)), int(state.get("global_step", 0))
    mid_epoch = bool(state.get("batch_in_epoch", 0))
    wait = (state.get("callbacks") or {}).get("EarlyStopping", {}).get("wait", 0)
    if epochs >= cfg.epochs:
        raise NothingToDo(
            f"already finished {epochs} epoch{'s' * (epochs != 1)}; nothing to do "
            f"(give --epochs more than {epochs} to continue)"
        )
    if cfg.max_steps and steps >= cfg.max_steps:
        raise NothingToDo(
            f"already took {steps} steps (--max-steps {cfg.max_steps}); nothing to do "
            "(give a larger --max-steps, or none, to continue)"
        )
    if getattr(cfg, "patience", 0) and wait >= cfg.patience and not mid_epoch:
        raise NothingToDo(
            f"already stopped early after {epochs} epochs (no improvement for {wait}); "
            "nothing to do (give a larger --patience, or 0, to continue)"
        )


def load_checkpoint(
    path: str | os.PathLike, map_location="cpu", require: tuple[str, ...] = ("model",)
) -> dict:
    """Load a checkpoint with ``weights_only=True``; any failure becomes one clear ``LabError`` that
    names the file (and never passes on torch's advice to turn weights-only loading off).
    ``require``: the entries the caller reads, each checked here."""
    path = Path(path)
    if path.is_dir():
        raise LabError(f"checkpoint {path} is a directory, not a checkpoint file")
    refuse_special(path, "a checkpoint")
    if not path.is_file():
        raise LabError(f"checkpoint not found: {path}")
    try:
        with path.open("rb") as f:
            head = f.read(2)
    except OSError as exc:
        raise LabError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if head != b"PK" and not head.startswith(b"\x80"):  # neither torch.save's zip nor a pickle
        raise LabError(
            f"checkpoint {path} is corrupt or not a checkpoint of this project (not a file"
            " torch.save wrote)"
        )
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise LabError(
                f"{path} is not a checkpoint of this project: it holds Python objects, not only"
                " tensors and plain values (it was not opened, so nothing in it ran)"
            ) from None
        raise LabError(
            f"{path} is not a checkpoint of this project (not a file torch.save wrote)"
        ) from None
    except OSError as exc:
        raise LabError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # truncated zip, garbage bytes
        reason = (
            one_line(exc).split(". ")[0][:120] if isinstance(exc, RuntimeError) else "unreadable"
        )
        raise LabError(
            f"checkpoint {path} is corrupt or not a checkpoint of this project ({reason})"
        ) from None
    if not isinstance(state, dict):
        raise LabError(
            f"{path} is not a checkpoint of this project (it holds a {type(state).__name__}, not a"
            " dict)"
        )
    require_entries(state, require, path)
    check_values(state, path)
    return state


def check_values(state: dict, path: str | os.PathLike) -> None:
    """A checkpoint whose numbers could only give nonsense is refused in one line: a weight that is
    NaN or infinite (every prediction would be "nan"), a negative epoch or step count."""
    for key in ("epoch", "global_step"):
        value = state.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not value >= 0:
            raise LabError(
                f"{path} is damaged: its {key!r} is {value} (a count of training done is never "
                "negative)"
            )
    model = state.get("model")
    for name, tensor in model.items() if isinstance(model, dict) else ():
        if (
            isinstance(tensor, torch.Tensor)
            and tensor.is_floating_point()
            and not torch.isfinite(tensor).all()
        ):
            bad = int((~torch.isfinite(tensor)).sum())
            raise LabError(
                f"{path} is damaged: weight {name!r} holds {bad} NaN or infinite value(s), so every"
                " prediction would be nan"
            )


def require_entries(state: dict, keys: tuple[str, ...], path: str | os.PathLike) -> None:
    """One line naming ``path`` and what it lacks, instead of a ``KeyError`` later."""
    missing = [key for key in keys if key not in state]
    if missing:
        what = "a checkpoint of this project" if "model" in missing else "a complete checkpoint"
        raise LabError(
            f"{path} is not {what}: no {', '.join(map(repr, missing))}"
            f" entr{'y' if len(missing) == 1 else 'ies'}"
        )
    if "model" in keys and not isinstance(state["model"], dict):
        raise LabError(
            f"{path} is not a checkpoint of this project: its 'model' entry is not a state dict"
        )


def strip_prefix(state_dict: dict, prefixes=("module.", "_orig_mod.")) -> dict:
    """Remove wrapper prefixes (DDP's ``module.``, torch.compile's ``_orig_mod.``) from keys."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key, changed = key[len(p) :], True
        out[key] = value
    return out


def load_model_state(model: nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """``load_state_dict`` that explains a wrong architecture in one line instead of a traceback."""
    check_model_state(model, state_dict, source)
    model.load_state_dict(strip_prefix(state_dict))


def check_model_state(model: nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """Whether ``state_dict`` fits ``model`` (keys and shapes, wrapper prefixes aside); one line
    naming what does not. A sharded model's state dict shows whole shapes, so it is checked alike.
    """
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


def _few(items: list[str], n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)})"
