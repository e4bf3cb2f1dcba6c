"""Memory figures: a run's peak (CUDA allocator; the process's resident memory on the CPU), and
sizes given on the command line (``--memory-budget 2GiB``).

On Linux the process's peak resident set (``VmHWM``) can be reset (``/proc/self/clear_refs``), so a
peak belongs to one run or one probe even when several share a process (tests, notebooks, the
batch-size finder). Elsewhere the peak is the process's since it started (``ru_maxrss``: KiB on
Linux, bytes on macOS).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import resource
import sys
from pathlib import Path

import torch

from .errors import LabError

MIB = 2**20
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_UNITS = {"": MIB, "k": 2**10, "m": MIB, "g": 2**30, "t": 2**40}


def rss_mib(field: str = "VmRSS") -> float | None:
    """The process's resident memory now (``VmRSS``) or at its peak (``VmHWM``), from /proc
    (Linux)."""
    try:
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def peak_rss_mib() -> float:
    """The process's peak resident memory (since the last ``reset_peak``, where it can be reset)."""
    peak = rss_mib("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / MIB if sys.platform == "darwin" else maxrss / 1024


def release_freed() -> None:
    """Give freed memory back to the OS (Python's garbage, glibc's free lists), so the next peak
    measured starts from what is really in use."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(
            OSError, AttributeError
        ):  # another C library (musl): nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak(device: torch.device) -> bool:
    """Start a new peak: the CUDA allocator's peak statistics, and the process's peak resident
    memory where the kernel allows it. Returns whether the CPU peak could be reset."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        _CLEAR_REFS.write_text("5")  # resets VmHWM (and ru_maxrss) to the current resident size
        return True
    except OSError:
        return False


def peak_memory(device: torch.device) -> dict:
    """``cpu_peak_rss_mib`` always (the process), plus ``cuda_allocated_mib`` and
    ``cuda_reserved_mib`` (tensors, and what the caching allocator held) on CUDA."""
    peak = {"cpu_peak_rss_mib": round(peak_rss_mib(), 1)}
    if device.type == "cuda":
        peak["cuda_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / MIB, 1)
        peak["cuda_reserved_mib"] = round(torch.cuda.max_memory_reserved(device) / MIB, 1)
    return peak


def describe_peak(peak: dict) -> str:
    """One phrase for the start-up and end lines: ``peak memory: CUDA 812 MiB allocated / 1,024
    MiB reserved, process 2,345 MiB resident``."""
    parts = []
    if "cuda_allocated_mib" in peak:
        parts.append(
            f"CUDA {peak['cuda_allocated_mib']:,.0f} MiB allocated /"
            f" {peak['cuda_reserved_mib']:,.0f} MiB reserved"
        )
    parts.append(f"process {peak['cpu_peak_rss_mib']:,.0f} MiB resident")
    return "peak memory: " + ", ".join(parts)


def parse_size(text: str, flag: str = "--memory-budget") -> float:
    """``512``, ``512M``, ``512MiB``, ``1.5G``, ``2GiB`` -> MiB (a bare number is MiB)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if not match:
        raise LabError(
            f"{flag} {text!r}: give a size such as 800M, 800MiB, 2G or 2GiB (a bare number is MiB)"
        )
    mib = float(match.group(1)) * _UNITS[match.group(2).lower()] / MIB
    if not mib > 0:
        raise LabError(f"{flag} must be positive (got {text!r})")
    return mib


def available_mib() -> float | None:
    """Memory the OS could still give (``MemAvailable``, Linux), or None where it cannot be read."""
    try:
        match = re.search(
            r"^MemAvailable:\s+(\d+)\s+kB", Path("/proc/meminfo").read_text(), re.MULTILINE
        )
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None
