"""Seeding and determinism: one call seeds every random number generator a run touches."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and every CUDA device); optionally force determinism.

    Returns a ``torch.Generator`` seeded with ``seed`` for data order (samplers, permutations), so
    that the data order does not depend on how many random numbers the model consumed.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    set_deterministic(deterministic)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def set_deterministic(on: bool) -> None:
    """Turn torch's deterministic algorithms and the cuDNN flags on or off."""
    if on:
        # cuBLAS needs a fixed workspace to be deterministic; must be set before the first matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if on or torch.are_deterministic_algorithms_enabled():  # turning it off when already off
        torch.use_deterministic_algorithms(
            on, warn_only=False
        )  # costs seconds (imports the compiler)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=seed_worker)``: derive NumPy and Python seeds from torch's.

    torch already gives each worker ``base_seed + worker_id``; NumPy and ``random`` would otherwise
    start identical in every worker (the classic duplicated-augmentation bug).
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def get_rng_state() -> dict:
    """Every RNG state as tensors and primitives, so a checkpoint loads with
    ``weights_only=True``."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": _to_lists(random.getstate()),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``get_rng_state`` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].cpu().numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(
        state["torch"].cpu()
    )  # a checkpoint loaded with map_location="cuda" moves it
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _to_lists(obj):
    if isinstance(obj, tuple):
        return [_to_lists(x) for x in obj]
    return obj
