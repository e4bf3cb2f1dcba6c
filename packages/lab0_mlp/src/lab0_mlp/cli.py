"""lab0-mlp: train an MLP (from scratch or from nn) on digits by default, or run a lesson.

lab0-mlp [flags]              train (see --help)
lab0-mlp lesson NAME          tensors | autograd | linreg | data
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import torch
from torch import nn

from labs_core import Callback, LabError, RunConfig, arg
from labs_core.cli import lessons_command, run_lab
from labs_core.config import LoopOptions, TuningOptions, override
from labs_core.experiment import classifier_plan
from labs_core.optim import build_optimizer
from labs_core.plots import plot_curves
from labs_core.run import Plan, Run, execute
from labs_core.validate import check_model_fits

from . import optim
from .model import ACTIVATIONS, MLP

PROG = "lab0-mlp"


@dataclass
class Lab0Config(LoopOptions, TuningOptions, RunConfig):
    lab = "lab0-mlp"
    overfit_epochs = 150  # --overfit N: N <= batch size, so one step per epoch

    epochs: int = override("epochs", 30)
    lr: float = override("lr", 3e-3, "learning rate")
    optimizer: str = override("optimizer", "adam")
    augment: bool = arg(
        False, "random translation augmentation (off: an MLP sees pixels, not shapes)"
    )
    hidden: list[int] = arg(
        help="hidden layer sizes, e.g. --hidden 256 128",
        default_factory=lambda: [256, 128],
        high=65536,
    )
    activation: str = arg("relu", "activation between layers", choices=ACTIVATIONS)
    dropout: float = arg(
        0.1, "dropout probability after each hidden layer (0: none)", low=0, below=1
    )
    batch_norm: bool = arg(False, "batch norm after each hidden linear layer")
    layers: str = arg(
        "scratch",
        "build the MLP from the scratch layers or from torch.nn",
        choices=("scratch", "torch"),
    )
    optim_impl: str = arg(
        "scratch", "the written-out SGD/Adam or torch.optim's", choices=("scratch", "torch")
    )
    grad_norms: bool = arg(
        False, "print per-layer gradient norms during training (always on with --overfit)"
    )

    def validate(self) -> None:
        super().validate()
        if not self.hidden or min(self.hidden) < 1:
            raise LabError("--hidden needs one or more positive sizes")
        check_model_fits(
            sum(a * b for a, b in zip(self.hidden, self.hidden[1:], strict=False)),
            "--hidden " + " ".join(map(str, self.hidden)),
        )
        if self.sync_bn and not self.batch_norm:
            raise LabError("--sync-bn needs --batch-norm (the MLP has no batch norm without it)")


def build_model(cfg: Lab0Config, data) -> MLP:
    return MLP(
        data.input_shape,
        data.num_classes,
        cfg.hidden,
        cfg.activation,
        cfg.dropout,
        cfg.batch_norm,
        cfg.layers,
    )


def make_optimizer(cfg: Lab0Config, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optim_impl == "torch":
        return build_optimizer(cfg, model)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.momentum > 0,
        )
    return optim.Adam(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, decoupled=cfg.optimizer == "adamw"
    )


class GradNorms(Callback):
    """Per-layer gradient norms, caught by a hook on each parameter as its gradient is accumulated
    (``register_post_accumulate_grad_hook``): works the same under the manual loop and the trainer.
    """

    def __init__(self, model: nn.Module, say=print, every: int = 1):
        self.latest: dict[str, float] = {}
        self.say, self.every = say, every
        for name, p in model.named_parameters():
            p.register_post_accumulate_grad_hook(
                lambda p, name=name: self.latest.__setitem__(name, p.grad.norm().item())
            )

    def print(self) -> None:
        self.say("  grad norms: " + "  ".join(f"{k} {v:.2e}" for k, v in self.latest.items()))

    def on_epoch_end(self, trainer, logs) -> None:
        if logs["epoch"] % self.every == 0 or logs["epoch"] == trainer.epochs:
            self.print()


def plot_loss_curve(run: Run, trainer, loaders, test) -> None:
    """The report's own figure: training and validation loss per epoch."""
    plot_curves(
        trainer.history, run.run_dir / "loss_curve.png", title=f"{PROG} on {run.cfg.dataset}"
    )
    run.say(f"loss curve: {run.run_dir / 'loss_curve.png'}")


def build_plan(run: Run) -> Plan:
    """The core's classifier plan with lab0's model, optimizers and loss curve; with
    ``--grad-norms`` (or ``--overfit``) the per-layer gradient norms under the epoch lines."""
    cfg = run.cfg
    plan = classifier_plan(
        run,
        functools.partial(build_model, cfg),
        make_optimizer=make_optimizer,
        extend_report=plot_loss_curve,
    )
    if cfg.grad_norms or cfg.overfit:
        every = max(1, cfg.epochs // 10)
        norms = GradNorms(plan.model, run.say, every)
        if plan.manual_loop is not None:  # the hand-written loop prints every few epochs
            plan.manual_loop.print_every, plan.manual_loop.after_print = every, norms.print
        else:
            plan.callbacks.append(norms)
    return plan


def train(cfg: Lab0Config) -> dict:
    """One run as ``cfg`` says (what ``lab0-mlp`` does); returns its summary."""
    return execute(cfg, build_plan).summary


def main(argv: list[str] | None = None) -> int:
    return run_lab(
        PROG,
        Lab0Config,
        build_plan,
        argv,
        __doc__.splitlines()[0],
        {"lesson": lessons_command(PROG, "lab0_mlp.lessons")},
    )


if __name__ == "__main__":
    sys.exit(main())
