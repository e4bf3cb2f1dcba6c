"""lab1-conv: a CNN (with the scratch or torch convolution) on digits by default.

    lab1-conv [flags]             train (see --help); --shapes prints the layer table and exits
    lab1-conv compare [flags]     logistic-regression baseline vs the CNN on the same split
                                  (default dataset: fashion-mnist)
    lab1-conv lesson debugging    shape/device/dtype errors, gradcheck, detect_anomaly, torchinfo
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from labs_core import LabError, RunConfig, arg, parse_config
from labs_core.cli import lessons_command, run_lab, write_json
from labs_core.config import LoopOptions, TuningOptions
from labs_core.data import load_dataset
from labs_core.experiment import run_classifier
from labs_core.explain import write_explanations
from labs_core.loop import run_manual
from labs_core.summary import format_summary, model_summary
from labs_core.validate import When

from .figures import plot_feature_maps, plot_filters
from .model import CNN, LogisticRegression
from .ops import conv_output_size

PROG = "lab1-conv"

# lab1's fast recipe: on real MNIST (8,000 train / 2,000 test images) 99% in about 3 s of training
# on a 2-core CPU (benchmarks/mnist_time_to_accuracy.py runs exactly this through the lab's code).
# Small BN CNN with a flatten head, torch's conv, channels-last, bf16 autocast, shifts of 1 px,
# SGD-Nesterov with a one-cycle schedule over 3 epochs, label smoothing.
FAST_RECIPE = dict(epochs=3, batch_size=64, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
                   scheduler="onecycle", label_smoothing=0.1, widths=[16, 32, 64], dropout=0.1, conv="torch",
                   head="flatten", channels_last=True, precision="bf16", pad=1)


CNN_ONLY = When("model", "cnn")


@dataclass
class Lab1Config(LoopOptions, TuningOptions, RunConfig):
    lab = "lab1-conv"
    overfit_epochs = 60
    data_kinds = ("image",)  # a convolution needs pixels

    recipe: str = arg("auto", "fast: lab1's fast recipe (3 epochs, see the README); standard: the defaults "
                      "below; auto: fast for mnist and fashion-mnist, else standard", choices=("auto", "fast", "standard"))
    epochs: int = arg(15, "number of training epochs")
    lr: float = arg(4e-3, "peak learning rate (one-cycle schedule)")
    scheduler: str = arg("onecycle", "learning-rate schedule", choices=("none", "cosine", "onecycle", "step"))
    weight_decay: float = arg(5e-4, "weight decay")
    model: str = arg("cnn", "cnn, or logreg (the baseline)", choices=("cnn", "logreg"))
    conv: str = arg("scratch", "convolution: ours (unfold + matmul) or torch.nn.Conv2d", choices=("scratch", "torch"),
                    applies=CNN_ONLY)
    widths: list[int] = arg(help="channels of each conv block, e.g. --widths 32 64 128",
                            default_factory=lambda: [32, 64, 128], high=4096, applies=CNN_ONLY)
    dropout: float = arg(0.25, "dropout before the classifier", applies=CNN_ONLY)
    head: str = arg("avg", "global average pooling or flatten before the classifier", choices=("avg", "flatten"),
                    applies=CNN_ONLY)
    shapes: bool = arg(False, "print the per-layer shape table (with the formula's predictions) and exit")
    explain: int = arg(0, "at the end of the run, why the model predicted what it did for the first N test images: "
                       "saliency, SmoothGrad, integrated gradients and Grad-CAM maps in explain.png (0: off)",
                       low=0, high=32)

    def resolve(self, explicit: set[str]) -> None:
        if self.recipe == "auto":
            self.recipe = "fast" if self.dataset in ("mnist", "fashion-mnist") and not self.overfit else "standard"
        if self.recipe == "fast":  # the recipe's values, except where a flag says otherwise
            for key, value in FAST_RECIPE.items():
                if key not in explicit:
                    setattr(self, key, value)
        super().resolve(explicit)

    def validate(self) -> None:
        super().validate()
        if not self.widths or min(self.widths) < 1:
            raise LabError("--widths needs one or more positive channel counts")
        if not 0 <= self.dropout < 1:
            raise LabError(f"--dropout must be in [0, 1) (got {self.dropout})")
        if self.explain:
            stops = (self.lr_find and not self.lr_find_then_train) or self.find_batch_size
            why = ("--shapes trains nothing" if self.shapes else "--overfit runs have no test split" if self.overfit
                   else "a finder alone stops before training" if stops
                   else "Grad-CAM needs a conv layer, which --model logreg has not" if self.model != "cnn" else "")
            if why:
                raise LabError(f"--explain explains a trained CNN's test predictions; {why}")


def build_model(cfg: Lab1Config, data) -> torch.nn.Module:
    if cfg.model == "logreg":
        return LogisticRegression(data.input_shape, data.num_classes)
    return CNN(data.input_shape, data.num_classes, cfg.widths, cfg.dropout, cfg.conv, cfg.head)


def shape_table(model: torch.nn.Module, in_shape: tuple[int, ...]) -> str:
    """The core model summary, with the output-size formula's prediction beside each conv and pool."""
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
            notes[r.name] = f"floor(({r.input_shape[2]} + 2*{p} - {d}*({k}-1) - 1)/{s}) + 1 = {pred}  {ok}"
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
    write_explanations(model, torch.cat(xs), data.mean, data.std, data.classes, path, labels=torch.cat(ys))
    note = "" if n == count else f" (the test split has only {n})"
    say(f"why these predictions: {path} (saliency, SmoothGrad, integrated gradients, Grad-CAM for {n} test images{note})")


