"""Run configuration as a dataclass, and a command line generated from it.

A lab subclasses ``RunConfig`` (adding its own fields, changing defaults), then
``parse_config(MyConfig, argv, prog="lab1-conv")`` gives a validated config. Every field becomes a
flag (``batch_size`` -> ``--batch-size``) whose help is the field's ``help`` metadata, so ``--help``
documents everything. Bad flags and values end in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import LabError
from .memory import parse_size
from .validate import (
    DATA_FILES,
    IMAGE_DATA,
    UNDER_TORCHRUN,
    When,
    check_applies,
    check_float_range,
)


def arg(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    choices=None,
    default_factory=dataclasses.MISSING,
    nargs_optional_const: str | None = None,
    flag: str | None = None,
    low: float | None = None,
    high: float | None = None,
    below: float | None = None,
    required: bool = False,
    positional: bool = False,
    metavar: str | None = None,
    applies=None,
):
    """A config field with the help text (and choices) its flag shows; ``flag`` overrides the
    flag's name (for a field that cannot be named like its flag, e.g. ``--from``). ``low`` and
    ``high`` bound a number (each item of a list) and ``below`` bounds it strictly from above,
    all checked at parse time with every other field. ``required``: the flag must be given;
    ``positional``: an argument without a flag (``predict IMAGE ...``). ``applies``: when the
    flag changes the run (``validate.When``, or a tuple of them); given when it would change
    nothing, it is refused."""
    meta = {
        "help": help,
        "choices": choices,
        "const": nargs_optional_const,
        "flag": flag,
        "low": low,
        "high": high,
        "below": below,
        "required": required,
        "positional": positional,
        "metavar": metavar,
        "applies": applies,
    }
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def override(name: str, default: Any, help: str | None = None):
    """A lab's own default for a field one of the parts declares (``epochs: int = override(
    "epochs", 15)``): the part's help, choices and bounds stay, unless ``help`` says more."""
    for part in PARTS:
        declared = part.__dataclass_fields__.get(name)
        if declared is not None:
            meta = dict(declared.metadata)
            if help is not None:
                meta["help"] = help
            if isinstance(default, list):
                return field(default_factory=lambda: list(default), metadata=meta)
            return field(default=default, metadata=meta)
    raise TypeError(f"no config part declares {name!r}")


def apply_recipe(cfg, recipe: dict[str, Any], explicit: set[str]) -> None:
    """A recipe's values (lab1's fast recipe, lab3's chars, the checkpoint project's), set on every
    field whose flag the command line did not give: a flag given wins."""
    for name, value in recipe.items():
        if name not in explicit:
            setattr(cfg, name, copy.deepcopy(value))


METRIC_MODES = {"loss": "min", "acc": "max", "f1": "max", "map": "max"}


def metric_mode(name: str) -> str | None:
    """``min`` or ``max`` when a metric's name says which way is better (``val_loss``, ``val_acc``,
    ``val_greedy_seq_acc``, ``val_map_50``), else None: then ``--monitor-mode`` must say."""
    parts = name.split("_")
    for part in reversed(parts[1:] if len(parts) > 1 else parts):
        if part in METRIC_MODES:
            return METRIC_MODES[part]
    return None


