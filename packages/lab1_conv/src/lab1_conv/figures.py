"""What the CNN is and learned: its shape table, first-layer filters, one image's feature maps, and
why it predicted what it did (attribution maps of test images)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from labs_core.explain import write_explanations
from labs_core.summary import format_summary, model_summary

from .ops import conv_output_size

MAX_SHOWN = (
    64  # channels drawn at most: a grid of thousands of axes takes minutes and shows nothing
)


def _grid(n: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def first_conv(model: nn.Module) -> nn.Module:
    return next(m for m in model.modules() if hasattr(m, "weight") and m.weight.dim() == 4)


def plot_filters(model: nn.Module, path: Path) -> None:
    from labs_core.plots import pyplot, save_figure

    plt = pyplot()

    w = first_conv(model).weight.detach().float().cpu()[:MAX_SHOWN]  # (C_out, C_in, kH, kW)
    rows, cols = _grid(len(w))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, k in zip(axes.flat, w, strict=False):
        if k.shape[0] == 3:  # RGB filters shown in colour
            img = (k - k.min()) / (k.max() - k.min() + 1e-8)
            ax.imshow(img.permute(1, 2, 0).numpy())
        else:
            ax.imshow(k.mean(0).numpy(), cmap="RdBu_r")
    fig.suptitle(
        "first-layer filters" + (f" (the first {MAX_SHOWN})" if len(w) == MAX_SHOWN else "")
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def plot_feature_maps(model: nn.Module, image: torch.Tensor, path: Path) -> None:
    """The first conv block's activations (after batch norm and ReLU) for one normalised image (C,
    H, W)."""
    from labs_core.plots import pyplot, save_figure

    plt = pyplot()

    was_training = model.training
    model.eval()
    feats = (
        model.features[:3](image[None])[0].float().cpu()[:MAX_SHOWN]
    )  # conv -> bn -> relu: (C_out, H, W)
    model.train(was_training)
    rows, cols = _grid(len(feats) + 1)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.0, rows * 1.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    src = image.float().cpu()
    axes.flat[0].imshow(
        (
            src.mean(0).numpy()
            if src.shape[0] != 3
            else ((src - src.min()) / (src.max() - src.min() + 1e-8)).permute(1, 2, 0).numpy()
        ),
        cmap="gray",
    )
    axes.flat[0].set_title("input", fontsize=7)
    for ax, f in zip(axes.flat[1:], feats, strict=False):
        ax.imshow(f.numpy(), cmap="viridis")
    fig.suptitle("feature maps of the first conv block")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def shape_table(model: torch.nn.Module, in_shape: tuple[int, ...]) -> str:
    """The core model summary, with the output-size formula's prediction beside each conv and
    pool."""
    rows = model_summary(model, torch.zeros(1, *in_shape))
    notes = {}
    for r in rows:
        m = r.module
        if hasattr(m, "kernel_size") and len(r.input_shape) == 4:
            k, s, p = (m.kernel_size, m.stride, m.padding)
            d = getattr(m, "dilation", 1)
            k, s, p, d = (v if isinstance(v, int) else v[0] for v in (k, s, p, d))
            pred = conv_output_size(r.input_shape[2], k, s, p, d)
            ok = "ok" if pred == r.output_shape[2] else "MISMATCH"
            notes[r.name] = (
                f"floor(({r.input_shape[2]} + 2*{p} - {d}*({k}-1) - 1)/{s}) + 1 = {pred}  {ok}"
            )
    return format_summary(rows, model, notes)


def explain_test_images(model: torch.nn.Module, loaders, count: int, path: Path, say) -> None:
    """The first ``count`` test images, each with its four attribution maps, in one PNG."""
    xs, ys, n = [], [], 0
    for x, y in loaders.test:
        xs.append(x[: count - n])
        ys.append(y[: count - n])
        n += len(xs[-1])
        if n == count:
            break
    data = loaders.data
    write_explanations(
        model, torch.cat(xs), data.mean, data.std, data.classes, path, labels=torch.cat(ys)
    )
    note = "" if n == count else f" (the test split has only {n})"
    say(
        f"why these predictions: {path} (saliency, SmoothGrad, integrated gradients, Grad-CAM for"
        f" {n} test images{note})"
    )
