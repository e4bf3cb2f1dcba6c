"""Decode once: raw files become a cached dict of uint8 tensors.

The cache key is the SHA-256 of the source files' contents plus the preprocessing parameters, so
changing a file or a parameter makes a new entry. Hashing big files on every load would cost more
than decoding small ones, so each file's hash is remembered against its (size, mtime) in
``hashes.json`` and recomputed only when those change. Entries are written atomically and carry a
checksum of their tensors; a damaged entry is detected, reported on stderr, and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from ..checkpoint import atomic_write_bytes

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


def cached(cache_dir: Path, tag: str, sources: list[Path], params: dict, build: Callable[[], dict]) -> dict:
    """Return ``build()``'s dict, from the cache when the sources and params are unchanged."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    memo_path = cache_dir / "hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    digest = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "params": params}, sort_keys=True).encode())
    for src in sorted(sources):
        digest.update(src.name.encode())
        digest.update(file_sha256(src, memo).encode())
    path = cache_dir / f"{tag}-{digest.hexdigest()[:20]}.pt"
    memo_bytes = json.dumps(memo).encode()
    atomic_write_bytes(memo_path, lambda f: f.write(memo_bytes))

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
    atomic_write_bytes(path, lambda f: torch.save(entry, f))
    return data
