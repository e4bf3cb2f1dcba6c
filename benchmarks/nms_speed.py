"""lab5's NMS against torchvision.ops.nms on 1,000 and 10,000 random boxes (CPU), same output.

uv run python benchmarks/nms_speed.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torchvision.ops import nms as tv_nms

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, median_ms  # noqa: E402

from lab5_detection.boxes import nms  # noqa: E402


def main() -> None:
    print(f"machine: {machine()}")
    for n, repeats in ((1000, 50), (10000, 5)):
        g = torch.Generator().manual_seed(0)
        xy = torch.rand(n, 2, generator=g) * 500
        boxes = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 60], 1)
        scores = torch.rand(n, generator=g)
        ours, ref = nms(boxes, scores, 0.5), tv_nms(boxes, scores, 0.5)
        assert torch.equal(ours, ref), "outputs differ"
        a = median_ms(lambda b=boxes, s=scores: nms(b, s, 0.5), repeats)
        b = median_ms(lambda b=boxes, s=scores: tv_nms(b, s, 0.5), repeats)
        print(
            f"{n:>6} boxes: scratch {a:8.2f} ms   torchvision {b:7.2f} ms   ratio {a / b:5.1f}x   "
            f"(identical {len(ref)} kept)" + ("   goal <= 10x" if n == 1000 else "")
        )


if __name__ == "__main__":
    main()
