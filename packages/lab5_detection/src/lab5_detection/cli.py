"""lab5-detection: train a toy detector (anchor-based or anchor-free) on generated shapes.

lab5-detection --flavor anchor|anchor-free [flags]
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import torch

from labs_core import LabError, arg
from labs_core.cli import run_lab
from labs_core.config import BatchNormOptions, OptimOptions, RunOptions, override
from labs_core.data import FastLoader
from labs_core.data.base import channel_stats
from labs_core.run import Plan, Run, execute

from .data import CLASSES, make_detection_set
from .figures import detection_report
from .metrics import DetectionLoss, MapEval
from .models import AnchorDetector, CenterDetector

PROG = "lab5-detection"


@dataclass
class Lab5Config(BatchNormOptions, OptimOptions, RunOptions):
    lab = "lab5-detection"
    overfit_epochs = 150

    flavor: str = arg("anchor", "detector flavour", choices=("anchor", "anchor-free"))
    num_images: int = arg(
        2000, "generated training images (held-out: --num-test more)", low=1, high=10_000
    )
    num_test: int = arg(200, "generated held-out images", low=1, high=1_000)
    image_size: int = arg(64, "image side in pixels (a multiple of 8)", low=32, high=1024)
    max_objects: int = arg(4, "largest number of objects per image", low=1, high=64)
    epochs: int = override("epochs", 30)
    batch_size: int = override("batch_size", 32)
    lr: float = arg(3e-3, "peak learning rate (one-cycle schedule)")
    scheduler: str = override("scheduler", "onecycle")
    weight_decay: float = arg(1e-4, "weight decay (AdamW)")
    eval_every: int = arg(5, "measure held-out mAP@0.5 every N epochs (and at the end)", low=1)
    monitor: str = arg("val_map_50", "metric that decides the best checkpoint and early stopping")

    def validate(self) -> None:
        super().validate()
        if self.image_size < 32 or self.image_size % 8:
            raise LabError(
                f"--image-size must be a multiple of 8, at least 32 (got {self.image_size})"
            )
        if self.overfit > self.num_images:
            raise LabError(
                f"--overfit {self.overfit}: the run generates only {self.num_images} training"
                " images (see --num-images)"
            )


def build_model(cfg: Lab5Config) -> torch.nn.Module:
    if cfg.flavor == "anchor":
        return AnchorDetector(len(CLASSES), cfg.image_size)
    return CenterDetector(len(CLASSES), cfg.image_size)


def build_plan(run: Run) -> Plan:
    """Generated shapes, the detector of ``--flavor``, its own loss (with parts), held-out mAP
    every ``--eval-every`` epochs and a report with COCO mAP and the boxes drawn."""
    cfg, device = run.cfg, run.device
    train_x, train_y = make_detection_set(cfg.num_images, cfg.image_size, cfg.max_objects, seed=1)
    test_x, test_y = make_detection_set(cfg.num_test, cfg.image_size, cfg.max_objects, seed=2)
    if cfg.overfit:
        train_x, train_y = train_x[: cfg.overfit], train_y[: cfg.overfit]
        test_x, test_y = train_x, train_y
    mean, std = channel_stats(train_x)
    train_loader = FastLoader(
        train_x,
        train_y,
        cfg.batch_size,
        device=device,
        seed=cfg.seed,
        mean=mean,
        std=std,
        **run.shard,
    )
    val_loader = FastLoader(test_x, test_y, 100, device=device, shuffle=False, mean=mean, std=std)
    model = build_model(cfg)
    info = {"classes": CLASSES, "mean": list(mean), "std": list(std)}
    return Plan(
        model=model,
        train_loader=train_loader,
        val_loader=val_loader,
        loss_fn=DetectionLoss(model),
        metrics=tuple(model.loss_names),
        added_metrics=("val_map_50",),
        description=(
            f"shapes ({len(train_x)} train / {len(test_x)} held-out, {cfg.image_size}px, "
            f"<= {cfg.max_objects} objects, {len(CLASSES)} classes); "
            f"flavour {cfg.flavor}"
        ),
        callbacks=[MapEval(val_loader, cfg.eval_every)],
        resolved=info,
        checkpoint={**info, "flavor": cfg.flavor},
        report=functools.partial(detection_report, val_loader=val_loader, images=test_x),
    )


def train(cfg: Lab5Config) -> dict:
    """One run as ``cfg`` says (what ``lab5-detection`` does); returns its summary."""
    return execute(cfg, build_plan).summary


def main(argv: list[str] | None = None) -> int:
    return run_lab(PROG, Lab5Config, build_plan, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
