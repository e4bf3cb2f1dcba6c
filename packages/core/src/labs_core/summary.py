"""Model summary: per-layer output shapes and parameter counts, gathered with forward hooks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LayerRow:
    name: str  # qualified module name, e.g. "features.0"
    kind: str  # class name, e.g. "Conv2d"
    module: nn.Module
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int  # parameters owned directly by this module (not its children)
    trainable: int


def model_summary(
    model: nn.Module, example_input: torch.Tensor, leaves_only: bool = True
) -> list[LayerRow]:
    """Run ``example_input`` through ``model`` once and record every (leaf) module it touches, in
    call order."""
    rows: list[LayerRow] = []
    handles = []

    def shape_of(x):
        if isinstance(x, torch.Tensor):
            return tuple(x.shape)
        if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
            return tuple(x[0].shape)
        return ()

    def hook(name):
        def fn(module, inputs, output):
            own = list(module.parameters(recurse=False))
            rows.append(
                LayerRow(
                    name=name,
                    kind=type(module).__name__,
                    module=module,
                    input_shape=shape_of(inputs),
                    output_shape=shape_of(output),
                    params=sum(p.numel() for p in own),
                    trainable=sum(p.numel() for p in own if p.requires_grad),
                )
            )

        return fn

    for name, module in model.named_modules():
        if module is model:
            continue
        if leaves_only and any(True for _ in module.children()):
            continue
        handles.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return rows


def format_summary(
    rows: list[LayerRow], model: nn.Module, extra: dict[str, str] | None = None
) -> str:
    """A text table; ``extra`` maps a layer name to a note shown in the last column."""
    extra = extra or {}
    header = ("layer", "type", "input", "output", "params", "")
    body = [
        (
            r.name,
            r.kind,
            "x".join(map(str, r.input_shape)),
            "x".join(map(str, r.output_shape)),
            f"{r.params:,}",
            extra.get(r.name, ""),
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]

    def fmt(line) -> str:
        return "  ".join(
            str(c).ljust(w) if i < 4 else str(c).rjust(w) if i == 4 else str(c)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()

    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines = [fmt(header), "-" * (sum(widths) + 2 * len(widths)), *map(fmt, body)]
    lines.append(f"total parameters: {total:,} ({trainable:,} trainable)")
    return "\n".join(lines)
