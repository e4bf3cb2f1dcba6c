"""The attribution methods of ``labs_core.explain`` against their Captum twins (same model, input,
baseline, steps and seed; float64, to 1e-5), their promises (completeness, nothing left changed on
the model), and Adebayo et al.'s sanity check: a trained model's maps are not a random model's."""

import pytest
import torch
from captum.attr import IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency
from torch import nn

from labs_core.explain import (
    METHODS,
    explain,
    grad_cam,
    heatmap,
    integrated_gradients,
    last_feature_layer,
    randomized_copy,
    rank_correlation,
    saliency,
    smooth_grad,
)

TOL = dict(rtol=1e-5, atol=1e-5)
pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")


def small_cnn(classes: int = 4) -> nn.Sequential:
    """Batch norm, an in-place ReLU after the layer Grad-CAM looks at, max-pooling, a linear
    head."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    )


@pytest.fixture
def model_and_input():
    torch.manual_seed(0)
    model = small_cnn().double()
    model.train()
    model(
        torch.randn(16, 1, 8, 8, dtype=torch.float64)
    )  # batch-norm running statistics that are not the defaults
    model.eval()
    return model, torch.randn(3, 1, 8, 8, dtype=torch.float64)


TARGETS = [2, torch.tensor([0, 3, 1])]


@pytest.mark.parametrize("target", TARGETS, ids=["int", "per-example"])
@pytest.mark.parametrize("absolute", [True, False])
def test_saliency_equals_captum(model_and_input, target, absolute):
    model, x = model_and_input
    torch.testing.assert_close(
        saliency(model, x, target, abs=absolute),
        Saliency(model).attribute(x, target=target, abs=absolute),
        **TOL,
    )


@pytest.mark.parametrize("target", TARGETS, ids=["int", "per-example"])
@pytest.mark.parametrize("seed, n_samples, stdev", [(0, 5, 0.3), (7, 12, 1.0)])
def test_smooth_grad_equals_captum_noise_tunnel(model_and_input, target, seed, n_samples, stdev):
    model, x = model_and_input
    torch.manual_seed(seed)
    theirs = NoiseTunnel(Saliency(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=n_samples, stdevs=stdev, target=target
    )
    ours = smooth_grad(model, x, target, n_samples, stdev, torch.Generator().manual_seed(seed))
    torch.testing.assert_close(ours, theirs, **TOL)
    other_seed = smooth_grad(
        model, x, target, n_samples, stdev, torch.Generator().manual_seed(seed + 1)
    )
    assert not torch.allclose(ours, other_seed)  # the noise is really there


@pytest.mark.parametrize("target", TARGETS, ids=["int", "per-example"])
@pytest.mark.parametrize(
    "method, steps", [("gausslegendre", 50), ("gausslegendre", 7), ("riemann_middle", 20)]
)
@pytest.mark.parametrize("baseline", ["zero", "tensor"])
def test_integrated_gradients_equal_captum(model_and_input, target, method, steps, baseline):
    model, x = model_and_input
    base = (
        0.0
        if baseline == "zero"
        else torch.linspace(-1, 1, 64, dtype=torch.float64).view(1, 1, 8, 8)
    )
    theirs = IntegratedGradients(model).attribute(
        x,
        baselines=base if baseline == "zero" else base.expand_as(x),
        target=target,
        n_steps=steps,
        method=method,
    )
    torch.testing.assert_close(
        integrated_gradients(model, x, target, base, steps, method), theirs, **TOL
    )


def test_integrated_gradients_are_complete(model_and_input):
    """Sundararajan et al.'s axiom: the attributions add up to score(x) - score(baseline)."""
    model, x = model_and_input
    with torch.no_grad():
        gap = model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]
    errors = [
        (integrated_gradients(model, x, 1, steps=steps).sum(dim=(1, 2, 3)) - gap).abs().max()
        for steps in (8, 64, 512)
    ]
    # ReLU and max-pool kinks make the path integral only piecewise smooth: the rule converges, not
    # exactly
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3 * gap.abs().max()


@pytest.mark.parametrize("target", TARGETS, ids=["int", "per-example"])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize(
    "layer_index", [1, 5, 6]
)  # batch norm before an in-place ReLU; the ReLU itself
def test_grad_cam_equals_captum(model_and_input, target, relu, layer_index):
    model, x = model_and_input
    layer = model[layer_index]
    theirs = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=relu)
    ours = grad_cam(model, layer, x, target, relu=relu)
    assert ours.shape == (3, 1, *theirs.shape[2:])
    torch.testing.assert_close(ours, theirs, **TOL)


