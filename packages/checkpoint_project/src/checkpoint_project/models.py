"""The project's models. Each exposes ``stages`` (input to output, for gradual unfreezing) and
``head`` (the classifier, replaced when fine-tuning), and adapts to the input's channels.

- ``cnn``: a custom CNN — three conv blocks (conv, batch norm, ReLU, conv, batch norm, ReLU,
  max-pool, dropout) and a linear head.
- ``resnet``: a small ResNet for 32x32 images (3 stages of 2 basic blocks, 32/64/128 channels).
- ``fast``: a VGG-like net in the spirit of the CIFAR-10 speed records (conv-BN-GELU blocks with
  max-pooling, no residuals, a scaled linear head), meant for channels-last + autocast on a GPU.
- ``compact``: the CPU recipe's net (what ``train`` uses without a GPU): a fixed patch-whitening
  stem, then three conv blocks like ``fast``'s but 4x narrower where the images are large
  (widths w, 4w, 4w with w = 32), so a 2-core CPU runs an epoch of CIFAR-10 in well under a minute.
- ``torchvision:NAME``: any torchvision classification model, its head replaced (for fine-tuning
  from published weights; see ``backbones``).

``resnet`` and ``fast`` can train with activation checkpointing (``--grad-checkpoint``,
``enable_grad_checkpoint``): ResNet per residual block, FastNet per stage.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from labs_core import LabError
from labs_core.recompute import run_segments

MODELS = ("compact", "cnn", "resnet", "fast")
GRAD_CHECKPOINT_MODELS = ("resnet", "fast")  # the models that name their checkpoint segments


def conv_bn(c_in: int, c_out: int, act: type[nn.Module] = nn.ReLU) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), act()]


class StagedNet(nn.Module):
    """``stages`` (input to output) then ``head``: the shape every model here shares."""

    stages: nn.ModuleList
    head: nn.Module
    grad_checkpoint = (
        False  # recompute each segment's activations in the backward pass (training only)
    )

    def segments(self) -> list[nn.Module]:
        """The pieces activation checkpointing keeps only the inputs of, input to output."""
        return list(self.stages)

    def features(self, x: Tensor) -> Tensor:
        if self.grad_checkpoint and self.training:
            return run_segments(self.segments(), x, enabled=True)
        for (
            stage
        ) in self.stages:  # stage by stage: hooks on a stage (Grad-CAM, feature maps) see it run
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
            stages.append(
                nn.Sequential(
                    *conv_bn(c, out), *conv_bn(out, out), nn.MaxPool2d(2), nn.Dropout(dropout)
                )
            )
            c = out
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, num_classes)
        )


class BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut: out = relu(x' + F(x)); x' is x, or a 1x1 projection when the
    shape changes (stride 2 or more channels)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

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
            layers = [BasicBlock(c, out, 1 if i == 0 else 2)] + [
                BasicBlock(out, out) for _ in range(blocks - 1)
            ]
            stages.append(nn.Sequential(*layers))
            c = out
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def segments(self) -> list[nn.Module]:
        # per residual block, not per stage: a stage holds two blocks, and recomputing one block at
        # a time keeps half as many of the full-resolution activations alive in the backward pass
        return [self.stages[0], *(block for stage in self.stages[1:] for block in stage)]


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


class FastNet(StagedNet):
    """conv(64) -> [conv, pool, BN, GELU, conv, BN, GELU] x 3 (widths 4w, 4w, 4w) -> global max-pool
    -> linear, scaled by 1/9 (a small head scale keeps early logits calm with a high learning rate).
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 64):
        super().__init__()
        widths = [width, 4 * width, 4 * width, 4 * width]
        stages = [nn.Sequential(*conv_bn(in_channels, widths[0], nn.GELU))]
        c = widths[0]
        for out in widths[1:]:
            stages.append(
                nn.Sequential(
                    nn.Conv2d(c, out, 3, padding=1, bias=False),
                    nn.MaxPool2d(2),
                    nn.BatchNorm2d(out),
                    nn.GELU(),
                    *conv_bn(out, out, nn.GELU),
                )
            )
            c = out
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(c, num_classes, bias=False),
            Scale(1 / 9),
        )


