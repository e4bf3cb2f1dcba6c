"""The optimizer, the learning-rate schedule and the step count a run's flags ask for."""

from __future__ import annotations

import torch
from torch import nn

from .errors import LabError


def build_optimizer(
    cfg, model: nn.Module, decay_matrices_only: bool = False, norm_bias_lr: float = 1.0
) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names. ``decay_matrices_only``: weight decay on weight matrices and
    embeddings only, not on biases and norm scales (what language-model recipes do).
    ``norm_bias_lr``: the normalisation layers' biases learn at ``lr * norm_bias_lr`` with their
    weight decay divided by it, so each step decays them as much as the rest (the CIFAR-10 speed
    records' trick: with frozen norm scales the biases are few and slow to move)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_matrices_only and cfg.weight_decay:
        params = [
            {"params": [p for p in params if p.dim() >= 2]},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
    elif norm_bias_lr != 1.0:
        norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
        biases = {
            id(m.bias) for m in model.modules() if isinstance(m, norms) and m.bias is not None
        }
        params = [
            {"params": [p for p in params if id(p) not in biases]},
            {
                "params": [p for p in params if id(p) in biases],
                "lr": cfg.lr * norm_bias_lr,
                "weight_decay": cfg.weight_decay / norm_bias_lr,
            },
        ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise LabError(f"unknown optimizer {cfg.optimizer!r}")


def count_steps(cfg, batches_per_epoch: int) -> dict:
    """The run's schedule: how many optimizer steps it takes, per epoch and in all (what a
    step-based learning-rate schedule is laid over)."""
    steps_per_epoch = max(1, -(-batches_per_epoch // cfg.grad_accum))
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    return {
        "scheduler": cfg.scheduler,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "batches_per_epoch": batches_per_epoch,
    }


def build_scheduler(cfg, optimizer, schedule: dict):
    """Returns ``(scheduler or None, interval)``. Step-based schedules count optimizer steps."""
    total, steps_per_epoch = schedule["total_steps"], schedule["steps_per_epoch"]
    if cfg.scheduler == "none":
        return None, "epoch"
    if cfg.scheduler == "step":  # x0.7 every epoch, the classic MNIST recipe
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7), "epoch"
    if cfg.scheduler == "onecycle":
        peaks = [group["lr"] for group in optimizer.param_groups]  # each group's own peak
        return (
            torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total),
            "step",
        )
    if cfg.scheduler == "cosine":
        warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
        if warmup <= 0:
            return cosine, "step"
        ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=warmup)
        return (
            torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup]),
            "step",
        )
    raise LabError(f"unknown scheduler {cfg.scheduler!r}")
