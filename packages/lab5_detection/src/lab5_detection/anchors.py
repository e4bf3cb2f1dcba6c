"""Anchors, matching, and box encoding: the anchor-based detector's bookkeeping.

An anchor is a fixed reference box at each feature-map cell (several sizes and aspect ratios).
Training assigns each anchor to a ground-truth box or to background; the network predicts, per
anchor, class scores and the offsets that turn the anchor into its box.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .boxes import box_convert, box_iou


def make_anchors(
    feature_size: int, image_size: int, scales: list[float], ratios: list[float]
) -> Tensor:
    """Anchors (cells * len(scales) * len(ratios), 4) in xyxy pixels, cell by cell (row-major).

    At each cell centre, for each scale s (a side length in pixels) and ratio r = w / h: a box of
    area s^2 with w = s * sqrt(r), h = s / sqrt(r).
    """
    stride = image_size / feature_size
    centres = (torch.arange(feature_size, dtype=torch.float32) + 0.5) * stride
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")  # (F, F)
    shapes = torch.tensor(
        [[s * math.sqrt(r), s / math.sqrt(r)] for s in scales for r in ratios]
    )  # (A, 2)
    cxcy = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, len(shapes), 2)  # (F*F, A, 2)
    wh = shapes[None].expand(cxcy.shape[0], -1, -1)
    return box_convert(torch.cat([cxcy, wh], dim=-1).reshape(-1, 4), "cxcywh", "xyxy")


def match_anchors(
    anchors: Tensor, gt_boxes: Tensor, pos_iou: float = 0.5, neg_iou: float = 0.4
) -> Tensor:
    """Assign each anchor: index of its ground-truth box (>= 0), -1 background, -2 ignored.

    IoU >= ``pos_iou`` -> positive (its best box); IoU < ``neg_iou`` -> background; in between ->
    ignored (neither pushed to a class nor to background). Then every ground-truth box is forced
    onto its best anchor, so no object is left without an anchor however odd its shape.
    """
    if neg_iou > pos_iou:
        raise ValueError("neg_iou must not exceed pos_iou")
    n = len(anchors)
    if len(gt_boxes) == 0:
        return torch.full((n,), -1, dtype=torch.long, device=anchors.device)
    iou = box_iou(anchors, gt_boxes)  # (A, G)
    best_iou, best_gt = iou.max(dim=1)
    assigned = torch.full((n,), -2, dtype=torch.long, device=anchors.device)
    assigned[best_iou < neg_iou] = -1
    positive = best_iou >= pos_iou
    assigned[positive] = best_gt[positive]
    best_anchor = iou.argmax(dim=0)  # (G,): each ground truth's favourite anchor
    assigned[best_anchor] = torch.arange(len(gt_boxes), device=anchors.device)
    return assigned


# Offsets are divided by these so that each of them has roughly unit variance (the SSD choice).
VARIANCES = (0.1, 0.2)


def encode(boxes: Tensor, anchors: Tensor) -> Tensor:
    """xyxy boxes relative to xyxy anchors -> offsets (N, 4): centre shift in anchor sizes, log size
    ratio."""
    b = box_convert(boxes, "xyxy", "cxcywh")
    a = box_convert(anchors, "xyxy", "cxcywh")
    dxy = (b[:, :2] - a[:, :2]) / a[:, 2:] / VARIANCES[0]
    dwh = torch.log(b[:, 2:] / a[:, 2:]) / VARIANCES[1]
    return torch.cat([dxy, dwh], dim=1)


def decode(offsets: Tensor, anchors: Tensor) -> Tensor:
    """The inverse of ``encode``: offsets (N, 4) + anchors (N, 4) -> xyxy boxes (N, 4)."""
    a = box_convert(anchors, "xyxy", "cxcywh")
    cxy = a[:, :2] + offsets[:, :2] * VARIANCES[0] * a[:, 2:]
    wh = a[:, 2:] * torch.exp((offsets[:, 2:] * VARIANCES[1]).clamp(max=math.log(1000.0)))
    return box_convert(torch.cat([cxy, wh], dim=1), "cxcywh", "xyxy")