class ConfigPart:
    """A group of flags. A lab's config is composed of the parts it uses, so it offers only flags
    that change its run: ``class Lab1Config(DataOptions, OptimOptions, RunOptions)``. Each part's
    ``validate``/``resolve`` calls ``super()``, so every part in the composition is checked."""

    def validate(self) -> None:
        """The checks every field gets, whichever part or lab declares it: a float must be finite,
        an int must fit what torch takes (``MAX_INT``), and each number must lie within its
        field's ``low``/``high``. Parts and labs add their own rules on top (calling ``super()``).
        """
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            for item in value if isinstance(value, list) else [value]:
                check_number(f, item)

    def resolve(self, explicit: set[str]) -> None:
        pass

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class RunOptions(ConfigPart):
    """What every run has: length, seed, device, precision, output, resume, and torchrun's
    timeout."""

    lab: ClassVar[str] = "lab"
    overfit_epochs: ClassVar[int] = 100  # --overfit without --epochs: one step per epoch, this many

    epochs: int = arg(10, "number of training epochs")
    batch_size: int = arg(64, "batch size (per process under torchrun)")
    max_steps: int = arg(0, "stop after this many optimizer steps (0: no limit)")
    overfit: int = arg(
        0, "train and evaluate on the same N fixed training samples, no augmentation (0: off)"
    )
    seed: int = arg(0, "random seed (Python, NumPy, torch, data order)", low=0, high=2**32 - 1)
    device: str = arg("auto", "auto, cpu, cuda, cuda:N or mps")
    precision: str = arg("fp32", "numeric precision policy", choices=("fp32", "bf16", "fp16"))
    deterministic: bool = arg(False, "use deterministic algorithms only (and deterministic cuDNN)")
    out: str = arg(
        "",
        "run directory (default: runs/<lab>/<timestamp>); one that holds a run is refused unless "
        "--resume continues it or --overwrite replaces it",
    )
    overwrite: bool = arg(
        False,
        "replace the run already in --out (its checkpoints, metrics, logs and figures are "
        "deleted first)",
    )
    resume: str | None = arg(
        None,
        "resume from a checkpoint; with no PATH, --out's last.pt or else the latest run's",
        nargs_optional_const="latest",
    )
    quiet: bool = arg(False, "no progress bar and no per-epoch lines")
    dist_timeout: float = arg(
        300.0,
        "torchrun: seconds a process waits for the others before the run stops",
        applies=UNDER_TORCHRUN,
    )
    compile: bool = arg(
        False,
        "train the model compiled with torch.compile (inductor; on CPU it needs a C++ compiler); "
        "evaluation and checkpoints use the model as written",
    )
    fsdp: bool = arg(
        False,
        "torchrun: shard the model's parameters, gradients and optimizer state across the "
        "processes (FSDP) instead of replicating them (DDP); checkpoints stay whole",
    )

    def validate(self) -> None:
        super().validate()
        _at_least(1, epochs=self.epochs, batch_size=self.batch_size)
        _at_least(0, overfit=self.overfit, max_steps=self.max_steps)
        if not self.dist_timeout > 0:
            raise LabError(f"--dist-timeout must be positive (got {self.dist_timeout})")
        if self.compile:
            from .device import compile_unavailable

            reason = compile_unavailable()
            if reason:
                raise LabError(reason)
        if self.fsdp and int(os.environ.get("WORLD_SIZE", "1")) < 2:
            raise LabError(
                "--fsdp shards the model across processes: launch the run with "
                "torchrun --nproc-per-node N (N >= 2)"
            )
        if self.fsdp and self.precision == "fp16":
            raise LabError(
                "--fsdp with --precision fp16 is not supported (its gradient scaler does not handle"
                " sharded gradients here); use --precision bf16"
            )

    def resolve(self, explicit: set[str]) -> None:
        super().resolve(explicit)
        if self.overfit and "epochs" not in explicit:
            self.epochs = self.overfit_epochs


@dataclass
class OptimOptions(ConfigPart):
    """Optimizer, schedule, and training hygiene (accumulation, clipping, early stopping)."""

    lr: float = arg(1e-3, "learning rate (peak learning rate with a schedule)")
    optimizer: str = arg("adamw", "optimizer", choices=("sgd", "adam", "adamw"))
    momentum: float = arg(0.9, "momentum for SGD (Nesterov)", applies=When("optimizer", "sgd"))
    weight_decay: float = arg(0.0, "weight decay")
    scheduler: str = arg(
        "none", "learning-rate schedule", choices=("none", "cosine", "onecycle", "step")
    )
    warmup_epochs: float = arg(
        0.0,
        "linear warm-up length in epochs (cosine schedule)",
        applies=When("scheduler", "cosine"),
    )
    grad_accum: int = arg(1, "micro-batches accumulated per optimizer step")
    grad_clip: float = arg(0.0, "clip the global gradient norm to this value (0: off)")
    patience: int = arg(
        0, "early stopping: epochs without improvement of --monitor before stopping (0: off)"
    )
    monitor: str = arg("val_loss", "metric that decides the best checkpoint and early stopping")
    monitor_mode: str = arg(
        "auto",
        "whether --monitor improves going down or up (auto: from its name, "
        "loss -> min, acc/f1/map -> max)",
        choices=("auto", "min", "max"),
    )

    def validate(self) -> None:
        super().validate()
        _at_least(1, grad_accum=self.grad_accum)
        _at_least(
            0,
            weight_decay=self.weight_decay,
            grad_clip=self.grad_clip,
            patience=self.patience,
            warmup_epochs=self.warmup_epochs,
            momentum=self.momentum,
        )
        if not self.lr > 0 or self.lr == float("inf"):
            raise LabError(f"--lr must be a positive number (got {self.lr})")


