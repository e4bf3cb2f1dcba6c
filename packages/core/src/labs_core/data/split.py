"""Seeded train/validation splits, stratified on request."""

from __future__ import annotations

import torch
from torch import Tensor


def random_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (keep, held_out) with ``round(n * fraction)`` held out, in a seeded random order."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    k = int(round(n * fraction))
    return perm[k:].sort().values, perm[:k].sort().values


def stratified_split(y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Like ``random_split`` but each class gives the same fraction (at least one sample when it has
    two)."""
    g = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for c in torch.unique(y):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(len(idx) * fraction))
        if fraction > 0 and k == 0 and len(idx) >= 2:
            k = 1
        held.append(idx[:k])
        keep.append(idx[k:])
    if not keep:  # no samples at all
        return y.new_zeros(0), y.new_zeros(0)
    return torch.cat(keep).sort().values, torch.cat(held).sort().values
