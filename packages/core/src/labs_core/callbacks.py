"""The features that hang on the trainer's events: checkpoints, early stopping, logging,
progress."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from . import faults
from .checkpoint import atomic_write_bytes, save_checkpoint
from .trainer import Callback, Trainer


class Checkpointing(Callback):
    """Write ``last.pt`` after every epoch and ``best.pt`` when the monitored metric improves.

    ``extra`` (the resolved config, class names, ...) is stored in every checkpoint. Under torchrun
    every process gathers its state (a collective) and only the one with a ``folder`` (rank 0)
    writes. It runs after every other callback's epoch-end work (``order``), so what it saves is the
    state as of the end of the epoch.
    """

    order = 100

    def __init__(self, folder: str | Path | None, extra: dict | None = None):
        self.folder = Path(folder) if folder is not None else None
        self.extra = extra or {}
        self.last_path = self.folder / "last.pt" if self.folder else None
        self.best_path = self.folder / "best.pt" if self.folder else None

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        state = {**trainer.state_dict(), **self.extra}
        if self.folder is None:
            return
        save_checkpoint(self.last_path, state)
        if trainer.improved or not self.best_path.exists():
            save_checkpoint(self.best_path, state)


class EarlyStopping(Callback):
    """Stop when the trainer's monitored metric has not improved for ``patience`` epochs."""

    def __init__(self, patience: int):
        self.patience = patience
        self.wait = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.wait >= self.patience:  # resumed from the checkpoint of a run that had stopped here
            trainer.should_stop = True
            trainer.stop_reason = (
                f"early stopping: the resumed run had already stopped ({trainer.monitor})"
            )

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        self.wait = 0 if trainer.improved else self.wait + 1
        if self.wait >= self.patience:
            trainer.should_stop = True
            trainer.stop_reason = (
                f"early stopping: {trainer.monitor} has not improved for "
                f"{self.patience} epoch(s) (best {trainer.best['value']:.4g} "
                f"at epoch {trainer.best['epoch']})"
            )

    def state_dict(self) -> dict:
        return {"wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        self.wait = state["wait"]


class Clock(Callback):
    """Adds ``elapsed_s`` to each epoch's logs: the run's training time so far, evaluation
    included, counted across phases and resumes (a checkpoint keeps it). Benchmarks read the time
    to a target accuracy or loss from it."""

    def __init__(self):
        self.before, self.started = 0.0, None

    def elapsed(self) -> float:
        return self.before + (
            time.perf_counter() - self.started if self.started is not None else 0.0
        )

    def on_fit_start(self, trainer: Trainer) -> None:
        self.started = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, logs: dict) -> None:
        logs["elapsed_s"] = round(self.elapsed(), 3)

    def on_fit_end(self, trainer: Trainer) -> None:
        self.before, self.started = self.elapsed(), None

    def state_dict(self) -> dict:
        return {"before": self.elapsed()}

    def load_state_dict(self, state: dict) -> None:
        self.before = state["before"]


class RunLogger(Callback):
    """TensorBoard scalars, ``metrics.jsonl`` (one object per epoch) and one console line per epoch.

    Every scalar's x axis is the optimizer step. Files are opened when the fit starts: a fresh run
    starts a fresh ``metrics.jsonl``; a resumed run rewrites it from the checkpoint's history and
    tells TensorBoard to drop events after the checkpoint's step (``purge_step``), so an epoch
    logged just before a kill, but never checkpointed, appears once, not twice."""

    def __init__(self, run_dir: str | Path, quiet: bool = False, log_every: int = 50, stream=None):
        self.run_dir = Path(run_dir)
        self.jsonl = self.run_dir / "metrics.jsonl"
        self.quiet = quiet
        self.log_every = log_every
        self.stream = stream or sys.stdout
        self._writer = None
        self._lines: list[str] = []  # metrics.jsonl's lines so far

    @property
    def writer(self):
        if self._writer is None:
            self.open()
        return self._writer

    def open(self, resumed_at: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(
            log_dir=str(self.run_dir / "tb"), purge_step=resumed_at + 1 if resumed_at else None
        )

    def write_history(self, history: list[dict]) -> None:
        """``metrics.jsonl`` holding exactly ``history``, written atomically."""
        self._lines = [json.dumps(logs) + "\n" for logs in history]
        self._write_lines()

    def _write_lines(self) -> None:
        data = "".join(self._lines).encode()
        atomic_write_bytes(self.jsonl, lambda f: f.write(data))

    def on_fit_start(self, trainer: Trainer) -> None:
        if (
            self._writer is None
        ):  # the first fit (a multi-phase run keeps logging to the same files)
            self.open(trainer.global_step)
            self.write_history(trainer.history)

    def on_step_end(self, trainer: Trainer, loss) -> None:
        if self.log_every and trainer.global_step % self.log_every == 0:
            self.writer.add_scalar("step/train_loss", loss.item(), trainer.global_step)
            self.writer.add_scalar(
                "step/lr", trainer.optimizer.param_groups[0]["lr"], trainer.global_step
            )

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        try:
            for key, value in logs.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"epoch/{key}", value, logs["step"])
            self.writer.flush()
        except OSError as exc:  # the writer's thread met a full disk: one line naming the folder
            fault = faults.append_fault(
                exc, f"TensorBoard events in {self.run_dir / 'tb'}", self.run_dir
            )
            if fault is None:
                raise
            raise fault from None
        self._lines.append(json.dumps(logs) + "\n")  # the whole file rewritten atomically: a full
        self._write_lines()  # disk never leaves half a line
        # Long runs print about 20 lines: the first epoch, every k-th, and the last.
        every = max(1, trainer.epochs // 20)
        last = logs["epoch"] == trainer.epochs or trainer.should_stop
        if not self.quiet and (logs["epoch"] == 1 or logs["epoch"] % every == 0 or last):
            print(format_epoch_line(logs, trainer.epochs), file=self.stream, flush=True)

    def on_fit_end(self, trainer: Trainer) -> None:
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def format_epoch_line(logs: dict, epochs: int) -> str:
    # Multi-phase runs (fine-tuning) number epochs across phases: no "/epochs" then.
    parts = [f"epoch {logs['epoch']:>3}" + ("" if "phase" in logs else f"/{epochs}")]
    for key, value in logs.items():
        if key in ("epoch", "step"):
            continue
        if isinstance(value, float):
            parts.append(f"{key} {value:.3e}" if key == "lr" else f"{key} {value:.4f}")
        else:
            parts.append(f"{key} {value}")
    return "  ".join(parts)


class ProgressBar(Callback):
    """A tqdm bar over each epoch's batches; silent when stderr is not a terminal or when quiet."""

    def __init__(self, quiet: bool = False):
        self.enabled = not quiet and sys.stderr.isatty()
        self.bar = None

    def on_epoch_start(self, trainer: Trainer) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        try:
            total = len(trainer.train_loader)
        except TypeError:
            total = None
        self.bar = tqdm(
            total=total,
            desc=f"epoch {trainer.epoch + 1}/{trainer.epochs}",
            leave=False,
            dynamic_ncols=True,
            initial=trainer.batch_in_epoch,
        )

    def on_step_end(self, trainer: Trainer, loss) -> None:
        if self.bar is not None:
            self.bar.update(trainer.grad_accum)
            if trainer.global_step % 20 == 0:
                self.bar.set_postfix(loss=f"{loss.item():.4f}")

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
