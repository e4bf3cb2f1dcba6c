"""From a config to a finished run: data, model, optimizer, trainer, report. What every
classification lab's ``main`` calls; a lab only supplies its config class and a model builder."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import distributed
from .callbacks import Checkpointing, EarlyStopping, ProgressBar, RunLogger
from .checkpoint import load_checkpoint
from .cli import find_latest_checkpoint, make_run_dir, write_json
from .config import RunConfig
from .data import DataSplits, Loaders, build_loaders, load_dataset
from .device import Precision, pick_device
from .errors import LabError, NonFiniteLossError
from .metrics import (
    confusion_matrix,
    format_confusion_matrix,
    plot_confusion_matrix,
    precision_recall_f1,
)
from .seed import seed_everything
from .trainer import ClassificationLoss, Trainer


def build_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise LabError(f"unknown optimizer {cfg.optimizer!r}")


def build_scheduler(cfg: RunConfig, optimizer, steps_per_epoch: int):
    """Returns ``(scheduler or None, interval)``. Step-based schedules use optimizer steps."""
    steps_per_epoch = max(1, -(-steps_per_epoch // cfg.grad_accum))
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    if cfg.scheduler == "none":
        return None, "epoch"
    if cfg.scheduler == "step":  # x0.7 every epoch, the classic MNIST recipe
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7), "epoch"
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total), "step"
    if cfg.scheduler == "cosine":
        warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
        if warmup <= 0:
            return cosine, "step"
        ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=warmup)
        return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup]), "step"
    raise LabError(f"unknown scheduler {cfg.scheduler!r}")


@dataclass
class RunResult:
    summary: dict
    run_dir: Path
    trainer: Trainer
    loaders: Loaders
    model: nn.Module


def describe(data: DataSplits) -> str:
    sizes = " / ".join(f"{len(p[1])} {n}" for n, p in (("train", data.train), ("val", data.val), ("test", data.test))
                       if p is not None)
    shape = "x".join(map(str, data.input_shape))
    return f"{data.name} ({sizes}; {shape}; {data.num_classes} classes)"


@dataclass
class Session:
    """What every run sets up before it has data: device, seeds, and the checkpoint it resumes."""

    cfg: RunConfig
    device: torch.device
    say: Callable[[str], None]
    stream: object
    started: float
    dist: distributed.DistInfo = distributed.DistInfo()
    resume_state: dict | None = None
    run_dir: Path | None = None  # None on every process but rank 0 under torchrun: only rank 0 writes

    @property
    def shard(self) -> dict:
        return {"rank": self.dist.rank, "world": self.dist.world}


def start_session(cfg: RunConfig, stream=None) -> Session:
    """Device, process group (under torchrun), seeds, and the checkpoint to resume, if any."""
    out = stream or sys.stdout
    info, device = distributed.init(pick_device(cfg.device), cfg.dist_timeout)
    quiet = cfg.quiet or not info.is_main  # only rank 0 speaks
    say = (lambda *a: None) if quiet else (lambda msg: print(msg, file=out, flush=True))
    session = Session(cfg, device, say, out, time.perf_counter(), info)
    seed_everything(cfg.seed, cfg.deterministic)
    if cfg.resume:
        ckpt_path = find_latest_checkpoint(cfg.lab) if cfg.resume == "latest" else Path(cfg.resume)
        session.resume_state = load_checkpoint(ckpt_path)
        if info.is_main:
            session.run_dir = Path(cfg.out) if cfg.out else ckpt_path.parent.parent
        say(f"resuming from {ckpt_path} (epoch {session.resume_state['epoch']}, "
            f"step {session.resume_state['global_step']})")
    return session


def train_model(session: Session, model: nn.Module, train_loader, val_loader, *, loss_fn, description: str,
                forward_fn=None, resolved: dict | None = None, extra_checkpoint: dict | None = None,
                callbacks: list | None = None,
                make_optimizer: Callable[[RunConfig, nn.Module], torch.optim.Optimizer] | None = None,
                ) -> tuple[Trainer, RunLogger]:
    """Optimizer, schedule, run directory, callbacks, resume, fit. ``callbacks`` join the standard
    ones (a callback's ``on_validation_end`` can add metrics to each epoch's logs)."""
    cfg, say, main = session.cfg, session.say, session.dist.is_main
    model = model.to(session.device)
    if cfg.sync_bn and session.dist.enabled:
        if session.device.type != "cuda":
            raise LabError("--sync-bn needs CUDA devices (SyncBatchNorm works on GPUs only)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    precision = Precision(cfg.precision, session.device)
    optimizer = (make_optimizer or build_optimizer)(cfg, model)
    scheduler, interval = build_scheduler(cfg, optimizer, len(train_loader))
    if main:
        session.run_dir = session.run_dir or make_run_dir(cfg.lab, cfg.out)
    run_dir = session.run_dir
    n_params = sum(p.numel() for p in model.parameters())
    world = session.dist.world
    batch = f"batch {cfg.batch_size}" + (f" per process x {world} = {cfg.batch_size * world} global" if world > 1 else "")
    if main:
        write_json(run_dir / "config.json", {**cfg.to_dict(), "lab": cfg.lab, "resolved": {
            "device": str(session.device), "processes": world, "global_batch_size": cfg.batch_size * world,
            "parameters": n_params, "model": type(model).__name__, **(resolved or {})}})
    say(f"{cfg.lab}: {description} | {type(model).__name__} {n_params:,} params | {session.device} {cfg.precision} | {batch}")

    extra = {"config": cfg.to_dict(), "lab": cfg.lab, **(extra_checkpoint or {})}
    logger = RunLogger(run_dir, quiet=cfg.quiet, stream=session.stream) if main else None
    checkpointing = Checkpointing(run_dir / "checkpoints" if main else None, extra=extra)
    standard = [logger, ProgressBar(cfg.quiet)] if main else []
    all_callbacks = [*standard, checkpointing, *(callbacks or [])]
    if cfg.patience:
        all_callbacks.append(EarlyStopping(cfg.patience))
    monitor_mode = "max" if any(k in cfg.monitor for k in ("acc", "f1", "map")) else "min"
    trainer = Trainer(model, optimizer, train_loader, val_loader, loss_fn=loss_fn,
                      **({"forward_fn": forward_fn} if forward_fn is not None else {}),
                      scheduler=scheduler, scheduler_interval=interval, precision=precision, device=session.device,
                      epochs=cfg.epochs, max_steps=cfg.max_steps, grad_accum=cfg.grad_accum,
                      grad_clip=cfg.grad_clip, monitor=cfg.monitor if val_loader is not None else "train_loss",
                      mode=monitor_mode, callbacks=all_callbacks)
    if session.resume_state is not None:
        trainer.load_state_dict(session.resume_state, source=f"checkpoint {cfg.resume}")
    try:
        trainer.fit()
    except NonFiniteLossError as exc:
        if logger:
            logger.close()
        kept = checkpointing.last_path if checkpointing.last_path and checkpointing.last_path.exists() else None
        raise NonFiniteLossError(f"{exc}; last good checkpoint: {kept or 'none yet'}") from None
    except RuntimeError as exc:  # a collective failed: a peer died or timed out
        if session.dist.enabled:
            raise distributed.explain(exc, cfg.dist_timeout) from None
        raise
    if trainer.stop_reason:
        say(trainer.stop_reason)
    return trainer, logger


def write_summary(session: Session, trainer: Trainer, metrics: dict | None = None) -> dict:
    """``summary.json``: the last epoch's metrics (plus ``metrics``), best, steps, time, device.
    Written by rank 0 only (the others return the same dict and write nothing)."""
    last = trainer.history[-1] if trainer.history else {}
    summary = {
        "metrics": {**{k: v for k, v in last.items() if k not in ("epoch", "step")}, **(metrics or {})},
        "best": trainer.best,
        "epochs_run": trainer.epoch,
        "steps": trainer.global_step,
        "wall_seconds": round(time.perf_counter() - session.started, 3),
        "device": str(trainer.device),
        "precision": trainer.precision.name,
        "seed": session.cfg.seed,
        "skipped_steps": trainer.skipped_steps,
        "stop_reason": trainer.stop_reason,
        "processes": session.dist.world,
    }
    if session.run_dir is not None:
        write_json(session.run_dir / "summary.json", summary)
    return summary


def run_classifier(cfg: RunConfig, build_model: Callable[[DataSplits], nn.Module], *,
                   stream=None, extra_checkpoint: dict | None = None, callbacks: list | None = None,
                   make_optimizer: Callable[[RunConfig, nn.Module], torch.optim.Optimizer] | None = None,
                   data: DataSplits | None = None) -> RunResult:
    """Train ``build_model(data)`` as ``cfg`` says and write the run directory. Returns the result.

    ``callbacks`` are added to the trainer's; ``make_optimizer`` replaces ``build_optimizer``;
    ``data`` skips loading by name.
    """
    session = start_session(cfg, stream)
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir, image_size=cfg.image_size, skip_bad_files=cfg.skip_bad_files,
                            label_column=cfg.label_column, decode=cfg.loader == "fast")
    loaders = build_loaders(data, batch_size=cfg.batch_size, device=session.device, seed=cfg.seed,
                            val_fraction=cfg.val_fraction, stratify=cfg.stratify, augment=cfg.augment,
                            overfit=cfg.overfit, loader=cfg.loader, num_workers=cfg.num_workers,
                            balanced_sampler=cfg.balanced_sampler, use_class_weights=cfg.class_weights,
                            channels_last=cfg.channels_last, **session.shard)
    data = loaders.data
    for note in data.notes:
        session.say(f"note: {note}")
    model = build_model(data)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    info = {"classes": data.classes, "input_shape": list(data.input_shape), "mean": list(data.mean),
            "std": list(data.std)}
    trainer, logger = train_model(
        session, model, loaders.train, loaders.val, loss_fn=ClassificationLoss(cfg.label_smoothing, loaders.class_weights),
        description=describe(data), resolved={"dataset": describe(data), **info},
        extra_checkpoint={**info, **(extra_checkpoint or {})}, callbacks=callbacks, make_optimizer=make_optimizer)
    if session.dist.is_main:
        summary = report(cfg, trainer, loaders, session, logger)
        logger.close()
        session.say(f"run directory: {session.run_dir}")
    else:
        summary = write_summary(session, trainer)
    return RunResult(summary=summary, run_dir=session.run_dir, trainer=trainer, loaders=loaders, model=trainer.module)


def report(cfg: RunConfig, trainer: Trainer, loaders: Loaders, session: Session, logger: RunLogger) -> dict:
    """Test evaluation, confusion matrix (text, PNG, TensorBoard) and summary.json."""
    data, run_dir, metrics = loaders.data, session.run_dir, {}
    if loaders.test is not None and not cfg.overfit:
        logits, targets = trainer.predict(loaders.test)
        preds = logits.argmax(1)
        metrics["test_acc"] = (preds == targets).float().mean().item()
        cm = confusion_matrix(preds, targets, data.num_classes)
        metrics["test_macro_f1"] = precision_recall_f1(cm)["f1"].mean().item()
        (run_dir / "confusion_matrix.txt").write_text(format_confusion_matrix(cm, data.classes) + "\n")
        fig = plot_confusion_matrix(cm, data.classes, run_dir / "confusion_matrix.png",
                                    title=f"{cfg.lab} on {data.name}: test accuracy {metrics['test_acc']:.2%}")
        logger.writer.add_figure("confusion_matrix", fig, trainer.epoch)
        session.say(f"test accuracy {metrics['test_acc']:.4f}  (confusion matrix: {run_dir / 'confusion_matrix.png'})")
    return write_summary(session, trainer, metrics)


def classifier_main(cfg_cls: type[RunConfig], build_model: Callable[[DataSplits], nn.Module], prog: str,
                    argv: list[str] | None = None, description: str = "") -> int:
    """A classification lab's whole ``main``: parse flags, train, report (see ``cli.run_lab``)."""
    from .cli import run_lab

    return run_lab(prog, cfg_cls, lambda cfg: run_classifier(cfg, build_model), argv, description)
