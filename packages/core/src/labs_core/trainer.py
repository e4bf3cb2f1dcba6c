"""The trainer: one loop that knows nothing about the model, and a handful of events.

Read it top to bottom: ``fit`` runs epochs; an epoch is ``train_one_epoch`` (a short loop over
``step``) then ``evaluate``; ``step`` is one optimizer step, from micro-batches to
``optimizer.step()``. Features (checkpoints, early stopping, logging, progress) are callbacks on
six events:

    on_fit_start -> (on_epoch_start -> on_step_end* -> on_validation_end -> on_epoch_end)*
                 -> on_fit_end

``on_validation_end`` may add metrics to the epoch's logs (a detector's mAP, greedy-decoding
accuracy) before the best epoch is decided and anything is logged or checkpointed.

In a step each micro-batch is ``forward_fn(model, batch)`` under the precision policy's autocast,
then ``loss_fn(outputs, batch)`` in fp32, returning a dict with ``"loss"`` and any other per-batch
means (``"acc"`` for classifiers, loss parts for a detector). Each entry is averaged over the
epoch and logged as ``train_<name>`` / ``val_<name>``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed, fsdp
from .device import Precision
from .errors import LabError, NonFiniteLossError
from .seed import get_rng_state, set_rng_state


def default_forward(model: nn.Module, batch) -> Tensor:
    return model(batch[0])


class ClassificationLoss:
    """Cross-entropy (optionally label-smoothed and class-weighted) plus batch accuracy."""

    def __init__(self, label_smoothing: float = 0.0, weight: Tensor | None = None):
        self.label_smoothing = label_smoothing
        self.weight = weight

    def __call__(self, logits: Tensor, batch) -> dict[str, Tensor]:
        y = batch[1]
        weight = None if self.weight is None else self.weight.to(logits.device)
        loss = F.cross_entropy(logits, y, weight=weight, label_smoothing=self.label_smoothing)
        acc = (logits.argmax(dim=1) == y).float().mean()
        return {"loss": loss, "acc": acc}


def to_device(batch, device: torch.device):
    if isinstance(batch, Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def as_fp32(out):
    """Outputs of an autocast forward, cast to fp32 so the loss is computed in full precision."""
    if isinstance(out, Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(as_fp32(o) for o in out)
    if isinstance(out, dict):
        return {k: as_fp32(v) for k, v in out.items()}
    return out


def batch_len(batch) -> int:
    """How many samples a batch holds (its first tensor's length)."""
    first = batch[0] if isinstance(batch, (list, tuple)) else next(iter(batch.values()))
    return len(first)


class EpochSums:
    """Per-sample sums of a loss function's outputs over an epoch, kept on the device (no host
    sync per batch); ``means`` divides them by the samples seen, over every process."""

    def __init__(self, device: torch.device):
        self.device, self.sums, self.count = device, {}, 0

    def add(self, values: dict[str, Tensor], n: int) -> None:
        self.count += n
        for k, v in values.items():
            if k in self.sums:
                self.sums[k].add_(v.detach(), alpha=n)
            else:
                self.sums[k] = v.detach() * n

    def means(self, prefix: str) -> dict[str, float]:
        if not self.sums:
            return {}
        keys = sorted(self.sums)
        count = torch.tensor(float(self.count), device=self.device)
        totals = distributed.all_reduce_sum(
            torch.stack([self.sums[k].float() for k in keys] + [count])
        )
        return {
            f"{prefix}_{k}": (totals[i] / totals[-1].clamp(min=1)).item()
            for i, k in enumerate(keys)
        }


class NonFiniteWatch:
    """Stops a run on a non-finite loss. On a CPU the loss is read at once; on GPUs the first bad
    step is recorded on the device and read every ``every`` losses (a host read per step would
    stall the queue). Under torchrun the check is collective: every process stops together."""

    def __init__(self, device: torch.device, every: int, collective: bool):
        self.every, self.collective, self.seen = every, collective, 0
        self.first_bad = torch.zeros((), dtype=torch.long, device=device)  # 0: all finite so far

    def track(self, loss: Tensor, step: int, epoch: int, batch: int) -> None:
        self.seen += 1
        if self.every == 1:
            value = loss.item()
            if not math.isfinite(value):
                self._stop(f"loss became {value} at step {step} (epoch {epoch + 1}, batch {batch})")
            return
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad == 0)
        self.first_bad.copy_(torch.where(bad, self.first_bad.new_tensor(step), self.first_bad))
        if self.seen % self.every == 0:
            self.check(epoch)

    def check(self, epoch: int) -> None:
        first_bad = self.first_bad
        if self.collective:  # a step that went bad anywhere stops every process
            first_bad = distributed.all_reduce_max(first_bad.clone())
        step = int(first_bad)  # a host sync
        if step:
            self._stop(f"loss became non-finite at step {step} (epoch {epoch + 1})")

    @staticmethod
    def _stop(what: str) -> None:
        raise NonFiniteLossError(
            f"{what}; stopped before writing anything (try a lower --lr or --precision fp32)"
        )


