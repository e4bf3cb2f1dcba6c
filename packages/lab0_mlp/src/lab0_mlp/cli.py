"""lab0-mlp: train an MLP (from scratch or from nn) on digits by default, or run a lesson.

    lab0-mlp [flags]              train (see --help)
    lab0-mlp lesson NAME          tensors | autograd | linreg
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from labs_core import Callback, LabError, RunConfig, arg, pick_device, seed_everything
from labs_core.cli import make_run_dir, run_lab, write_json
from labs_core.data import build_loaders, load_dataset
from labs_core.experiment import build_optimizer, describe, run_classifier
from labs_core.plots import plot_curves

from . import optim
from .lessons import LESSONS
from .loop import run_manual
from .model import ACTIVATIONS, MLP

PROG = "lab0-mlp"


@dataclass
class Lab0Config(RunConfig):
    lab = "lab0-mlp"
    overfit_epochs = 150  # --overfit N: N <= batch size, so one step per epoch

    epochs: int = arg(30, "number of training epochs")
    lr: float = arg(3e-3, "learning rate")
    optimizer: str = arg("adam", "optimizer", choices=("sgd", "adam", "adamw"))
    augment: bool = arg(False, "random translation augmentation (off: an MLP sees pixels, not shapes)")
    hidden: list[int] = arg(help="hidden layer sizes, e.g. --hidden 256 128", default_factory=lambda: [256, 128])
    activation: str = arg("relu", "activation between layers", choices=ACTIVATIONS)
    dropout: float = arg(0.1, "dropout probability after each hidden layer (0: none)")
    batch_norm: bool = arg(False, "batch norm after each hidden linear layer")
    layers: str = arg("scratch", "build the MLP from the scratch layers or from torch.nn", choices=("scratch", "torch"))
    optim_impl: str = arg("scratch", "the written-out SGD/Adam or torch.optim's", choices=("scratch", "torch"))
    loop: str = arg("core", "the hand-written loop or the core trainer", choices=("manual", "core"))
    grad_norms: bool = arg(False, "print per-layer gradient norms during training (always on with --overfit)")

    def validate(self) -> None:
        super().validate()
        if not self.hidden or min(self.hidden) < 1:
            raise LabError("--hidden needs one or more positive sizes")
        if not 0 <= self.dropout < 1:
            raise LabError(f"--dropout must be in [0, 1) (got {self.dropout})")
        if self.loop == "manual":
            unsupported = {"resume": self.resume, "grad_accum": self.grad_accum > 1, "grad_clip": self.grad_clip,
                           "max_steps": self.max_steps, "patience": self.patience, "precision": self.precision != "fp32"}
            unsupported["torchrun"] = int(os.environ.get("WORLD_SIZE", "1")) > 1
            bad = [k for k, v in unsupported.items() if v]
            if bad:
                what = "a torchrun launch" if bad[0] == "torchrun" else f"--{bad[0].replace('_', '-')}"
                raise LabError(f"--loop manual shows the bare loop; {what} needs --loop core")


def build_model(cfg: Lab0Config, data) -> MLP:
    return MLP(data.input_shape, data.num_classes, cfg.hidden, cfg.activation, cfg.dropout, cfg.batch_norm, cfg.layers)


def make_optimizer(cfg: Lab0Config, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optim_impl == "torch":
        return build_optimizer(cfg, model)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    return optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, decoupled=cfg.optimizer == "adamw")


class GradNorms(Callback):
    """Per-layer gradient norms, caught by a hook on each parameter as its gradient is accumulated
    (``register_post_accumulate_grad_hook``): works the same under the manual loop and the trainer."""

    def __init__(self, model: nn.Module, say=print, every: int = 1):
        self.latest: dict[str, float] = {}
        self.say, self.every = say, every
        for name, p in model.named_parameters():
            p.register_post_accumulate_grad_hook(lambda p, name=name: self.latest.__setitem__(name, p.grad.norm().item()))

    def format(self) -> str:
        return "  grad norms: " + "  ".join(f"{k} {v:.2e}" for k, v in self.latest.items())

    def on_epoch_end(self, trainer, logs) -> None:
        if logs["epoch"] % self.every == 0 or logs["epoch"] == trainer.epochs:
            self.say(self.format())


def train(cfg: Lab0Config) -> dict:
    say = (lambda *_: None) if cfg.quiet else (lambda m: print(m, flush=True))
    show_norms = cfg.grad_norms or bool(cfg.overfit)
    every = max(1, cfg.epochs // 10)
    if cfg.loop == "core":
        extra = []

        def model_fn(data):
            model = build_model(cfg, data)
            if show_norms:
                extra.append(GradNorms(model, say, every))
            return model

        result = run_classifier(cfg, model_fn, make_optimizer=make_optimizer, callbacks=extra)
        history, run_dir, summary = result.trainer.history, result.run_dir, result.summary
    else:
        history, run_dir, summary = manual(cfg, say, show_norms, every)
    plot_curves(history, run_dir / "loss_curve.png", title=f"{PROG} on {cfg.dataset}")
    say(f"loss curve: {run_dir / 'loss_curve.png'}")
    return summary


def manual(cfg: Lab0Config, say, show_norms: bool, every: int):
    started = time.perf_counter()
    device = pick_device(cfg.device)
    seed_everything(cfg.seed, cfg.deterministic)
    data = load_dataset(cfg.dataset, cfg.data_dir, image_size=cfg.image_size, label_column=cfg.label_column)
    loaders = build_loaders(data, batch_size=cfg.batch_size, device=device, seed=cfg.seed,
                            val_fraction=cfg.val_fraction, stratify=cfg.stratify, augment=cfg.augment,
                            overfit=cfg.overfit)
    model = build_model(cfg, loaders.data).to(device)
    optimizer = make_optimizer(cfg, model)
    run_dir = make_run_dir(cfg.lab, cfg.out)
    write_json(run_dir / "config.json", {**cfg.to_dict(), "lab": cfg.lab, "resolved": {"device": str(device),
               "dataset": describe(loaders.data), "classes": loaders.data.classes}})
    say(f"{PROG} (manual loop): {describe(loaders.data)} | {sum(p.numel() for p in model.parameters()):,} params | {device}")
    norms = GradNorms(model, say) if show_norms else None
    history = run_manual(model, optimizer, loaders.train, loaders.val, cfg.epochs, say=say, print_every=every,
                         after_print=(lambda: say(norms.format())) if norms is not None else None)
    with open(run_dir / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(logs) + "\n" for logs in history)
    metrics = dict(history[-1])
    metrics.pop("epoch")
    if loaders.test is not None and not cfg.overfit:
        from .loop import evaluate
        metrics["test_acc"] = evaluate(model, loaders.test)["val_acc"]
        say(f"test accuracy {metrics['test_acc']:.4f}")
    summary = {"metrics": metrics, "best": {"metric": "val_loss", "value": min(h["val_loss"] for h in history),
               "epoch": min(history, key=lambda h: h["val_loss"])["epoch"]},
               "epochs_run": len(history), "steps": len(history) * len(loaders.train),
               "wall_seconds": round(time.perf_counter() - started, 3), "device": str(device), "precision": "fp32",
               "seed": cfg.seed, "loop": "manual"}
    write_json(run_dir / "summary.json", summary)
    say(f"run directory: {run_dir}")
    return history, run_dir, summary


def lesson(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in LESSONS:
        raise LabError(f"usage: {PROG} lesson {{{'|'.join(LESSONS)}}}")
    LESSONS[argv[0]]()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_lab(PROG, Lab0Config, train, argv, __doc__.splitlines()[0], {"lesson": lesson})


if __name__ == "__main__":
    sys.exit(main())
