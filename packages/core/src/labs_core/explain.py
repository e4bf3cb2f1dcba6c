"""Why did the model decide that? Four attribution methods, written with autograd and hooks.

- ``saliency``              |d score / d input| (Simonyan et al., 2014)
- ``smooth_grad``           saliency averaged over noisy copies of the input (Smilkov et al., 2017)
- ``integrated_gradients``  (x - baseline) times the gradient averaged along the straight path from
                            the baseline to x (Sundararajan et al., 2017)
- ``grad_cam``              a conv layer's feature maps weighted by their spatially averaged
                            gradients (Selvaraju et al., 2017)

Each equals its Captum twin (``Saliency``, ``NoiseTunnel(Saliency)``, ``IntegratedGradients``,
``LayerGradCam``) on the same model, input, baseline, steps and seed (tests/test_explain.py). The
"score" is the model's output (logit) for ``target``: an int for the whole batch, or one class per
example (``Tensor[N]``). Every function puts the model in eval mode and freezes its parameters
while it works (only gradients with respect to the input or a layer are wanted), and restores both.

``randomized_copy`` and ``rank_correlation`` are the tools of Adebayo et al.'s sanity check
("Sanity Checks for Saliency Maps", 2018): a method worth trusting gives a different map once the
model's learned weights are replaced by random ones.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

Target = int | Tensor
METHODS = ("saliency", "smoothgrad", "integrated_gradients", "grad_cam")
QUADRATURES = ("gausslegendre", "riemann_middle")


@contextlib.contextmanager
def attribution_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (batch norm's running statistics, no dropout: each example's score depends on its
    own input only), parameters frozen, gradients on even inside ``torch.no_grad``; all restored."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


def _score(logits: Tensor, target: Target) -> Tensor:
    """The sum over the batch of each example's ``target`` logit: in eval mode examples do not
    interact, so one backward pass of the sum gives every example's own gradient."""
    t = torch.as_tensor(target, device=logits.device).long().expand(logits.shape[0])
    return logits.gather(1, t.view(-1, 1)).sum()


def _input_gradient(model: nn.Module, x: Tensor, target: Target) -> Tensor:
    """d score / d x, same shape as ``x``; the model is already in attribution mode."""
    x = x.detach().requires_grad_()
    (grad,) = torch.autograd.grad(_score(model(x), target), x)
    return grad


def _repeat_target(target: Target, times: int, interleave: bool) -> Target:
    if not isinstance(target, Tensor) or target.dim() == 0:
        return target
    return target.repeat_interleave(times) if interleave else target.repeat(times)


def saliency(model: nn.Module, x: Tensor, target: Target, abs: bool = True) -> Tensor:
    """Gradient of the target logit with respect to the input.

    x (Tensor[N, C, H, W]); returns Tensor[N, C, H, W]: |gradient| with ``abs`` (Captum's default).
    """
    with attribution_mode(model):
        grad = _input_gradient(model, x, target)
    return grad.abs() if abs else grad


def smooth_grad(
    model: nn.Module,
    x: Tensor,
    target: Target,
    n_samples: int = 25,
    stdev: float = 0.15,
    generator: torch.Generator | None = None,
    abs: bool = True,
) -> Tensor:
    """Saliency averaged over ``n_samples`` copies of each image with Gaussian noise of standard
    deviation ``stdev`` (in the input's units, as Captum's ``stdevs``) added.

    x (Tensor[N, C, H, W]); returns Tensor[N, C, H, W]. The noise is drawn from ``generator`` (the
    global RNG if None) for all N * n_samples copies at once, copy k of image i at row
    i * n_samples + k, in float32 (the default dtype): the draw NoiseTunnel makes, so equal seeds
    give equal maps."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1 (got {n_samples})")
    noisy = x.detach().repeat_interleave(n_samples, dim=0)  # (N * n_samples, C, H, W)
    std = torch.full(noisy.shape, float(stdev), device=x.device)
    noisy = noisy + torch.normal(0.0, std, generator=generator)
    grads = saliency(model, noisy, _repeat_target(target, n_samples, interleave=True), abs=abs)
    return grads.view(x.shape[0], n_samples, *x.shape[1:]).sum(1) / n_samples


def quadrature(method: str, steps: int) -> tuple[list[float], list[float]]:
    """Points ``alphas`` in [0, 1] and ``weights`` summing to 1 for the path integral of integrated
    gradients: Gauss-Legendre (Captum's default: exact for polynomials of degree < 2 * steps), or
    the midpoint rule."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1 (got {steps})")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)  # on [-1, 1]; map to [0, 1]
        return (0.5 * (nodes + 1)).tolist(), (0.5 * weights).tolist()
    if method == "riemann_middle":
        return [(k + 0.5) / steps for k in range(steps)], [1 / steps] * steps
    raise ValueError(f"unknown quadrature {method!r}; choose one of {', '.join(QUADRATURES)}")


