"""Training curves as PNG (matplotlib, no display needed), and the pyplot every figure uses."""

from __future__ import annotations

import sys
from pathlib import Path


def pyplot():
    """``matplotlib.pyplot``, on the file-only Agg backend, except inside a Jupyter kernel, whose
    inline backend must stay (switching it would silence every later figure of a notebook)."""
    import matplotlib

    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path: str | Path, groups: dict[str, list[str]] | None = None, title: str = "") -> None:
    """One panel per group of metrics against epoch, e.g. ``{"loss": ["train_loss", "val_loss"]}``."""
    plt = pyplot()
    groups = groups or {"loss": ["train_loss", "val_loss"], "accuracy": ["train_acc", "val_acc"]}
    groups = {g: [k for k in keys if any(k in h for h in history)] for g, keys in groups.items()}
    groups = {g: keys for g, keys in groups.items() if keys}
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(5 * max(1, len(groups)), 3.6), squeeze=False)
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
    fig.savefig(path, dpi=100)
    plt.close(fig)
