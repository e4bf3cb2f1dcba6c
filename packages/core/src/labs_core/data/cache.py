"""Decode once: raw files become a cached dict of uint8 tensors.

The cache key is the SHA-256 of the source files' contents plus the preprocessing parameters, so
changing a file or a parameter makes a new entry. Hashing big files on every load would cost more
than decoding small ones, so each file's hash is remembered against its (size, mtime) in
``hashes.json`` and recomputed only when those change. The cache goes beside the data when that
folder is writable, else into the user's cache folder (``$XDG_CACHE_HOME/pytorch-labs`` or
``~/.cache/pytorch-labs``), so a read-only data folder works. Entries are written atomically and
carry a checksum of their tensors; a damaged entry is detected, reported on stderr, and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..checkpoint import atomic_write_bytes
from ..errors import one_line
from ..faults import MachineFault
from ..files import refuse_special

CACHE_VERSION = 1


def file_sha256(path: Path, memo: dict) -> str:
    st = path.stat()
    key = str(path.resolve())
    hit = memo.get(key)
    if hit and hit["size"] == st.st_size and hit["mtime_ns"] == st.st_mtime_ns:
        return hit["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    memo[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest()}
    return memo[key]["sha256"]


def _tensor_checksum(payload: dict) -> int:
    total = 0
    for name in sorted(payload):
        v = payload[name]
        if isinstance(v, torch.Tensor):
            total = (total * 1_000_003 + int(v.to(torch.int64).sum()) + v.numel()) % (1 << 61)
    return total


def user_cache_dir(beside: Path) -> Path:
    """Where the cache of data in a folder this process cannot write goes: the user's cache
    (``$XDG_CACHE_HOME`` or ``~/.cache``) ``/pytorch-labs/``, one folder per data folder."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pytorch-labs"
    data = beside.resolve().parent
    return base / f"{data.name or 'root'}-{hashlib.sha256(str(data).encode()).hexdigest()[:12]}"


def _writable(folder: Path) -> bool:
    """Whether files can be made in ``folder`` (created if missing): tried, not guessed, since a
    read-only mount or a full quota answers only to a real write."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


def cache_folder(preferred: Path) -> Path | None:
    """``preferred`` (beside the data) when it can be written, else the user's cache folder; None
    when neither can (the data is then decoded on every load)."""
    return next(
        (folder for folder in (preferred, user_cache_dir(preferred)) if _writable(folder)), None
    )


def cached(
    cache_dir: Path, tag: str, sources: list[Path], params: dict, build: Callable[[], dict]
) -> dict:
    """Return ``build()``'s dict, from the cache when the sources and params are unchanged. The
    cache lives in ``cache_dir`` (beside the data) when that is writable, else in the user's cache
    folder; a cache that cannot be written at all (a full disk) costs only the speed-up."""
    for src in sources:
        refuse_special(src)
    folder = cache_folder(cache_dir)
    if folder is None:
        print(
            f"note: no writable cache folder ({cache_dir}, {user_cache_dir(cache_dir)}); decoding "
            "without a cache",
            file=sys.stderr,
        )
        return build()
    cache_dir = folder
    memo_path = cache_dir / "hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    digest = hashlib.sha256(
        json.dumps({"v": CACHE_VERSION, "params": params}, sort_keys=True).encode()
    )
    for src in sorted(sources):
        digest.update(src.name.encode())
        digest.update(file_sha256(src, memo).encode())
    path = cache_dir / f"{tag}-{digest.hexdigest()[:20]}.pt"
    memo_bytes = json.dumps(memo).encode()
    _try_write(memo_path, lambda f: f.write(memo_bytes))

    if path.exists():
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            if entry.get("checksum") == _tensor_checksum(entry["data"]):
                return entry["data"]
            problem = "checksum mismatch"
        except Exception as exc:  # truncated or garbage file
            problem = type(exc).__name__
        print(f"note: cache file {path} is damaged ({problem}); rebuilding it", file=sys.stderr)
    data = build()
    entry = {"data": data, "checksum": _tensor_checksum(data)}
    _try_write(path, lambda f: torch.save(entry, f))
    return data


def _try_write(path: Path, write) -> None:
    """A cache entry written atomically; when the disk refuses (full, read-only), a note, and the
    run goes on without it."""
    try:
        atomic_write_bytes(path, write)
    except (OSError, MachineFault) as exc:
        print(
            f"note: cannot write the cache file {path} ({one_line(exc)}); continuing without it",
            file=sys.stderr,
        )
