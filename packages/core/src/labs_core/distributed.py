"""Data-parallel training under ``torchrun``: process group, ranks, and collective helpers.

torchrun starts one process per device and sets RANK, WORLD_SIZE and LOCAL_RANK; the trainer then
wraps the model in DistributedDataParallel (gradients averaged across processes during backward),
each process reads its own slice of every epoch's data, metrics are averaged across processes,
and only rank 0 prints, logs and writes files. Without those variables everything here is a no-op.
"""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import LabError


class DistributedError(LabError):
    """Another process failed or stopped answering: the run stops instead of hanging."""

    exit_code = 1


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """What torchrun's environment says (rank 0 of 1 when not launched by torchrun)."""
    return DistInfo(
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
        )
    return DistInfo()


def init(device: torch.device, timeout_s: float = 300.0) -> tuple[DistInfo, torch.device]:
    """Join the process group if torchrun launched us: NCCL on CUDA (one GPU per process), else
    gloo.

    ``timeout_s`` bounds every collective: a process whose peer died stops with a clear error after
    at most that long instead of waiting forever. (A process group that already exists keeps its
    own.)

    The group is left at exit whatever the way out (``atexit``): a process that ends on an exception
    without ``destroy_process_group`` can abort with SIGABRT during the interpreter's finalisation,
    when gloo's worker threads still hold a collective's tensors (a timed-out one, say) and free
    them after Python is gone; the abort then hides the error that ended the process.
    """
    info = env_info()
    if not info.enabled:
        return info, device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            timeout=datetime.timedelta(seconds=timeout_s),
            **({"device_id": device} if device.type == "cuda" else {}),
        )
        atexit.register(shutdown)  # a no-op when cli.Guard (or the caller) already left the group
    return info, device


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if current().enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if current().enabled:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order (on every rank)."""
    info = current()
    if not info.enabled:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def explain(exc: Exception, timeout_s: float | None = None) -> DistributedError:
    """A failed collective, as one line naming this rank."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    limit = f" within {timeout_s:.0f} s" if timeout_s else ""
    return DistributedError(
        f"rank {current().rank}: another process failed or did not answer{limit}; "
        f"stopping ({first})"
    )
