"""A small CNN that adapts to the dataset's image shape and channels."""

from __future__ import annotations

import math

from torch import Tensor, nn

from . import ops


def conv_layer(kind: str, c_in: int, c_out: int) -> nn.Module:
    if kind == "scratch":
        return ops.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)


class CNN(nn.Module):
    """[conv3x3 -> batch norm -> ReLU -> (max-pool 2)] per width -> head -> dropout -> linear.

    A block pools only while the feature map stays at least 2x2 after pooling, so 8x8 digits,
    28x28 MNIST and 32x32 CIFAR images all fit. The conv has no bias: batch norm's shift does its
    job. ``conv="scratch"`` uses ``ops.Conv2d`` (unfold + matmul) in place of ``nn.Conv2d``.
    ``head="avg"`` averages each channel over the image (position-invariant, few parameters);
    ``head="flatten"`` keeps where things are (better for centred digits, as in the fast recipe).
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int,
        widths=(32, 64, 128),
        dropout: float = 0.25,
        conv: str = "scratch",
        head: str = "avg",
    ):
        super().__init__()
        c, h, w = in_shape
        layers: list[nn.Module] = []
        size, pools = min(h, w), 0
        for width in widths:
            layers += [conv_layer(conv, c, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            if size // 2 >= 2:
                layers.append(nn.MaxPool2d(2))
                size, pools = size // 2, pools + 1
            c = width
        self.features = nn.Sequential(*layers)
        if head == "avg":
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Dropout(dropout),
                nn.Linear(c, num_classes),
            )
        elif head == "flatten":
            fh, fw = h // 2**pools, w // 2**pools  # each max-pool floors the side by half
            self.head = nn.Sequential(
                nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * fh * fw, num_classes)
            )
        else:
            raise ValueError("head must be 'avg' or 'flatten'")

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, classes)
        return self.head(self.features(x))


class LogisticRegression(nn.Module):
    """The baseline: one linear layer on the raw pixels."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ReferenceNet(nn.Module):
    """The classic PyTorch MNIST example's network (two 3x3 convs of 32 and 64 channels, max-pool,
    dropout 0.25 and 0.5, fc 128): the baseline of benchmarks/mnist_time_to_accuracy.py."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
            nn.Flatten(),
            nn.Linear(9216, 128),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
