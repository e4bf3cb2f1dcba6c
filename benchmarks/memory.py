"""Peak training-step memory and step time with and without activation checkpointing
(``--grad-checkpoint``), and eager vs ``torch.compile`` step time for each lab's model
(``--compile``).

    uv run python benchmarks/memory.py [--part memory|compile|all] [--steps 5] [--threads 1]
        [--only lab3]

Memory, on CUDA: ``torch.cuda.max_memory_allocated`` over one training step (forward, loss,
backward) minus what was allocated before it (weights, optimizer state). On a CPU, where torch
keeps no allocator statistics, the same quantity is counted by ``LiveBytes``: a dispatch mode sees
every tensor each operator creates (forward and backward), a finalizer sees its storage freed, and
the peak of the bytes alive at once is the figure. Both count activations, gradients and
temporaries; only the activations differ between the two settings.

Step time: the median of ``--steps`` timed steps (forward, loss, backward, optimizer step) after
warm-up steps (for ``torch.compile``, the first call compiles; its time is reported apart).
"""

from __future__ import annotations

import argparse
import sys
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, median_ms  # noqa: E402


class LiveBytes(TorchDispatchMode):
    """Bytes of tensor storage created inside the mode and still alive, and their peak (CPU or any
    device: it counts what operators return, not what an allocator reserves)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.alive: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key, size = storage.data_ptr(), storage.nbytes()
                if size and key not in self.alive:  # views and in-place results share a storage
                    self.alive.add(key)
                    self.live += size
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._freed, key, size)
        return out

    def _freed(self, key: int, size: int) -> None:
        self.alive.discard(key)
        self.live -= size


def step_peak_mib(step, device: torch.device) -> float:
    """Peak memory of one call of ``step`` above what was allocated before it, in MiB."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    tracker = LiveBytes()
    with tracker:
        step()
    return tracker.peak / 2**20


# ------------------------------------------------------------- the models, as each lab builds them
def classifier(model, shape, classes, batch):
    return (
        model,
        (torch.randn(batch, *shape), torch.randint(0, classes, (batch,))),
        lambda out, target: F.cross_entropy(out, target),
    )


def checkpoint_project(name):
    def build(batch, grad_checkpoint=False):
        from checkpoint_project.models import build_model, enable_grad_checkpoint

        model = build_model(name, (3, 32, 32), 10)
        if grad_checkpoint:
            enable_grad_checkpoint(model, name)
        return classifier(model, (3, 32, 32), 10, batch)

    return build


def char_lm(batch, grad_checkpoint=False):
    """lab3 --task chars with its recipe's model: 65 symbols, windows of 64, dim 96, 4 heads, 3
    blocks."""
    from lab3_transformer.cli import CHARS_RECIPE
    from lab3_transformer.model import TinyTransformer, TransformerConfig

    r = CHARS_RECIPE
    model = TinyTransformer(
        TransformerConfig(
            65,
            64,
            r["dim"],
            r["heads"],
            r["layers"],
            positions=r["positions"],
            attention=r["attention"],
            tie_weights=True,
        )
    )
    model.grad_checkpoint = grad_checkpoint
    x = torch.randint(0, 65, (batch, 64))
    return (
        model,
        (x, torch.randint(0, 65, (batch, 64))),
        lambda out, target: F.cross_entropy(out.reshape(-1, 65), target.reshape(-1)),
    )


def lab0(batch):
    from lab0_mlp.cli import Lab0Config, build_model
    from labs_core.config import parse_config

    cfg = parse_config(Lab0Config, [], "lab0-mlp")  # its defaults, on digits (1x8x8, 10 classes)
    return classifier(
        build_model(cfg, SimpleNamespace(input_shape=(1, 8, 8), num_classes=10)),
        (1, 8, 8),
        10,
        batch,
    )


def lab1(batch):
    from lab1_conv.cli import Lab1Config, build_model
    from labs_core.config import parse_config

    cfg = parse_config(Lab1Config, [], "lab1-conv")  # its default CNN, on MNIST-sized images
    return classifier(
        build_model(cfg, SimpleNamespace(input_shape=(1, 28, 28), num_classes=10)),
        (1, 28, 28),
        10,
        batch,
    )


