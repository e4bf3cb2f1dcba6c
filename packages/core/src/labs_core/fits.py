"""Will one training step fit in memory? Asked before the run directory exists.

What a step adds to what is already allocated (the model and, with the fast loader, the data):

    gradients               one per trainable parameter (its size)
    optimizer state         Adam and AdamW keep two moments per parameter, SGD with momentum one
    activations             what autograd saves for the backward pass of one batch: counted with
                            ``saved_tensors_hooks`` on a forward of two samples, scaled to the
                            batch, so frozen layers and recomputed segments (gradient
                            checkpointing) count as little as they really keep

``check_step_fits`` refuses, in one line and exit code 2, a run whose step needs more than the
device can give: CUDA's free memory, or on the CPU the machine's memory not in use by this process
(``MemTotal`` less the resident set) and the address-space limit (``RLIMIT_AS``) left, whichever
is smaller. It is a lower bound of the step's need (temporaries of the backward pass come on top),
so nothing that could run is refused. The probe runs in eval mode with the random state restored,
so the run that follows is the same as without it.
"""

from __future__ import annotations

import re
import resource
from pathlib import Path

import torch
from torch import nn

from .errors import LabError
from .faults import format_bytes
from .seed import get_rng_state, set_rng_state

STATE_PER_PARAM = {"adam": 2, "adamw": 2, "sgd": 1}


PROBE = 2  # samples in the probe forward (two: batch norm needs more than one value per channel)


def _head(batch, n: int):
    """The first ``n`` samples of a batch (tensors, lists and dicts of them)."""
    if isinstance(batch, (torch.Tensor, list)):
        return batch[:n]
    if isinstance(batch, tuple):
        return tuple(_head(b, n) for b in batch)
    if isinstance(batch, dict):
        return {k: _head(v, n) for k, v in batch.items()}
    return batch


def _batch_len(batch) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else next(iter(batch.values()))
    return len(first)


def activation_bytes(model: nn.Module, forward_fn, batch) -> int | None:
    """Bytes autograd saves for the backward pass of ``forward_fn(model, batch)``, plus its
    outputs: measured on a forward of the batch's first ``PROBE`` samples (in eval mode, so batch
    norm's running statistics and the random state stay untouched) and scaled to the whole batch.
    None when the probe cannot run."""
    n = _batch_len(batch)
    probe = _head(batch, min(PROBE, n))
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def count(t) -> None:  # each storage once, as much of it as its tensors span (a probe's
        ptr = t.untyped_storage().data_ptr()  # slice of the batch is a view of the whole batch)
        if ptr not in weights:
            saved[ptr] = max(saved.get(ptr, 0), t.nelement() * t.element_size())

    def pack(t):
        count(t)
        return t

    was_training = model.training
    model.eval()
    rng = get_rng_state()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.enable_grad():
            out = forward_fn(model, probe)
            outputs = (
                out
                if isinstance(out, (list, tuple))
                else list(out.values())
                if isinstance(out, dict)
                else [out]
            )
            for o in outputs:
                if isinstance(o, torch.Tensor):
                    count(o)
            del out, outputs
    except LabError:
        raise
    except Exception as exc:  # an allocation failure is the answer; anything else: no estimate
        from .faults import is_out_of_memory

        if is_out_of_memory(exc):
            raise
        return None
    finally:
        model.train(was_training)
        set_rng_state(rng)
    return sum(saved.values()) * n // min(PROBE, n)


def step_bytes(
    model: nn.Module, forward_fn, batch, optimizer: str, momentum: float = 0.0, half: bool = False
) -> dict | None:
    """What one training step allocates beyond the model: ``{"gradients", "optimizer",
    "activations", "total"}`` in bytes; None when the activations cannot be measured."""
    acts = activation_bytes(model, forward_fn, batch)
    if acts is None:
        return None
    if half:  # autocast keeps most activations in 16 bits
        acts //= 2
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    per = STATE_PER_PARAM.get(optimizer, 2) if optimizer != "sgd" or momentum else 0
    parts = {"gradients": trainable, "optimizer": per * trainable, "activations": acts}
    return {**parts, "total": sum(parts.values())}


def _proc_kib(field: str, path: str = "/proc/self/status") -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", Path(path).read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def headroom(device: torch.device) -> tuple[int, str] | None:
    """Bytes this process could still allocate on ``device``, and what bounds it; None if
    unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free on {device}"
    if device.type != "cpu":
        return None
    limits = []
    total, rss = _proc_kib("MemTotal", "/proc/meminfo"), _proc_kib("VmRSS")
    if total is not None and rss is not None:
        limits.append((total - rss, "of the machine's memory"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    size = _proc_kib("VmSize")
    if soft != resource.RLIM_INFINITY and size is not None:
        limits.append((max(0, soft - size), "under this process's address-space limit (ulimit -v)"))
    return min(limits) if limits else None


def first_batch(loader):
    """The loader's first batch, drawn without disturbing anything: only loaders that draw from
    ``(seed, epoch)`` with the data in memory (the fast path); None for a streaming loader."""
    from .data.loader import EpochLoader

    if not isinstance(loader, EpochLoader):
        return None
    rng = get_rng_state()
    try:
        return next(iter(loader), None)
    finally:
        set_rng_state(rng)


def check_step_fits(run, plan) -> dict | None:
    """Refuse, before anything is written, a run whose training step cannot fit on its device
    (see the module docstring). Returns the estimate (None when it could not be made). Under
    torchrun it is not made: every process would have to refuse together; nor for
    ``--find-batch-size``, which tries sizes of its own from 2 up."""
    if run.dist.enabled or getattr(run.cfg, "find_batch_size", False):
        return None
    batch = first_batch(plan.train_loader)
    room = headroom(run.device)
    if batch is None or room is None:
        return None
    cfg = run.cfg
    need = step_bytes(
        plan.model,
        plan.forward_fn,
        batch,
        getattr(cfg, "optimizer", "adam"),
        getattr(cfg, "momentum", 0.0),
        getattr(cfg, "precision", "fp32") != "fp32",
    )
    if need is None:
        return None
    if need["total"] > room[0]:
        size = len(batch[0]) if isinstance(batch, (list, tuple)) else "?"
        raise LabError(
            f"one training step needs about {format_bytes(need['total'])} more memory (activations "
            f"of a batch of {size}: {format_bytes(need['activations'])}, gradients and optimizer "
            f"state: {format_bytes(need['gradients'] + need['optimizer'])}), more than the "
            f"{format_bytes(room[0])} left {room[1]}; use a smaller --batch-size or model"
        )
    return need
