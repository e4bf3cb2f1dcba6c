"""Core trainer vs a hand-written loop: same model, batches and optimizer, CPU, one thread.

    uv run python benchmarks/trainer_overhead.py [--epochs 5] [--data-dir ../shared/data/mnist]

784-128-10 MLP, 8,000 MNIST images (random bytes when the files are absent), batch 64, SGD.
Both loops draw batches from the same FastLoader, track loss and accuracy; epochs alternate
between the two so drift in machine speed hits both alike. Prints seconds per epoch and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_MNIST, machine, mnist_test_set  # noqa: E402

from labs_core import Trainer, seed_everything  # noqa: E402
from labs_core.data import FastLoader  # noqa: E402


def make(x, y):
    seed_everything(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = FastLoader(x, y, 64, seed=0, mean=(0.1307,), std=(0.3081,))
    return model, opt, loader


def hand_epoch(model, opt, loader, epoch):
    model.train()
    loader.set_epoch(epoch)
    total, correct, n = torch.zeros(()), torch.zeros(()), 0
    for xb, yb in loader:
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach() * len(yb)
        correct += (out.argmax(1) == yb).sum()
        n += len(yb)
    return (total / n).item(), (correct / n).item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--data-dir", default=str(SHARED_MNIST))
    args = p.parse_args()
    torch.set_num_threads(1)
    if Path(args.data_dir).exists():
        x, y = mnist_test_set(args.data_dir)
        x, y, source = x[:8000], y[:8000], "real MNIST (first 8,000 t10k images)"
    else:
        g = torch.Generator().manual_seed(0)
        x, y, source = (
            torch.randint(0, 256, (8000, 1, 28, 28), generator=g, dtype=torch.uint8),
            torch.arange(8000) % 10,
            "random bytes",
        )

    hand_model, hand_opt, hand_loader = make(x, y)
    core_model, core_opt, core_loader = make(x, y)
    trainer = Trainer(core_model, core_opt, core_loader, epochs=1)
    hand_times, core_times = [], []
    hand_epoch(hand_model, hand_opt, hand_loader, 0)  # warm-up both
    trainer.epochs = 1
    trainer.fit()
    for e in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        hand_epoch(hand_model, hand_opt, hand_loader, e)
        hand_times.append(time.perf_counter() - t0)
        trainer.epochs = e + 1
        t0 = time.perf_counter()
        trainer.fit()
        core_times.append(time.perf_counter() - t0)
    hand, core = statistics.median(hand_times), statistics.median(core_times)
    print(f"machine: {machine()}")
    print(
        f"data: {source}; 784-128-10 MLP, batch 64, SGD momentum, {len(hand_loader)} steps/epoch; "
        f"median of {args.epochs} epochs"
    )
    print(f"hand-written loop: {hand:.3f} s/epoch")
    print(f"core Trainer:      {core:.3f} s/epoch")
    print(f"ratio core/hand:   {core / hand:.3f}  (goal <= 1.05)")


if __name__ == "__main__":
    main()
