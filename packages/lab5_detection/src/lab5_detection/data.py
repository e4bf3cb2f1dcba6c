"""A synthetic detection dataset, generated deterministically from a seed.

Each image: a noisy background and one to ``max_objects`` shapes (square, circle, triangle) of
varied size, colour and position; shapes may overlap a little (IoU <= 0.3 between boxes), a later
one drawn over an earlier one. Boxes are the tight xyxy pixel bounds of each shape.
Targets are padded to ``(N, max_objects, 5)`` rows of ``(label, x1, y1, x2, y2)``, label -1 = none.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .boxes import box_iou

CLASSES = ["square", "circle", "triangle"]


def _shape_mask(kind: int, cx: float, cy: float, r: float, size: int) -> Tensor:
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    if kind == 0:  # square
        return ((xs - cx).abs() <= r) & ((ys - cy).abs() <= r)
    if kind == 1:  # circle
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    top = cy - r  # triangle pointing up: half-width grows from 0 at the top to r at the base
    return (ys >= top) & (ys <= cy + r) & ((xs - cx).abs() <= (ys - top) / 2)


def make_detection_set(
    n: int,
    image_size: int = 64,
    max_objects: int = 4,
    seed: int = 0,
    min_size: int = 10,
    max_size: int = 28,
) -> tuple[Tensor, Tensor]:
    """``n`` images (uint8 (n, 3, S, S)) and padded targets (float32 (n, max_objects, 5))."""
    g = torch.Generator().manual_seed(seed)
    images = torch.empty(n, 3, image_size, image_size, dtype=torch.uint8)
    targets = torch.full((n, max_objects, 5), -1.0)
    rand = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    for i in range(n):
        base = 40 + 60 * rand(3, 1, 1)
        img = base + 14 * torch.randn(3, image_size, image_size, generator=g)
        count = int(torch.randint(1, max_objects + 1, (1,), generator=g))
        boxes: list[Tensor] = []
        for _ in range(20 * count):  # rejection sampling for limited overlap
            if len(boxes) == count:
                break
            kind = int(torch.randint(0, len(CLASSES), (1,), generator=g))
            r = (min_size + (max_size - min_size) * rand(1).item()) / 2
            cx = r + (image_size - 2 * r) * rand(1).item()
            cy = r + (image_size - 2 * r) * rand(1).item()
            mask = _shape_mask(kind, cx, cy, r, image_size)
            rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
            if len(rows) == 0:
                continue
            box = torch.tensor(
                [[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], dtype=torch.float32
            )
            if boxes and box_iou(box, torch.cat([b[:, 1:] for b in boxes])).max() > 0.3:
                continue
            colour = 130 + 125 * rand(3, 1, 1)
            img = torch.where(
                mask, colour + 10 * torch.randn(3, image_size, image_size, generator=g), img
            )
            boxes.append(torch.cat([torch.tensor([[float(kind)]]), box], dim=1))
        targets[i, : len(boxes)] = torch.cat(boxes)
        images[i] = img.clamp(0, 255).round().to(torch.uint8)
    return images, targets


def unpad(target: Tensor) -> dict[str, Tensor]:
    """One padded target (max_objects, 5) -> {"boxes" (K, 4), "labels" (K,)}."""
    real = target[:, 0] >= 0
    return {"boxes": target[real, 1:], "labels": target[real, 0].long()}