NO_OVERFIT = When(
    "overfit", 0, text="a run without --overfit (which trains on fixed, unaugmented samples)"
)


@dataclass
class DataOptions(ConfigPart):
    """The classification data pipeline: which dataset, how it is split, augmented and loaded."""

    data_kinds: ClassVar[tuple[str, ...]] = ("image", "tabular")  # what the lab's models take

    dataset: str = arg(
        "digits", "dataset name: digits, mnist, fashion-mnist, cifar10, imagefolder, csv, synthetic"
    )
    data_dir: str = arg(
        "data",
        "folder for downloaded data, or the image folder / CSV file for imagefolder / csv",
        applies=DATA_FILES,
    )
    val_fraction: float = arg(
        0.1,
        "fraction of the training split held out for validation",
        low=0,
        below=1,
        applies=NO_OVERFIT,
    )
    test_fraction: float = arg(
        0.2,
        "a source without a test split (an image folder without test/, a CSV): the "
        "fraction held out as one, the same for every run; 0: none, more images "
        "train",
        low=0,
        below=1,
    )
    stratify: bool = arg(True, "keep class proportions in the validation split")
    augment: bool = arg(
        True,
        "random training augmentation (crop/translate, and flips where they make sense)",
        applies=(IMAGE_DATA, NO_OVERFIT),
    )
    pad: int = arg(
        0,
        "augmentation: random shifts of up to this many pixels (0: 1/8 of the image side)",
        applies=(IMAGE_DATA, When("augment", True), NO_OVERFIT),
    )
    label_smoothing: float = arg(0.0, "label smoothing for the cross-entropy loss", low=0, below=1)
    loader: str = arg(
        "fast",
        "fast: whole split on the device, batched augmentation; standard: DataLoader from disk",
        choices=("fast", "standard"),
    )
    num_workers: int = arg(
        0, "DataLoader workers (--loader standard)", high=64, applies=When("loader", "standard")
    )
    channels_last: bool = arg(
        False,
        "images and model in channels-last memory format (faster convs under autocast on GPUs)",
        applies=IMAGE_DATA,
    )
    class_weights: bool = arg(False, "weight the loss by inverse class frequency (imbalanced data)")
    balanced_sampler: bool = arg(False, "sample training batches with class-balancing weights")
    image_size: int = arg(
        0,
        "resize images to this size (imagefolder; 0: the lab's default)",
        high=512,
        applies=When("dataset", "imagefolder", "synthetic"),
    )
    label_column: str = arg(
        "label", "csv: name of the label column", applies=When("dataset", "csv")
    )
    skip_bad_files: bool = arg(
        False,
        "imagefolder: skip unreadable images (and report them) instead of stopping",
        applies=When("dataset", "imagefolder"),
    )

    def validate(self) -> None:
        super().validate()
        _at_least(0, num_workers=self.num_workers, image_size=self.image_size, pad=self.pad)

    def resolve(self, explicit: set[str]) -> None:
        super().resolve(explicit)
        self.test_fraction_given = (
            "test_fraction" in explicit
        )  # refused where the data has its own test split


@dataclass
class BatchNormOptions(ConfigPart):
    """For models with batch norm, under torchrun."""

    sync_bn: bool = arg(
        False,
        "torchrun: synchronise batch-norm statistics across processes (SyncBatchNorm)",
        applies=UNDER_TORCHRUN,
    )

    def validate(self) -> None:
        super().validate()
        if self.sync_bn and getattr(self, "fsdp", False):
            raise LabError("--sync-bn with --fsdp is not supported; drop one of them")


@dataclass
class RunConfig(DataOptions, BatchNormOptions, OptimOptions, RunOptions):
    """Every part: what a classification lab offers. Labs subclass this (or compose the parts they
    use); ``lab`` names the default run folder."""


@dataclass
class LoopOptions(ConfigPart):
    """The hand-written loop (``labs_core.loop``) in place of the core trainer."""

    loop: str = arg(
        "core",
        "the core trainer, or the training loop written out by hand",
        choices=("core", "manual"),
    )

    def validate(self) -> None:
        super().validate()
        if self.loop != "manual":
            return
        unsupported = {
            "resume": self.resume,
            "grad_accum": self.grad_accum > 1,
            "grad_clip": self.grad_clip,
            "max_steps": self.max_steps,
            "patience": self.patience,
            "precision": self.precision != "fp32",
            "compile": self.compile,
            "class_weights": self.class_weights,
            "torchrun": int(os.environ.get("WORLD_SIZE", "1")) > 1,
        }
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            what = "a torchrun launch" if bad[0] == "torchrun" else f"--{_flag(bad[0])}"
            raise LabError(f"--loop manual shows the bare loop; {what} needs --loop core")


