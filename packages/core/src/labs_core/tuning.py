"""The finders a run can start with (``--lr-find``, ``--find-batch-size``), on the run's own model,
optimizer, data, loss and precision, and what they leave behind: nothing but their report.

    Snapshot(trainer)   weights (batch-norm statistics included), optimizer state and rates, grad
                        scaler, every RNG and the data order, copied to the host; ``restore`` puts
                        them back, so the training that follows starts exactly where it would have
    find_lr             the range test (``lr_finder``): lr_find.png and lr_find.json
    find_batch_size     the probe (``batch_finder``): a table and batch_size.json

``run.execute`` calls ``run_finder`` once the run directory is claimed; only rank 0 writes (the
finders are refused under torchrun: see ``config.TuningOptions``).
"""

from __future__ import annotations

import contextlib
import copy
import itertools

import torch

from . import batch_finder, lr_finder
from .errors import LabError
from .memory import available_mib, describe_peak, parse_size, peak_memory, reset_peak, rss_mib
from .optim import build_optimizer, build_scheduler
from .rundir import write_json
from .seed import get_rng_state, set_rng_state
from .trainer import Trainer, batch_len, set_epoch


def requested(cfg) -> str | None:
    """``"lr"``, ``"batch_size"`` or None: which finder the flags ask for (configs without the
    tuning part ask for none)."""
    if getattr(cfg, "lr_find", False) or getattr(cfg, "lr_find_then_train", False):
        return "lr"
    if getattr(cfg, "find_batch_size", False):
        return "batch_size"
    return None


def _host_copy(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _host_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_host_copy(v) for v in obj)
    return copy.deepcopy(obj)


class Snapshot:
    """Everything a finder's steps change, kept on the host (not on the GPU it measures)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.model = _host_copy(trainer.module.state_dict())
        self.optimizer = _host_copy(trainer.optimizer.state_dict())
        scaler = trainer.precision.scaler
        self.scaler = copy.deepcopy(scaler.state_dict()) if scaler.is_enabled() else None
        self.rng = get_rng_state()
        loader = trainer.train_loader
        self.loader = copy.deepcopy(loader.state_dict()) if hasattr(loader, "state_dict") else None
        self.training = trainer.module.training

    def restore(self) -> None:
        t = self.trainer
        t.module.load_state_dict(self.model)
        # a deep copy each time: load_state_dict may keep the tensors it is given, which the next
        # probe would then change in place
        t.optimizer.load_state_dict(copy.deepcopy(self.optimizer))
        t.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            t.precision.scaler.load_state_dict(self.scaler)
        if self.loader is not None:
            t.train_loader.load_state_dict(copy.deepcopy(self.loader))
        set_rng_state(self.rng)
        t.module.train(self.training)


def make_step(trainer: Trainer):
    """The finders' step: the trainer's own ``step`` (precision, grad scaler, accumulation,
    clipping) on ``--grad-accum`` micro-batches, returning the mean loss as a float. A probe's
    loss may diverge (that is what the range test looks for), so it is not checked here, and the
    finders' steps leave the schedule and the step count alone (see ``bare_steps``)."""

    def step(micro_batches: list) -> float:
        return trainer.step(micro_batches, check_finite=False).item()

    return step


@contextlib.contextmanager
def bare_steps(trainer: Trainer):
    """While a finder probes, the trainer's schedule is set aside (the range test sets the rates
    itself) and its step count is put back afterwards."""
    scheduler, global_step = trainer.scheduler, trainer.global_step
    skipped = trainer.skipped.clone()
    trainer.scheduler = None
    trainer.module.train()
    try:
        yield
    finally:
        trainer.scheduler, trainer.global_step = scheduler, global_step
        trainer.skipped.copy_(skipped)


def cycle(loader, group: int = 1):
    """The training batches, ``group`` at a time, epoch after epoch (each epoch's own order)."""
    epoch = getattr(loader, "epoch", 0)
    while True:
        batches = iter(loader)
        while chunk := list(itertools.islice(batches, group)):
            yield chunk
        epoch += 1
        set_epoch(loader, epoch)


def probe(run, trainer: Trainer, kind: str) -> dict:
    """Run the finder ``kind`` names (``"lr"`` or ``"batch_size"``) on the run's trainer, restore
    everything it changed, write its report (rank 0) and return its findings."""
    snapshot = Snapshot(trainer)
    try:
        with bare_steps(trainer):
            return (
                find_lr(run, trainer) if kind == "lr" else find_batch_size(run, trainer, snapshot)
            )
    finally:
        snapshot.restore()


