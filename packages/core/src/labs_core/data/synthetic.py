"""Deterministic generated images: each class is a fixed random pattern, each sample adds noise."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import DataSplits


def make_synthetic(
    num_train: int = 2000,
    num_test: int = 500,
    num_classes: int = 10,
    shape: tuple[int, int, int] = (3, 32, 32),
    noise: float = 0.35,
    seed: int = 1234,
) -> DataSplits:
    """Class templates are smooth random fields (upsampled 4x4 noise); samples are template + shift
    + noise.

    Same arguments, same bytes: the generator is seeded and the data never depends on global RNG
    state.
    """
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    coarse = torch.rand(num_classes, c, 4, 4, generator=g)
    templates = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        brightness = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=g)
        x = templates[y] * brightness + noise * torch.randn(n, c, h, w, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    train, test = sample(num_train), sample(num_test)
    return DataSplits(
        name="synthetic",
        classes=[f"class{i}" for i in range(num_classes)],
        train=train,
        test=test,
        mean=(0.5,) * c,
        std=(0.25,) * c,
        flip=True,
    )
