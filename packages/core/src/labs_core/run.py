"""The run skeleton: every lab's training goes through ``execute(cfg, build_plan)``.

    Run.start(cfg)       device, torchrun's process group, seeds, the checkpoint to resume, and the
                         run directory checked (``rundir.check_out``: a file, or a folder holding a
                         run this one neither continues nor --overwrite-s, is refused here)
    build_plan(run)      the lab's own part, as a ``Plan``: data, model, loss, forward, callbacks,
                         and a ``report`` for the end (test metrics, figures)
    execute              the monitored metric and its direction resolved (an unknown one stops
                         here), the trainer built and the resume state loaded into it (a checkpoint
                         that does not fit stops here) -- all before anything is written; then
                         the run directory is locked for the run's life (``rundir.RunDirLock``,
                         released on every way out) and written: config.json, fit, the report
                         and summary.json

Only rank 0 writes: under torchrun every other process gets ``run.run_dir = None``, no logger and
no report. That guard lives here, once, so no lab handles ranks itself.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed, fsdp, tuning
from .callbacks import Checkpointing, Clock, EarlyStopping, ProgressBar, RunLogger
from .checkpoint import RESUME_KEYS, load_checkpoint, refuse_finished, require_entries
from .cli import find_latest_checkpoint, new_run_dir, write_json
from .config import metric_mode
from .device import Precision, pick_device
from .errors import LabError, NonFiniteLossError
from .memory import describe_peak, peak_memory, reset_peak
from .rundir import RunDirLock, check_out, clear_run
from .seed import seed_everything
from .trainer import Callback, ClassificationLoss, Trainer, default_forward


@dataclass
class Run:
    """What every run sets up before it has data: device, process group, seeds, and the checkpoint
    it resumes (read and checked for this lab before anything is written)."""

    cfg: Any
    device: torch.device
    say: Callable[[str], None]
    stream: Any
    started: float
    dist: distributed.DistInfo = distributed.DistInfo()
    resume_state: dict | None = None
    resume_path: Path | None = None
    run_dir: Path | None = None  # rank 0 only; created when training is about to start
    lock: RunDirLock | None = None  # rank 0's lock on run_dir, held while the run writes

    @classmethod
    def start(cls, cfg, stream=None) -> Run:
        out = stream or sys.stdout
        info, device = distributed.init(pick_device(cfg.device), cfg.dist_timeout)
        reset_peak(device)  # the peak memory reported is this run's (several may share a process)
        quiet = cfg.quiet or not info.is_main  # only rank 0 speaks
        say = (lambda *a: None) if quiet else (lambda msg: print(msg, file=out, flush=True))
        run = cls(cfg, device, say, out, time.perf_counter(), info)
        seed_everything(cfg.seed, cfg.deterministic)
        if cfg.resume:
            run.resume_path = resume_path(cfg)
            state = load_checkpoint(run.resume_path)
            if state.get("lab") not in (None, cfg.lab):
                raise LabError(f"{run.resume_path} is a {state['lab']} checkpoint; {cfg.lab} cannot resume it")
            require_entries(state, RESUME_KEYS, run.resume_path)
            refuse_finished(state, cfg)  # a resume that adds nothing ends here, exit 0, nothing written
            run.resume_state = state
        in_run = run.resume_path is not None and run.resume_path.parent.name == "checkpoints"
        folder = Path(cfg.out) if cfg.out else run.resume_path.parent.parent if in_run else new_run_dir(cfg.lab)
        check_out(folder, resume_path=run.resume_path, overwrite=cfg.overwrite)  # every rank: all refuse together
        if info.is_main:
            run.run_dir = folder
        return run

    def claim_run_dir(self) -> None:
        """Rank 0, once everything fits: lock the run directory for the run's life (a second run into
        it is refused), check again that it holds no other run, clear it for ``--overwrite``.
        Every process learns whether rank 0 could, so all stop together when it could not."""
        refusal = None
        if self.is_main:
            try:
                self.lock = RunDirLock(self.run_dir).acquire()
                check_out(self.run_dir, resume_path=self.resume_path, overwrite=self.cfg.overwrite)
                if self.cfg.overwrite:
                    clear_run(self.run_dir)
            except LabError as exc:
                self.release_run_dir()
                refusal = str(exc)
        refusal = distributed.gather_objects(refusal)[0] if self.dist.enabled else refusal
        if refusal:
            raise LabError(refusal if self.is_main else f"rank 0 stopped: {refusal}")

    def release_run_dir(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def shard(self) -> dict:
        """``rank`` and ``world`` for a loader: each process reads its own slice of every epoch."""
        return {"rank": self.dist.rank, "world": self.dist.world}


def resume_path(cfg) -> Path:
    """``--resume PATH`` as given; bare ``--resume`` continues ``--out``'s run when ``--out`` is
    given (what a user who names the directory means), else the lab's latest run."""
    if cfg.resume != "latest":
        return Path(cfg.resume)
    if cfg.out:
        path = Path(cfg.out) / "checkpoints" / "last.pt"
        if not path.is_file():
            raise LabError(f"--resume: {cfg.out} holds no checkpoint to continue ({path} not found)")
        return path
    return find_latest_checkpoint(cfg.lab)