@dataclass
class TuningOptions(ConfigPart):
    """The finders a classifier's run can start with, on its own model, data and optimizer
    (``labs_core.tuning``). Each one restores the weights and optimizer it used, and writes its
    report into the run directory; the run then stops, or with --lr-find-then-train trains."""

    lr_find: bool = arg(
        False,
        "run the learning-rate range test, write lr_find.png and lr_find.json, print the "
        "suggested --lr (fastai's valley rule; steepest descent beside it), and stop",
    )
    lr_find_then_train: bool = arg(
        False, "the range test, then train from the same weights with the suggested rate as --lr"
    )
    lr_find_steps: int = arg(
        100,
        "range test: at most this many steps (it stops early when the loss diverges)",
        low=10,
        high=100_000,
    )
    lr_find_start: float = arg(1e-7, "range test: the first learning rate", low=0)
    lr_find_end: float = arg(
        10.0, "range test: the last learning rate (rates grow geometrically)", low=0
    )
    find_batch_size: bool = arg(
        False,
        "find the largest batch whose training step fits (CUDA: no out-of-memory; "
        "CPU: --memory-budget), print images/s at each size tried, write "
        "batch_size.json, and stop",
    )
    memory_budget: str = arg(
        "",
        "batch-size finder: the most memory a probe may reach, e.g. 800M or 4GiB; on the "
        "CPU the process's peak resident memory (default: half of what it could reach), on "
        "CUDA the peak reserved (default: none, out-of-memory decides)",
    )

    TRAINING_ONLY: ClassVar[tuple[str, ...]] = (
        "epochs",
        "max_steps",
        "patience",
        "scheduler",
        "warmup_epochs",
        "monitor",
        "monitor_mode",
        "loop",
    )

    def validate(self) -> None:
        super().validate()
        if not 0 < self.lr_find_start < self.lr_find_end:
            raise LabError(
                "--lr-find-start must be positive and below --lr-find-end (got"
                f" {self.lr_find_start:g} and {self.lr_find_end:g})"
            )
        if self.memory_budget:
            parse_size(
                self.memory_budget
            )  # a size it cannot read stops here, before anything is written

    def resolve(self, explicit: set[str]) -> None:
        super().resolve(explicit)
        lr_find = self.lr_find or self.lr_find_then_train
        finder = (
            "--lr-find" + ("-then-train" if self.lr_find_then_train else "")
            if lr_find
            else "--find-batch-size"
        )
        if not lr_find and (
            used := sorted({"lr_find_steps", "lr_find_start", "lr_find_end"} & explicit)
        ):
            raise LabError(
                f"--{_flag(used[0])} sets the range test; it does nothing without --lr-find"
            )
        if "memory_budget" in explicit and not self.find_batch_size:
            raise LabError(
                "--memory-budget sets the batch-size finder's limit; it does nothing without "
                "--find-batch-size"
            )
        if not (lr_find or self.find_batch_size):
            return
        if lr_find and self.find_batch_size:
            raise LabError(
                "one finder at a time: --find-batch-size first, then --lr-find with the"
                " --batch-size it suggests"
            )
        if self.resume:
            raise LabError(f"{finder} starts from fresh weights; it does not combine with --resume")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise LabError(
                f"{finder} runs in one process; run it without torchrun, then train under torchrun "
                "with what it suggests"
            )
        if "lr" in explicit and lr_find:
            raise LabError(
                f"{finder} sweeps its own rates"
                + (" and trains with the one it suggests" if self.lr_find_then_train else "")
                + "; leave --lr out"
            )
        if "batch_size" in explicit and self.find_batch_size:
            raise LabError("--find-batch-size tries its own batch sizes; leave --batch-size out")
        if not self.lr_find_then_train and (used := sorted(set(self.TRAINING_ONLY) & explicit)):
            raise LabError(
                f"{finder} stops before training, so --{_flag(used[0])} would change nothing"
                + (" (--lr-find-then-train trains after the test)" if lr_find else "")
            )


MAX_INT = 2**31 - 1  # the largest count any flag needs; beyond it torch overflows


