"""Classification on the run skeleton (``run.execute``): what lab0, lab1 and the checkpoint project
share. A lab supplies its config class and a model builder; ``report`` extensions add its own
figures to the end of the run."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .callbacks import RunLogger
from .checkpoint import atomic_write_text
from .config import RunConfig
from .data import DataSplits, Loaders, build_loaders, load_dataset
from .data.datasets import TEST_FRACTION
from .loop import ManualLoop
from .metrics import (
    confusion_matrix,
    format_confusion_matrix,
    plot_confusion_matrix,
    precision_recall_f1,
    topk_accuracy,
)
from .optim import build_optimizer
from .run import Plan, Run, RunResult, execute
from .trainer import Callback, ClassificationLoss, Trainer

__all__ = [
    "ClassifierReport",
    "RunResult",
    "TestPass",
    "build_optimizer",
    "classifier_main",
    "classifier_plan",
    "describe",
    "run_classifier",
    "test_report",
]


@dataclass
class TestPass:
    """The one pass over the test split: softmax probabilities (N, C) and targets (N,), on the
    CPU."""

    probs: Tensor
    targets: Tensor


# (run, trainer, loaders, test pass or None) -> extra metrics: a lab's own figures at the end of a
# run, fed by the same test pass as the accuracy (None on --overfit runs or without a test split)
ReportExtension = Callable[[Run, Trainer, Loaders, "TestPass | None"], dict | None]


def describe(data: DataSplits) -> str:
    sizes = " / ".join(
        f"{len(p[1])} {n}"
        for n, p in (("train", data.train), ("val", data.val), ("test", data.test))
        if p is not None
    )
    shape = "x".join(map(str, data.input_shape))
    return f"{data.name} ({sizes}; {shape}; {data.num_classes} classes)"


def load_classifier_data(cfg: RunConfig, run: Run, data: DataSplits | None = None) -> Loaders:
    """The dataset ``cfg`` names (or ``data``), split and wrapped in loaders (this process's shard
    of each epoch)."""
    if data is None:
        data = load_dataset(
            cfg.dataset,
            cfg.data_dir,
            image_size=cfg.image_size,
            skip_bad_files=cfg.skip_bad_files,
            label_column=cfg.label_column,
            decode=cfg.loader == "fast",
        )
    loaders = build_loaders(
        data,
        batch_size=cfg.batch_size,
        device=run.device,
        seed=cfg.seed,
        pad=cfg.pad or None,
        val_fraction=cfg.val_fraction,
        stratify=cfg.stratify,
        augment=cfg.augment,
        test_fraction=(
            cfg.test_fraction
            if getattr(  # given, or set in code
                cfg, "test_fraction_given", cfg.test_fraction != TEST_FRACTION
            )
            else None
        ),
        overfit=cfg.overfit,
        loader=cfg.loader,
        num_workers=cfg.num_workers,
        balanced_sampler=cfg.balanced_sampler,
        use_class_weights=cfg.class_weights,
        channels_last=cfg.channels_last,
        **run.shard,
    )
    for note in loaders.data.notes:
        run.say(f"note: {note}")
    return loaders


def classifier_plan(
    run: Run,
    build_model: Callable[[DataSplits], nn.Module],
    *,
    callbacks: list[Callback] | None = None,
    make_optimizer: Callable[[RunConfig, nn.Module], torch.optim.Optimizer] | None = None,
    extend_report: ReportExtension | None = None,
    data: DataSplits | None = None,
    note: str = "",
) -> Plan:
    """The classification ``Plan`` for ``run.cfg``: its data split and loaders, the model
    ``build_model(data)`` (channels-last when asked), cross-entropy, the test report (extended by
    the lab's ``extend_report``), and the hand-written loop for ``--loop manual``. ``data``
    replaces loading by name (a benchmark's own split); ``note`` is added to the start-up line."""
    cfg = run.cfg
    loaders = load_classifier_data(cfg, run, data)
    data = loaders.data
    model = build_model(data)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    info = {
        "classes": data.classes,
        "input_shape": list(data.input_shape),
        "mean": list(data.mean),
        "std": list(data.std),
    }
    manual = getattr(cfg, "loop", "core") == "manual"
    return Plan(
        model=model,
        train_loader=loaders.train,
        val_loader=loaders.val,
        loss_fn=ClassificationLoss(cfg.label_smoothing, loaders.class_weights),
        description=describe(data) + (f"; {note}" if note else ""),
        callbacks=list(callbacks or []),
        make_optimizer=make_optimizer,
        resolved={"dataset": describe(data), **info},
        checkpoint=info,
        report=ClassifierReport(loaders, extend_report),
        manual_loop=ManualLoop(cfg.label_smoothing) if manual else None,
    )


def run_classifier(
    cfg: RunConfig, build_model: Callable[[DataSplits], nn.Module], *, stream=None, **plan_options
) -> RunResult:
    """Train ``build_model(data)`` as ``cfg`` says and write the run directory (see
    ``classifier_plan`` for ``callbacks``, ``make_optimizer``, ``extend_report``, ``data``)."""
    return execute(
        cfg, functools.partial(classifier_plan, build_model=build_model, **plan_options), stream
    )


@dataclass
class ClassifierReport:
    """A classifier's ``Plan.report``: ``test_report`` on its loaders, extended by the lab's."""

    loaders: Loaders
    extend: ReportExtension | None = None

    def __call__(self, run: Run, trainer: Trainer) -> dict:
        return test_report(run, trainer, self.loaders, self.extend)


def test_report(
    run: Run, trainer: Trainer, loaders: Loaders, extend: ReportExtension | None = None
) -> dict:
    """One pass over the test split feeds every report: top-1 (and top-5 with more than five
    classes) accuracy, macro F1, the confusion matrix (text, PNG, TensorBoard), and the lab's own
    figures (``extend``, called with None when there is no test pass: ``--overfit`` runs, or no
    test split). Rank 0 only."""
    cfg, data, run_dir = run.cfg, loaders.data, run.run_dir
    if loaders.test is None or cfg.overfit:
        return (extend(run, trainer, loaders, None) or {}) if extend is not None else {}
    logits, targets = trainer.predict(loaders.test)
    probs = logits.softmax(1)
    preds = probs.argmax(1)
    metrics = {"test_acc": (preds == targets).float().mean().item()}
    top = f"test accuracy {metrics['test_acc']:.4f}"
    if data.num_classes > 5:
        metrics["test_top5_acc"] = topk_accuracy(probs, targets, k=5)
        top += f", top-5 {metrics['test_top5_acc']:.4f}"
    cm = confusion_matrix(preds, targets, data.num_classes)
    metrics["test_macro_f1"] = precision_recall_f1(cm)["f1"].mean().item()
    atomic_write_text(
        run_dir / "confusion_matrix.txt", format_confusion_matrix(cm, data.classes) + "\n"
    )
    fig = plot_confusion_matrix(
        cm,
        data.classes,
        run_dir / "confusion_matrix.png",
        title=f"{cfg.lab} on {data.name}: test accuracy {metrics['test_acc']:.2%}",
    )
    logger = next((cb for cb in trainer.callbacks if isinstance(cb, RunLogger)), None)
    if logger is not None:
        logger.writer.add_figure("confusion_matrix", fig, trainer.global_step)
    run.say(f"{top}  (confusion matrix: {run_dir / 'confusion_matrix.png'})")
    if extend is not None:
        metrics.update(extend(run, trainer, loaders, TestPass(probs, targets)) or {})
    return metrics


def classifier_main(
    cfg_cls: type[RunConfig],
    build_model: Callable[[DataSplits], nn.Module],
    prog: str,
    argv: list[str] | None = None,
    description: str = "",
) -> int:
    """A classification lab's whole ``main``: parse flags, train, report (see ``cli.run_lab``)."""
    from .cli import run_lab

    build_plan = functools.partial(classifier_plan, build_model=build_model)
    return run_lab(prog, cfg_cls, build_plan, argv, description)