def train(cfg: Lab1Config, **plan_options) -> dict:
    """Train as ``cfg`` says; ``plan_options`` go to the core's classifier plan (the benchmark
    passes its own data split and a timing callback)."""
    if cfg.shapes:
        data = load_dataset(cfg.dataset, cfg.data_dir, image_size=cfg.image_size, label_column=cfg.label_column)
        print(shape_table(build_model(cfg, data), data.input_shape))
        return {}

    def manual(trainer, loaders):
        say = (lambda *_: None) if cfg.quiet else print
        return run_manual(trainer.module, trainer.optimizer, loaders.train, loaders.val, cfg.epochs,
                          scheduler=trainer.scheduler, scheduler_interval=trainer.scheduler_interval,
                          label_smoothing=cfg.label_smoothing, say=say)

    def figures(run, trainer, loaders, test):
        if cfg.model != "cnn":
            return
        image = next(iter(loaders.test or loaders.val or loaders.train))[0][0]
        plot_filters(trainer.module, run.run_dir / "filters.png")
        plot_feature_maps(trainer.module, image, run.run_dir / "feature_maps.png")
        run.say(f"figures: {run.run_dir / 'filters.png'}, {run.run_dir / 'feature_maps.png'}")
        if cfg.explain:
            explain_test_images(trainer.module, loaders, cfg.explain, run.run_dir / "explain.png", run.say)

    result = run_classifier(cfg, lambda data: build_model(cfg, data), extend_report=figures,
                            manual_loop=manual if cfg.loop == "manual" else None, note=f"recipe {cfg.recipe}",
                            **plan_options)
    return result.summary


def compare(argv: list[str]) -> int:
    """Baseline and CNN on the same split (same seed, same data), one table at the end."""
    if "--dataset" not in argv:
        argv = ["--dataset", "fashion-mnist", *argv]
    try:
        cfg = parse_config(Lab1Config, argv, f"{PROG} compare")
    except SystemExit as exc:
        return int(exc.code or 0)
    if cfg.lr_find or cfg.lr_find_then_train or cfg.find_batch_size:
        raise LabError("compare trains two models; run a finder with lab1-conv itself, on the model it is for")
    base_out = Path(cfg.out) if cfg.out else None
    results = {}
    for model in ("logreg", "cnn"):
        out = str(base_out / model) if base_out else ""
        results[model] = train(replace(cfg, model=model, out=out, augment=cfg.augment and model == "cnn"))
    table = {m: {k: r["metrics"].get(k) for k in ("val_acc", "test_acc")} | {"wall_seconds": r["wall_seconds"]}
             for m, r in results.items()}
    print(f"\n{'model':<8} {'val acc':>8} {'test acc':>9} {'seconds':>8}")
    for m, row in table.items():
        print(f"{m:<8} {row['val_acc']:>8.4f} {row['test_acc']:>9.4f} {row['wall_seconds']:>8.1f}")
    if base_out:
        write_json(base_out / "comparison.json", table)
    return 0


def _lessons() -> dict:
    from .lessons import LESSONS

    return LESSONS


def main(argv: list[str] | None = None) -> int:
    return run_lab(PROG, Lab1Config, train, argv, __doc__.splitlines()[0], {"compare": compare, "lesson": lessons_command(PROG, _lessons)})


if __name__ == "__main__":
    sys.exit(main())
