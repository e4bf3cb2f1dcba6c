"""The project's models. Each exposes ``stages`` (input to output, for gradual unfreezing) and
``head`` (the classifier, replaced when fine-tuning), and adapts to the input's channels.

- ``cnn``: a custom CNN — three conv blocks (conv, batch norm, ReLU, conv, batch norm, ReLU,
  max-pool, dropout) and a linear head.
- ``resnet``: a small ResNet for 32x32 images (3 stages of 2 basic blocks, 32/64/128 channels).
- ``fast``: a VGG-like net in the spirit of the CIFAR-10 speed records (conv-BN-GELU blocks with
  max-pooling, no residuals, a scaled linear head), meant for channels-last + autocast on a GPU.
- ``torchvision:NAME``: any torchvision classification model, its head replaced (for fine-tuning from
  published weights; see ``backbones``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from labs_core import LabError

MODELS = ("cnn", "resnet", "fast")


def conv_bn(c_in: int, c_out: int, act: type[nn.Module] = nn.ReLU) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), act()]


class StagedNet(nn.Module):
    """``stages`` (input to output) then ``head``: the shape every model here shares."""

    stages: nn.ModuleList
    head: nn.Module

    def features(self, x: Tensor) -> Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def stage_parameters(self) -> list[list[nn.Parameter]]:
        return [list(stage.parameters()) for stage in self.stages]


class CustomCNN(StagedNet):
    def __init__(self, in_channels: int, num_classes: int, width: int = 32, dropout: float = 0.25):
        super().__init__()
        w = [width, 2 * width, 4 * width]
        c = in_channels
        stages = []
        for out in w:
            stages.append(nn.Sequential(*conv_bn(c, out), *conv_bn(out, out), nn.MaxPool2d(2), nn.Dropout(dropout)))
            c = out
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, num_classes))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut: out = relu(x' + F(x)); x' is x, or a 1x1 projection when the
    shape changes (stride 2 or more channels)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(StagedNet):
    def __init__(self, in_channels: int, num_classes: int, width: int = 32, blocks: int = 2):
        super().__init__()
        w = [width, 2 * width, 4 * width]
        stem = nn.Sequential(*conv_bn(in_channels, w[0]))
        stages = [stem]
        c = w[0]
        for i, out in enumerate(w):
            layers = [BasicBlock(c, out, 1 if i == 0 else 2)] + [BasicBlock(out, out) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            c = out
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


class FastNet(StagedNet):
    """conv(64) -> [conv, pool, BN, GELU, conv, BN, GELU] x 3 (widths 4w, 4w, 4w) -> global max-pool
    -> linear, scaled by 1/9 (a small head scale keeps early logits calm with a high learning rate)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 64):
        super().__init__()
        widths = [width, 4 * width, 4 * width, 4 * width]
        stages = [nn.Sequential(*conv_bn(in_channels, widths[0], nn.GELU))]
        c = widths[0]
        for out in widths[1:]:
            stages.append(nn.Sequential(
                nn.Conv2d(c, out, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(out), nn.GELU(),
                *conv_bn(out, out, nn.GELU)))
            c = out
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c, num_classes, bias=False),
                                  Scale(1 / 9))


def build_model(name: str, in_shape: tuple[int, ...], num_classes: int, width: int = 0) -> nn.Module:
    c = in_shape[0]
    if name == "cnn":
        return CustomCNN(c, num_classes, width or 32)
    if name == "resnet":
        return ResNet(c, num_classes, width or 32)
    if name == "fast":
        return FastNet(c, num_classes, width or 64)
    if name.startswith("torchvision:"):
        from .backbones import TorchvisionNet

        return TorchvisionNet(name.split(":", 1)[1], num_classes)
    raise LabError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def replace_head(model: nn.Module, num_classes: int) -> None:
    """A fresh classifier for ``num_classes``, keeping the head's pooling (fine-tuning)."""
    old = model.head
    linear_idx = max(i for i, m in enumerate(old) if isinstance(m, nn.Linear))
    lin = old[linear_idx]
    old[linear_idx] = nn.Linear(lin.in_features, num_classes, bias=lin.bias is not None)