def test_the_model_is_left_as_it_was(model_and_input):
    model, x = model_and_input
    model.train()
    model[0].weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # a caller's no_grad does not stop the methods
        maps = explain(model, x, torch.tensor([0, 1, 2]), steps=4, n_samples=3)
    assert set(maps) == set(METHODS) and all(m.shape == (3, 8, 8) for m in maps.values())
    assert all(m.min() >= 0 and m.max() <= 1 for m in maps.values())
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(not m._forward_hooks for m in model.modules())
    assert all(
        torch.equal(v, state[k]) for k, v in model.state_dict().items()
    )  # running statistics untouched
    assert all(p.grad is None for p in model.parameters())


def test_last_feature_layer_skips_the_global_pooling(model_and_input):
    model, x = model_and_input
    assert (
        last_feature_layer(model, x) is model[6]
    )  # the last ReLU: 4 x 4; the pooling after it is 1 x 1
    with pytest.raises(ValueError, match="no feature map"):
        last_feature_layer(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).double(), x)


def test_heatmap_scales_each_image_to_its_99th_percentile():
    attr = torch.zeros(2, 3, 10, 10)
    attr[0, 0] = torch.arange(100.0).view(10, 10) - 50  # signs do not matter, channels add up
    attr[1, 1, 2, 2] = 5.0
    maps = heatmap(attr, size=(20, 20))
    assert maps.shape == (2, 20, 20) and maps.min() >= 0 and maps.max() == 1
    first = heatmap(attr)[0]  # |values| 0, 1, 1, ..., 49, 49, 50: the 99th percentile is 49.01
    assert (first == 1).sum() == 1 and first[0, 0] == 1  # only |-50| goes past it
    torch.testing.assert_close(first[9, 9], torch.tensor(49 / 49.01))


def test_rank_correlation_equals_scipy_spearman():
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.rand(3, 50, generator=g, dtype=torch.float64),
        torch.rand(3, 50, generator=g, dtype=torch.float64),
    )
    a[2, :20] = 0.0  # ties (a Grad-CAM map's zeros) take their mean rank
    b[2, 10:30] = 0.0
    for pair in ((a, b), (a, a**3), (a, -a)):
        expected = torch.tensor(
            [spearmanr(u, v).statistic for u, v in zip(*pair, strict=True)], dtype=torch.float64
        )
        torch.testing.assert_close(rank_correlation(*pair), expected)


def quadrant_problem(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """8 x 8 noise images with a bright 2 x 2 patch somewhere in quadrant ``label``."""
    x = 0.3 * torch.randn(n, 1, 8, 8, generator=generator)
    y = torch.randint(0, 4, (n,), generator=generator)
    rows, cols = (
        torch.randint(0, 3, (n,), generator=generator),
        torch.randint(0, 3, (n,), generator=generator),
    )
    for i in range(n):
        r, c = 4 * (y[i] // 2) + rows[i], 4 * (y[i] % 2) + cols[i]
        x[i, 0, r : r + 2, c : c + 2] += 2.0
    return x, y


@pytest.fixture(scope="module")
def trained_model():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = small_cnn()
    x, y = quadrant_problem(512, g)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(60):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    test_x, test_y = quadrant_problem(32, g)
    model.eval()
    with torch.no_grad():
        accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    assert accuracy > 0.9, accuracy  # it learned the task: its maps have something to show
    return model, test_x, test_y


def attribution(model, x, y, method):
    """Each method's own output (N, h, w), channels summed: |gradient| for saliency and SmoothGrad
    (Captum's default), the signed attribution for integrated gradients (its absolute value is
    dominated by |x - baseline|, the input itself, which Adebayo et al. point out), Grad-CAM's map.
    """
    if method == "saliency":
        out = saliency(model, x, y)
    elif method == "smoothgrad":
        out = smooth_grad(
            model, x, y, n_samples=8, stdev=0.3, generator=torch.Generator().manual_seed(0)
        )
    elif method == "integrated_gradients":
        out = integrated_gradients(model, x, y, steps=16)
    else:
        out = grad_cam(model, last_feature_layer(model, x), x, y)
    return out.sum(1)


@pytest.mark.parametrize("method", METHODS)
def test_sanity_check_maps_of_a_trained_and_a_randomised_model_differ(trained_model, method):
    """Adebayo et al. (2018): with every weight re-initialised, a faithful method's maps change.
    The measure is the rank correlation of the maps per image (about 0.0-0.2 here): a map that
    shows the input rather than the model (an edge detector, say) would score 1 and fail."""
    model, x, y = trained_model
    random = randomized_copy(model, seed=1)
    assert not torch.equal(random.state_dict()["0.weight"], model.state_dict()["0.weight"])
    trained_map = attribution(model, x, y, method)
    rho = rank_correlation(trained_map, attribution(random, x, y, method))
    assert rho.mean() < 0.5, f"{method}: mean rank correlation {rho.mean():.2f}"
    again = rank_correlation(
        trained_map, attribution(model, x, y, method)
    )  # the measure sees equal maps as equal
    torch.testing.assert_close(again, torch.ones(len(x), dtype=torch.float64))
