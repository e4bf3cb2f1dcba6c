"""lab1's unfold + matmul convolution against F.conv2d on a typical layer, CPU.

    uv run python benchmarks/conv_speed.py [--threads 1 2]

Layer: batch 64, 32 -> 64 channels, 14x14, 3x3, padding 1 (the second block of an MNIST CNN).
Prints forward and forward+backward milliseconds for both, their ratio, and checks equal outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, median_ms  # noqa: E402

from lab1_conv.ops import conv2d  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
    args = p.parse_args()
    print(f"machine: {machine()}")
    print("layer: batch 64, 32 -> 64 channels, 14x14, 3x3, padding 1; outputs equal (assert_close)")
    for threads in dict.fromkeys(args.threads):
        torch.set_num_threads(threads)
        run(threads)


def run(threads: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 32, 14, 14, requires_grad=True)
    w = torch.randn(64, 32, 3, 3, requires_grad=True)
    b = torch.randn(64, requires_grad=True)
    ours = conv2d(x, w, b, 1, 1)
    ref = F.conv2d(x, w, b, 1, 1)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)

    def fwd(fn):
        with torch.no_grad():
            fn(x, w, b, 1, 1)

    def fwd_bwd(fn):
        fn(x, w, b, 1, 1).sum().backward()

    res = {}
    for name, fn in (("unfold+matmul", conv2d), ("F.conv2d", F.conv2d)):
        res[name] = (median_ms(lambda fn=fn: fwd(fn), 20), median_ms(lambda fn=fn: fwd_bwd(fn), 20))
    print(f"-- {threads} thread(s)")
    for name, (f, fb) in res.items():
        print(f"{name:<14} forward {f:7.2f} ms   forward+backward {fb:7.2f} ms")
    rf = res["unfold+matmul"][0] / res["F.conv2d"][0]
    rfb = res["unfold+matmul"][1] / res["F.conv2d"][1]
    print(f"ratio unfold/F.conv2d: forward {rf:.2f}x, forward+backward {rfb:.2f}x  (goal <= 3x)")


if __name__ == "__main__":
    main()
