import pytest
import torch
from torchvision import ops as tv

from lab5_detection import boxes as B


def random_boxes(n, seed, size=100.0, degenerate=False):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 4
    if degenerate:
        wh[: n // 4] = 0  # zero-area boxes
        wh[n // 4 : n // 2, 0] = 0  # zero-width lines
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
def test_box_convert_matches_torchvision_and_round_trips(seed, fmt):
    b = random_boxes(50, seed, degenerate=True)
    out = B.box_convert(b, "xyxy", fmt)
    torch.testing.assert_close(out, tv.box_convert(b, "xyxy", fmt))
    torch.testing.assert_close(B.box_convert(out, fmt, "xyxy"), b)
    torch.testing.assert_close(
        B.box_convert(out, fmt, "xywh" if fmt == "cxcywh" else "cxcywh"),
        tv.box_convert(out, fmt, "xywh" if fmt == "cxcywh" else "cxcywh"),
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_box_iou_matches_torchvision_including_degenerate(seed):
    a, b = random_boxes(40, seed, degenerate=True), random_boxes(30, seed + 100, degenerate=True)
    torch.testing.assert_close(B.box_iou(a, b), tv.box_iou(a, b), equal_nan=True)
    same = B.box_iou(a[20:], a[20:]).diagonal()
    torch.testing.assert_close(same, torch.ones_like(same))


def test_iou_of_disjoint_and_nested_boxes():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[20.0, 20, 30, 30], [0, 0, 5, 10], [0, 0, 10, 10]])
    torch.testing.assert_close(B.box_iou(a, b), torch.tensor([[0.0, 0.5, 1.0]]))


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_gives_torchvisions_indices_on_thousands_of_cases(threshold):
    for seed in range(600):
        g = torch.Generator().manual_seed(seed)
        n = int(torch.randint(0, 60, (1,), generator=g))
        boxes = random_boxes(n, seed, size=60.0)
        scores = torch.rand(n, generator=g)
        if seed % 5 == 0 and n > 1:
            scores = (scores * 4).round() / 4  # many exact ties
        assert torch.equal(B.nms(boxes, scores, threshold), tv.nms(boxes, scores, threshold)), (
            seed,
            threshold,
        )


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_batched_nms_matches_torchvision(threshold):
    for seed in range(300):
        g = torch.Generator().manual_seed(seed)
        n = int(torch.randint(0, 80, (1,), generator=g))
        boxes = random_boxes(n, seed, size=60.0)
        scores = torch.rand(n, generator=g)
        classes = torch.randint(0, 4, (n,), generator=g)
        assert torch.equal(
            B.batched_nms(boxes, scores, classes, threshold),
            tv.batched_nms(boxes, scores, classes, threshold),
        ), seed


@pytest.mark.parametrize(
    "call",
    [
        lambda: B.box_iou(torch.zeros(3, 5), torch.zeros(2, 4)),
        lambda: B.box_convert(torch.zeros(4), "xyxy", "xywh"),
        lambda: B.box_convert(torch.zeros(1, 4), "xyxy", "polar"),
        lambda: B.nms(torch.zeros(3, 4), torch.zeros(2), 0.5),
    ],
)
def test_bad_inputs_are_clear_errors(call):
    with pytest.raises(ValueError, match="must have shape|box formats"):
        call()


def test_empty_inputs():
    empty = torch.zeros(0, 4)
    assert B.box_iou(empty, torch.zeros(3, 4)).shape == (0, 3)
    assert B.nms(empty, torch.zeros(0), 0.5).numel() == 0
    assert B.batched_nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0