def check_number(f: dataclasses.Field, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    flag = f.metadata.get("flag") or f"--{_flag(f.name)}"
    if isinstance(value, float) and not math.isfinite(value):
        raise LabError(f"{flag} must be a finite number (got {value})")
    if isinstance(value, float):
        check_float_range(flag, value)
    low, high, below = f.metadata.get("low"), f.metadata.get("high"), f.metadata.get("below")
    if high is None and isinstance(value, int):
        high = MAX_INT
    if low is not None and below is not None and not low <= value < below:
        raise LabError(f"{flag} must be in [{low:g}, {below:g}) (got {value})")
    if low is not None and value < low:
        raise LabError(f"{flag} must be at least {low} (got {value})")
    if high is not None and value > high:
        raise LabError(f"{flag} must be at most {high} (got {value})")
    if below is not None and not value < below:
        raise LabError(f"{flag} must be below {below:g} (got {value})")


PARTS = (RunOptions, OptimOptions, DataOptions, BatchNormOptions, LoopOptions, TuningOptions)
PART_TITLES = {
    LoopOptions: "training loop",
    TuningOptions: "finders (learning rate, batch size)",
    RunOptions: "run",
    OptimOptions: "optimisation and training hygiene",
    DataOptions: "data pipeline",
    BatchNormOptions: "batch norm",
}


def _at_least(low: int, **values) -> None:
    for name, value in values.items():
        if value < low:
            rule = "not be negative" if low == 0 else f"be at least {low}"
            raise LabError(f"--{_flag(name)} must {rule} (got {value})")


def _flag(name: str) -> str:
    return name.replace("_", "-")


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (no usage dump) and exit code 2, and a flag
    must be spelled whole: ``--epoch 3`` is refused, not taken as ``--epochs`` (what a recipe does
    with a field depends on whether its flag was given, so a prefix could silently change nothing).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

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


def _owner(cls: type, name: str) -> type:
    """The most basic class of ``cls``'s composition that declares field ``name``."""
    for klass in reversed(cls.__mro__):
        if name in klass.__dict__.get("__annotations__", {}):
            return klass
    return cls


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field, in ``--help`` groups: the lab's own flags, then one group per part."""
    hints = typing.get_type_hints(cls)
    groups: dict[type, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        owner = _owner(cls, f.name)
        if owner not in groups:
            groups[owner] = parser.add_argument_group(PART_TITLES.get(owner, "options of this lab"))
        tp, optional, item = _base_type(hints[f.name])
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta.get("help", "")}
        if meta.get("positional"):
            del kwargs["dest"]  # argparse names a positional's value after it
            groups[owner].add_argument(
                f.name,
                type=item if tp is list else tp,
                nargs="+" if tp is list else None,
                help=kwargs["help"],
                metavar=meta.get("metavar") or f.name.upper(),
            )
            continue
        if meta.get("required"):
            kwargs["required"] = True
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
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
            kwargs["help"] += (
                f" (default: {' '.join(map(str, default)) if tp is list else default})"
            )
        groups[owner].add_argument(meta.get("flag") or f"--{_flag(f.name)}", **kwargs)


def build_parser(cls: type, prog: str, description: str = "") -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=prog, description=description)
    add_config_arguments(parser, cls)
    return parser


def config_from_namespace(cls: type, ns: argparse.Namespace, explicit: set[str] = frozenset()):
    values = {
        f.name: getattr(ns, f.name)
        for f in dataclasses.fields(cls)
        if f.init and hasattr(ns, f.name)
    }
    cfg = cls(**values)
    ConfigPart.validate(cfg)  # each field within its own bounds first: a resolve may divide by one
    cfg.resolve(set(explicit))
    check_applies(cfg, set(explicit))  # a flag that would change nothing for this run is refused
    cfg.validate()
    return cfg


def explicit_fields(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Which fields the command line set (``--epochs 5`` or ``--epochs=5``)."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    return {action.dest for action in parser._actions if given & set(action.option_strings)}


def parse_config(cls: type, argv: list[str] | None, prog: str, description: str = ""):
    """Parse ``argv`` into a validated ``cls`` instance. Bad flags exit 2; bad values raise
    ``LabError``."""
    parser = build_parser(cls, prog, description)
    argv = sys.argv[1:] if argv is None else list(argv)
    ns = parser.parse_args(argv)
    return config_from_namespace(cls, ns, explicit_fields(parser, argv))
