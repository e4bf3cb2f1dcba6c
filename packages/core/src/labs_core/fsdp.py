"""Fully sharded data parallelism (``--fsdp``): PyTorch's FSDP2 (``fully_shard``) under torchrun.

Under DDP every process holds the whole model, its gradients and its optimizer state; under FSDP
each holds a 1/world slice of each, and gathers a unit's full parameters only while that unit runs
(forward and backward), freeing them after. The units are the model's blocks (``shard``), then the
root, which keeps whatever is left (a stem, a head, tied weights).

Checkpoints stay in the one format every run writes: full (unsharded) state dicts, keyed as a plain
model's (``full_model_state``, ``full_optimizer_state``), so a checkpoint written by N sharded
processes resumes in one plain process, under DDP, or sharded over M processes, and the other way
round. Loading hands each process its slice of the full tensors (``load_full_state``).
"""

from __future__ import annotations

import copy
import sys
from collections import Counter
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

# torch.distributed.fsdp and .checkpoint are imported where they are used: importing them costs
# about 3 s of CPU, which every process that never shards (a notebook's kernel, a plain run) would
# otherwise pay at start-up, since the trainer imports this module.

# Containers that are never called themselves: their members are (a ModuleList of blocks).
_CONTAINERS = (nn.ModuleList, nn.ModuleDict)


def is_sharded(model: nn.Module) -> bool:
    fsdp = sys.modules.get("torch.distributed.fsdp")  # not imported yet: nothing can be sharded
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


def _state_dict_api():
    from torch.distributed.checkpoint import state_dict

    return state_dict


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules sharded as units of their own: the root's children that hold parameters (the
    members of a ModuleList/ModuleDict child, which is never called itself, in its place). A module
    sharing a parameter with the rest of the model (a head tied to the embedding) stays in the
    root's unit, since FSDP needs a shared parameter in one unit."""
    candidates: list[nn.Module] = []
    for child in model.children():
        members = child.children() if isinstance(child, _CONTAINERS) else [child]
        candidates += [m for m in members if any(True for _ in m.parameters())]
    total = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))

    def self_contained(unit: nn.Module) -> bool:  # no parameter of it is used anywhere else
        inner = Counter(id(p) for _, p in unit.named_parameters(remove_duplicate=False))
        return all(inner[k] == total[k] for k in inner)

    return [m for m in candidates if self_contained(m)]


def shard(model: nn.Module) -> nn.Module:
    """Shard ``model`` in place over the process group: each unit, then the root. Build the
    optimizer after this (its parameters are now the sharded ones).

    FSDP shards a parameter by rows of its contiguous storage, so a channels-last weight
    (``--channels-last``) is made contiguous first; the activations stay channels-last (a conv's
    output follows its input's memory format), and the values, hence the training, are the same."""
    from torch.distributed.fsdp import fully_shard

    with torch.no_grad():
        for param in model.parameters():
            if not param.is_contiguous():
                param.data = param.data.contiguous()
    for unit in shard_units(model):
        fully_shard(unit)
    fully_shard(model)
    return model


def skeleton(model: nn.Module) -> nn.Module:
    """A storage-free copy of the unsharded model (on the meta device), to hold the full weights
    again after training (``unsharded``)."""
    return copy.deepcopy(model).to_empty(device="meta")


def _full():
    """Whole tensors, on rank 0's CPU only."""
    return _state_dict_api().StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: nn.Module) -> dict:
    """The whole model's state dict on rank 0 (empty elsewhere), as a plain model's: a
    collective."""
    return _state_dict_api().get_model_state_dict(model, options=_full())


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's whole state on rank 0 (empty elsewhere) in ``optimizer.state_dict()``'s own
    format (parameters numbered in group order), so it loads into an unsharded run: a collective."""
    state = _state_dict_api().get_optimizer_state_dict(model, optimizer, options=_full())
    if not state:
        return {}
    order = [name for group in state["param_groups"] for name in group["params"]]
    index = {name: i for i, name in enumerate(order)}
    groups, start = [], 0
    for group in state["param_groups"]:
        n = len(group["params"])
        groups.append({**group, "params": list(range(start, start + n))})
        start += n
    return {"state": {index[name]: s for name, s in state["state"].items()}, "param_groups": groups}


def load_full_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    model_state: dict,
    optimizer_state: dict | None,
) -> None:
    """Load full (unsharded) state dicts, as every run writes them, into a sharded model and its
    optimizer: each process keeps its own slice. Every process passes the whole state."""
    api = _state_dict_api()
    options = api.StateDictOptions(full_state_dict=True)
    api.set_model_state_dict(model, model_state, options=options)
    if optimizer is not None and optimizer_state is not None:
        names = {id(p): n for n, p in model.named_parameters()}
        order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
        if len(order) != sum(len(g["params"]) for g in optimizer_state["param_groups"]):
            raise ValueError(
                "the optimizer state holds another number of parameters than this run's optimizer"
            )
        state = {order[i]: s for i, s in optimizer_state["state"].items()}
        groups = [
            {**g, "params": [order[i] for i in g["params"]]}
            for g in optimizer_state["param_groups"]
        ]
        api.set_optimizer_state_dict(
            model, optimizer, {"state": state, "param_groups": groups}, options=options
        )


def unsharded(model: nn.Module, plain: nn.Module) -> nn.Module:
    """``plain`` (a ``skeleton``) holding ``model``'s whole weights, on every process, on the device
    the sharded model trained on: for what follows training in one process (reports, figures)."""
    api = _state_dict_api()
    state = api.get_model_state_dict(model, options=api.StateDictOptions(full_state_dict=True))
    device = next((t.device for t in state.values()), torch.device("cpu"))
    plain = plain.to_empty(device=device)
    plain.load_state_dict(state)
    return plain.train(model.training)


def full_norm(norm: torch.Tensor) -> torch.Tensor:
    """A gradient norm over sharded gradients is a partial DTensor: its whole value (a
    collective)."""
    tensor = sys.modules.get("torch.distributed.tensor")  # not imported yet: no DTensor exists
    return norm.full_tensor() if tensor is not None and isinstance(norm, tensor.DTensor) else norm


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (batch-norm statistics) to every process, before a training forward: what
    DDP does, so both keep the same statistics (FSDP shards parameters, not buffers, and leaves them
    be).
    """
    for buffer in model.buffers():
        dist.broadcast(buffer, 0)


@contextmanager
def no_grad_sync(model: nn.Module):
    """FSDP's ``no_sync``: gradients of this micro-batch stay unreduced, accumulated locally."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
