"""The batch-size finder: the largest batch whose training step fits, and how fast each size trains.

Sizes double from 2 until one does not fit (or the training split is used up), then the gap
between the last that fitted and the first that did not is bisected in multiples of 8 (as
Lightning's batch-size scaler does in its ``binsearch`` mode). What "fits" means:

    CUDA   the step ran without ``torch.cuda.OutOfMemoryError`` (caught, the cache emptied, and the
           next size tried), and, with a budget, the allocator's peak reserved memory is within it
    CPU    the process's peak resident memory over the step is within the budget (a CPU has no
           out-of-memory error to catch: the kernel would kill the process instead)

Each probe is one warm-up step (optimizer state allocated, kernels chosen) then timed steps on a
batch of that size (at least ``STEPS``, more while under ``MIN_SECONDS``), for images/s from the
median step time (robust to a busy machine). The suggestion is the largest size that fits; the
fastest size is reported beside it. The caller restores the weights after every probe.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from .errors import LabError
from .memory import peak_memory, release_freed, reset_peak

START = 2  # batch norm needs two samples
STEPS = 3  # timed steps per probe, at least
MIN_SECONDS, MAX_STEPS = 0.5, 20  # more steps while they are quick: a median over enough of them


@dataclass
class Probe:
    batch_size: int
    fits: bool
    images_per_s: float | None  # None when the step ran out of memory
    peak_mib: (
        float | None
    )  # what the budget is checked against (CUDA reserved, or process resident)
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def search(probe: Callable[[int], Probe], cap: int, start: int = START) -> list[Probe]:
    """Probe sizes (doubling, then bisecting) up to ``cap``; every probe, in the order tried."""
    tried: list[Probe] = []
    size, fitted, failed = min(start, cap), None, None
    while True:
        result = probe(size)
        tried.append(result)
        if not result.fits:
            failed = size
            break
        fitted = size
        if size >= cap:
            break
        size = min(2 * size, cap)
    if fitted is None:
        raise LabError(
            f"even a batch of {size} does not fit ({result.note}); give a larger --memory-budget "
            "or a smaller model"
        )
    while failed is not None:
        mid = (fitted + failed) // 2
        if fitted >= 8:
            mid -= mid % 8  # multiples of 8: what GPUs' matrix units and most recipes use
        if mid <= fitted:
            break
        result = probe(mid)
        tried.append(result)
        fitted, failed = (mid, failed) if result.fits else (fitted, mid)
    return tried


def suggestion(tried: list[Probe]) -> tuple[int, int]:
    """(largest size that fits, fastest size that fits)."""
    fits = [p for p in tried if p.fits]
    largest = max(p.batch_size for p in fits)
    fastest = max(fits, key=lambda p: p.images_per_s or 0.0).batch_size
    return largest, fastest


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc)
    )


def measure(
    size: int,
    make_batch: Callable[[int], object],
    step: Callable[[object], object],
    device: torch.device,
    budget_mib: float | None,
    steps: int = STEPS,
) -> Probe:
    """One probe: a warm-up step and at least ``steps`` timed steps on a batch of ``size``; its
    speed and peak memory."""
    release_freed()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    reset_peak(device)
    batch = None
    try:
        batch = make_batch(size)
        step(batch)
        _sync(device)
        times: list[float] = []
        while len(times) < steps or (sum(times) < MIN_SECONDS and len(times) < MAX_STEPS):
            began = time.perf_counter()
            step(batch)
            _sync(device)
            times.append(time.perf_counter() - began)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        del batch, exc  # free the failed step's tensors before the next size
        release_freed()
        torch.cuda.empty_cache()
        return Probe(size, False, None, None, "out of memory")
    del batch
    peak = peak_memory(device)
    used = peak["cuda_reserved_mib"] if device.type == "cuda" else peak["cpu_peak_rss_mib"]
    fits = budget_mib is None or used <= budget_mib
    note = "" if fits else f"{used:,.0f} MiB > budget {budget_mib:,.0f} MiB"
    return Probe(size, fits, size / statistics.median(times), used, note)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def format_table(tried: list[Probe], measure_name: str) -> str:
    """The probes sorted by size: batch size, images/s, peak memory, whether it fits."""
    lines = [f"{'batch':>7}  {'images/s':>10}  {measure_name:>22}  fits"]
    for p in sorted(tried, key=lambda p: p.batch_size):
        speed = f"{p.images_per_s:,.0f}" if p.images_per_s is not None else "-"
        peak = f"{p.peak_mib:,.0f} MiB" if p.peak_mib is not None else "-"
        lines.append(
            f"{p.batch_size:>7}  {speed:>10}  {peak:>22}  {'yes' if p.fits else 'no: ' + p.note}"
        )
    return "\n".join(lines)
