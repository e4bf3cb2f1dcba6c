"""A detector's report: held-out COCO mAP, its predictions drawn on images, its loss parts."""

from __future__ import annotations

from pathlib import Path

import torch

from .data import CLASSES
from .metrics import detect_all, mean_average_precision


def plot_predictions(
    images: torch.Tensor, preds: list[dict], targets: list[dict], path: Path, threshold: float = 0.3
) -> None:
    import matplotlib.patches as patches

    from labs_core.plots import pyplot, save_figure

    plt = pyplot()

    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.3), squeeze=False)
    colours = ["tab:red", "tab:blue", "tab:orange"]
    for ax, img, p, t in zip(axes[0], images, preds, targets, strict=True):
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.axis("off")
        for box in t["boxes"]:
            x1, y1, x2, y2 = box.tolist()
            ax.add_patch(
                patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", lw=2)
            )
        for box, score, label in zip(p["boxes"], p["scores"], p["labels"], strict=True):
            if score < threshold:
                continue
            x1, y1, x2, y2 = box.tolist()
            ax.add_patch(
                patches.Rectangle(
                    (x1, y1),
                    x2 - x1,
                    y2 - y1,
                    fill=False,
                    color=colours[int(label) % 3],
                    lw=1.5,
                    ls="--",
                )
            )
            ax.text(
                x1,
                y1 - 1,
                f"{CLASSES[int(label)]} {score:.2f}",
                fontsize=6,
                color=colours[int(label) % 3],
            )
    fig.suptitle("green: ground truth; dashed: predictions (score >= 0.3)")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def detection_report(run, trainer, *, val_loader, images: torch.Tensor) -> dict:
    """After training: COCO mAP on the held-out set, four ``images`` with their boxes, the loss
    curve with each loss part."""
    from labs_core.plots import plot_curves

    preds, targets = detect_all(trainer.module, val_loader)
    coco = mean_average_precision(preds, targets)
    run_dir = run.run_dir
    plot_predictions(images[:4], preds[:4], targets[:4], run_dir / "predictions.png")
    parts = [k for k in trainer.history[-1] if k.startswith("train_") and k != "train_loss"]
    plot_curves(
        trainer.history,
        run_dir / "loss_curve.png",
        {"loss": ["train_loss", "val_loss"], "parts": parts},
        title=f"lab5-detection: {run.cfg.flavor}",
    )
    run.say(
        f"held-out mAP@0.5 {coco['map_50']:.4f}, mAP@0.5:0.95 {coco['map']:.4f}, per class "
        + ", ".join(f"{CLASSES[c]} {v:.3f}" for c, v in coco["per_class"].items())
    )
    run.say(f"predictions: {run_dir / 'predictions.png'}")
    return {"val_map_50": coco["map_50"], "val_map": coco["map"], "val_map_75": coco["map_75"]}