@dataclass
class Plan:
    """A lab's part of a run. ``metrics`` are the keys ``loss_fn`` returns (logged as ``train_*``
    and ``val_*``); ``added_metrics`` are what callbacks add to the logs (``val_seq_acc``).
    ``report(run, trainer)`` runs on rank 0 after training and returns metrics for summary.json.
    ``manual_loop(trainer)`` replaces the trainer's loop with a hand-written one that trains
    ``trainer.module`` with ``trainer.optimizer`` (and its scheduler) and returns the per-epoch
    history (lab0's and lab1's ``--loop manual``)."""

    model: nn.Module
    train_loader: Any
    val_loader: Any = None
    loss_fn: Callable | None = None
    forward_fn: Callable = default_forward
    description: str = ""
    metrics: tuple[str, ...] = ("loss", "acc")
    added_metrics: tuple[str, ...] = ()
    callbacks: list[Callback] = field(default_factory=list)
    make_optimizer: Callable | None = None
    resolved: dict = field(default_factory=dict)
    checkpoint: dict = field(default_factory=dict)
    report: Callable[[Run, Trainer], dict | None] | None = None
    manual_loop: Callable | None = None


@dataclass
class RunResult:
    summary: dict
    run_dir: Path | None
    trainer: Trainer
    plan: Plan

    @property
    def model(self) -> nn.Module:
        return self.trainer.module


def logged_metrics(plan: Plan) -> list[str]:
    names = [f"train_{m}" for m in plan.metrics]
    if plan.val_loader is not None:
        names += [f"val_{m}" for m in plan.metrics]
    return names + list(plan.added_metrics) + ["lr", "grad_norm"]


def resolve_monitor(cfg, plan: Plan, say=print) -> tuple[str, str]:
    """The metric that picks ``best.pt`` and drives early stopping, and whether it improves going
    down (``min``) or up (``max``). Without a validation split ``val_X`` falls back to ``train_X``.
    An unknown metric, or one whose direction its name does not tell, is refused here, before
    any training."""
    logged = logged_metrics(plan)
    monitor = cfg.monitor
    if monitor not in logged and monitor.startswith("val_") and f"train_{monitor[4:]}" in logged:
        monitor = f"train_{monitor[4:]}"
        say(f"note: no validation split, so --monitor {cfg.monitor} becomes {monitor}")
    if monitor not in logged:
        raise LabError(f"--monitor {cfg.monitor}: not a metric of this run; it logs {', '.join(logged)}")
    mode = cfg.monitor_mode if cfg.monitor_mode != "auto" else metric_mode(monitor)
    if mode is None:
        raise LabError(f"--monitor {monitor}: its name does not say whether higher or lower is better; "
                       "add --monitor-mode min or --monitor-mode max")
    return monitor, mode


