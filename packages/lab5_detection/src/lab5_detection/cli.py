"""lab5-detection: train a toy detector (anchor-based or anchor-free) on generated shapes.

    lab5-detection --flavor anchor|anchor-free [flags]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from labs_core import Callback, LabError, arg
from labs_core.cli import run_lab
from labs_core.config import BatchNormOptions, OptimOptions, RunOptions
from labs_core.data import FastLoader
from labs_core.data.base import channel_stats
from labs_core.plots import plot_curves
from labs_core.run import Plan, execute

from .data import CLASSES, make_detection_set, unpad
from .metrics import mean_average_precision
from .models import AnchorDetector, CenterDetector

PROG = "lab5-detection"


@dataclass
class Lab5Config(BatchNormOptions, OptimOptions, RunOptions):
    lab = "lab5-detection"
    overfit_epochs = 150

    flavor: str = arg("anchor", "detector flavour", choices=("anchor", "anchor-free"))
    num_images: int = arg(2000, "generated training images (held-out: --num-test more)", low=1, high=10_000)
    num_test: int = arg(200, "generated held-out images", low=1, high=1_000)
    image_size: int = arg(64, "image side in pixels (a multiple of 8)", low=32, high=1024)
    max_objects: int = arg(4, "largest number of objects per image", low=1, high=64)
    epochs: int = arg(30, "number of training epochs")
    batch_size: int = arg(32, "batch size")
    lr: float = arg(3e-3, "peak learning rate (one-cycle schedule)")
    scheduler: str = arg("onecycle", "learning-rate schedule", choices=("none", "cosine", "onecycle", "step"))
    weight_decay: float = arg(1e-4, "weight decay (AdamW)")
    eval_every: int = arg(5, "measure held-out mAP@0.5 every N epochs (and at the end)", low=1)
    monitor: str = arg("val_map_50", "metric that decides the best checkpoint and early stopping")

    def validate(self) -> None:
        super().validate()
        if self.image_size < 32 or self.image_size % 8:
            raise LabError(f"--image-size must be a multiple of 8, at least 32 (got {self.image_size})")
        if self.overfit > self.num_images:
            raise LabError(f"--overfit {self.overfit}: the run generates only {self.num_images} training images "
                           "(see --num-images)")


def build_model(cfg: Lab5Config) -> torch.nn.Module:
    if cfg.flavor == "anchor":
        return AnchorDetector(len(CLASSES), cfg.image_size)
    return CenterDetector(len(CLASSES), cfg.image_size)


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
        if logs["epoch"] % self.every == 0 or logs["epoch"] >= trainer.epochs or trainer.should_stop:
            preds, targets = detect_all(trainer.module, self.loader)
            logs["val_map_50"] = mean_average_precision(preds, targets, iou_thresholds=[0.5])["map_50"]


def plot_predictions(images: torch.Tensor, preds: list[dict], targets: list[dict], path: Path, threshold: float = 0.3) -> None:
    import matplotlib.patches as patches

    from labs_core.plots import pyplot

    plt = pyplot()

    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.3), squeeze=False)
    colours = ["tab:red", "tab:blue", "tab:orange"]
    for ax, img, p, t in zip(axes[0], images, preds, targets, strict=True):
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.axis("off")
        for box in t["boxes"]:
            x1, y1, x2, y2 = box.tolist()
            ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", lw=2))
        for box, score, label in zip(p["boxes"], p["scores"], p["labels"], strict=True):
            if score < threshold:
                continue
            x1, y1, x2, y2 = box.tolist()
            ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=colours[int(label) % 3],
                                           lw=1.5, ls="--"))
            ax.text(x1, y1 - 1, f"{CLASSES[int(label)]} {score:.2f}", fontsize=6, color=colours[int(label) % 3])
    fig.suptitle("green: ground truth; dashed: predictions (score >= 0.3)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plan(cfg: Lab5Config, run) -> Plan:
    train_x, train_y = make_detection_set(cfg.num_images, cfg.image_size, cfg.max_objects, seed=1)
    test_x, test_y = make_detection_set(cfg.num_test, cfg.image_size, cfg.max_objects, seed=2)
    if cfg.overfit:
        train_x, train_y = train_x[:cfg.overfit], train_y[:cfg.overfit]
        test_x, test_y = train_x, train_y
    mean, std = channel_stats(train_x)
    device = run.device
    train_loader = FastLoader(train_x, train_y, cfg.batch_size, device=device, seed=cfg.seed, mean=mean, std=std,
                              **run.shard)
    val_loader = FastLoader(test_x, test_y, 100, device=device, shuffle=False, mean=mean, std=std)
    model = build_model(cfg)

    def report(run, trainer):
        preds, targets = detect_all(trainer.module, val_loader)
        coco = mean_average_precision(preds, targets)
        run_dir = run.run_dir
        plot_predictions(test_x[:4], preds[:4], targets[:4], run_dir / "predictions.png")
        parts = [k for k in trainer.history[-1] if k.startswith("train_") and k != "train_loss"]
        plot_curves(trainer.history, run_dir / "loss_curve.png", {"loss": ["train_loss", "val_loss"], "parts": parts},
                    title=f"{PROG}: {cfg.flavor}")
        run.say(f"held-out mAP@0.5 {coco['map_50']:.4f}, mAP@0.5:0.95 {coco['map']:.4f}, per class "
                + ", ".join(f"{CLASSES[c]} {v:.3f}" for c, v in coco["per_class"].items()))
        run.say(f"predictions: {run_dir / 'predictions.png'}")
        return {"val_map_50": coco["map_50"], "val_map": coco["map"], "val_map_75": coco["map_75"]}

    info = {"classes": CLASSES, "mean": list(mean), "std": list(std)}
    return Plan(
        model=model, train_loader=train_loader, val_loader=val_loader,
        loss_fn=lambda out, batch: model.loss(out, batch[1]), metrics=tuple(model.loss_names),
        added_metrics=("val_map_50",),
        description=(f"shapes ({len(train_x)} train / {len(test_x)} held-out, {cfg.image_size}px, "
                     f"<= {cfg.max_objects} objects, {len(CLASSES)} classes); flavour {cfg.flavor}"),
        callbacks=[MapEval(val_loader, cfg.eval_every)], resolved=info, checkpoint={**info, "flavor": cfg.flavor},
        report=report)


def train(cfg: Lab5Config) -> dict:
    return execute(cfg, lambda run: plan(cfg, run)).summary


def main(argv: list[str] | None = None) -> int:
    return run_lab(PROG, Lab5Config, train, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
