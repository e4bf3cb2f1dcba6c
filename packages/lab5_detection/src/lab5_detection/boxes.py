"""Boxes from scratch. Twins in the tests: torchvision.ops.box_convert, box_iou, nms, batched_nms.

Formats, each ``Tensor[N, 4]``:
    xyxy    (x1, y1, x2, y2)   corners; x2 >= x1 and y2 >= y1
    xywh    (x1, y1, w, h)     top-left corner and size (COCO's format)
    cxcywh  (cx, cy, w, h)     centre and size (what box regression predicts)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

FORMATS = ("xyxy", "xywh", "cxcywh")


def _check(boxes: Tensor, name: str = "boxes") -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {tuple(boxes.shape)}")


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``boxes (N, 4)`` between xyxy, xywh and cxcywh (through xyxy)."""
    _check(boxes)
    if in_fmt not in FORMATS or out_fmt not in FORMATS:
        raise ValueError(f"box formats are {FORMATS}, got {in_fmt!r} -> {out_fmt!r}")
    if in_fmt == out_fmt:
        return boxes.clone()
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        boxes = torch.stack([a, b, a + c, b + d], dim=-1)
    elif in_fmt == "cxcywh":
        boxes = torch.stack([a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d], dim=-1)
    x1, y1, x2, y2 = boxes.unbind(-1)
    if out_fmt == "xywh":
        return torch.stack([x1, y1, x2 - x1, y2 - y1], dim=-1)
    if out_fmt == "cxcywh":
        return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)
    return boxes


def box_area(boxes: Tensor) -> Tensor:
    """Area of xyxy boxes (N, 4) -> (N,)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of xyxy boxes: (N, 4), (M, 4) -> (N, M).

    Intersection = the overlap rectangle's area (clamped at 0 when the boxes do not overlap);
    IoU = intersection / (area1 + area2 - intersection). Two zero-area boxes give 0/0 = NaN,
    as torchvision does.
    """
    _check(boxes1, "boxes1")
    _check(boxes2, "boxes2")
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2)
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter
    return inter / union


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression: keep the best box, drop every box overlapping it by more
    than ``iou_threshold``, repeat. Returns kept indices, best score first (torchvision's order).

    Vectorised: one IoU matrix up front (memory grows as N^2), then a loop over boxes in score
    order that only ORs rows of it (in NumPy, whose per-call cost is a fraction of torch's).
    Ties in score keep the lower index first (a stable sort), as torchvision does.
    """
    _check(boxes)
    if scores.dim() != 1 or len(scores) != len(boxes):
        raise ValueError(f"scores must have shape ({len(boxes)},), got {tuple(scores.shape)}")
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order])  # (N, N), rows and columns in score order
    overlaps = (iou > iou_threshold).cpu().numpy()
    removed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if removed[i]:
            continue
        keep.append(i)
        removed |= overlaps[i]  # suppress everything this kept box overlaps (row i)
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


def batched_nms(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each class independently: shift each class's boxes by ``class * (max + 1)`` so
    boxes of different classes can never overlap (coordinates are assumed non-negative), then run
    one NMS. Same offsets, so the same indices, as torchvision's."""
    _check(boxes)
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    offset = classes.to(boxes.dtype) * (
        boxes.max() + torch.tensor(1, dtype=boxes.dtype, device=boxes.device)
    )
    return nms(boxes + offset[:, None], scores, iou_threshold)
