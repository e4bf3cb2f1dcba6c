"""The run skeleton: every lab's training goes through ``execute(cfg, build_plan)``, in phases.

    Run.start(cfg)           device, torchrun's process group, seeds, the checkpoint to resume,
                             and the run directory checked (``rundir.check_out``)
    build_plan(run)          the lab's own part, as a ``Plan``: data, model, loss, forward,
                             callbacks, and a ``report`` for the end (test metrics, figures)
    build_trainer(run, plan) the monitored metric resolved, the model placed (and sharded), the
                             optimizer and schedule, the callbacks, the resume state loaded; a
                             flag or checkpoint that does not fit stops here, before any write
    run.claim_run_dir()      the run directory locked for the run's life (``rundir.RunDirLock``)
    tuning.run_finder        --lr-find / --find-batch-size, when asked for
    trainer.fit()            the loop (``trainer.py``; ``run_manual_loop`` for --loop manual)
    finish                   the lab's report and summary.json

Only rank 0 writes: under torchrun every other process gets ``run.run_dir = None``, no logger and
no report. That guard lives here, once, so no lab handles ranks itself.
"""

from __future__ import annotations

import contextlib
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

from . import distributed, faults, fits, fsdp, tuning
from .callbacks import Checkpointing, Clock, EarlyStopping, ProgressBar, RunLogger
from .checkpoint import RESUME_KEYS, load_checkpoint, refuse_finished, require_entries
from .config import metric_mode
from .device import Precision, pick_device
from .errors import LabError, NonFiniteLossError
from .loop import ManualLoop, run_manual
from .memory import describe_peak, peak_memory, reset_peak
from .optim import build_optimizer, build_scheduler, count_steps
from .rundir import (
    RunDirLock,
    check_out,
    clear_run,
    find_latest_checkpoint,
    new_run_dir,
    write_json,
)
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
    # set by ``build_trainer``: what the run monitors, how its steps are scheduled, whether it
    # shards the model (and the plain copy that holds it whole afterwards), its logger and
    # checkpoints (rank 0)
    monitor: str = "val_loss"
    mode: str = "min"
    schedule: dict = field(default_factory=dict)
    sharded: bool = False
    plain: nn.Module | None = None
    logger: RunLogger | None = None
    checkpointing: Checkpointing | None = None

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
                raise LabError(
                    f"{run.resume_path} is a {state['lab']} checkpoint; {cfg.lab} cannot resume it"
                )
            require_entries(state, RESUME_KEYS, run.resume_path)
            refuse_finished(
                state, cfg
            )  # a resume that adds nothing ends here, exit 0, nothing written
            run.resume_state = state
        in_run = run.resume_path is not None and run.resume_path.parent.name == "checkpoints"
        folder = (
            Path(cfg.out)
            if cfg.out
            else run.resume_path.parent.parent
            if in_run
            else new_run_dir(cfg.lab)
        )
        check_out(
            folder, resume_path=run.resume_path, overwrite=cfg.overwrite
        )  # every rank: all refuse together
        if info.is_main:
            run.run_dir = folder
        return run

    def claim_run_dir(self) -> None:
        """Rank 0, once everything fits: lock the run directory for the run's life (a second run
        into it is refused), check again that it holds no other run, clear it for ``--overwrite``.
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
            raise LabError(
                f"--resume: {cfg.out} holds no checkpoint to continue ({path} not found)"
            )
        return path
    return find_latest_checkpoint(cfg.lab)


@dataclass
class Plan:
    """A lab's part of a run. ``metrics`` are the keys ``loss_fn`` returns (logged as ``train_*``
    and ``val_*``); ``added_metrics`` are what callbacks add to the logs (``val_greedy_seq_acc``).
    ``report(run, trainer)`` runs on rank 0 after training and returns metrics for summary.json.
    ``manual_loop`` (lab0's and lab1's ``--loop manual``) replaces the trainer's loop with the
    hand-written one, ``loop.run_manual``, on the trainer's model, optimizer and schedule."""

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
    manual_loop: ManualLoop | None = None


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
        raise LabError(
            f"--monitor {cfg.monitor}: not a metric of this run; it logs {', '.join(logged)}"
        )
    mode = cfg.monitor_mode if cfg.monitor_mode != "auto" else metric_mode(monitor)
    if mode is None:
        raise LabError(
            f"--monitor {monitor}: its name does not say whether higher or lower is better; "
            "add --monitor-mode min or --monitor-mode max"
        )
    return monitor, mode


