"""Training curves and attribution maps as PNG (matplotlib, no display needed), and the pyplot every
figure uses."""

from __future__ import annotations

import sys
from pathlib import Path

# The PNG's "Software" text: marks a figure as this project's (``rundir.png_is_ours``), so a later
# command may replace it (with --overwrite) and never a picture of the user's.
TAG = {"Software": "PyTorch Labs"}


def pyplot():
    """``matplotlib.pyplot``, on the file-only Agg backend, except inside a Jupyter kernel, whose
    inline backend must stay (switching it would silence every later figure of a notebook)."""
    import matplotlib

    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 100) -> None:
    """``fig.savefig`` written atomically (rendered in memory, then temp file and rename): a full
    disk or a stop mid-write never leaves half a PNG. A PNG carries ``TAG``, so a later command
    knows the file is one of ours (``rundir.check_replace``)."""
    from io import BytesIO

    from .checkpoint import atomic_write_bytes

    path = Path(path)
    buffer = BytesIO()
    fmt = path.suffix.lstrip(".").lower() or "png"
    fig.savefig(buffer, dpi=dpi, format=fmt, metadata=TAG if fmt == "png" else None)
    data = buffer.getvalue()
    atomic_write_bytes(path, lambda f: f.write(data))


def plot_curves(
    history: list[dict],
    path: str | Path,
    groups: dict[str, list[str]] | None = None,
    title: str = "",
) -> None:
    """One panel per group of metrics against epoch, e.g. ``{"loss": ["train_loss",
    "val_loss"]}``."""
    plt = pyplot()
    groups = groups or {"loss": ["train_loss", "val_loss"], "accuracy": ["train_acc", "val_acc"]}
    groups = {g: [k for k in keys if any(k in h for h in history)] for g, keys in groups.items()}
    groups = {g: keys for g, keys in groups.items() if keys}
    fig, axes = plt.subplots(
        1, max(1, len(groups)), figsize=(5 * max(1, len(groups)), 3.6), squeeze=False
    )
    for ax, (name, keys) in zip(axes[0], groups.items(), strict=False):
        for key in keys:
            pts = [(h["epoch"], h[key]) for h in history if key in h]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        if name == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def plot_explanations(images, maps: dict, row_titles: list[str], path: str | Path) -> None:
    """One row per image: the image, then each attribution map over it (columns in ``maps``' order).

    images (Tensor[N, C, H, W]) in [0, 1] for display; maps {column title: Tensor[N, H, W] in [0,
    1]}; ``row_titles``: one line or two per image (its prediction). The maps are drawn in colour at
    half opacity over a grey version of the image, so where the model looked and what is there show
    at once.
    """
    plt = pyplot()
    n, cols = len(images), 1 + len(maps)
    fig = plt.figure(figsize=(1.8 * cols, 2.2 * n + 0.25))
    rows = fig.subfigures(n, 1, squeeze=False, height_ratios=[2.45] + [2.2] * (n - 1))[:, 0]
    for i, (sub, image) in enumerate(zip(rows, images, strict=True)):
        shown = image.permute(1, 2, 0).float().cpu().numpy()
        grey = shown.mean(2)
        axes = sub.subplots(1, cols)
        sub.subplots_adjust(
            left=0.02, right=0.98, bottom=0.2, top=0.9 if i == 0 else 0.98, wspace=0.06
        )
        axes[0].imshow(shown[..., 0] if shown.shape[2] == 1 else shown, cmap="gray", vmin=0, vmax=1)
        for ax, m in zip(axes[1:], maps.values(), strict=True):
            ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
            ax.imshow(m[i].float().cpu().numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        for ax, name in zip(axes, ["input", *maps], strict=True):
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
        sub.supxlabel(row_titles[i], fontsize=8)
    save_figure(fig, path, dpi=80)
    plt.close(fig)
