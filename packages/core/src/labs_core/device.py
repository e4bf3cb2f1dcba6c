"""Device choice and precision policies (fp32, bf16 autocast, fp16 autocast with a grad scaler)."""

from __future__ import annotations

import contextlib

import torch

from .errors import LabError

PRECISIONS = ("fp32", "bf16", "fp16")


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; a name picks that device or explains why not."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise LabError(
            f"--device {name!r} is not a device name (use auto, cpu, cuda, cuda:N or mps)"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LabError(f"--device {name}: CUDA is not available on this machine (try --device cpu)")
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise LabError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LabError(f"--device {name}: MPS is not available on this machine (try --device cpu)")
    return device


class Precision:
    """A precision policy: the autocast context for forward passes and the gradient scaler.

    - ``fp32``: no autocast, no scaler.
    - ``bf16``: autocast to bfloat16 (CPU and CUDA); bf16 has fp32's range, so no scaler.
    - ``fp16``: autocast to float16 with a ``GradScaler``, since fp16 gradients underflow.
      Meant for CUDA; on CPU it runs too (slowly), which lets tests exercise the scaler.
    The loss itself is always computed in fp32 (the trainer casts outputs before the loss).
    """

    def __init__(self, name: str, device: torch.device):
        if name not in PRECISIONS:
            raise LabError(f"--precision {name!r} is not one of {', '.join(PRECISIONS)}")
        if name != "fp32" and device.type == "mps":
            raise LabError(f"--precision {name} is not supported on mps here; use fp32")
        self.name = name
        self.device = device
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
        self.scaler = torch.amp.GradScaler(device.type, enabled=(name == "fp16"))

    def autocast(self):
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @property
    def uses_scaler(self) -> bool:
        return self.scaler.is_enabled()

    def scaled_step(self, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """fp16's ``optimizer.step()``: the scaler skips it when the gradients hold inf/nan, then
        adapts its scale. Returns 1 (on the device, no host sync) when the step was skipped."""
        before = self.scaler._scale.clone()  # the scale tensor (get_scale() would sync)
        self.scaler.step(optimizer)
        self.scaler.update()
        return (self.scaler._scale < before).long().reshape(())


def compile_unavailable() -> str | None:
    """Why ``torch.compile`` cannot run here, in one line, or None when it can. Its default backend
    (inductor) writes C++ for CPU code, so it needs a C++ compiler: ``$CXX``, or g++/c++/clang++."""
    import os
    import shutil

    if not torch._dynamo.is_dynamo_supported():
        return "--compile: torch.compile is not supported on this Python or platform"
    wanted = os.environ.get("CXX")
    if wanted:
        if shutil.which(wanted) is None:
            return (
                "--compile needs a C++ compiler for torch.compile's CPU code; $CXX names"
                f" {wanted!r}, not found"
            )
        return None
    if not any(shutil.which(name) for name in ("g++", "c++", "clang++")):
        return (
            "--compile needs a C++ compiler for torch.compile's CPU code (none found: install g++"
            " or clang++, or set $CXX)"
        )
    return None