class Callback:
    """Override the events you need. ``state_dict`` goes into checkpoints.

    Callbacks run in list order, except that a higher ``order`` runs later: checkpointing (order
    100) runs after all other epoch-end work, so a checkpoint holds every callback's state as of
    the end of its epoch (an early-stopping counter included) and a resume continues exactly."""

    order = 0

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer) -> None: ...
    def on_step_end(self, trainer: Trainer, loss: Tensor) -> None: ...
    def on_validation_end(self, trainer: Trainer, logs: dict) -> None: ...
    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader: Iterable,
        val_loader: Iterable | None = None,
        *,
        loss_fn: Callable[..., dict[str, Tensor]] | None = None,
        forward_fn: Callable[[nn.Module, object], object] = default_forward,
        scheduler=None,
        scheduler_interval: str = "epoch",  # "epoch" or "step"
        precision: Precision | None = None,
        device: torch.device | str = "cpu",
        epochs: int = 1,
        max_steps: int = 0,  # 0: no limit; else stop after this many optimizer steps
        grad_accum: int = 1,  # micro-batches per optimizer step
        grad_clip: float = 0.0,  # max global grad norm; 0: off
        grad_norm_every: int = 25,  # measure the grad norm every N steps when not clipping
        nan_check_every: int | None = None,  # losses between host reads (1 on a CPU, 50 on GPUs)
        monitor: str = "val_loss",
        mode: str = "min",
        callbacks: Iterable[Callback] = (),
        compile: bool = False,  # train through torch.compile (the module itself stays eager)
    ):
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError("scheduler_interval must be 'epoch' or 'step'")
        if mode not in ("min", "max"):
            raise ValueError("mode must be 'min' or 'max'")
        self.device = torch.device(device)
        self.dist = distributed.current()
        self.module = model.to(self.device)  # the model itself: state dicts, evaluation, prediction
        # what training calls: the module itself, DDP's wrapper under torchrun, compiled
        # under --compile; ``module`` is always the model as written
        self.wrapped = self.module
        # A model already sharded (``--fsdp``: ``fsdp.shard``, before its optimizer was built) is
        # its own wrapper: it gathers its parameters and reduces its gradients itself.
        self.sharded = fsdp.is_sharded(self.module)
        if self.dist.enabled and not self.sharded:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DDP(self.module, device_ids=ids)
        if compile:
            # Only the training steps go through the compiled wrapper (DDP's, under torchrun, so its
            # graph is split at the gradient buckets). ``module`` stays the model as written: its
            # state dict has no ``_orig_mod.`` prefixes, and evaluation, prediction and the labs'
            # reports run it eagerly rather than compiling a second graph for eval mode.
            self.wrapped = torch.compile(self.wrapped)
        self.optimizer = optimizer
        self.train_loader, self.val_loader = train_loader, val_loader
        self.loss_fn = loss_fn or ClassificationLoss()
        self.forward_fn = forward_fn
        self.scheduler, self.scheduler_interval = scheduler, scheduler_interval
        self.precision = precision or Precision("fp32", self.device)
        self.epochs, self.max_steps = epochs, max_steps
        self.grad_accum, self.grad_clip = max(1, grad_accum), grad_clip
        self.grad_norm_every = grad_norm_every
        self.monitor, self.mode = monitor, mode
        if nan_check_every is None:  # a host read per step is free on one CPU, costly elsewhere
            nan_check_every = 1 if self.device.type == "cpu" and not self.dist.enabled else 50
        self.watch = NonFiniteWatch(self.device, nan_check_every, collective=self.dist.enabled)
        # stable sort: list order within an order
        self.callbacks = sorted(callbacks, key=lambda cb: cb.order)
        # Progress. ``epoch`` counts finished epochs; ``batch_in_epoch`` is where an interrupted
        # (max_steps) epoch stopped, so a resume starts at the next batch.
        self.epoch = 0
        self.batch_in_epoch = 0
        self.global_step = 0
        self.best: dict = {"metric": monitor, "value": None, "epoch": None}
        self.improved = False
        self.should_stop = False
        self.stop_reason = ""
        # fp16 steps the grad scaler skipped (inf/nan gradients), counted on the device
        self.skipped = torch.zeros((), dtype=torch.long, device=self.device)
        self.sums, self.norms = EpochSums(self.device), []  # this epoch's metric sums, grad norms
        self.position = 0  # batches of this epoch before the current step
        self.history: list[dict] = []

    @property
    def skipped_steps(self) -> int:
        return int(self.skipped)

    # ---------------------------------------------------------------- the loop
    def fit(self) -> list[dict]:
        self._emit("on_fit_start")
        while self.epoch < self.epochs and not self.should_stop and not self._step_budget_spent():
            self._emit("on_epoch_start")
            train_logs = self.train_one_epoch()
            val_logs = self.evaluate(self.val_loader) if self.val_loader is not None else {}
            finished = self.batch_in_epoch == 0  # False when max_steps stopped mid-epoch
            if finished:
                self.epoch += 1
                if self.scheduler is not None and self.scheduler_interval == "epoch":
                    self.scheduler.step()
            logs = {
                "epoch": self.epoch if finished else self.epoch + 1,
                "step": self.global_step,
                **train_logs,
                **val_logs,
                "lr": self.optimizer.param_groups[0]["lr"],
            }
            self._emit("on_validation_end", logs)
            self.record_epoch(logs)
            self._emit("on_epoch_end", logs)
        self._emit("on_fit_end")
        return self.history

    def train_one_epoch(self) -> dict[str, float]:
        """One pass over the training batches, ``grad_accum`` micro-batches per ``step``; stops
        early (remembering where, for a resume) when ``max_steps`` is reached."""
        self.wrapped.train()
        set_epoch(self.train_loader, self.epoch)
        self.sums, self.norms = EpochSums(self.device), []
        start, self.batch_in_epoch = self.batch_in_epoch, 0
        n_batches, done = _len_or_none(self.train_loader), start
        for micro_batches in step_groups(self.train_loader, start, self.grad_accum):
            self.position = done  # the epoch's batches before this step (for messages)
            loss = self.step(micro_batches)
            done += len(micro_batches)
            self._emit("on_step_end", loss)
            if self._step_budget_spent():
                if n_batches is None or done < n_batches:
                    self.batch_in_epoch = done
                break
        self.watch.check(self.epoch)  # before any metric is logged or checkpoint written
        logs = self.sums.means("train")
        if self.norms:
            logs["grad_norm"] = torch.stack(self.norms).mean().item()
        if self.precision.uses_scaler:
            logs["loss_scale"] = self.precision.scaler.get_scale()
            logs["skipped_steps"] = self.skipped_steps
        return logs

    def step(self, micro_batches: list, check_finite: bool = True) -> Tensor:
        """One optimizer step over ``micro_batches`` (``--grad-accum`` of them): each one's forward
        under autocast, its loss in fp32 and its backward; then unscale and clip, the optimizer's
        step and the schedule's. Returns the step's mean loss, on the device (no host sync)."""
        model, prec, n = self.wrapped, self.precision, len(micro_batches)
        step_loss = None
        for i, batch in enumerate(micro_batches):
            batch = to_device(batch, self.device)
            with self.grad_sync(first=i == 0, last=i == n - 1):
                with prec.autocast():
                    out = self.forward_fn(model, batch)
                losses = self.loss_fn(as_fp32(out), batch)
                loss = losses["loss"]
                if check_finite:  # the batch's number within the epoch, for the message
                    self.watch.track(loss, self.global_step + 1, self.epoch, self.position + i + 1)
                prec.scaler.scale(loss / n).backward()  # scaled for fp16 only
            step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
            self.sums.add(losses, batch_len(batch))
        norm = self.clip_or_measure_grad_norm()
        if prec.uses_scaler:  # fp16: the step is skipped on inf/nan gradients, the scale adapts
            self.skipped += prec.scaled_step(self.optimizer)
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        if norm is not None and torch.isfinite(norm):  # inf/nan: a skipped fp16 step
            self.norms.append(norm)
        return step_loss / n if n > 1 else step_loss

    def grad_sync(self, first: bool, last: bool):
        """Gradients are reduced across processes on a step's last micro-batch only (``no_sync``
        on the others, so what accumulates is averaged once); a no-op in one process."""
        if not self.dist.enabled:
            return contextlib.nullcontext()
        if self.sharded and first:  # a sharded model's buffers, broadcast when DDP would
            fsdp.broadcast_buffers(self.module)
        if last:
            return contextlib.nullcontext()
        return fsdp.no_grad_sync(self.wrapped) if self.sharded else self.wrapped.no_sync()

    def clip_or_measure_grad_norm(self) -> Tensor | None:
        """Clip to ``grad_clip`` (or, every ``grad_norm_every`` steps, just measure) the global
        gradient norm, of the unscaled gradients (fp16). None when neither is due."""
        due = self.grad_clip > 0 or not self.norms or self.global_step % self.grad_norm_every == 0
        if not due:
            return None
        self.precision.scaler.unscale_(self.optimizer)  # true norms, not fp16-scaled ones
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if self.grad_clip > 0:
            return fsdp.full_norm(torch.nn.utils.clip_grad_norm_(params, self.grad_clip))
        if not params:
            return None
        norms = [fsdp.full_norm(torch.linalg.vector_norm(p.grad)) for p in params]
        return fsdp.full_norm(torch.linalg.vector_norm(torch.stack(norms)))

    def evaluate(self, loader: Iterable, prefix: str = "val") -> dict[str, float]:
        """Mean loss and metrics over ``loader`` (collective under torchrun: every process calls
        it)."""
        with self._no_grad():
            sums = self._run_eval(loader, collect=False)[0]
        return sums.means(prefix)

    def predict(self, loader: Iterable) -> tuple[Tensor, Tensor]:
        """Model outputs (fp32, on CPU) and targets for every batch of ``loader``."""
        with self._no_grad():
            _, outs, targets = self._run_eval(loader, collect=True)
        return torch.cat(outs), torch.cat(targets)

    def _no_grad(self):
        # A sharded model allocates its gathered parameters on its first forward; made under
        # inference mode (an evaluation before any training), they could not be trained later.
        return torch.no_grad() if self.sharded else torch.inference_mode()

    def _run_eval(self, loader, collect: bool):
        model = self.module  # no DDP wrapper: evaluation needs no gradient synchronisation
        was_training = model.training
        model.eval()
        sums, outs, targets = EpochSums(self.device), [], []
        # A sharded model's forward is a collective: every process must make as many (see below)
        most = self._most_eval_batches(loader) if self.sharded else 0
        try:
            for batch in loader:
                batch = to_device(batch, self.device)
                with self.precision.autocast():
                    out = self.forward_fn(model, batch)
                out = as_fp32(out)
                sums.add(self.loss_fn(out, batch), batch_len(batch))
                if collect:
                    outs.append(out.cpu())
                    targets.append(batch[1].cpu())
            for _ in range(most - (_len_or_none(loader) or 0)):  # this process's slice is shorter
                with self.precision.autocast():
                    self.forward_fn(model, batch)  # uncounted: only to serve the others' gathers
        finally:
            model.train(was_training)
        return sums, outs, targets

    def _most_eval_batches(self, loader) -> int:
        """The most batches any process's slice of ``loader`` holds. A sharded model's forward is a
        collective (each unit gathers its parameters from every process), so a process whose slice
        is shorter repeats its last batch, uncounted, until every process has made as many."""
        mine = _len_or_none(loader) or 0
        most = int(distributed.all_reduce_max(torch.tensor(mine, device=self.device)))
        if most > mine == 0:
            raise LabError(
                "--fsdp: this process has no evaluation data while another has some; "
                "use fewer processes or a larger split"
            )
        return most

    def unshard(self, plain: nn.Module) -> None:
        """After a sharded fit: ``plain`` (``fsdp.skeleton``) becomes the module, holding the whole
        weights on every process, so a report or figure can run on one process (a collective)."""
        if self.sharded:
            self.module = self.wrapped = fsdp.unsharded(self.module, plain)
            self.sharded = False

    # ---------------------------------------------------------------- state
    def _step_budget_spent(self) -> bool:
        return bool(self.max_steps) and self.global_step >= self.max_steps

    def record_epoch(self, logs: dict) -> None:
        """Append an epoch's logs to the history; ``improved`` says whether its monitored metric
        beat the best so far (then ``best`` is updated)."""
        value = logs.get(self.monitor)
        best = self.best["value"]
        self.improved = (
            value is not None
            and not (isinstance(value, float) and math.isnan(value))
            and (best is None or (value < best if self.mode == "min" else value > best))
        )
        if self.improved:
            self.best = {"metric": self.monitor, "value": float(value), "epoch": logs["epoch"]}
        self.history.append(logs)

    def adopt_history(self, history: list[dict], steps_per_epoch: int) -> None:
        """Take over the per-epoch logs of a loop that trained ``module`` by hand (``--loop
        manual``), so the run's bookkeeping (best epoch, steps) is the core loop's."""
        self.history = []
        for logs in history:
            self.record_epoch(logs)
        self.epoch, self.global_step = len(history), len(history) * steps_per_epoch

    def state_dict(self, gather: bool = True) -> dict:
        """Everything needed to continue exactly: weights, optimizer, schedule, scaler, RNGs, data
        order. ``gather=False`` skips the collective that collects every rank's RNG state, for a
        caller that runs on rank 0 alone (an end-of-run report)."""
        rng = get_rng_state()
        if self.sharded and not gather:
            raise ValueError(
                "a sharded (FSDP) model's state is gathered from every process: call state_dict on"
                " each"
            )
        state = {
            # Sharded (FSDP): the whole state, gathered on rank 0 as a plain model's (a collective).
            "model": (
                fsdp.full_model_state(self.module) if self.sharded else self.module.state_dict()
            ),
            "optimizer": (
                fsdp.full_optimizer_state(self.module, self.optimizer)
                if self.sharded
                else self.optimizer.state_dict()
            ),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.precision.scaler.state_dict() if self.precision.uses_scaler else None,
            "precision": self.precision.name,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "best": dict(self.best),
            "skipped_steps": self.skipped_steps,
            "rng": rng,
            # Each process draws its own dropout masks: under torchrun every rank's RNG state is
            # kept (a collective: every process calls state_dict), for an exact resume.
            "rng_per_rank": (
                distributed.gather_objects(rng) if self.dist.enabled and gather else None
            ),
            "data": (
                self.train_loader.state_dict() if hasattr(self.train_loader, "state_dict") else None
            ),
            "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks},
            "history": list(self.history),
        }
        return state

    def load_state_dict(self, state: dict, source: str = "checkpoint") -> None:
        from .checkpoint import check_model_state, load_model_state, strip_prefix

        if self.sharded:
            check_model_state(self.module, state["model"], source)
        else:
            load_model_state(self.module, state["model"], source)
        try:
            if self.sharded:  # each process keeps its slice of the whole state
                fsdp.load_full_state(
                    self.module, self.optimizer, strip_prefix(state["model"]), state["optimizer"]
                )
            else:
                self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state.get("scheduler") is not None:
                self.scheduler.load_state_dict(state["scheduler"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise LabError(
                f"{source}: optimizer or scheduler state does not fit this run ({exc})"
            ) from exc
        if self.precision.uses_scaler and state.get("scaler"):
            self.precision.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]
        self.batch_in_epoch = state.get("batch_in_epoch", 0)
        self.global_step = state["global_step"]
        self.best = dict(state["best"])
        self.skipped.fill_(state.get("skipped_steps", 0))
        self.history = list(state.get("history", []))
        if self.batch_in_epoch and self.history and self.history[-1]["epoch"] == self.epoch + 1:
            self.history.pop()  # a partial epoch (max_steps): logged again, whole, when it finishes
        if state.get("data") is not None and hasattr(self.train_loader, "load_state_dict"):
            self.train_loader.load_state_dict(state["data"])
        for cb in self.callbacks:
            cb_state = state.get("callbacks", {}).get(type(cb).__name__)
            if cb_state:
                cb.load_state_dict(cb_state)
        per_rank = state.get("rng_per_rank")
        same_world = per_rank is not None and len(per_rank) == self.dist.world
        set_rng_state(per_rank[self.dist.rank] if same_world else state["rng"])

    def _emit(self, event: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)


def set_epoch(loader, epoch: int) -> None:
    """Let the loader (or its sampler) derive this epoch's order from (seed, epoch)."""
    for obj in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if obj is not None and hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)
            return


def step_groups(loader, start: int, size: int):
    """The epoch's batches from batch ``start`` on, in lists of ``size`` (one optimizer step's
    micro-batches), aligned to the epoch's own count: a step never spans two epochs, and the
    epoch's last step takes what is left."""
    if start == 0:
        batches = iter(loader)
    elif hasattr(loader, "iter_from"):
        batches = loader.iter_from(start)  # skips without loading the skipped batches
    else:
        batches = itertools.islice(iter(loader), start, None)
    if size == 1:  # no accumulation: each batch is a step
        yield from ([batch] for batch in batches)
        return
    group = size - start % size
    while chunk := list(itertools.islice(batches, group)):
        yield chunk
        group = size


def _len_or_none(loader) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None
