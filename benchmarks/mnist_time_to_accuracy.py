"""Time to 98.3% MNIST test accuracy: the classic reference recipe against lab1's fast recipe.

    uv run python benchmarks/mnist_time_to_accuracy.py [--data-dir ../shared/data/mnist]
        [--ref-epochs 6]

Data: the real MNIST images in IDX format; the first 8,000 images of the 10k file train, the last
2,000 test (the split every figure in this repository uses). Both recipes run in this process,
on the same data, with all of the machine's threads. Test accuracy is measured after every epoch;
the time reported is training wall time (evaluation excluded) when it first reaches 98.3%.

(a) reference: the classic PyTorch MNIST example — two 3x3 convs (32, 64), max-pool, dropout
    0.25 / 0.5, fc 128; Adadelta lr 1.0, StepLR gamma 0.7; batch 64; ToTensor + Normalize through
    a DataLoader.
(b) lab1 fast recipe: exactly what ``lab1-conv --dataset mnist`` runs (its default there), through
    the lab's own code: the core FastLoader (whole set as uint8 tensors, batched random translation
    by up to 1 px), lab1's CNN (widths 16-32-64, batch norm, flatten head) with torch's conv,
    channels-last, bf16 autocast, SGD Nesterov + one-cycle schedule over 3 epochs (peak 0.1),
    label smoothing 0.1, batch 64, the core trainer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_MNIST, machine, mnist_test_set  # noqa: E402

from lab1_conv.model import ReferenceNet  # noqa: E402
from labs_core import Callback, seed_everything  # noqa: E402

TARGET = 0.983
MEAN, STD = (0.1307,), (0.3081,)


@torch.no_grad()
def accuracy(model, x, y, batch=1000, channels_last=False) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        correct += (model(xb).argmax(1) == y[i : i + batch]).sum().item()
    model.train()
    return correct / len(x)


def reference(train_x, train_y, test_x, test_y, epochs: int) -> list[tuple[float, float]]:
    from torchvision import transforms as T

    class Images(
        torch.utils.data.Dataset
    ):  # as torchvision.datasets.MNIST: tensor -> PIL -> transform
        def __init__(self, x, y):
            self.x, self.y = x[:, 0], y
            self.tf = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            from PIL import Image

            return self.tf(Image.fromarray(self.x[i].numpy(), mode="L")), int(self.y[i])

    seed_everything(1)
    loader = torch.utils.data.DataLoader(Images(train_x, train_y), batch_size=64, shuffle=True)
    model = ReferenceNet()
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    test = (test_x.float() / 255 - MEAN[0]) / STD[0]
    points, trained = [], 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            F.nll_loss(F.log_softmax(model(xb), dim=1), yb).backward()
            opt.step()
        sched.step()
        trained += time.perf_counter() - t0
        points.append((trained, accuracy(model, test, test_y)))
        print(
            f"  reference epoch {len(points)}: {trained:6.1f} s  test acc {points[-1][1]:.4f}",
            flush=True,
        )
    return points


class Timer(Callback):
    """Training wall time per epoch, with test accuracy measured outside the timed part."""

    def __init__(self, test, test_y):
        self.test, self.test_y, self.points, self.trained = test, test_y, [], 0.0

    def on_epoch_start(self, trainer):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, trainer, logs):
        self.trained += (
            time.perf_counter() - self.t0
        )  # includes nothing but training (no val split)
        acc = accuracy(
            trainer.module, self.test, self.test_y, channels_last=True
        )  # evaluated in fp32
        self.points.append((self.trained, acc))
        print(
            f"  lab1 epoch {len(self.points)}: {self.trained:6.1f} s  test acc {acc:.4f}",
            flush=True,
        )


def fast_recipe(train_x, train_y, test_x, test_y, epochs: int) -> list[tuple[float, float]]:
    """``lab1-conv --dataset mnist`` (the fast recipe is its default there), through the lab's own
    code path, on this benchmark's split: 8,000 train images, no validation split."""
    import tempfile

    from lab1_conv.cli import Lab1Config, train
    from labs_core.config import parse_config
    from labs_core.data.base import DataSplits

    data = DataSplits(
        name="mnist (8k/2k)",
        classes=[str(i) for i in range(10)],
        train=(train_x, train_y),
        test=(test_x, test_y),
        mean=MEAN,
        std=STD,
    )
    test = (test_x.float() / 255 - MEAN[0]) / STD[0]
    timer = Timer(test, test_y)
    with tempfile.TemporaryDirectory() as out:
        cfg = parse_config(
            Lab1Config,
            [
                "--dataset",
                "mnist",
                "--val-fraction",
                "0",
                "--epochs",
                str(epochs),
                "--out",
                out,
                "--quiet",
            ],
            "lab1-conv",
        )
        print(
            f"  lab1 recipe: {cfg.recipe}; "
            + ", ".join(
                f"{k}={getattr(cfg, k)}"
                for k in ("epochs", "lr", "precision", "conv", "widths", "pad")
            )
        )
        train(cfg, data=data, callbacks=[timer])
    return timer.points


def report(name: str, points: list[tuple[float, float]]) -> tuple[float | None, float]:
    hit = next((t for t, a in points if a >= TARGET), None)
    best = max(a for _, a in points)
    hit_s = f"{hit:.1f} s" if hit is not None else "not reached"
    print(
        f"{name:<26} time to {TARGET:.1%}: {hit_s:>12}   best {best:.2%}   ({len(points)} epochs)"
    )
    return hit, best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(SHARED_MNIST))
    p.add_argument("--ref-epochs", type=int, default=6)
    p.add_argument("--fast-epochs", type=int, default=3)
    p.add_argument("--skip-reference", action="store_true")
    args = p.parse_args()
    x, y = mnist_test_set(args.data_dir)
    train_x, train_y, test_x, test_y = x[:8000], y[:8000], x[8000:], y[8000:]
    print(f"machine: {machine()}")
    print("data: real MNIST IDX, first 8,000 train / last 2,000 test")
    fast = fast_recipe(train_x, train_y, test_x, test_y, args.fast_epochs)
    ref = (
        None
        if args.skip_reference
        else reference(train_x, train_y, test_x, test_y, args.ref_epochs)
    )
    print()
    fast_hit, fast_best = report("(b) lab1 fast recipe", fast)
    if ref is not None:
        ref_hit, _ = report("(a) reference recipe", ref)
        if ref_hit and fast_hit:
            print(
                f"speed-up to {TARGET:.1%}: {ref_hit / fast_hit:.1f}x  (goal >= 4x, with best >="
                " 98.5%)"
            )


if __name__ == "__main__":
    main()