def integrated_gradients(
    model: nn.Module,
    x: Tensor,
    target: Target,
    baseline: Tensor | float = 0.0,
    steps: int = 50,
    method: str = "gausslegendre",
) -> Tensor:
    """(x - baseline) * the integral over a in [0, 1] of d score / d input at baseline + a (x -
    baseline).

    x (Tensor[N, C, H, W]); baseline a number or a tensor broadcastable to x (0: the mean image, for
    inputs normalised by the training set's statistics); returns Tensor[N, C, H, W], whose sum over
    an image approximates score(x) - score(baseline) (completeness). All steps go through the model
    in one batch of steps * N, step-major."""
    alphas, weights = quadrature(method, steps)
    x = x.detach()
    baseline = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    path = torch.cat([baseline + a * (x - baseline) for a in alphas])  # (steps * N, C, H, W)
    with attribution_mode(model):
        grads = _input_gradient(model, path, _repeat_target(target, steps, interleave=False))
    w = torch.tensor(weights, dtype=x.dtype, device=x.device).view(steps, *[1] * x.dim())
    mean_grad = (grads.view(steps, *x.shape) * w).sum(0)
    return mean_grad * (x - baseline)


def grad_cam(
    model: nn.Module, layer: nn.Module, x: Tensor, target: Target, relu: bool = True
) -> Tensor:
    """Grad-CAM at ``layer`` (one whose output is a feature map Tensor[N, K, h, w]).

    x (Tensor[N, C, H, W]); returns Tensor[N, 1, h, w] at the layer's resolution:
    relu(sum_k mean_{h,w}(d score / d A_k) * A_k), without the ReLU if ``relu`` is False (Captum's
    ``relu_attributions``). A forward hook keeps the layer's output A and hands the rest of the
    network a copy, so an in-place op further on (``ReLU(inplace=True)``) cannot change A; the hook
    is removed on every way out."""
    kept: list[Tensor] = []

    def keep(module, inputs, output):
        kept.append(output)
        return output.clone()

    with attribution_mode(model):
        handle = layer.register_forward_hook(keep)
        try:
            # the input needs a gradient so that A is part of the graph with the parameters frozen
            logits = model(x.detach().requires_grad_())
        finally:
            handle.remove()
        if not kept:
            raise ValueError(
                f"layer {type(layer).__name__} did not run in the model's forward pass"
            )
        acts = kept[-1]
        if acts.dim() != 4:
            raise ValueError(
                "Grad-CAM needs a layer whose output is (N, K, h, w); this one gives"
                f" {tuple(acts.shape)}"
            )
        (grads,) = torch.autograd.grad(_score(logits, target), acts)
    weights = grads.mean(
        dim=(2, 3), keepdim=True
    )  # (N, K, 1, 1): how much each feature map matters
    cam = (weights * acts).sum(1, keepdim=True).detach()
    return F.relu(cam) if relu else cam


@torch.no_grad()
def last_feature_layer(model: nn.Module, x: Tensor) -> nn.Module:
    """The module that last produces a feature map (N, K, h, w) with more than one position in the
    forward pass of ``x``: the last conv stage of a classifier (its global pooling, 1 x 1, excluded;
    a container counts, being done after its children). Found by hooking every module once."""
    outputs: list[tuple[nn.Module, tuple[int, ...]]] = []
    handles = [
        m.register_forward_hook(
            lambda m, i, o: outputs.append((m, tuple(o.shape))) if isinstance(o, Tensor) else None
        )
        for m in model.modules()
    ]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    maps = [m for m, shape in outputs if len(shape) == 4 and shape[2] * shape[3] > 1]
    if not maps:
        raise ValueError(
            "the model produces no feature map (N, K, h, w) larger than 1 x 1: Grad-CAM needs one"
        )
    return maps[-1]