def build_optimizer(cfg, model: nn.Module, decay_matrices_only: bool = False,
                    norm_bias_lr: float = 1.0) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names. ``decay_matrices_only``: weight decay on weight matrices and
    embeddings only, not on biases and norm scales (what language-model recipes do).
    ``norm_bias_lr``: the normalisation layers' biases learn at ``lr * norm_bias_lr`` with their
    weight decay divided by it, so each step decays them as much as the rest (the CIFAR-10 speed
    records' trick: with frozen norm scales the biases are few and slow to move)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_matrices_only and cfg.weight_decay:
        params = [{"params": [p for p in params if p.dim() >= 2]},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    elif norm_bias_lr != 1.0:
        norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
        biases = {id(m.bias) for m in model.modules() if isinstance(m, norms) and m.bias is not None}
        params = [{"params": [p for p in params if id(p) not in biases]},
                  {"params": [p for p in params if id(p) in biases], "lr": cfg.lr * norm_bias_lr,
                   "weight_decay": cfg.weight_decay / norm_bias_lr}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise LabError(f"unknown optimizer {cfg.optimizer!r}")


def schedule_plan(cfg, batches_per_epoch: int) -> dict:
    """How many optimizer steps the run plans: what a step-based schedule is laid over."""
    steps_per_epoch = max(1, -(-batches_per_epoch // cfg.grad_accum))
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    return {"scheduler": cfg.scheduler, "steps_per_epoch": steps_per_epoch, "total_steps": total,
            "batches_per_epoch": batches_per_epoch}


def build_scheduler(cfg, optimizer, plan: dict):
    """Returns ``(scheduler or None, interval)``. Step-based schedules count optimizer steps."""
    total, steps_per_epoch = plan["total_steps"], plan["steps_per_epoch"]
    if cfg.scheduler == "none":
        return None, "epoch"
    if cfg.scheduler == "step":  # x0.7 every epoch, the classic MNIST recipe
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7), "epoch"
    if cfg.scheduler == "onecycle":
        peaks = [group["lr"] for group in optimizer.param_groups]  # each group's own peak
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total), "step"
    if cfg.scheduler == "cosine":
        warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
        if warmup <= 0:
            return cosine, "step"
        ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=warmup)
        return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup]), "step"
    raise LabError(f"unknown scheduler {cfg.scheduler!r}")


def load_resume_state(run: Run, trainer: Trainer, plan: dict, interval: str) -> None:
    """Load the checkpoint into ``trainer``. A step-based schedule planned for another run (more
    epochs, another number of processes, a --max-steps cut) is re-planned for this one: the new
    schedule starts where the old run's progress, counted in epochs, puts it."""
    state, cfg = run.resume_state, run.cfg
    old = state.get("schedule") or {}
    replan = (trainer.scheduler is not None and interval == "step"
              and (old.get("total_steps"), old.get("steps_per_epoch")) != (plan["total_steps"], plan["steps_per_epoch"]))
    trainer.load_state_dict({**state, "scheduler": None} if replan else state, source=f"checkpoint {run.resume_path}")
    old_batches = old.get("batches_per_epoch") or plan["batches_per_epoch"]
    if trainer.batch_in_epoch and old_batches != plan["batches_per_epoch"]:  # mid-epoch, another world size
        trainer.batch_in_epoch = min(plan["batches_per_epoch"] - 1,
                                     round(trainer.batch_in_epoch * plan["batches_per_epoch"] / old_batches))
    if not replan:
        return
    position = trainer.epoch * plan["steps_per_epoch"] + math.ceil(trainer.batch_in_epoch / cfg.grad_accum)
    position = min(position, plan["total_steps"])
    with warnings.catch_warnings():  # stepping a schedule without optimizer steps: intended here
        warnings.simplefilter("ignore")
        for _ in range(position):
            trainer.scheduler.step()
    run.say(f"schedule re-planned for this run: {plan['total_steps']} steps ({plan['steps_per_epoch']} per epoch; "
            f"the checkpoint's plan had {old.get('total_steps', '?')}), resuming at step {position} "
            f"({position / max(1, plan['total_steps']):.0%} of the way)")


