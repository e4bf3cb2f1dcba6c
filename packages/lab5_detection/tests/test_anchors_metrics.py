import contextlib
import io

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lab5_detection.anchors import decode, encode, make_anchors, match_anchors
from lab5_detection.boxes import box_convert, box_iou
from lab5_detection.metrics import mean_average_precision


def test_anchors_have_every_scale_ratio_and_cell():
    a = make_anchors(4, 32, scales=[8.0, 16.0], ratios=[0.5, 1.0, 2.0])
    assert a.shape == (4 * 4 * 6, 4)
    c = box_convert(a, "xyxy", "cxcywh")
    torch.testing.assert_close(c[:6, :2], torch.full((6, 2), 4.0))  # first cell's centre
    torch.testing.assert_close(c[-1, :2], torch.tensor([28.0, 28.0]))
    torch.testing.assert_close(
        c[:6, 2] * c[:6, 3], torch.tensor([64.0] * 3 + [256.0] * 3)
    )  # area = scale^2
    torch.testing.assert_close(c[:3, 2] / c[:3, 3], torch.tensor([0.5, 1.0, 2.0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_encode_decode_round_trip(seed):
    g = torch.Generator().manual_seed(seed)
    anchors = make_anchors(8, 64, [12.0, 20.0], [0.7, 1.4])
    xy = torch.rand(len(anchors), 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 2 + torch.rand(len(anchors), 2, generator=g) * 20], 1)
    torch.testing.assert_close(decode(encode(boxes, anchors), anchors), boxes, rtol=1e-4, atol=1e-3)
    assert torch.allclose(encode(anchors, anchors), torch.zeros_like(anchors), atol=1e-6)


@pytest.mark.parametrize("pos, neg", [(0.5, 0.4), (0.6, 0.3), (0.5, 0.5)])
def test_matching_thresholds_and_forced_best_anchor(pos, neg):
    anchors = make_anchors(8, 64, [12.0, 20.0, 28.0], [1.0])
    gt = torch.tensor(
        [[10.0, 10, 30, 30], [40, 38, 44, 60]]
    )  # the second is thin: no anchor reaches pos IoU
    assigned = match_anchors(anchors, gt, pos, neg)
    iou = box_iou(anchors, gt)
    best = iou.max(1).values
    forced = iou.argmax(0)
    free = torch.ones(len(anchors), dtype=torch.bool)
    free[forced] = False
    assert torch.all(assigned[free & (best >= pos)] >= 0)
    assert torch.all(assigned[free & (best < neg)] == -1)
    assert torch.all(assigned[free & (best >= neg) & (best < pos)] == -2)
    assert assigned[forced].tolist() == [0, 1]  # every object gets its best anchor
    assert best[forced[1]] < pos
    assert torch.all(match_anchors(anchors, torch.zeros(0, 4)) == -1)


def fake_detections(seed, n_images=12, classes=3):
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(n_images):
        k = int(torch.randint(0, 5, (1,), generator=g))
        xy = torch.rand(k, 2, generator=g) * 80
        gt = torch.cat([xy, xy + 5 + torch.rand(k, 2, generator=g) * 30], 1)
        labels = torch.randint(0, classes, (k,), generator=g)
        # Predictions: jittered copies of the truth (some wrong class), plus random false positives.
        jitter = gt + torch.randn(k, 4, generator=g) * 3
        wrong = torch.rand(k, generator=g) < 0.2
        p_labels = torch.where(wrong, (labels + 1) % classes, labels)
        m = int(torch.randint(0, 4, (1,), generator=g))
        fxy = torch.rand(m, 2, generator=g) * 80
        fp = torch.cat([fxy, fxy + 5 + torch.rand(m, 2, generator=g) * 30], 1)
        boxes = torch.cat([jitter, fp]).clamp(min=0)
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        scores = torch.rand(len(boxes), generator=g)
        preds.append(
            {
                "boxes": boxes,
                "scores": scores,
                "labels": torch.cat([p_labels, torch.randint(0, classes, (m,), generator=g)]),
            }
        )
        targets.append({"boxes": gt, "labels": labels})
    return preds, targets


def coco_reference(preds, targets) -> dict:
    """pycocotools' COCOeval on the same boxes (xyxy -> COCO's xywh, in float64)."""
    gt = COCO()
    classes = sorted(
        {int(c) for t in targets for c in t["labels"]}
        | {int(c) for p in preds for c in p["labels"]}
    )
    gt.dataset = {
        "images": [{"id": i} for i in range(len(targets))],
        "categories": [{"id": c} for c in classes],
        "annotations": [],
    }
    for i, t in enumerate(targets):
        for b, c in zip(t["boxes"].double().tolist(), t["labels"].tolist(), strict=True):
            gt.dataset["annotations"].append(
                {
                    "id": len(gt.dataset["annotations"]) + 1,
                    "image_id": i,
                    "category_id": c,
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "area": (b[2] - b[0]) * (b[3] - b[1]),
                    "iscrowd": 0,
                }
            )
    dts = [
        {
            "image_id": i,
            "category_id": c,
            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            "score": s,
        }
        for i, p in enumerate(preds)
        for b, s, c in zip(
            p["boxes"].double().tolist(), p["scores"].tolist(), p["labels"].tolist(), strict=True
        )
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dts), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map": ev.stats[0], "map_50": ev.stats[1], "map_75": ev.stats[2]}


@pytest.mark.parametrize("seed", range(8))
def test_map_equals_pycocotools(seed):
    preds, targets = fake_detections(seed)
    ours = mean_average_precision(preds, targets)
    ref = coco_reference(preds, targets)
    for key in ("map", "map_50", "map_75"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key


def test_map_perfect_and_empty_cases():
    t = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    perfect = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10]]),
            "scores": torch.tensor([0.9]),
            "labels": torch.tensor([1]),
        }
    ]
    assert mean_average_precision(perfect, t)["map"] == pytest.approx(1.0)
    none = [
        {
            "boxes": torch.zeros(0, 4),
            "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.long),
        }
    ]
    assert mean_average_precision(none, t)["map_50"] == 0.0
    with pytest.raises(ValueError, match="predictions for"):
        mean_average_precision(none * 2, t)
