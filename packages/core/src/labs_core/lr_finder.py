"""The learning-rate range test (Smith 2015; fastai's ``lr_find``, Lightning's ``lr_find``).

Train from the current weights for up to ``steps`` steps while the learning rate grows
exponentially from ``start`` to ``end``; record the loss, smoothed (an exponential moving average
with bias correction, beta 0.98, as fastai), and stop as soon as the smoothed loss exceeds 4x the
best seen (it diverged) or is not finite. Two rules read a rate off the curve:

    valley    fastai's default: the longest stretch over which the loss keeps falling, and a point
              in its lower half (2/3 .. 1/2 of the way down); robust to a noisy curve
    steepest  where the smoothed loss falls fastest against log(lr) (Lightning's suggestion)

Both skip the first tenth of the curve and its last five points (as fastai), where the smoothing is
still warming up and where the divergence has begun. The caller restores the weights afterwards
(``tuning.Snapshot``): the test only looks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import LabError

BETA = 0.98  # smoothing of the recorded loss
DIVERGED = 4.0  # stop when the smoothed loss exceeds this multiple of the best


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]  # raw, per step
    smoothed: list[float]
    stop_reason: str
    valley: float = math.nan
    steepest: float = math.nan

    def to_dict(self) -> dict:
        return {
            "suggested_lr": self.valley,
            "rule": "valley (fastai)",
            "valley_lr": self.valley,
            "steepest_lr": self.steepest,
            "steps_run": len(self.lrs),
            "stop_reason": self.stop_reason,
            "curve": [
                {"lr": lr, "loss": raw, "smoothed": s}
                for lr, raw, s in zip(self.lrs, self.losses, self.smoothed, strict=True)
            ],
        }


def lr_at(i: int, steps: int, start: float, end: float) -> float:
    """Step ``i``'s rate: ``start`` at step 0, ``end`` at step ``steps - 1``, geometric between."""
    return start * (end / start) ** (i / max(1, steps - 1))


def range_test(
    optimizer: torch.optim.Optimizer,
    batches: Iterator,
    step: Callable[[object], float],
    *,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
) -> LRFindResult:
    """Run the test: ``step(batch)`` trains one step at the optimizer's current rate and returns the
    loss. Every param group gets the same rate (the one swept)."""
    lrs, losses, smoothed = [], [], []
    avg, best, reason = 0.0, math.inf, f"reached --lr-find-end after {steps} steps"
    for i in range(steps):
        lr = lr_at(i, steps, start, end)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = float(step(next(batches)))
        if not math.isfinite(loss):
            reason = f"loss became {loss} at lr {lr:.3g} (step {i + 1})"
            break
        avg = BETA * avg + (1 - BETA) * loss
        smooth = avg / (1 - BETA ** (i + 1))
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(smooth)
        best = min(best, smooth)
        if smooth > DIVERGED * best:
            reason = (
                f"loss diverged at lr {lr:.3g} (step {i + 1}: smoothed loss {smooth:.3g} >"
                f" {DIVERGED:g}x best)"
            )
            break
    result = LRFindResult(lrs, losses, smoothed, reason)
    lo, hi = len(lrs) // 10, len(lrs) - 5
    if hi - lo < 3:
        raise LabError(
            f"the range test stopped after {len(lrs)} steps ({reason}); too few points to suggest a"
            " rate: lower --lr-find-end or --lr-find-start, or give more --lr-find-steps"
        )
    result.valley = valley(lrs[lo:hi], smoothed[lo:hi])
    result.steepest = steepest(lrs[lo:hi], smoothed[lo:hi])
    return result


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's valley rule: the longest decreasing subsequence of the loss (not necessarily
    contiguous, so noise does not break it), and the rate a bit past its middle
    (``start + len/3 + len/6`` of the way along)."""
    n = len(losses)
    run = [1] * n  # run[i]: the longest decreasing subsequence ending at i
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[end] < run[i]:
            end = i
            start = end - run[end]
    third = (end - start) / 3
    return lrs[start + int(third) + int(third / 2)]


def steepest(lrs: list[float], losses: list[float]) -> float:
    """The rate where the loss falls fastest per unit of log(lr)."""
    slopes = [
        (losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i]))
        for i in range(len(lrs) - 1)
    ]
    return lrs[min(range(len(slopes)), key=slopes.__getitem__)]


def plot_lr_find(result: LRFindResult, path: str | Path, title: str = "") -> None:
    """Loss against learning rate (log scale): raw and smoothed, the two suggestions marked."""
    from .plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(result.lrs, result.losses, color="0.75", linewidth=0.8, label="loss")
    ax.plot(result.lrs, result.smoothed, color="C0", label="smoothed")
    for lr, name, color in (
        (result.valley, "valley (suggested)", "C3"),
        (result.steepest, "steepest", "C2"),
    ):
        i = result.lrs.index(lr)
        ax.plot([lr], [result.smoothed[i]], "o", color=color, label=f"{name}: {lr:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    low, first = min(result.losses), result.smoothed[0]  # show the fall, not the blow-up after it
    span = max(first - low, 1e-3 * abs(first), 1e-12)
    ax.set_ylim(low - 0.05 * span, first + 0.3 * span)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title or "learning-rate range test", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    plt.close(fig)
