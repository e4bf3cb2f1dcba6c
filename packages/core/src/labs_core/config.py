"""Run configuration as a dataclass, and a command line generated from it.

A lab subclasses ``RunConfig`` (adding its own fields, changing defaults), then
``parse_config(MyConfig, argv, prog="lab1-conv")`` gives a validated config. Every field becomes a
flag (``batch_size`` -> ``--batch-size``) whose help is the field's ``help`` metadata, so ``--help``
documents everything. Bad flags and values end in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import LabError


def arg(default: Any = dataclasses.MISSING, help: str = "", *, choices=None, default_factory=dataclasses.MISSING,
        nargs_optional_const: str | None = None, flag: str | None = None):
    """A config field with the help text (and choices) its flag shows; ``flag`` overrides the
    flag's name (for a field that cannot be named like its flag, e.g. ``--from``)."""
    meta = {"help": help, "choices": choices, "const": nargs_optional_const, "flag": flag}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """Flags every lab shares. Labs subclass this; ``lab`` names the default run folder."""

    lab: ClassVar[str] = "lab"
    overfit_epochs: ClassVar[int] = 100  # --overfit without --epochs: one step per epoch, this many

    dataset: str = arg("digits", "dataset name: digits, mnist, fashion-mnist, cifar10, imagefolder, csv, synthetic")
    data_dir: str = arg("data", "folder for downloaded data, or the image folder / CSV file for imagefolder / csv")
    epochs: int = arg(10, "number of training epochs")
    batch_size: int = arg(64, "batch size")
    lr: float = arg(1e-3, "learning rate (peak learning rate with a schedule)")
    optimizer: str = arg("adamw", "optimizer", choices=("sgd", "adam", "adamw"))
    momentum: float = arg(0.9, "momentum for SGD (Nesterov)")
    weight_decay: float = arg(0.0, "weight decay")
    scheduler: str = arg("none", "learning-rate schedule", choices=("none", "cosine", "onecycle", "step"))
    warmup_epochs: float = arg(0.0, "linear warm-up length in epochs (cosine schedule)")
    label_smoothing: float = arg(0.0, "label smoothing for the cross-entropy loss")
    grad_accum: int = arg(1, "micro-batches accumulated per optimizer step")
    grad_clip: float = arg(0.0, "clip the global gradient norm to this value (0: off)")
    patience: int = arg(0, "early stopping: epochs without improvement of --monitor before stopping (0: off)")
    monitor: str = arg("val_loss", "metric that decides the best checkpoint and early stopping")
    seed: int = arg(0, "random seed (Python, NumPy, torch, data order)")
    device: str = arg("auto", "auto, cpu, cuda, cuda:N or mps")
    precision: str = arg("fp32", "numeric precision policy", choices=("fp32", "bf16", "fp16"))
    deterministic: bool = arg(False, "use deterministic algorithms only (and deterministic cuDNN)")
    overfit: int = arg(0, "train and evaluate on the same N fixed training samples, no augmentation (0: off)")
    max_steps: int = arg(0, "stop after this many optimizer steps (0: no limit)")
    val_fraction: float = arg(0.1, "fraction of the training split held out for validation")
    stratify: bool = arg(True, "keep class proportions in the validation split")
    augment: bool = arg(True, "random training augmentation (crop/translate, and flips where they make sense)")
    loader: str = arg("fast", "fast: whole split on the device, batched augmentation; standard: DataLoader from disk",
                      choices=("fast", "standard"))
    num_workers: int = arg(0, "DataLoader workers (standard loader)")
    channels_last: bool = arg(False, "images and model in channels-last memory format (faster convs under autocast on GPUs)")
    class_weights: bool = arg(False, "weight the loss by inverse class frequency (imbalanced data)")
    balanced_sampler: bool = arg(False, "sample training batches with class-balancing weights")
    image_size: int = arg(0, "resize images to this size (imagefolder; 0: the lab's default)")
    label_column: str = arg("label", "csv: name of the label column")
    skip_bad_files: bool = arg(False, "imagefolder: skip unreadable images (and report them) instead of stopping")
    out: str = arg("", "run directory (default: runs/<lab>/<timestamp>)")
    resume: str | None = arg(None, "resume from a checkpoint; with no PATH, the latest run's last.pt",
                             nargs_optional_const="latest")
    quiet: bool = arg(False, "no progress bar and no per-epoch lines")
    sync_bn: bool = arg(False, "torchrun: synchronise batch-norm statistics across processes (SyncBatchNorm)")
    dist_timeout: float = arg(300.0, "torchrun: seconds a process waits for the others before the run stops")

    def validate(self) -> None:
        """Raise ``LabError`` for values that cannot work. Labs extend this and call ``super()``."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "grad_accum": self.grad_accum}
        for name, value in positive.items():
            if value < 1:
                raise LabError(f"--{_flag(name)} must be at least 1 (got {value})")
        if not self.lr > 0:
            raise LabError(f"--lr must be positive (got {self.lr})")
        nonneg = {"weight_decay": self.weight_decay, "grad_clip": self.grad_clip, "patience": self.patience,
                  "overfit": self.overfit, "max_steps": self.max_steps, "warmup_epochs": self.warmup_epochs,
                  "num_workers": self.num_workers, "image_size": self.image_size, "momentum": self.momentum}
        for name, value in nonneg.items():
            if value < 0:
                raise LabError(f"--{_flag(name)} must not be negative (got {value})")
        if not 0 <= self.label_smoothing < 1:
            raise LabError(f"--label-smoothing must be in [0, 1) (got {self.label_smoothing})")
        if not self.dist_timeout > 0:
            raise LabError(f"--dist-timeout must be positive (got {self.dist_timeout})")
        if not 0 <= self.val_fraction < 1:
            raise LabError(f"--val-fraction must be in [0, 1) (got {self.val_fraction})")

    def resolve(self, explicit: set[str]) -> None:
        """Adjust defaults the user did not set (``explicit`` holds the fields given as flags)."""
        if self.overfit and "epochs" not in explicit:
            self.epochs = self.overfit_epochs

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _flag(name: str) -> str:
    return name.replace("_", "-")


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (no usage dump) and exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _base_type(tp):
    """``int | None`` -> (int, optional); ``list[int]`` -> (list, int)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])[0], True, _base_type(args[0])[2]
    if origin is list:
        return list, False, typing.get_args(tp)[0]
    return tp, False, None


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, optional, item = _base_type(hints[f.name])
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta.get("help", "")}
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif tp is list:
            kwargs.update(type=item, nargs="+")
        elif meta.get("const") is not None:
            kwargs.update(type=tp, nargs="?", const=meta["const"], metavar="PATH")
        else:
            kwargs["type"] = tp
        kwargs["default"] = default
        if default not in (None, "", []) and tp is not bool:
            kwargs["help"] += f" (default: {' '.join(map(str, default)) if tp is list else default})"
        parser.add_argument(meta.get("flag") or f"--{_flag(f.name)}", **kwargs)


def build_parser(cls: type, prog: str, description: str = "") -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=prog, description=description)
    add_config_arguments(parser, cls)
    return parser


def config_from_namespace(cls: type, ns: argparse.Namespace, explicit: set[str] = frozenset()):
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if f.init and hasattr(ns, f.name)}
    cfg = cls(**values)
    cfg.resolve(set(explicit))
    cfg.validate()
    return cfg


def explicit_fields(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Which fields the command line set (``--epochs 5`` or ``--epochs=5``)."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    return {action.dest for action in parser._actions if given & set(action.option_strings)}


def parse_config(cls: type, argv: list[str] | None, prog: str, description: str = ""):
    """Parse ``argv`` into a validated ``cls`` instance. Bad flags exit 2; bad values raise ``LabError``."""
    parser = build_parser(cls, prog, description)
    argv = sys.argv[1:] if argv is None else list(argv)
    ns = parser.parse_args(argv)
    return config_from_namespace(cls, ns, explicit_fields(parser, argv))