def run_finder(run, trainer: Trainer, plan) -> dict:
    """The finder the flags ask for, on the run's trainer; everything it changed is restored and
    its report written (rank 0). Returns ``{"lr" | "batch_size": its findings, "peak_memory"}``.
    With ``--lr-find-then-train`` the trainer then gets a fresh optimizer and schedule at the
    suggested rate (``run.cfg`` becomes a copy with that ``lr``, so config.json records it)."""
    kind = requested(run.cfg)
    found = probe(run, trainer, kind)
    summary = {kind: found, "peak_memory": peak_memory(trainer.device)}
    if not run.cfg.lr_find_then_train:
        run.say(f"{describe_peak(summary['peak_memory'])} | report in {run.run_dir}")
        return summary
    run.cfg = copy.copy(run.cfg)  # the user's config stays as given
    run.cfg.lr = found["suggested_lr"]
    trainer.optimizer = (plan.make_optimizer or build_optimizer)(run.cfg, trainer.module)
    trainer.scheduler, _ = build_scheduler(run.cfg, trainer.optimizer, run.schedule)
    run.checkpointing.extra["config"] = run.cfg.to_dict()
    run.say(f"training with --lr {run.cfg.lr:.2e} (the range test's suggestion)")
    reset_peak(trainer.device)  # the peak reported is the training's
    return summary


def find_lr(run, trainer: Trainer) -> dict:
    cfg = run.cfg
    result = lr_finder.range_test(
        trainer.optimizer,
        cycle(trainer.train_loader, trainer.grad_accum),
        make_step(trainer),
        start=cfg.lr_find_start,
        end=cfg.lr_find_end,
        steps=cfg.lr_find_steps,
    )
    found = {**result.to_dict(), "start": cfg.lr_find_start, "end": cfg.lr_find_end}
    if run.run_dir is not None:
        lr_finder.plot_lr_find(
            result,
            run.run_dir / "lr_find.png",
            f"{cfg.lab}: learning-rate range test (batch {cfg.batch_size}, {cfg.optimizer})",
        )
        write_json(run.run_dir / "lr_find.json", {**found, "config": cfg.to_dict()})
    run.say(f"lr finder: {len(result.lrs)} steps from {cfg.lr_find_start:g}; {result.stop_reason}")
    run.say(
        f"suggested --lr {result.valley:.2e} (valley rule, fastai's default); steepest descent at "
        f"{result.steepest:.2e}  (plot: {run.run_dir / 'lr_find.png' if run.run_dir else '-'})"
    )
    return {k: v for k, v in found.items() if k != "curve"}


def epoch_samples(loader, batch_size: int) -> int:
    """How many samples one epoch of ``loader`` gives this process: the largest useful batch."""
    if hasattr(loader, "positions"):
        return len(loader.positions())
    if hasattr(loader, "sampler"):
        return len(loader.sampler)
    return len(loader) * batch_size


def batch_maker(loader):
    """``make(size)``: a training batch of ``size`` samples, joined from the loader's batches (the
    memory a step needs depends on the shapes, not on which samples they are)."""

    def make(size: int):
        parts, n = [], 0
        for (batch,) in cycle(loader):
            parts.append(batch)
            n += batch_len(batch)
            if n >= size:
                break
        return [type(parts[0])(torch.cat(column)[:size] for column in zip(*parts, strict=True))]

    return make


def memory_budget(cfg, device: torch.device) -> float | None:
    """The budget in MiB: ``--memory-budget``; else on the CPU half of what this process could reach
    (its resident memory plus the OS's available memory), so the probe that doubles past it still
    fits in the machine; on CUDA none (out-of-memory decides)."""
    if cfg.memory_budget:
        return parse_size(cfg.memory_budget)
    if device.type == "cuda":
        return None
    free, here = available_mib(), rss_mib()
    if free is None or here is None:
        raise LabError("cannot read this machine's free memory; give --memory-budget (e.g. 4G)")
    return (free + here) / 2


def find_batch_size(run, trainer: Trainer, snapshot: Snapshot) -> dict:
    cfg, device = run.cfg, trainer.device
    budget = memory_budget(cfg, device)
    cap = epoch_samples(trainer.train_loader, cfg.batch_size)
    make, step = batch_maker(trainer.train_loader), make_step(trainer)
    what = "CUDA peak reserved" if device.type == "cuda" else "process peak resident"
    run.say(
        f"batch-size finder: doubling from {batch_finder.START} up to {cap} (one epoch), "
        f"then bisecting; images/s from the median of >= {batch_finder.STEPS} timed steps; fits: "
        + (
            "no CUDA out-of-memory" + (f" and {what} <= {budget:,.0f} MiB" if budget else "")
            if device.type == "cuda"
            else f"{what} memory <= {budget:,.0f} MiB"
        )
    )

    def probe(size: int) -> batch_finder.Probe:
        try:
            return batch_finder.measure(size, make, step, device, budget)
        finally:
            snapshot.restore()

    tried = batch_finder.search(probe, cap)
    largest, fastest = batch_finder.suggestion(tried)
    found = {
        "suggested_batch_size": largest,
        "rule": "largest that fits",
        "fastest_batch_size": fastest,
        "budget_mib": budget,
        "measure": what,
        "device": str(device),
        "precision": cfg.precision,
        "probes": [p.to_dict() for p in tried],
    }
    run.say(batch_finder.format_table(tried, what))
    run.say(f"suggested --batch-size {largest} (the largest that fits); fastest: {fastest}")
    if run.run_dir is not None:
        write_json(run.run_dir / "batch_size.json", {**found, "config": cfg.to_dict()})
    return found