def lab5(batch):
    from lab5_detection.cli import Lab5Config, build_model
    from lab5_detection.data import make_detection_set
    from labs_core.config import parse_config

    model = build_model(
        parse_config(Lab5Config, [], "lab5-detection")
    )  # the anchor detector, 64 px
    images, targets = make_detection_set(batch, seed=0)
    return (
        model,
        (images.float() / 255, targets),
        lambda out, target: model.loss(out, target)["loss"],
    )


MEMORY_MODELS = {  # name -> (builder, batch sizes)
    "checkpoint-project resnet": (checkpoint_project("resnet"), (32, 128)),
    "checkpoint-project fast": (checkpoint_project("fast"), (32, 128)),
    "lab3 chars transformer": (char_lm, (16, 64)),
}
COMPILE_MODELS = {  # name -> (builder, the lab's batch size)
    "lab0 MLP (digits)": (lab0, 64),
    "lab1 CNN (28x28)": (lab1, 64),
    "lab3 chars transformer": (char_lm, 16),
    "lab5 anchor detector": (lab5, 32),
    "checkpoint-project resnet": (checkpoint_project("resnet"), 128),
    "checkpoint-project fast": (checkpoint_project("fast"), 128),
}


def training_step(model, train_model, batch, loss_fn, device):
    x, y = (t.to(device) for t in batch)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        loss_fn(train_model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def memory_table(device, steps: int, only: str = "") -> None:
    print(
        "\npeak step memory (MiB above weights and optimizer state) and step time (ms), "
        f"{'CUDA allocator' if device.type == 'cuda' else 'CPU: LiveBytes dispatch mode'}"
    )
    print(
        f"{'model':<28}{'batch':>6}{'plain MiB':>11}{'ckpt MiB':>10}{'memory':>8}"
        f"{'plain ms':>10}{'ckpt ms':>9}"
        f"{'time':>7}"
    )
    for name, (build, batches) in MEMORY_MODELS.items():
        if only not in name:
            continue
        for batch in batches:
            row = {}
            for checkpointed in (False, True):
                torch.manual_seed(0)
                model, data, loss_fn = build(batch, grad_checkpoint=checkpointed)
                step = training_step(model, model, data, loss_fn, device)
                step()  # the optimizer's state exists before anything is measured
                peak = step_peak_mib(step, device)
                row[checkpointed] = (peak, median_ms(step, steps, warmup=1))
            (pm, pt), (cm, ct) = row[False], row[True]
            print(
                f"{name:<28}{batch:>6}{pm:>11.1f}{cm:>10.1f}{cm / pm:>7.0%}"
                f"{pt:>10.1f}{ct:>9.1f}{ct / pt:>6.2f}x",
                flush=True,
            )


def compile_table(device, steps: int, only: str = "") -> None:
    print(
        "\neager vs torch.compile training step (ms; median after warm-up), and the time the first "
        "compiled steps took"
    )
    print(
        f"{'model':<28}{'batch':>6}{'eager ms':>10}{'compiled':>10}{'speed-up':>10}"
        f"{'compile s':>11}"
    )
    for name, (build, batch) in COMPILE_MODELS.items():
        if only not in name:
            continue
        torch.manual_seed(0)
        model, data, loss_fn = build(batch)
        eager = median_ms(training_step(model, model, data, loss_fn, device), steps, warmup=2)
        torch.manual_seed(0)
        model, data, loss_fn = build(batch)
        compiled = torch.compile(model)
        step = training_step(model, compiled, data, loss_fn, device)
        t0 = time.perf_counter()
        step()
        step()  # the first steps compile the forward and backward graphs
        if device.type == "cuda":
            torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
        fast = median_ms(step, steps, warmup=1)
        print(
            f"{name:<28}{batch:>6}{eager:>10.1f}{fast:>10.1f}{eager / fast:>9.2f}x"
            f"{compile_s:>11.1f}",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", default="all", choices=("memory", "compile", "all"))
    p.add_argument("--steps", type=int, default=5, help="timed steps per setting")
    p.add_argument(
        "--only", default="", help="only the models whose name contains this (e.g. lab3)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help=(
            "CPU threads (0: torch's default); 1 steadies the "
            "figures on a machine other processes share"
        ),
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"machine: {machine()}")
    if args.part in ("memory", "all"):
        memory_table(device, args.steps, args.only)
    if args.part in ("compile", "all"):
        from labs_core.device import compile_unavailable

        reason = compile_unavailable()
        if reason:
            print(f"\ntorch.compile comparison skipped: {reason}")
        else:
            compile_table(device, args.steps, args.only)


if __name__ == "__main__":
    main()
