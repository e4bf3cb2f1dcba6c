"""An MLP of any shape, built from the scratch layers or from ``torch.nn``'s — the same network."""

from __future__ import annotations

import math

from torch import Tensor, nn

from . import ops

ACTIVATIONS = ("relu", "tanh", "gelu")


class MLP(nn.Module):
    """Flatten -> [Linear -> (BatchNorm) -> activation -> (Dropout)] per hidden size -> Linear.

    ``layers="scratch"`` uses ``ops.Linear`` / ``ops.BatchNorm1d`` / ``ops.Dropout`` (and the
    hand-written ReLU); ``layers="torch"`` uses ``nn``'s. Parameter names and init are identical,
    so a state dict moves between the two and the same seed gives the same weights.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        hidden: list[int] | tuple[int, ...] = (128,),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        layers: str = "scratch",
    ):
        super().__init__()
        if layers not in ("scratch", "torch"):
            raise ValueError("layers must be 'scratch' or 'torch'")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}")
        scratch = layers == "scratch"
        linear = ops.Linear if scratch else nn.Linear
        norm = ops.BatchNorm1d if scratch else nn.BatchNorm1d
        drop = ops.Dropout if scratch else nn.Dropout
        act = {"relu": ops.ReLU if scratch else nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}[
            activation
        ]

        blocks: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for h in hidden:
            blocks.append(linear(width, h))
            if batch_norm:
                blocks.append(norm(h))
            blocks.append(act())
            if dropout > 0:
                blocks.append(drop(dropout))
            width = h
        blocks.append(linear(width, num_classes))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:  # x (N, ...) -> logits (N, classes)
        return self.net(x)
