"""Classification metrics, written out (the tests compare them with scikit-learn)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


def accuracy(logits: Tensor, targets: Tensor) -> float:
    """Fraction of rows whose arg-max equals the target. ``logits (N, C)``, ``targets (N,)``."""
    if len(targets) == 0:
        return 0.0
    return (logits.argmax(dim=1) == targets).float().mean().item()


def topk_accuracy(logits: Tensor, targets: Tensor, k: int = 5) -> float:
    """Fraction of rows whose target is among the ``k`` largest logits."""
    if len(targets) == 0:
        return 0.0
    k = min(k, logits.shape[1])
    topk = logits.topk(k, dim=1).indices  # (N, k)
    return (topk == targets[:, None]).any(dim=1).float().mean().item()


def confusion_matrix(preds: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """``cm[i, j]`` = number of samples of true class ``i`` predicted as ``j``. Returns (C, C)
    int64."""
    idx = targets.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def precision_recall_f1(cm: Tensor) -> dict[str, Tensor]:
    """Per-class precision, recall and F1 from a confusion matrix (0 where undefined, as
    sklearn)."""
    cm = cm.double()
    tp = cm.diag()
    predicted = cm.sum(dim=0)  # column sums: how often each class was predicted
    actual = cm.sum(dim=1)  # row sums: how often each class occurs
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(
        denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp)
    )
    return {"precision": precision, "recall": recall, "f1": f1}


def format_confusion_matrix(cm: Tensor, class_names: list[str]) -> str:
    """The matrix as text: rows are true classes, columns predictions."""
    names = [str(n)[:10] for n in class_names]
    width = max(6, max(len(n) for n in names) + 1, len(str(int(cm.max()))) + 1)
    lines = [" " * width + "".join(n.rjust(width) for n in names) + "   <- predicted"]
    for name, row in zip(names, cm.tolist(), strict=True):
        lines.append(name.rjust(width) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


def plot_confusion_matrix(
    cm: Tensor, class_names: list[str], path: str | Path | None = None, title: str = ""
):
    """Render the confusion matrix with class names; save a PNG if ``path`` is given. Returns the
    figure."""
    from .plots import pyplot, save_figure

    plt = pyplot()

    n = len(class_names)
    size = max(4.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm.numpy(), cmap="Blues")
    ax.set_xticks(range(n), labels=class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    if n <= 30:
        vmax = cm.max().item() or 1
        for i in range(n):
            for j in range(n):
                v = cm[i, j].item()
                ax.text(
                    j,
                    i,
                    str(v),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if v > vmax / 2 else "black",
                )
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=100)
    return fig
