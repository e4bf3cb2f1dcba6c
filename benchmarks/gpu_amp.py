"""Training throughput on CIFAR-shaped data: fp32, bf16 autocast, fp16 + grad scaler,
channels-last, and optionally torch.compile — each setting's speed-up over fp32.

    uv run python benchmarks/gpu_amp.py [--model resnet|fast|cnn] [--compile] [--images 20000]

Synthetic uint8 images (speed does not depend on content), held on the GPU by the core FastLoader
(random crop + flip on the device), trained by the core Trainer (so the figures include the
trainer's per-step bookkeeping). Each setting: a fresh model, one warm-up epoch (cuDNN autotuning,
compilation), then the timed epochs. Meant for a CUDA GPU; runs (slowly, small) on CPU too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from checkpoint_project.models import build_model  # noqa: E402
from labs_core import ClassificationLoss, Precision, Trainer, seed_everything  # noqa: E402
from labs_core.data import FastLoader  # noqa: E402

SETTINGS = [  # (name, precision, channels_last, compile)
    ("fp32", "fp32", False, False),
    ("fp32 strict (TF32 off)", "fp32-strict", False, False),
    ("bf16 autocast", "bf16", False, False),
    ("fp16 autocast + scaler", "fp16", False, False),
    ("bf16 + channels-last", "bf16", True, False),
    ("fp16 + channels-last", "fp16", True, False),
]


def throughput(
    model_name: str,
    precision: str,
    channels_last: bool,
    compile_: bool,
    x,
    y,
    device,
    batch: int,
    epochs: int,
) -> float:
    seed_everything(0)
    torch.backends.cudnn.benchmark = True
    # PyTorch lets cuDNN convolutions use TF32 tensor cores by default ("fp32"); "fp32 strict" turns
    # that off, giving IEEE fp32 arithmetic throughout.
    strict = precision == "fp32-strict"
    torch.backends.cudnn.allow_tf32 = not strict
    precision = "fp32" if strict else precision
    model = build_model(model_name, (3, 32, 32), 10).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_model = torch.compile(model) if compile_ else model
    loader = FastLoader(
        x,
        y,
        batch,
        device=device,
        seed=0,
        augment=True,
        pad=4,
        flip=True,
        drop_last=True,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        channels_last=channels_last,
    )
    opt = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    trainer = Trainer(
        train_model,
        opt,
        loader,
        loss_fn=ClassificationLoss(0.2),
        device=device,
        precision=Precision(precision, torch.device(device)),
        epochs=1,
    )
    trainer.fit()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    trainer.epochs = 1 + epochs
    trainer.fit()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return epochs * len(loader) * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet", choices=("cnn", "resnet", "fast"))
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument(
        "--compile", action="store_true", help="also time torch.compile with the best eager setting"
    )
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.images, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (args.images,), generator=g)
    settings = list(SETTINGS)
    if device.type == "cpu":
        settings = [
            s for s in settings if s[1] not in ("fp16", "fp32-strict")
        ]  # no TF32 / fast fp16 on a CPU
    print(f"machine: {machine()}")
    print(
        f"model {args.model}, {args.images:,} CIFAR-shaped images, batch {args.batch_size},"
        f" {args.epochs} timed epochs"
    )
    results = {}
    for name, prec, cl, comp in settings:
        results[name] = throughput(
            args.model, prec, cl, comp, x, y, device, args.batch_size, args.epochs
        )
        print(
            f"  {name:<26} {results[name]:>10,.0f} images/s  "
            f" {results[name] / results['fp32']:.2f}x",
            flush=True,
        )
    if args.compile:
        best = max(
            (s for s in settings if not s[0].startswith("fp32")), key=lambda s: results[s[0]]
        )
        name = f"{best[0]} + torch.compile"
        results[name] = throughput(
            args.model, best[1], best[2], True, x, y, device, args.batch_size, args.epochs
        )
        print(
            f"  {name:<26} {results[name]:>10,.0f} images/s  "
            f" {results[name] / results['fp32']:.2f}x",
            flush=True,
        )
    best = max(results, key=results.get)
    line = f"best: {best}, {results[best] / results['fp32']:.2f}x over fp32 (TF32 convs)"
    if "fp32 strict (TF32 off)" in results:
        line += f", {results[best] / results['fp32 strict (TF32 off)']:.2f}x over strict fp32"
    print(line + " (goal >= 3x)")


if __name__ == "__main__":
    main()
