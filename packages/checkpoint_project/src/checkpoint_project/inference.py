"""Shared by train, evaluate, export, predict, explain and finetune: rebuilding a trained model from
its checkpoint, and batched prediction with optional flip test-time augmentation."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from labs_core import LabError, load_checkpoint, load_model_state

from .models import build_model

PROJECT = "checkpoint-project"
TRAINED_KEYS = ("classes", "input_shape", "mean", "std")  # what rebuilding and preprocessing read


def load_trained(path: str | Path, device="cpu") -> tuple[nn.Module, dict]:
    """The model a checkpoint-project checkpoint describes, with its weights, in eval mode."""
    ckpt = load_checkpoint(path)
    cfg = ckpt.get("config") or {}
    if ckpt.get("lab") != PROJECT or not isinstance(cfg, dict) or "model" not in cfg:
        raise LabError(
            f"{path} is a {ckpt.get('lab', 'foreign')} checkpoint, not a {PROJECT} one "
            "(train one with: uv run --package checkpoint-project train)"
        )
    missing = [key for key in TRAINED_KEYS if key not in ckpt]
    if missing:
        raise LabError(
            f"{path} is not a complete {PROJECT} checkpoint: no {', '.join(map(repr, missing))} "
            f"entr{'y' if len(missing) == 1 else 'ies'}"
        )
    model = build_model(
        cfg["model"], tuple(ckpt["input_shape"]), len(ckpt["classes"]), cfg.get("width", 0)
    )
    state = ckpt["model"]
    if cfg["model"] == "torchvision:resnet18" and any(k.startswith("stages.") for k in state):
        state = _resnet18_v1_keys(state)
    load_model_state(model, state, f"checkpoint {path}")
    return model.to(device).eval(), ckpt


def _resnet18_v1_keys(state: dict) -> dict:
    """A ResNet-18 fine-tuned before any torchvision model could be (its stages and head were ours:
    ``stages.0`` = conv1, bn1; ``stages.1-4`` = layer1-4; ``head.2`` = fc), in today's keys."""
    renames = {
        "stages.0.0.": "net.conv1.",
        "stages.0.1.": "net.bn1.",
        "head.2.": "net.fc.",
        **{f"stages.{k}.": f"net.layer{k}." for k in range(1, 5)},
    }
    out = {}
    for key, value in state.items():
        old = next((o for o in renames if key.startswith(o)), None)
        out[renames[old] + key[len(old) :] if old else key] = value
    return out


@torch.no_grad()
def predict_probs(
    model: nn.Module, loader, device, tta: bool = False, autocast=None, flip_only: bool = False
) -> tuple[Tensor, Tensor]:
    """Softmax probabilities (N, C) and targets (N,) over ``loader``; with ``tta`` the average of
    the image's and its mirror image's probabilities; with ``flip_only`` the mirror images' alone.
    """
    import contextlib

    model.eval()
    probs, targets = [], []
    for x, y in loader:
        x = x.to(device)
        with autocast() if autocast is not None else contextlib.nullcontext():
            p = model(x.flip(3) if flip_only else x).float().softmax(1)
            if tta and not flip_only:
                p = (p + model(x.flip(3)).float().softmax(1)) / 2
        probs.append(p.cpu())
        targets.append(y.cpu())
    return torch.cat(probs), torch.cat(targets)
