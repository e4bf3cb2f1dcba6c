"""Shared by the benchmark scripts: where the figures came from, and the real MNIST files."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import torch

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {os.cpu_count()} cores{gpu}; torch {torch.__version__} with"
        f" {torch.get_num_threads()} thread(s); Python {sys.version.split()[0]}"
    )


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * sorted(times)[len(times) // 2]


def mnist_test_set(data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The 10,000 real MNIST test images (uint8 (N, 1, 28, 28)) and labels, read with the core's IDX
    reader."""
    from labs_core.data import read_idx

    folder = Path(data_dir) if data_dir else SHARED_MNIST
    images = next(
        (
            folder / n
            for n in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte")
            if (folder / n).exists()
        ),
        None,
    )
    labels = next(
        (
            folder / n
            for n in ("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte")
            if (folder / n).exists()
        ),
        None,
    )
    if images is None or labels is None:
        sys.exit(f"benchmark: MNIST t10k IDX files not found in {folder} (pass --data-dir)")
    return read_idx(images, expect_dims=3).unsqueeze(1), read_idx(labels, expect_dims=1).long()