def execute(cfg, build_plan: Callable[[Run], Plan], stream=None) -> RunResult:
    """Run one lab's training from its config: see the module docstring for the order of things.
    The run directory's lock is released on every way out (an error, Ctrl-C)."""
    run = Run.start(cfg, stream)
    try:
        return _execute(run, build_plan)
    finally:
        run.release_run_dir()


def _execute(run: Run, build_plan: Callable[[Run], Plan]) -> RunResult:
    cfg = run.cfg
    plan = build_plan(run)
    monitor, mode = resolve_monitor(cfg, plan, run.say)
    model_name, n_params = type(plan.model).__name__, sum(p.numel() for p in plan.model.parameters())
    sharded = cfg.fsdp and run.dist.enabled
    plain = fsdp.skeleton(plan.model) if sharded else None  # to hold the whole weights again after training
    model = plan.model.to(run.device)
    if getattr(cfg, "sync_bn", False) and run.dist.enabled:
        if run.device.type != "cuda":
            raise LabError("--sync-bn needs CUDA devices (SyncBatchNorm works on GPUs only)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if sharded:  # before the optimizer is built: it must hold the sharded parameters
        model = fsdp.shard(model)
    precision = Precision(cfg.precision, run.device)
    optimizer = (plan.make_optimizer or build_optimizer)(cfg, model)
    schedule = schedule_plan(cfg, len(plan.train_loader))
    scheduler, interval = build_scheduler(cfg, optimizer, schedule)

    main, run_dir = run.is_main, run.run_dir
    extra = {"config": cfg.to_dict(), "lab": cfg.lab, "schedule": schedule, **plan.checkpoint}
    logger = RunLogger(run_dir, quiet=cfg.quiet, stream=run.stream) if main else None
    checkpointing = Checkpointing(run_dir / "checkpoints" if main else None, extra=extra)
    callbacks = [Clock(), *([logger, ProgressBar(cfg.quiet)] if main else []), checkpointing, *plan.callbacks]
    if cfg.patience:
        callbacks.append(EarlyStopping(cfg.patience))
    trainer = Trainer(model, optimizer, plan.train_loader, plan.val_loader, loss_fn=plan.loss_fn or ClassificationLoss(),
                      forward_fn=plan.forward_fn, scheduler=scheduler, scheduler_interval=interval,
                      precision=precision, device=run.device, epochs=cfg.epochs, max_steps=cfg.max_steps,
                      grad_accum=cfg.grad_accum, grad_clip=cfg.grad_clip, monitor=monitor, mode=mode,
                      callbacks=callbacks, compile=cfg.compile)
    if run.resume_state is not None:
        load_resume_state(run, trainer, schedule, interval)
        run.say(f"resuming from {run.resume_path} (epoch {trainer.epoch}, step {trainer.global_step})")

    world = run.dist.world
    run.claim_run_dir()  # everything fits: lock the run directory (cleared for --overwrite), then write it
    batch = f"batch {cfg.batch_size}" + (f" per process x {world} = {cfg.batch_size * world} global" if world > 1 else "")
    batch += f" | sharded (FSDP) over {world} processes" if sharded else ""
    run.say(f"{cfg.lab}: {plan.description} | {model_name} {n_params:,} params | {run.device} "
            f"{cfg.precision}{' compiled' if cfg.compile else ''} | {batch} | {describe_peak(peak_memory(run.device))}")
    finder = tuning.requested(cfg)
    found = tuning.run_finder(run, trainer, finder) if finder else None
    if found is not None and not cfg.lr_find_then_train:  # a finder alone: its report is the run's whole output
        run.say(f"{describe_peak(peak_memory(run.device))} | report in {run_dir}")
        return RunResult(summary={finder: found, "peak_memory": peak_memory(run.device)}, run_dir=run_dir,
                         trainer=trainer, plan=plan)
    if found is not None:  # train from the same weights, with the suggested rate
        cfg.lr = found["suggested_lr"]
        trainer.optimizer = optimizer = (plan.make_optimizer or build_optimizer)(cfg, model)
        trainer.scheduler, _ = build_scheduler(cfg, optimizer, schedule)
        checkpointing.extra["config"] = cfg.to_dict()
        run.say(f"training with --lr {cfg.lr:.2e} (the range test's suggestion)")
        reset_peak(run.device)  # the peak reported is the training's
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", {**cfg.to_dict(), "lab": cfg.lab, "resolved": {
            "device": str(run.device), "processes": world, "global_batch_size": cfg.batch_size * world,
            "parameters": n_params, "model": model_name, "sharded": bool(sharded), "monitor": monitor,
            "monitor_mode": mode, **({"lr_find": found} if found else {}), **plan.resolved}})
    try:
        if plan.manual_loop is not None:
            run_manual_loop(trainer, plan, logger, checkpointing)
        else:
            trainer.fit()
    except NonFiniteLossError as exc:
        if logger:
            logger.close()
        kept = checkpointing.last_path if checkpointing.last_path and checkpointing.last_path.exists() else None
        raise NonFiniteLossError(f"{exc}; last good checkpoint: {kept or 'none yet'}") from None
    except RuntimeError as exc:  # a collective failed: a peer died or timed out
        if run.dist.enabled:
            raise distributed.explain(exc, cfg.dist_timeout) from None
        raise
    if sharded:  # the report (rank 0 alone) needs the whole model: gathered on every process
        trainer.unshard(plain)
    if trainer.stop_reason:
        run.say(trainer.stop_reason)
    metrics = (plan.report(run, trainer) or {}) if main and plan.report else {}
    summary = write_summary(run, trainer, metrics)
    if main:
        logger.close()
        run.say(f"{describe_peak(summary['peak_memory'])} | run directory: {run_dir}")
    return RunResult(summary=summary, run_dir=run_dir, trainer=trainer, plan=plan)


