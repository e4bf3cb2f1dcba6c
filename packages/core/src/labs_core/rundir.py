"""The guard on the run directory: what a run may write where, and one run at a time.

    check_out(run_dir, ...)   at start-up, before any data is read: ``--out`` naming a file, or a
                              folder that holds a run this one neither continues (``--resume``) nor
                              replaces (``--overwrite``), is refused in one line
    RunDirLock(run_dir)       for the life of a run: ``<run_dir>/.lock`` holds the owner's pid and
                              host, created with O_EXCL, so a second run into the same folder is
                              refused; a lock whose process is gone (killed, power cut) is taken
                              over, and the temp files its killed writes left are removed
                              (clear_leftovers)
    clear_run(run_dir)        ``--overwrite``: the old run's files go before the new run writes, so
                              the two never mix (one metrics.jsonl, one TensorBoard file)

Every run goes through ``run.execute``, which calls these (rank 0 only writes and locks).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from .checkpoint import TMP_SUFFIX, atomic_write_bytes
from .errors import LabError

# What makes a folder a run's: any of these (what every run writes first).
RUN_MARKERS = ("config.json", "metrics.jsonl", "summary.json", "checkpoints", "tb")
# What --overwrite removes: the markers, the reports runs write beside them (by name), and the
# figures this project wrote (tagged PNGs: ``png_is_ours``). A user's own file in the folder stays.
RUN_FOLDERS = ("checkpoints", "tb", "profile")
RUN_FILES = (
    "config.json",
    "metrics.jsonl",
    "summary.json",
    "phases.json",
    "lr_find.json",
    "batch_size.json",
    "tokenizer.json",
    "sample.txt",
    "confusion_matrix.txt",
    "per_class_accuracy.txt",
)
LOCK_NAME = ".lock"
FRESH_LOCK_S = 10.0  # an unreadable lock younger than this is being written: treat it as held


def holds_run(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).exists() for name in RUN_MARKERS)


def continues(run_dir: Path, resume_path: Path | None) -> bool:
    """Whether resuming ``resume_path`` continues the run in ``run_dir`` (its checkpoint lives
    there)."""
    if resume_path is None or resume_path.parent.name != "checkpoints":
        return False
    return resume_path.resolve().parent.parent == run_dir.resolve()


def check_writable(out: Path, folders) -> None:
    """The nearest existing of ``folders`` (``out`` or its parents, nearest first) must be a folder
    this process can write in; else one line naming it, for the command's ``--out``."""
    for folder in folders:
        if folder.exists():
            if not folder.is_dir():
                raise LabError(f"--out {out}: {folder} is a file, not a folder")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise LabError(f"--out {out}: cannot write in {folder} (permission denied)")
            return


# The tag the files our commands write carry (an ONNX model's metadata, a PNG's "Software" text):
# how a later command knows a file is one this project wrote.
WRITER = "PyTorch Labs"


def check_replace(
    path: Path, *, overwrite: bool, ours: Callable[[Path], bool], flag: str = "--out"
) -> None:
    """The one rule for a file a command is about to write: a new name is fine; an existing file
    is replaced only when this project wrote it (``ours(path)``) and the command says to
    (``--overwrite``). Anything else is refused in one line, before anything is written."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir():
        raise LabError(f"{flag} {path} is a folder; give a file name")
    if path.is_symlink() or not ours(path):
        raise LabError(
            f"{flag} {path} exists and is not a file this project wrote; it is never written over "
            "(give another name)"
        )
    if not overwrite:
        raise LabError(
            f"{flag} {path} exists (an earlier output of this command); replace it with"
            " --overwrite, or give another name"
        )


def png_is_ours(path: Path) -> bool:
    """A PNG this project wrote: its "Software" text chunk holds ``WRITER``."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.format == "PNG" and im.info.get("Software") == WRITER
    except Exception:  # noqa: BLE001 -- any file that does not open as our PNG is not ours
        return False


def check_out(run_dir: Path, *, resume_path: Path | None, overwrite: bool) -> None:
    """Refuse, in one line and before anything is read or written, a run directory this run must
    not write into."""
    if run_dir.exists() and not run_dir.is_dir():
        raise LabError(f"--out {run_dir} is a file, not a folder; give a folder for the run")
    check_writable(run_dir, (run_dir, *run_dir.parents))
    here = continues(run_dir, resume_path)
    if overwrite and here:
        raise LabError(
            f"--overwrite would clear the run that --resume continues ({run_dir}); give one of them"
        )
    if holds_run(run_dir) and not here and not overwrite:
        raise LabError(
            f"--out {run_dir} already holds a run; continue it with --resume, replace it with "
            "--overwrite, or give another --out"
        )


def clear_run(run_dir: Path) -> None:
    """Remove a run's files (``--overwrite``): its folders, its reports and the figures this
    project wrote; anything else in the folder stays (the one replace rule: only what we wrote)."""
    for name in RUN_FOLDERS:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for path in run_dir.glob("*.png"):
        if path.is_file() and not path.is_symlink() and png_is_ours(path):
            path.unlink()


def clear_leftovers(run_dir: Path) -> list[Path]:
    """Remove the temp files of atomic writes a killed process left (``.last.pt.x1y2.tmp``) in
    ``run_dir`` and its ``checkpoints/``; called by the run that has just locked the folder, so no
    write of another run is in progress there. Returns what it removed."""
    removed = []
    for folder in (run_dir, run_dir / "checkpoints"):
        for path in folder.glob(f".*{TMP_SUFFIX}"):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


class RunDirLock:
    """``<folder>/.lock`` for as long as a run writes into ``folder``: held by one process at a
    time."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False

    def acquire(self) -> RunDirLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None:
                    raise LabError(
                        f"{self.folder} is in use by another run ({owner}); wait for it to finish"
                        f" or give another --out (if no run is using it, delete {self.path})"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(f"{os.getpid()} {socket.gethostname()}\n")
            except BaseException:  # a full disk: no half-written lock left behind
                self.path.unlink(missing_ok=True)
                raise
            self.held = True
            clear_leftovers(self.folder)
            return self
        raise LabError(f"could not lock {self.folder} ({self.path} keeps reappearing)")

    def _owner(self) -> str | None:
        """Who holds the lock, or None when it is stale (its process no longer exists)."""
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError:
            return "unknown owner"
        parts = text.split()
        if len(parts) < 2 or not parts[0].isdigit():
            return "a lock being written" if age < FRESH_LOCK_S else None
        pid, host = int(parts[0]), parts[1]
        if host != socket.gethostname():
            return f"process {pid} on {host}"  # cannot tell from here whether it is alive
        if pid == os.getpid() or _alive(pid):
            return f"process {pid}"
        return None

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


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
    candidates = sorted(
        Path(root, lab).glob("*/checkpoints/last.pt"), key=lambda p: p.stat().st_mtime
    )
    if not candidates:
        raise LabError(
            f"--resume: no earlier run with a checkpoint under {Path(root, lab)} (give a PATH)"
        )
    return candidates[-1]


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically, so a crash never leaves half a file."""
    data = (json.dumps(obj, indent=2, default=str) + "\n").encode()
    atomic_write_bytes(path, lambda f: f.write(data))
