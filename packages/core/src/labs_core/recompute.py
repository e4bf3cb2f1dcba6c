"""Activation checkpointing (``--grad-checkpoint``): keep only each segment's input during the
forward pass and recompute the segment's activations when the backward pass needs them. Memory for
activations drops to the segment inputs plus one segment's worth, for one more forward pass of time.

``run_segments`` is what a model calls in ``forward``. It uses ``torch.utils.checkpoint`` (the
non-reentrant kind, which works with DDP, ``torch.compile`` and inputs that need no gradient) and
adds the one thing it leaves to the caller: batch norm. Recomputing a segment runs its batch norms
again in training mode, which would update their running statistics a second time (and count the
batch twice); the recomputation here puts those buffers back as they were, so a checkpointed model's
running mean and variance equal an ordinary one's. Dropout needs nothing: ``checkpoint`` replays the
RNG state, so the recomputed masks are the ones the forward pass drew.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

_NORMS = (nn.modules.batchnorm._BatchNorm,)


@contextlib.contextmanager
def buffers_kept(module: nn.Module) -> Iterator[None]:
    """Whatever runs inside leaves ``module``'s batch-norm buffers (running mean, variance, count)
    as they were on entry."""
    saved = [(b, b.clone()) for m in module.modules() if isinstance(m, _NORMS) for b in m.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def run_segments(segments: Iterable[nn.Module], x: Tensor, enabled: bool) -> Tensor:
    """``x`` through each segment in turn; with ``enabled`` (and gradients being recorded) each one
    is checkpointed: its activations are recomputed in the backward pass instead of being kept."""
    recording = enabled and torch.is_grad_enabled()
    for segment in segments:
        if not recording:
            x = segment(x)
        elif torch.compiler.is_compiling() or not has_norms(segment):
            # Under torch.compile the recomputation is part of the compiled backward graph, which
            # recomputes values only: the buffer updates happen once, in the forward graph.
            x = checkpoint(segment, x, use_reentrant=False)
        else:
            x = checkpoint(
                segment,
                x,
                use_reentrant=False,
                context_fn=lambda seg=segment: (contextlib.nullcontext(), buffers_kept(seg)),
            )
    return x


def has_norms(module: nn.Module) -> bool:
    return any(isinstance(m, _NORMS) for m in module.modules())