def load_resume_state(run: Run, trainer: Trainer, schedule: dict, interval: str) -> None:
    """Load the checkpoint into ``trainer``. A step-based schedule laid over another run (more
    epochs, another number of processes, a --max-steps cut) is laid again over this one: the new
    schedule starts where the old run's progress, counted in epochs, puts it."""
    state, cfg = run.resume_state, run.cfg
    old = state.get("schedule") or {}
    total, per_epoch, batches = (
        schedule["total_steps"],
        schedule["steps_per_epoch"],
        schedule["batches_per_epoch"],
    )
    replan = (
        trainer.scheduler is not None
        and interval == "step"
        and (old.get("total_steps"), old.get("steps_per_epoch")) != (total, per_epoch)
    )
    trainer.load_state_dict(
        {**state, "scheduler": None} if replan else state, source=f"checkpoint {run.resume_path}"
    )
    old_batches = old.get("batches_per_epoch") or batches
    if trainer.batch_in_epoch and old_batches != batches:  # mid-epoch, another world size
        trainer.batch_in_epoch = min(
            batches - 1, round(trainer.batch_in_epoch * batches / old_batches)
        )
    if not replan:
        return
    position = trainer.epoch * per_epoch + math.ceil(trainer.batch_in_epoch / cfg.grad_accum)
    position = min(position, total)
    with warnings.catch_warnings():  # stepping a schedule without optimizer steps: intended here
        warnings.simplefilter("ignore")
        for _ in range(position):
            trainer.scheduler.step()
    run.say(
        f"schedule re-planned for this run: {total} steps ({per_epoch} per epoch; the "
        f"checkpoint's had {old.get('total_steps', '?')}), resuming at step {position} "
        f"({position / max(1, total):.0%} of the way)"
    )


def execute(cfg, build_plan: Callable[[Run], Plan], stream=None) -> RunResult:
    """One run of a lab, in its phases (see the module docstring). The run directory's lock is
    released on every way out (an error, Ctrl-C)."""
    run = Run.start(cfg, stream)  # device, process group, seeds, the checkpoint to resume
    try:
        plan = build_plan(run)  # the lab's part: data, model, loss, callbacks, report
        trainer = build_trainer(run, plan)  # everything checked and loaded; nothing written yet
        run.claim_run_dir()  # lock the run directory (cleared for --overwrite); now it is written
        run.say(startup_line(run, trainer, plan))
        found = tuning.run_finder(run, trainer, plan) if tuning.requested(run.cfg) else None
        if found is not None and not run.cfg.lr_find_then_train:  # a finder alone: its report
            return RunResult(found, run.run_dir, trainer, plan)
        write_config(run, trainer, plan, found)
        with fit_failures(run, trainer):
            if plan.manual_loop is not None:
                run_manual_loop(run, trainer, plan)
            else:
                trainer.fit()
        return finish(run, trainer, plan)
    except BaseException:  # stopped before its first epoch was saved: nothing to block a retry
        faults.discard_unfinished(run.run_dir if run.lock else None)
        raise
    finally:
        run.release_run_dir()


def build_trainer(run: Run, plan: Plan) -> Trainer:
    """The trainer for ``plan``, as the flags say: the model on the device (synchronised batch
    norm, or sharded, under torchrun), its optimizer and schedule, the callbacks (the run's logger
    and checkpoints on rank 0), and the resume state loaded. Anything that does not fit stops
    here, before the run directory is written."""
    cfg = run.cfg
    run.monitor, run.mode = resolve_monitor(cfg, plan, run.say)
    run.sharded = cfg.fsdp and run.dist.enabled
    run.plain = fsdp.skeleton(plan.model) if run.sharded else None  # holds the weights again after
    model = plan.model.to(run.device)
    if getattr(cfg, "sync_bn", False) and run.dist.enabled:
        if run.device.type != "cuda":
            raise LabError("--sync-bn needs CUDA devices (SyncBatchNorm works on GPUs only)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if run.sharded:  # before the optimizer is built: it must hold the sharded parameters
        model = fsdp.shard(model)
    fits.check_step_fits(run, plan)  # a step that cannot fit in memory is refused here
    optimizer = (plan.make_optimizer or build_optimizer)(cfg, model)
    run.schedule = count_steps(cfg, len(plan.train_loader))
    scheduler, interval = build_scheduler(cfg, optimizer, run.schedule)
    main = run.is_main
    run.logger = RunLogger(run.run_dir, quiet=cfg.quiet, stream=run.stream) if main else None
    run.checkpointing = Checkpointing(
        run.run_dir / "checkpoints" if main else None,
        extra={
            "config": cfg.to_dict(),
            "lab": cfg.lab,
            "schedule": run.schedule,
            **plan.checkpoint,
        },
    )
    callbacks = [
        Clock(),
        *([run.logger, ProgressBar(cfg.quiet)] if main else []),
        run.checkpointing,
        *plan.callbacks,
    ]
    if cfg.patience:
        callbacks.append(EarlyStopping(cfg.patience))
    trainer = Trainer(
        model,
        optimizer,
        plan.train_loader,
        plan.val_loader,
        loss_fn=plan.loss_fn or ClassificationLoss(),
        forward_fn=plan.forward_fn,
        scheduler=scheduler,
        scheduler_interval=interval,
        precision=Precision(cfg.precision, run.device),
        device=run.device,
        epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        grad_accum=cfg.grad_accum,
        grad_clip=cfg.grad_clip,
        monitor=run.monitor,
        mode=run.mode,
        callbacks=callbacks,
        compile=cfg.compile,
    )
    if run.resume_state is not None:
        load_resume_state(run, trainer, run.schedule, interval)
        run.say(
            f"resuming from {run.resume_path} (epoch {trainer.epoch}, step {trainer.global_step})"
        )
    return trainer


def startup_line(run: Run, trainer: Trainer, plan: Plan) -> str:
    """What the run trains, on what, with how much memory so far."""
    cfg, world, model = run.cfg, run.dist.world, plan.model
    batch = f"batch {cfg.batch_size}"
    if world > 1:
        batch += f" per process x {world} = {cfg.batch_size * world} global"
    if run.sharded:
        batch += f" | sharded (FSDP) over {world} processes"
    n_params = sum(p.numel() for p in model.parameters())
    compiled = " compiled" if cfg.compile else ""
    return (
        f"{cfg.lab}: {plan.description} | {type(model).__name__} {n_params:,} params | "
        f"{run.device} {cfg.precision}{compiled} | {batch} | "
        f"{describe_peak(peak_memory(run.device))}"
    )


def write_config(run: Run, trainer: Trainer, plan: Plan, found: dict | None = None) -> None:
    """``config.json`` (rank 0): the flags as resolved, and what the run made of them."""
    if not run.is_main:
        return
    cfg, model = run.cfg, plan.model
    run.run_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        run.run_dir / "config.json",
        {
            **cfg.to_dict(),
            "lab": cfg.lab,
            "resolved": {
                "device": str(run.device),
                "processes": run.dist.world,
                "global_batch_size": cfg.batch_size * run.dist.world,
                "parameters": sum(p.numel() for p in model.parameters()),
                "model": type(model).__name__,
                "sharded": bool(run.sharded),
                "monitor": run.monitor,
                "monitor_mode": run.mode,
                **({"lr_find": found["lr"]} if found else {}),
                **plan.resolved,
            },
        },
    )


