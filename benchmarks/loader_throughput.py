"""Images per second: the core fast loader against torchvision's usual pipeline, same MNIST images.

    uv run python benchmarks/loader_throughput.py [--data-dir ../shared/data/mnist]
        [--device cpu|cuda]

torchvision: PIL images -> RandomCrop(28, padding=2) -> ToTensor -> Normalize, DataLoader batch 64,
with 0 and 2 workers. Fast path: the same 10,000 uint8 images on the device, random translation
by up to 2 px (= RandomCrop with padding 2) and normalisation as batched tensor ops, batch 64.
Each pipeline is timed over whole passes, after one warm-up pass.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_MNIST, machine, mnist_test_set  # noqa: E402

from labs_core.data import FastLoader  # noqa: E402


class PILMnist(torch.utils.data.Dataset):
    """What torchvision.datasets.MNIST does per item: uint8 tensor -> PIL image -> transform."""

    def __init__(self, x, y, transform):
        self.x, self.y, self.transform = x[:, 0], y.tolist(), transform

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.x[i].numpy(), mode="L")), self.y[i]


def rate(loader, passes: int, device=None) -> float:
    for _ in loader:  # warm-up (workers start, caches fill)
        pass
    n, t0 = 0, time.perf_counter()
    for _ in range(passes):
        for xb, _ in loader:
            n += len(xb)
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(SHARED_MNIST))
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    x, y = mnist_test_set(args.data_dir)
    tf = T.Compose([T.RandomCrop(28, padding=2), T.ToTensor(), T.Normalize((0.1307,), (0.3081,))])
    ds = PILMnist(x, y, tf)
    results = {}
    for workers in (0, 2):
        dl = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=workers)
        results[f"torchvision DataLoader, {workers} workers"] = rate(dl, passes=1)
    fast = FastLoader(x, y, 64, device=device, augment=True, pad=2, mean=(0.1307,), std=(0.3081,))
    results[f"core FastLoader on {device.type}"] = rate(fast, passes=20, device=device)
    best_tv = max(v for k, v in results.items() if k.startswith("torchvision"))
    print(f"machine: {machine()}")
    print(f"data: {len(x):,} real MNIST test images, batch 64, random crop (padding 2) + normalise")
    for name, v in results.items():
        print(f"{name:<36} {v:>12,.0f} images/s")
    speedup = results[f"core FastLoader on {device.type}"] / best_tv
    print(f"fast path / best torchvision: {speedup:.1f}x  (goal >= 20x)")


if __name__ == "__main__":
    main()
