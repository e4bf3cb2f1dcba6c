"""lab1-conv: a CNN (with the scratch or torch convolution) on digits by default.

lab1-conv [flags]             train (see --help); --shapes prints the layer table and exits
lab1-conv compare [flags]     logistic-regression baseline vs the CNN on the same split
                              (default dataset: fashion-mnist)
lab1-conv lesson debugging    shape/device/dtype errors, gradcheck, detect_anomaly, torchinfo
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from labs_core import LabError, RunConfig, arg, parse_config
from labs_core.cli import lessons_command, run_lab
from labs_core.config import LoopOptions, TuningOptions, apply_recipe, override
from labs_core.data import load_dataset
from labs_core.experiment import classifier_plan
from labs_core.run import Plan, Run, execute
from labs_core.rundir import write_json
from labs_core.validate import When

from .figures import explain_test_images, plot_feature_maps, plot_filters, shape_table
from .model import CNN, LogisticRegression

PROG = "lab1-conv"

# lab1's fast recipe: on real MNIST (8,000 train / 2,000 test images) 99% in about 3 s of training
# on a 2-core CPU (benchmarks/mnist_time_to_accuracy.py runs exactly this through the lab's code).
# Small BN CNN with a flatten head, torch's conv, channels-last, bf16 autocast, shifts of 1 px,
# SGD-Nesterov with a one-cycle schedule over 3 epochs, label smoothing.
FAST_RECIPE = dict(
    epochs=3,
    batch_size=64,
    optimizer="sgd",
    lr=0.1,
    momentum=0.9,
    weight_decay=5e-4,
    scheduler="onecycle",
    label_smoothing=0.1,
    widths=[16, 32, 64],
    dropout=0.1,
    conv="torch",
    head="flatten",
    channels_last=True,
    precision="bf16",
    pad=1,
)


CNN_ONLY = When("model", "cnn")


@dataclass
class Lab1Config(LoopOptions, TuningOptions, RunConfig):
    lab = "lab1-conv"
    overfit_epochs = 60
    data_kinds = ("image",)  # a convolution needs pixels

    recipe: str = arg(
        "auto",
        "fast: lab1's fast recipe (3 epochs, see the README); standard: the defaults "
        "below; auto: fast for mnist and fashion-mnist, else standard",
        choices=("auto", "fast", "standard"),
    )
    epochs: int = override("epochs", 15)
    lr: float = arg(4e-3, "peak learning rate (one-cycle schedule)")
    scheduler: str = override("scheduler", "onecycle")
    weight_decay: float = override("weight_decay", 5e-4)
    model: str = arg("cnn", "cnn, or logreg (the baseline)", choices=("cnn", "logreg"))
    conv: str = arg(
        "scratch",
        "convolution: ours (unfold + matmul) or torch.nn.Conv2d",
        choices=("scratch", "torch"),
        applies=CNN_ONLY,
    )
    widths: list[int] = arg(
        help="channels of each conv block, e.g. --widths 32 64 128",
        default_factory=lambda: [32, 64, 128],
        high=4096,
        applies=CNN_ONLY,
    )
    dropout: float = arg(0.25, "dropout before the classifier", low=0, below=1, applies=CNN_ONLY)
    head: str = arg(
        "avg",
        "global average pooling or flatten before the classifier",
        choices=("avg", "flatten"),
        applies=CNN_ONLY,
    )
    shapes: bool = arg(
        False, "print the per-layer shape table (with the formula's predictions) and exit"
    )
    explain: int = arg(
        0,
        "at the end of the run, why the model predicted what it did for the first N test images: "
        "saliency, SmoothGrad, integrated gradients and Grad-CAM maps in explain.png (0: off)",
        low=0,
        high=32,
    )

    def resolve(self, explicit: set[str]) -> None:
        if self.recipe == "auto":
            self.recipe = (
                "fast"
                if self.dataset in ("mnist", "fashion-mnist") and not self.overfit
                else "standard"
            )
        if self.recipe == "fast":  # the recipe's values, except where a flag says otherwise
            apply_recipe(self, FAST_RECIPE, explicit)
        super().resolve(explicit)

    def validate(self) -> None:
        super().validate()
        if not self.widths or min(self.widths) < 1:
            raise LabError("--widths needs one or more positive channel counts")
        if self.explain:
            stops = (self.lr_find and not self.lr_find_then_train) or self.find_batch_size
            why = (
                "--shapes trains nothing"
                if self.shapes
                else (
                    "--overfit runs have no test split"
                    if self.overfit
                    else (
                        "a finder alone stops before training"
                        if stops
                        else (
                            "Grad-CAM needs a conv layer, which --model logreg has not"
                            if self.model != "cnn"
                            else ""
                        )
                    )
                )
            )
            if why:
                raise LabError(f"--explain explains a trained CNN's test predictions; {why}")


def build_model(cfg: Lab1Config, data) -> torch.nn.Module:
    if cfg.model == "logreg":
        return LogisticRegression(data.input_shape, data.num_classes)
    return CNN(data.input_shape, data.num_classes, cfg.widths, cfg.dropout, cfg.conv, cfg.head)


def report_figures(run: Run, trainer, loaders, test) -> None:
    """The report's own figures: filters, feature maps, and with ``--explain N`` attributions."""
    cfg, model, run_dir = run.cfg, trainer.module, run.run_dir
    if cfg.model != "cnn":
        return
    image = next(iter(loaders.test or loaders.val or loaders.train))[0][0]
    plot_filters(model, run_dir / "filters.png")
    plot_feature_maps(model, image, run_dir / "feature_maps.png")
    run.say(f"figures: {run_dir / 'filters.png'}, {run_dir / 'feature_maps.png'}")
    if cfg.explain:
        explain_test_images(model, loaders, cfg.explain, run_dir / "explain.png", run.say)