def run_manual_loop(trainer: Trainer, plan: Plan, logger: RunLogger | None, checkpointing: Checkpointing) -> None:
    """The hand-written loop in place of ``trainer.fit``; the trainer keeps the bookkeeping (history,
    best epoch) so the run directory is the same as the core loop's."""
    if logger is not None:
        logger.open()
    history = plan.manual_loop(trainer)
    for logs in history:
        trainer.improved = trainer._update_best(logs)
    trainer.history, trainer.epoch = list(history), len(history)
    trainer.global_step = len(history) * len(trainer.train_loader)
    if logger is not None:
        logger.write_history(trainer.history)
    checkpointing.on_epoch_end(trainer, trainer.history[-1] if trainer.history else {})


def write_summary(run: Run, trainer: Trainer, metrics: dict | None = None) -> dict:
    """``summary.json``: the last epoch's metrics (plus ``metrics``), best, steps, time, device.
    Written by rank 0 only (the others return the same dict and write nothing)."""
    last = trainer.history[-1] if trainer.history else {}
    summary = {
        "metrics": {**{k: v for k, v in last.items() if k not in ("epoch", "step")}, **(metrics or {})},
        "best": {**trainer.best, "mode": trainer.mode},
        "epochs_run": trainer.epoch,
        "steps": trainer.global_step,
        "wall_seconds": round(time.perf_counter() - run.started, 3),
        "device": str(trainer.device),
        "precision": trainer.precision.name,
        "seed": run.cfg.seed,
        "skipped_steps": trainer.skipped_steps,
        "stop_reason": trainer.stop_reason,
        "processes": run.dist.world,
        "peak_memory": peak_memory(trainer.device),
    }
    if run.run_dir is not None:
        write_json(run.run_dir / "summary.json", summary)
    return summary
