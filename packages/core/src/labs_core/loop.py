"""The training loop written out by hand: what the core trainer does, without the events.

    for each epoch:
        model.train()                       # dropout on, batch norm uses batch statistics
        for x, y in batches:
            logits = model(x)               # forward
            loss = cross_entropy(logits, y) # loss
            loss.backward()                 # backward: fills p.grad for every parameter
            optimizer.step()                # step: update parameters from p.grad
            optimizer.zero_grad()           # zero_grad: gradients would otherwise accumulate
            scheduler.step()                # a per-step learning-rate schedule moves on
        model.eval(); with no_grad: measure validation loss and accuracy

lab0 and lab1 run it with ``--loop manual``; with the same seed it ends with the same weights as
the core trainer (a test compares them), because it does the same arithmetic in the same order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ManualLoop:
    """A lab's ``--loop manual`` (its ``Plan.manual_loop``): what ``run_manual`` takes besides
    the trainer's model, optimizer, schedule and the plan's loaders."""

    label_smoothing: float = 0.0
    print_every: int = 1  # epochs between printed lines
    after_print: Callable[[], None] | None = None  # lab0: the gradient norms under each line


def run_manual(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader,
    val_loader,
    epochs: int,
    *,
    scheduler=None,
    scheduler_interval: str = "step",
    label_smoothing: float = 0.0,
    say: Callable[[str], None] = print,
    print_every: int = 1,
    after_print: Callable[[], None] | None = None,
) -> list[dict]:
    history = []
    for epoch in range(epochs):
        model.train()
        train_loader.set_epoch(epoch)  # this epoch's shuffled order, derived from (seed, epoch)
        total_loss, correct, seen = 0.0, 0, 0
        for x, y in train_loader:
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None and scheduler_interval == "step":
                scheduler.step()
            total_loss += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        logs = {"epoch": epoch + 1, "train_loss": total_loss / seen, "train_acc": correct / seen}
        if val_loader is not None:
            logs.update(evaluate(model, val_loader, label_smoothing))
        if scheduler is not None and scheduler_interval == "epoch":
            scheduler.step()
        logs["lr"] = optimizer.param_groups[0]["lr"]
        history.append(logs)
        if epoch == 0 or (epoch + 1) % print_every == 0 or epoch + 1 == epochs:
            say(
                "  ".join(
                    f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()
                )
            )
            if after_print is not None:
                after_print()
    return history


@torch.no_grad()
def evaluate(model: nn.Module, loader, label_smoothing: float = 0.0) -> dict:
    model.eval()  # dropout off, batch norm uses running statistics
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        logits = model(x)
        total_loss += F.cross_entropy(
            logits, y, reduction="sum", label_smoothing=label_smoothing
        ).item()
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    model.train()
    return {"val_loss": total_loss / seen, "val_acc": correct / seen}