def heatmap(attribution: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """An attribution (N, C, h, w) as one non-negative map per image (N, H, W) for display: absolute
    values summed over channels, resized (bilinear) to ``size`` if given, scaled so that each
    image's 99th percentile is 1 (a few extreme pixels must not wash the rest out), clipped to 1."""
    m = attribution.detach().float().abs().sum(1, keepdim=True)
    if size is not None and tuple(m.shape[2:]) != tuple(size):
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    m = m[:, 0]
    top = torch.quantile(m.flatten(1), 0.99, dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return (m / top).clamp(max=1)


def explain(
    model: nn.Module,
    x: Tensor,
    target: Target,
    layer: nn.Module | None = None,
    *,
    steps: int = 50,
    n_samples: int = 25,
    noise: float = 0.15,
    seed: int = 0,
) -> dict[str, Tensor]:
    """All four methods for a batch x (Tensor[N, C, H, W]), as display maps (N, H, W) in [0, 1]
    keyed by ``METHODS``. SmoothGrad's noise is ``noise`` times each image's value range (the
    paper's 10-20 %) from a generator seeded with ``seed``; integrated gradients start from the zero
    baseline; Grad-CAM looks at ``layer`` (default: ``last_feature_layer``)."""
    layer = layer if layer is not None else last_feature_layer(model, x[:1])
    t = torch.as_tensor(target, device=x.device)
    t = t.expand(x.shape[0]) if t.dim() == 0 else t
    generator = torch.Generator(x.device).manual_seed(seed)
    smooth = torch.cat(
        [
            smooth_grad(
                model, xi[None], ti, n_samples, noise * float(xi.max() - xi.min()), generator
            )
            for xi, ti in zip(x, t, strict=True)
        ]
    )
    size = tuple(x.shape[2:])
    return {
        "saliency": heatmap(saliency(model, x, t)),
        "smoothgrad": heatmap(smooth),
        "integrated_gradients": heatmap(integrated_gradients(model, x, t, steps=steps)),
        "grad_cam": heatmap(grad_cam(model, layer, x, t), size),
    }


COLUMNS = {
    "saliency": "saliency",
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "integrated gradients",
    "grad_cam": "Grad-CAM",
}


def describe_prediction(
    probs: Tensor, classes: list[str], top_k: int = 3, true: int | None = None
) -> str:
    """'predicted 3 (97%), true 3' and the top-k classes, from one image's probabilities (C,)."""
    values, idx = probs.float().topk(min(top_k, len(classes)))
    line = f"predicted {classes[idx[0]]} ({values[0]:.0%})" + (
        f", true {classes[true]}" if true is not None else ""
    )
    return (
        line
        + f"\ntop-{len(idx)}: "
        + ", ".join(
            f"{classes[i]} {v:.0%}" for v, i in zip(values.tolist(), idx.tolist(), strict=True)
        )
    )


def write_explanations(
    model: nn.Module,
    x: Tensor,
    mean,
    std,
    classes: list[str],
    path,
    top_k: int = 3,
    labels: Tensor | None = None,
    **options,
) -> Tensor:
    """Explain the model's prediction for each image of x (Tensor[N, C, H, W], normalised with
    ``mean`` and ``std`` per channel as in training) with every method, into one PNG at ``path``:
    a row per image (the image, then each map over it) titled with the predicted and top-k classes
    (and the true one, from ``labels``). ``options`` go to ``explain``. Returns the probabilities
    (N, classes).
    """
    from .plots import plot_explanations

    x = x.detach().float()
    with attribution_mode(model), torch.no_grad():
        probs = model(x).float().softmax(1)
    maps = explain(model, x, probs.argmax(1), **options)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    images = (x * s + m).clamp(0, 1)  # back to what the camera saw
    titles = [
        describe_prediction(p, classes, top_k, None if labels is None else int(labels[i]))
        for i, p in enumerate(probs)
    ]
    plot_explanations(images, {COLUMNS[k]: v for k, v in maps.items()}, titles, path)
    return probs.cpu()


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer's parameters freshly initialised (and batch norm's
    running statistics reset): Adebayo et al.'s full model-parameter randomisation."""
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in fresh.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
    return fresh


def _ranks(values: Tensor) -> Tensor:
    """Ranks within each row of values (N, M), ties given their mean rank (many pixels of a
    Grad-CAM map are exactly 0)."""
    v = values.detach().double().contiguous()
    s = v.sort(1).values
    low = torch.searchsorted(s, v, right=False)
    high = torch.searchsorted(s, v, right=True)
    return (low + high - 1).double() / 2


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation between two maps per image: a (Tensor[N, ...]), b likewise;
    returns Tensor[N]. The sanity check's measure: 1 for maps that order the pixels alike, about 0
    for unrelated ones."""
    ra, rb = _ranks(a.flatten(1)), _ranks(b.flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)
