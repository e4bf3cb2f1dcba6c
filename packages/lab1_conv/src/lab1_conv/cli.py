"""lab1-conv: a CNN (with the scratch or torch convolution) on digits by default.

    lab1-conv [flags]             train (see --help); --shapes prints the layer table and exits
    lab1-conv compare [flags]     logistic-regression baseline vs the CNN on the same split
                                  (default dataset: fashion-mnist)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from labs_core import LabError, RunConfig, arg, parse_config
from labs_core.cli import run_lab, write_json
from labs_core.data import load_dataset
from labs_core.experiment import run_classifier
from labs_core.summary import format_summary, model_summary

from .figures import plot_feature_maps, plot_filters
from .model import CNN, LogisticRegression
from .ops import conv_output_size

PROG = "lab1-conv"


@dataclass
class Lab1Config(RunConfig):
    lab = "lab1-conv"
    overfit_epochs = 60

    epochs: int = arg(15, "number of training epochs")
    lr: float = arg(4e-3, "peak learning rate (one-cycle schedule)")
    scheduler: str = arg("onecycle", "learning-rate schedule", choices=("none", "cosine", "onecycle", "step"))
    weight_decay: float = arg(5e-4, "weight decay")
    model: str = arg("cnn", "cnn, or logreg (the baseline)", choices=("cnn", "logreg"))
    conv: str = arg("scratch", "convolution: ours (unfold + matmul) or torch.nn.Conv2d", choices=("scratch", "torch"))
    widths: list[int] = arg(help="channels of each conv block, e.g. --widths 32 64 128",
                            default_factory=lambda: [32, 64, 128])
    dropout: float = arg(0.25, "dropout before the classifier")
    head: str = arg("avg", "global average pooling or flatten before the classifier", choices=("avg", "flatten"))
    shapes: bool = arg(False, "print the per-layer shape table (with the formula's predictions) and exit")

    def validate(self) -> None:
        super().validate()
        if not self.widths or min(self.widths) < 1:
            raise LabError("--widths needs one or more positive channel counts")
        if not 0 <= self.dropout < 1:
            raise LabError(f"--dropout must be in [0, 1) (got {self.dropout})")


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


def train(cfg: Lab1Config) -> dict:
    if cfg.shapes:
        data = load_dataset(cfg.dataset, cfg.data_dir, image_size=cfg.image_size, label_column=cfg.label_column)
        print(shape_table(build_model(cfg, data), data.input_shape))
        return {}
    result = run_classifier(cfg, lambda data: build_model(cfg, data))
    if cfg.model == "cnn":
        test = result.loaders.test or result.loaders.val
        image = next(iter(test))[0][0]
        plot_filters(result.model, result.run_dir / "filters.png")
        plot_feature_maps(result.model, image, result.run_dir / "feature_maps.png")
        if not cfg.quiet:
            print(f"figures: {result.run_dir / 'filters.png'}, {result.run_dir / 'feature_maps.png'}")
    return result.summary


def compare(argv: list[str]) -> int:
    """Baseline and CNN on the same split (same seed, same data), one table at the end."""
    if "--dataset" not in argv:
        argv = ["--dataset", "fashion-mnist", *argv]
    try:
        cfg = parse_config(Lab1Config, argv, f"{PROG} compare")
    except SystemExit as exc:
        return int(exc.code or 0)
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


def main(argv: list[str] | None = None) -> int:
    return run_lab(PROG, Lab1Config, train, argv, __doc__.splitlines()[0], {"compare": compare})


if __name__ == "__main__":
    sys.exit(main())
