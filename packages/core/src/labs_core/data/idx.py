"""The IDX format of MNIST and Fashion-MNIST: a magic number, dimensions, then raw bytes.

Magic: two zero bytes, a type byte (0x08 = unsigned byte), then the number of dimensions.
Images are ``[n, rows, cols]`` (magic 0x00000803), labels ``[n]`` (magic 0x00000801).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import LabError, one_line
from ..files import refuse_special


def read_idx(path: str | Path, expect_dims: int | None = None) -> torch.Tensor:
    """Read an IDX file (gzipped or not) of unsigned bytes into a uint8 tensor, validating it."""
    path = Path(path)
    refuse_special(path, "an IDX file")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (
        OSError,
        EOFError,
        zlib.error,
    ) as exc:  # BadGzipFile is an OSError; a corrupt stream, zlib.error
        raise LabError(
            f"cannot read {path}: {'corrupt gzip data' if path.suffix == '.gz' else 'unreadable'} "
            f"({one_line(exc)})"
        ) from None
    if len(raw) < 4:
        raise LabError(f"{path} is not an IDX file (only {len(raw)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise LabError(f"{path} is not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    if expect_dims is not None and ndim != expect_dims:
        raise LabError(f"{path}: expected {expect_dims} dimensions, the header says {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise LabError(f"{path} is truncated (header incomplete)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims)) if dims else 0
    if len(raw) - header != expected:
        raise LabError(
            f"{path}: header promises {expected} bytes of data {dims}, file holds"
            f" {len(raw) - header}"
        )
    data = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    return torch.from_numpy(data.copy())


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzipped if the name ends in .gz). Used by tests and tools."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = (
        struct.pack(">HBB", 0, 0x08, array.ndim)
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )
    path = Path(path)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
