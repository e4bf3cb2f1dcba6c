"""Any torchvision classification model as a fine-tuning backbone: its classifier found and
replaced, its own stages found for gradual unfreezing.

    head    the last ``nn.Linear`` in the model's registration order: torchvision registers the
            final classifier last (ResNet/RegNet ``fc``, VGG/MobileNet/EfficientNet
            ``classifier[-1]``, DenseNet ``classifier``, ViT ``heads.head``, Swin ``head``);
            SqueezeNet, which has no Linear, classifies with a 1x1 convolution (``classifier[1]``),
            found as the last Conv2d giving the 1,000 classes.
    stages  input to output: the model's children that hold parameters; a trunk (``features``,
            ``trunk_output``, ``layers``, ``blocks``, ``encoder``) and any module that holds the
            head are opened into their own children. ResNet: conv1, bn1, layer1..4;
            VGG/MobileNet/EfficientNet/ ConvNeXt: ``features``' blocks (then VGG's two hidden
            classifier layers); ViT: conv_proj, each encoder layer, the final norm. Parameters
            outside every stage (ViT's class token and position embedding, at the input) join the
            first stage.

GoogLeNet and Inception v3 train with auxiliary classifiers that return a tuple; they are removed
here (after published weights, which hold them, are loaded), so every model returns plain logits.
"""

from __future__ import annotations

import warnings

from torch import Tensor, nn

from labs_core import LabError

TRUNKS = ("features", "trunk_output", "layers", "blocks", "encoder")
IMAGENET_CLASSES = 1000
LIST_HINT = 'python -c "import torchvision.models as m; print(m.list_models(module=m))" lists them'


def classification_models() -> list[str]:
    import torchvision.models as models

    return models.list_models(
        module=models
    )  # classification only: not detection, video, quantized...


def build_torchvision(name: str) -> nn.Module:
    """torchvision's ``name`` with random weights (its ImageNet head: 1,000 classes)."""
    import torchvision.models as models

    if name not in classification_models():
        raise LabError(f"unknown torchvision classification model {name!r}; {LIST_HINT}")
    with warnings.catch_warnings():  # GoogLeNet's and Inception's notice about their default init
        warnings.simplefilter("ignore", FutureWarning)
        return models.get_model(name, weights=None)


def weights_url(name: str) -> str:
    import torchvision.models as models

    return models.get_model_weights(name).DEFAULT.url


def drop_aux_classifiers(net: nn.Module) -> None:
    """GoogLeNet's and Inception v3's training-time auxiliary heads off: the model returns logits
    only."""
    if getattr(net, "aux_logits", False):
        net.aux_logits = False
        for attr in ("aux1", "aux2", "AuxLogits"):
            if hasattr(net, attr):
                setattr(net, attr, None)


def find_head(net: nn.Module, name: str = "") -> str:
    """The qualified name of the final classifier (see the module docstring for the rule)."""
    linears = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        head = linears[-1]
        if net.get_submodule(head).out_features == IMAGENET_CLASSES:
            return head
    convs = [
        n
        for n, m in net.named_modules()
        if isinstance(m, nn.Conv2d) and m.out_channels == IMAGENET_CLASSES
    ]
    if convs:
        return convs[-1]
    raise LabError(
        f"cannot find the classifier of torchvision:{name} (no final Linear or 1x1 conv to "
        f"{IMAGENET_CLASSES} classes)"
    )


def new_head(old: nn.Module, num_classes: int) -> nn.Module:
    if isinstance(old, nn.Linear):
        return nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    return nn.Conv2d(
        old.in_channels,
        num_classes,
        old.kernel_size,
        old.stride,
        old.padding,
        bias=old.bias is not None,
    )


def replace_module(net: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, child, module)


def _holds_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def find_stages(net: nn.Module, head: str) -> list[list[str]]:
    """Stages, input to output, each a list of qualified names (modules, or parameters outside every
    stage, which join the first)."""
    stages: list[list[str]] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for child_name, child in module.named_children():
            path = prefix + child_name
            if path == head or not _holds_parameters(child):
                continue
            opens = head.startswith(path + ".") or (
                child_name in TRUNKS and sum(_holds_parameters(c) for c in child.children()) > 1
            )
            if opens:
                walk(child, path + ".")
            else:
                stages.append([path])

    walk(net, "")
    covered = tuple(s[0] + "." for s in stages) + (head + ".",)
    loose = [n for n, _ in net.named_parameters() if not n.startswith(covered)]
    if stages and loose:
        stages[0] = loose + stages[0]
    return stages


def check_input(net: nn.Module, name: str, in_shape: tuple[int, ...]) -> None:
    """One forward of a blank image of the data's size, so a size the model cannot take (Inception
    v3 needs at least 75 pixels) stops here in one line, not mid-training."""
    import torch

    side = tuple(in_shape[1:])
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, *side))
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or ["error"])[0][:160]
        raise LabError(
            f"torchvision:{name} cannot take {'x'.join(map(str, side))} images ({first}); "
            "use a larger --image-size"
        ) from None
    finally:
        net.train(was)


class TorchvisionNet(nn.Module):
    """A torchvision classifier with a head for ``num_classes`` (its state dict is the torchvision
    model's, under ``net.``). ``head_parameters()`` and ``stage_parameters()`` give what gradual
    unfreezing trains; they are looked up when asked for, so they are the current parameters even
    after the model was sharded (FSDP swaps its parameters)."""

    def __init__(self, name: str, num_classes: int, backbone: nn.Module | None = None):
        super().__init__()
        self.name = name
        self.net = backbone if backbone is not None else build_torchvision(name)
        drop_aux_classifiers(self.net)
        self.head_name = find_head(self.net, name)
        replace_module(
            self.net, self.head_name, new_head(self.net.get_submodule(self.head_name), num_classes)
        )
        self.stage_names = find_stages(self.net, self.head_name)

    @property
    def head(self) -> nn.Module:
        return self.net.get_submodule(self.head_name)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def stage_parameters(self) -> list[list[nn.Parameter]]:
        def params(path: str) -> list[nn.Parameter]:
            try:
                return list(self.net.get_submodule(path).parameters())
            except AttributeError:  # not a module: a parameter of its own (ViT's class token)
                return [self.net.get_parameter(path)]

        return [[p for path in stage for p in params(path)] for stage in self.stage_names]

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale images through an RGB network
        return self.net(x)
