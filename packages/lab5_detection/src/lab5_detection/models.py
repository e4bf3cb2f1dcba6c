"""Two detectors on one small backbone.

- ``AnchorDetector`` (SSD-style): at every cell of the stride-8 map, for each anchor, C + 1 class
  scores (background first) and 4 box offsets. Loss: cross-entropy on positives and on the
  hardest negatives (3 per positive: hard-negative mining) + smooth L1 on positives' offsets.
- ``CenterDetector`` (CenterNet-style, anchor-free): at every cell of the stride-4 map, a heatmap
  per class that peaks at object centres, the box size, and the sub-cell offset of the centre.
  Loss: penalty-reduced focal loss on the heatmap + L1 on size and offset at the centres.
Both ``loss(outputs, targets)`` return the parts separately so a learner can watch each one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .anchors import decode, encode, make_anchors, match_anchors
from .boxes import batched_nms
from .data import unpad


def block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Backbone(nn.Module):
    """Stride-4 features (for the anchor-free head) and stride-8 features (for both)."""

    def __init__(self, widths=(24, 48, 64, 96)):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.stage4 = nn.Sequential(
            block(3, w1), nn.MaxPool2d(2), block(w1, w2), nn.MaxPool2d(2)
        )  # /4
        self.stage8 = nn.Sequential(block(w2, w3), nn.MaxPool2d(2), block(w3, w4))  # /8
        self.channels = (w2, w4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f4 = self.stage4(x)
        return f4, self.stage8(f4)


class AnchorDetector(nn.Module):
    loss_names = ("loss", "cls", "bg", "box")  # what ``loss`` returns

    def __init__(
        self,
        num_classes: int,
        image_size: int = 64,
        scales=(12.0, 20.0, 28.0),
        ratios=(0.7, 1.0, 1.4),
    ):
        super().__init__()
        self.num_classes, self.image_size = num_classes, image_size
        self.backbone = Backbone()
        c = self.backbone.channels[1]
        self.num_anchors = len(scales) * len(ratios)
        self.cls_head = nn.Conv2d(c, self.num_anchors * (num_classes + 1), 3, padding=1)
        self.box_head = nn.Conv2d(c, self.num_anchors * 4, 3, padding=1)
        self.register_buffer(
            "anchors",
            make_anchors(image_size // 8, image_size, list(scales), list(ratios)),
            persistent=False,
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        _, f8 = self.backbone(x)
        b = x.shape[0]
        cls = (
            self.cls_head(f8).permute(0, 2, 3, 1).reshape(b, -1, self.num_classes + 1)
        )  # (B, cells*A, C+1)
        box = self.box_head(f8).permute(0, 2, 3, 1).reshape(b, -1, 4)  # (B, cells*A, 4)
        return {"cls": cls, "box": box}

    def loss(self, out: dict[str, Tensor], targets: Tensor) -> dict[str, Tensor]:
        cls_losses, bg_losses, box_losses, n_pos = [], [], [], 0
        for i in range(len(targets)):
            t = unpad(targets[i])
            assigned = match_anchors(self.anchors, t["boxes"])  # (A,)
            pos = assigned >= 0
            labels = torch.zeros_like(assigned)  # 0 = background
            labels[pos] = t["labels"][assigned[pos]] + 1
            ce = F.cross_entropy(out["cls"][i], labels, reduction="none")  # (A,)
            neg = assigned == -1
            k = min(int(neg.sum()), max(3 * int(pos.sum()), 1))
            hardest = ce.masked_fill(~neg, -1.0).topk(k).indices  # hard-negative mining
            cls_losses.append(ce[pos].sum())
            bg_losses.append(ce[hardest].sum())
            if pos.any():
                goal = encode(t["boxes"][assigned[pos]], self.anchors[pos])
                box_losses.append(F.smooth_l1_loss(out["box"][i][pos], goal, reduction="sum"))
            n_pos += int(pos.sum())
        norm = max(n_pos, 1)
        parts = {
            "cls": torch.stack(cls_losses).sum() / norm,
            "bg": torch.stack(bg_losses).sum() / norm,
            "box": (torch.stack(box_losses).sum() if box_losses else out["box"].sum() * 0) / norm,
        }
        return {"loss": parts["cls"] + parts["bg"] + parts["box"], **parts}

    @torch.no_grad()
    def detect(
        self,
        out: dict[str, Tensor],
        score_threshold: float = 0.05,
        iou_threshold: float = 0.5,
        max_dets: int = 100,
    ) -> list[dict[str, Tensor]]:
        results = []
        probs = out["cls"].softmax(-1)[..., 1:]  # (B, A, C) without background
        for i in range(len(probs)):
            boxes = decode(out["box"][i], self.anchors).clamp(0, self.image_size)
            scores, labels = (
                probs[i].flatten(),
                torch.arange(self.num_classes, device=probs.device).repeat(len(boxes)),
            )
            idx = torch.arange(len(boxes), device=probs.device).repeat_interleave(self.num_classes)
            keep = scores > score_threshold
            b, s, lab = boxes[idx[keep]], scores[keep], labels[keep]
            kept = batched_nms(b, s, lab, iou_threshold)[:max_dets]
            results.append({"boxes": b[kept], "scores": s[kept], "labels": lab[kept]})
        return results


class CenterDetector(nn.Module):
    loss_names = ("loss", "heatmap", "size", "offset")  # what ``loss`` returns

    def __init__(self, num_classes: int, image_size: int = 64):
        super().__init__()
        self.num_classes, self.image_size, self.stride = num_classes, image_size, 4
        self.backbone = Backbone()
        c4, c8 = self.backbone.channels
        self.neck = block(c4 + c8, 64)
        self.heatmap = nn.Conv2d(64, num_classes, 1)
        self.size = nn.Conv2d(64, 2, 1)
        self.offset = nn.Conv2d(64, 2, 1)
        nn.init.constant_(
            self.heatmap.bias, -math.log((1 - 0.1) / 0.1)
        )  # start at p = 0.1: a stable focal loss

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        f4, f8 = self.backbone(x)
        h = self.neck(torch.cat([f4, F.interpolate(f8, scale_factor=2, mode="nearest")], dim=1))
        return {"heatmap": self.heatmap(h), "size": self.size(h), "offset": self.offset(h)}

    def targets(self, targets: Tensor, shape) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Gaussian heatmaps (B, C, H, W) and, at each object's centre cell, size and offset
        goals."""
        b, _, h, w = shape
        heat = torch.zeros(b, self.num_classes, h, w, device=targets.device)
        ys, xs = torch.meshgrid(
            torch.arange(h, device=targets.device),
            torch.arange(w, device=targets.device),
            indexing="ij",
        )
        sizes, offsets, where = [], [], []
        for i in range(b):
            t = unpad(targets[i])
            for box, label in zip(t["boxes"], t["labels"], strict=True):
                c = (box[:2] + box[2:]) / 2 / self.stride  # centre in map cells
                cell = c.floor().long().clamp(0, w - 1)
                wh = (box[2:] - box[:2]) / self.stride
                sigma = (wh.min() / 6).clamp(min=0.6)  # smaller objects: sharper peaks
                g = torch.exp(-((xs - cell[0]) ** 2 + (ys - cell[1]) ** 2) / (2 * sigma**2))
                heat[i, label] = torch.maximum(heat[i, label], g)
                where.append((i, cell[1], cell[0]))
                sizes.append(wh)
                offsets.append(c - cell)
        if where:
            idx = torch.tensor([[i, int(y), int(x)] for i, y, x in where], device=targets.device)
            return heat, idx, torch.stack(sizes), torch.stack(offsets)
        return heat, torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 2), torch.zeros(0, 2)

    def loss(self, out: dict[str, Tensor], targets: Tensor) -> dict[str, Tensor]:
        heat, idx, sizes, offsets = self.targets(targets, out["heatmap"].shape)
        p = out["heatmap"].sigmoid().clamp(1e-4, 1 - 1e-4)
        peak = heat == 1
        pos_loss = -((1 - p) ** 2 * torch.log(p))[peak].sum()
        neg_loss = -((1 - heat) ** 4 * p**2 * torch.log(1 - p))[~peak].sum()
        n = max(len(idx), 1)
        b, y, x = idx[:, 0], idx[:, 1], idx[:, 2]
        size_pred = out["size"][b, :, y, x]  # (K, 2)
        off_pred = out["offset"][b, :, y, x]
        parts = {
            "heatmap": (pos_loss + neg_loss) / n,
            "size": 0.1 * F.l1_loss(size_pred, sizes, reduction="sum") / n,
            "offset": F.l1_loss(off_pred, offsets, reduction="sum") / n,
        }
        return {"loss": parts["heatmap"] + parts["size"] + parts["offset"], **parts}

    @torch.no_grad()
    def detect(
        self, out: dict[str, Tensor], score_threshold: float = 0.05, max_dets: int = 100
    ) -> list[dict[str, Tensor]]:
        heat = out["heatmap"].sigmoid()
        peaks = heat * (
            F.max_pool2d(heat, 3, stride=1, padding=1) == heat
        )  # local maxima only: no NMS
        b, c, h, w = heat.shape
        results = []
        for i in range(b):
            scores, flat = peaks[i].flatten().topk(min(max_dets, c * h * w))
            keep = scores > score_threshold
            scores, flat = scores[keep], flat[keep]
            labels, cell = flat // (h * w), flat % (h * w)
            y, x = cell // w, cell % w
            centre = torch.stack([x, y], 1).float() + out["offset"][i, :, y, x].t()
            size = out["size"][i, :, y, x].t().clamp(min=0)
            boxes = torch.cat([centre - size / 2, centre + size / 2], 1) * self.stride
            results.append(
                {"boxes": boxes.clamp(0, self.image_size), "scores": scores, "labels": labels}
            )
        return results
