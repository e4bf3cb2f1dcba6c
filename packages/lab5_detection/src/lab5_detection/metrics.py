"""Mean average precision, COCO-style, written out. Twin in the tests: pycocotools' COCOeval,
which it equals on generated predictions (map, map_50, map_75).

Per class and IoU threshold t:
1. In each image, sort the class's detections by score (stable) and keep the best ``max_dets``.
2. Match greedily in that order: a detection takes the still-unmatched ground truth it overlaps
   most, if that IoU >= t; otherwise it is a false positive.
3. Pool all images' detections, sort by score; precision and recall after each one.
4. Make precision non-increasing from the right (the "interpolated" envelope) and read it at
   the 101 recall levels 0, 0.01, ..., 1 (0 where that recall is never reached). AP = their mean.
mAP = mean AP over classes that have ground truth (and, for "map", over t = 0.50:0.05:0.95).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from labs_core import Callback

from .boxes import box_iou
from .data import unpad

COCO_THRESHOLDS = [0.5 + 0.05 * i for i in range(10)]
# numpy's linspace, bit for bit as COCO's: recall often lands exactly on a level (3 of 10 = 0.3),
# and torch.linspace's last bit can differ, which moves searchsorted by one.
RECALL_LEVELS = torch.from_numpy(np.linspace(0.0, 1.0, 101))


def _average_precision(scores: list[Tensor], matched: list[Tensor], num_gt: int) -> float:
    if num_gt == 0:
        return float("nan")  # excluded from the mean, as COCO's -1
    if not scores or sum(len(s) for s in scores) == 0:
        return 0.0
    s = torch.cat(scores)
    m = torch.cat(matched)
    order = torch.sort(-s, stable=True).indices
    tp = m[order].double().cumsum(0)
    fp = (~m[order]).double().cumsum(0)
    recall = tp / num_gt
    precision = tp / (tp + fp + torch.finfo(torch.float64).eps)
    precision = (
        precision.flip(0).cummax(0).values.flip(0)
    )  # envelope: best precision at >= this recall
    idx = torch.searchsorted(recall, RECALL_LEVELS, side="left")
    q = torch.where(
        idx < len(precision), precision[idx.clamp(max=len(precision) - 1)], torch.zeros(())
    )
    return q.mean().item()


def _match(ious: Tensor, threshold: float) -> Tensor:
    """Greedy matching of detections (rows, best score first) to ground truths (columns): each
    detection takes the unmatched ground truth it overlaps most (IoU >= threshold; on a tie the
    later one, as pycocotools)."""
    n_det, n_gt = ious.shape
    taken = torch.zeros(n_gt, dtype=torch.bool)
    matched = torch.zeros(n_det, dtype=torch.bool)
    limit = min(threshold, 1 - 1e-10)
    for d in range(n_det):
        row = ious[d].masked_fill(taken, -1.0)
        if n_gt == 0 or row.max() < limit:
            continue
        g = n_gt - 1 - int(row.flip(0).argmax())  # the last index holding the maximum
        taken[g] = True
        matched[d] = True
    return matched


def mean_average_precision(
    preds: list[dict],
    targets: list[dict],
    iou_thresholds: list[float] | None = None,
    max_dets: int = 100,
) -> dict[str, float]:
    """``preds``: per image ``{"boxes" (N, 4) xyxy, "scores" (N,), "labels" (N,)}``;
    ``targets``: per image ``{"boxes" (M, 4), "labels" (M,)}``. Returns map, map_50, map_75 and
    ``per_class`` AP at 0.5."""
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} images")
    thresholds = iou_thresholds or COCO_THRESHOLDS
    classes = sorted(
        {int(c) for t in targets for c in t["labels"]}
        | {int(c) for p in preds for c in p["labels"]}
    )
    ap = torch.full((len(thresholds), len(classes)), float("nan"), dtype=torch.float64)
    for k, c in enumerate(classes):
        per_t_scores = [[] for _ in thresholds]
        per_t_matched = [[] for _ in thresholds]
        num_gt = 0
        for p, t in zip(preds, targets, strict=True):
            gt = t["boxes"][t["labels"] == c].double()
            keep = p["labels"] == c
            boxes, scores = p["boxes"][keep].double(), p["scores"][keep].double()
            order = torch.sort(-scores, stable=True).indices[:max_dets]
            boxes, scores = boxes[order], scores[order]
            num_gt += len(gt)
            ious = (
                box_iou(boxes, gt)
                if len(boxes) and len(gt)
                else torch.zeros(len(boxes), len(gt), dtype=torch.float64)
            )
            for i, thr in enumerate(thresholds):
                per_t_scores[i].append(scores)
                per_t_matched[i].append(_match(ious, thr))
        for i in range(len(thresholds)):
            ap[i, k] = _average_precision(per_t_scores[i], per_t_matched[i], num_gt)

    def mean(x: Tensor) -> float:
        x = x[~torch.isnan(x)]
        return x.mean().item() if len(x) else -1.0

    def at(thr: float) -> Tensor:
        i = min(range(len(thresholds)), key=lambda j: abs(thresholds[j] - thr))
        return (
            ap[i] if abs(thresholds[i] - thr) < 1e-9 else torch.full((len(classes),), float("nan"))
        )

    return {
        "map": mean(ap.flatten()),
        "map_50": mean(at(0.5)),
        "map_75": mean(at(0.75)),
        "per_class": {c: at(0.5)[k].item() for k, c in enumerate(classes)},
    }


@torch.no_grad()
def detect_all(model, loader) -> tuple[list[dict], list[dict]]:
    was = model.training
    model.eval()
    preds, targets = [], []
    for x, y in loader:
        preds += [{k: v.cpu() for k, v in d.items()} for d in model.detect(model(x))]
        targets += [{k: v.cpu() for k, v in unpad(t).items()} for t in y]
    model.train(was)
    return preds, targets


class MapEval(Callback):
    """Adds held-out ``val_map_50`` to the logs every ``every`` epochs and at the end."""

    def __init__(self, loader, every: int):
        self.loader, self.every = loader, every

    def on_validation_end(self, trainer, logs):
        if (
            logs["epoch"] % self.every == 0
            or logs["epoch"] >= trainer.epochs
            or trainer.should_stop
        ):
            preds, targets = detect_all(trainer.module, self.loader)
            logs["val_map_50"] = mean_average_precision(preds, targets, iou_thresholds=[0.5])[
                "map_50"
            ]


class DetectionLoss:
    """A detector's ``Plan.loss_fn``: its own ``loss`` (a dict of the total and its parts) on the
    batch's padded targets."""

    def __init__(self, model):
        self.model = model

    def __call__(self, outputs, batch) -> dict:
        return self.model.loss(outputs, batch[1])