class PatchWhitening(nn.Module):
    """A 2x2 convolution that whitens the image's 2x2 patches, fixed during training.

    Each filter is an eigenvector of the training patches' covariance divided by the square root
    of its eigenvalue (``fit``), once as it is and once negated (so the GELU after it keeps both
    signs): the first layer's outputs start decorrelated and of unit variance, which is what lets
    the speed-record recipes train with a high learning rate from the first step. Only the bias
    learns. Before ``fit`` (a model rebuilt from a checkpoint) the weights come from the state dict.
    """

    def __init__(self, in_channels: int, eps: float = 5e-4):
        super().__init__()
        self.eps = eps
        self.conv = nn.Conv2d(in_channels, 8 * in_channels, 2, bias=True)  # 2 x (C * 2 * 2) filters
        self.conv.weight.requires_grad_(False)

    @torch.no_grad()
    def fit(self, images: Tensor) -> None:
        """``images (N, C, H, W)``, normalised as training sees them."""
        c = images.shape[1]
        patches = images.double().unfold(2, 2, 1).unfold(3, 2, 1)  # (N, C, H-1, W-1, 2, 2)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(
            -1, c * 4
        )  # one row per patch, in weight order
        eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(patches.T))
        filters = (eigenvectors.T / (eigenvalues.clamp(min=0) + self.eps).sqrt()[:, None]).reshape(
            c * 4, c, 2, 2
        )
        self.conv.weight.copy_(torch.cat([filters, -filters]).float())
        self.conv.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def speed_record_bn(channels: int) -> nn.BatchNorm2d:
    """Batch norm as the speed records use it: a fixed scale of 1 (only the shift learns; the conv
    before it sets the scale) and running statistics that follow the last batches closely (a run
    of a few hundred steps has no time for a slow average)."""
    bn = nn.BatchNorm2d(channels, momentum=0.4)
    bn.weight.requires_grad_(False)
    return bn


class CompactNet(StagedNet):
    """PatchWhitening -> GELU -> [conv, pool, BN, GELU, conv, BN, GELU] x 3 (widths w, 4w, 4w) ->
    global max-pool -> linear, scaled by 1/9: ``fast``'s design at a CPU's budget. Each 3x3 conv
    starts as the identity on its first input channels (``dirac_``): the plain stack trains like a
    residual one from the first step. On images smaller than 16x16 the pools round up
    (``ceil_mode``), so 8x8 digits still reach the head; on CIFAR's 32x32 they round down
    (31 -> 15 -> 7 -> 3), a fifth fewer FLOPs than rounding up."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, image_size: int = 32):
        super().__init__()
        ceil = image_size < 16
        self.whiten = PatchWhitening(in_channels)
        stages: list[nn.Module] = [nn.Sequential(self.whiten, nn.GELU())]
        c = 8 * in_channels
        for out in (width, 4 * width, 4 * width):
            stages.append(
                nn.Sequential(
                    nn.Conv2d(c, out, 3, padding=1, bias=False),
                    nn.MaxPool2d(2, ceil_mode=ceil),
                    speed_record_bn(out),
                    nn.GELU(),
                    nn.Conv2d(out, out, 3, padding=1, bias=False),
                    speed_record_bn(out),
                    nn.GELU(),
                )
            )
            c = out
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(c, num_classes, bias=False),
            Scale(1 / 9),
        )
        with torch.no_grad():
            for m in self.stages[1:].modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.dirac_(m.weight[: min(m.in_channels, m.out_channels)])


def build_model(
    name: str, in_shape: tuple[int, ...], num_classes: int, width: int = 0
) -> nn.Module:
    c = in_shape[0]
    if name == "compact":
        return CompactNet(c, num_classes, width or 32, min(in_shape[1:]))
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


def enable_grad_checkpoint(model: nn.Module, name: str) -> None:
    """Train ``model`` (built as ``name``) with activation checkpointing, or refuse in one line."""
    if name not in GRAD_CHECKPOINT_MODELS or not isinstance(model, StagedNet):
        raise LabError(
            f"--grad-checkpoint applies to --model {' or '.join(GRAD_CHECKPOINT_MODELS)} (not"
            f" {name})"
        )
    model.grad_checkpoint = True


def replace_head(model: nn.Module, num_classes: int) -> None:
    """A fresh classifier for ``num_classes``, keeping the head's pooling (fine-tuning)."""
    old = model.head
    linear_idx = max(i for i, m in enumerate(old) if isinstance(m, nn.Linear))
    lin = old[linear_idx]
    old[linear_idx] = nn.Linear(lin.in_features, num_classes, bias=lin.bias is not None)