@contextlib.contextmanager
def fit_failures(run: Run, trainer: Trainer):
    """A diverged loss names the last good checkpoint; a failed collective (a peer died or timed
    out under torchrun) says so in one line."""
    try:
        yield
    except NonFiniteLossError as exc:
        if run.logger:
            run.logger.close()
        last = run.checkpointing.last_path
        kept = last if last and last.exists() else None
        raise NonFiniteLossError(f"{exc}; last good checkpoint: {kept or 'none yet'}") from None
    except RuntimeError as exc:
        if run.dist.enabled:
            raise distributed.explain(exc, run.cfg.dist_timeout) from None
        raise


def run_manual_loop(run: Run, trainer: Trainer, plan: Plan) -> None:
    """``--loop manual``: the hand-written loop (``loop.run_manual``) trains ``trainer.module``
    with the trainer's optimizer and schedule; the trainer keeps the bookkeeping (history, best
    epoch), so the run directory is the same as the core loop's."""
    manual, cfg = plan.manual_loop, run.cfg
    if run.logger is not None:
        run.logger.open()
    history = run_manual(
        trainer.module,
        trainer.optimizer,
        plan.train_loader,
        plan.val_loader,
        cfg.epochs,
        scheduler=trainer.scheduler,
        scheduler_interval=trainer.scheduler_interval,
        label_smoothing=manual.label_smoothing,
        say=run.say,
        print_every=manual.print_every,
        after_print=manual.after_print,
    )
    trainer.adopt_history(history, steps_per_epoch=len(plan.train_loader))
    if run.logger is not None:
        run.logger.write_history(trainer.history)
    run.checkpointing.on_epoch_end(trainer, trainer.history[-1] if trainer.history else {})


def finish(run: Run, trainer: Trainer, plan: Plan) -> RunResult:
    """After training: the whole model back on every process (sharded runs), the lab's report
    and ``summary.json`` (rank 0)."""
    if run.sharded:  # the report (rank 0 alone) needs the whole model: gathered on every process
        trainer.unshard(run.plain)
    if trainer.stop_reason:
        run.say(trainer.stop_reason)
    metrics = (plan.report(run, trainer) or {}) if run.is_main and plan.report else {}
    summary = write_summary(run, trainer, metrics)
    if run.is_main:
        run.logger.close()
        run.say(f"{describe_peak(summary['peak_memory'])} | run directory: {run.run_dir}")
    return RunResult(summary=summary, run_dir=run.run_dir, trainer=trainer, plan=plan)


def write_summary(run: Run, trainer: Trainer, metrics: dict | None = None) -> dict:
    """``summary.json``: the last epoch's metrics (plus ``metrics``), best, steps, time, device.
    Written by rank 0 only (the others return the same dict and write nothing)."""
    last = trainer.history[-1] if trainer.history else {}
    summary = {
        "metrics": {
            **{k: v for k, v in last.items() if k not in ("epoch", "step")},
            **(metrics or {}),
        },
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