def build_plan(run: Run, **plan_options) -> Plan:
    """The core's classifier plan with lab1's model and figures; ``plan_options`` go to it (the
    benchmark passes its own data split and a timing callback)."""
    cfg = run.cfg
    return classifier_plan(
        run,
        functools.partial(build_model, cfg),
        extend_report=report_figures,
        note=f"recipe {cfg.recipe}",
        **plan_options,
    )


def print_shapes(cfg: Lab1Config) -> bool:
    """``--shapes``: the per-layer shape table, and no training."""
    if cfg.shapes:
        data = load_dataset(
            cfg.dataset, cfg.data_dir, image_size=cfg.image_size, label_column=cfg.label_column
        )
        print(shape_table(build_model(cfg, data), data.input_shape))
    return cfg.shapes


def train(cfg: Lab1Config, **plan_options) -> dict:
    """One run as ``cfg`` says (what ``lab1-conv`` does); returns its summary."""
    if print_shapes(cfg):
        return {}
    return execute(cfg, functools.partial(build_plan, **plan_options)).summary


def compare(argv: list[str]) -> int:
    """Baseline and CNN on the same split (same seed, same data), one table at the end."""
    if "--dataset" not in argv:
        argv = ["--dataset", "fashion-mnist", *argv]
    try:
        cfg = parse_config(Lab1Config, argv, f"{PROG} compare")
    except SystemExit as exc:
        return int(exc.code or 0)
    if cfg.lr_find or cfg.lr_find_then_train or cfg.find_batch_size:
        raise LabError(
            "compare trains two models; run a finder with lab1-conv itself, on the model it is for"
        )
    base_out = Path(cfg.out) if cfg.out else None
    results = {}
    for model in ("logreg", "cnn"):
        out = str(base_out / model) if base_out else ""
        results[model] = train(
            replace(cfg, model=model, out=out, augment=cfg.augment and model == "cnn")
        )
    table = {
        m: (
            {k: r["metrics"].get(k) for k in ("val_acc", "test_acc")}
            | {"wall_seconds": r["wall_seconds"]}
        )
        for m, r in results.items()
    }
    print(f"\n{'model':<8} {'val acc':>8} {'test acc':>9} {'seconds':>8}")
    for m, row in table.items():
        print(f"{m:<8} {row['val_acc']:>8.4f} {row['test_acc']:>9.4f} {row['wall_seconds']:>8.1f}")
    if base_out:
        write_json(base_out / "comparison.json", table)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_lab(
        PROG,
        Lab1Config,
        build_plan,
        argv,
        __doc__.splitlines()[0],
        {"compare": compare, "lesson": lessons_command(PROG, "lab1_conv.lessons")},
        preview=print_shapes,
    )


if __name__ == "__main__":
    sys.exit(main())
