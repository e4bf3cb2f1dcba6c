import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lab1_conv import ops

CASES = [
    # (N, C_in, H, W, C_out, k, stride, padding, dilation, groups, bias)
    (2, 3, 7, 7, 4, 3, 1, 0, 1, 1, True),
    (1, 2, 8, 6, 3, 3, 2, 1, 1, 1, False),
    (2, 4, 9, 9, 6, 3, 1, 2, 2, 2, True),
    (3, 6, 5, 7, 6, 1, 1, 0, 1, 3, True),
    (2, 4, 10, 8, 8, (3, 2), (2, 1), (1, 0), 1, 4, True),
    (1, 1, 4, 4, 2, 4, 1, 0, 1, 1, True),
]


def grads_of(fn, x, w, b):
    x = x.clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True) if b is not None else None
    y = fn(x, w, b)
    g = torch.linspace(-1, 1, y.numel()).view_as(y)
    (y * g).sum().backward()
    return y, x.grad, w.grad, None if b is None else b.grad


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_unfold_conv_matches_conv2d_forward_and_backward(case, seed):
    n, c_in, h, w, c_out, k, s, p, d, g, bias = case
    torch.manual_seed(seed)
    k2 = (k, k) if isinstance(k, int) else k
    x = torch.randn(n, c_in, h, w)
    wt = torch.randn(c_out, c_in // g, *k2)
    b = torch.randn(c_out) if bias else None
    ours = grads_of(lambda x, w, b: ops.conv2d(x, w, b, s, p, d, g), x, wt, b)
    ref = grads_of(lambda x, w, b: F.conv2d(x, w, b, s, p, d, g), x, wt, b)
    for a, r in zip(ours, ref, strict=True):
        if r is not None:
            torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stride, padding", [(1, 0), (1, 1), (2, 1), ((2, 1), (0, 2))])
def test_loop_conv_matches_conv2d_forward_and_backward(stride, padding):
    torch.manual_seed(0)
    x, wt, b = torch.randn(2, 3, 6, 5), torch.randn(4, 3, 3, 3), torch.randn(4)
    ours = grads_of(lambda x, w, b: ops.conv2d_loop(x, w, b, stride, padding), x, wt, b)
    ref = grads_of(lambda x, w, b: F.conv2d(x, w, b, stride, padding), x, wt, b)
    for a, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)


def test_unfold_conv_gradcheck_float64():
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: ops.conv2d(x, w, b, 2, 1, 1, 2), (x, w, b))


@pytest.mark.parametrize("k, s, p", [(2, None, 0), (3, 1, 1), (3, 2, 1), ((2, 3), (2, 1), (1, 1))])
@pytest.mark.parametrize("seed", [0, 1])
def test_pooling_matches_torch_forward_and_backward(k, s, p, seed):
    torch.manual_seed(seed)
    x = torch.randn(2, 3, 9, 8)
    for ours_fn, ref_fn in ((ops.max_pool2d, F.max_pool2d), (ops.avg_pool2d, F.avg_pool2d)):
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = ours_fn(xa, k, s, p), ref_fn(xb, k, s, p)
        torch.testing.assert_close(ya, yb)
        g = torch.randn_like(ya)
        (ya * g).sum().backward()
        (yb * g).sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad)


def test_conv_module_initialises_like_nn_conv2d():
    torch.manual_seed(0)
    ours = ops.Conv2d(3, 8, 3, padding=1, groups=1)
    torch.manual_seed(0)
    ref = nn.Conv2d(3, 8, 3, padding=1)
    assert torch.equal(ours.weight, ref.weight) and torch.equal(ours.bias, ref.bias)
    x = torch.randn(2, 3, 10, 10)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "size, k, s, p, d",
    [
        (28, 3, 1, 1, 1),
        (28, 5, 2, 2, 1),
        (32, 3, 2, 0, 2),
        (7, 7, 1, 0, 1),
        (9, 2, 2, 0, 1),
        (11, 3, 3, 1, 1),
    ],
)
def test_output_size_formula_matches_real_layers(size, k, s, p, d):
    x = torch.zeros(1, 1, size, size)
    conv = nn.Conv2d(1, 1, k, s, p, d)
    assert ops.conv_output_size(size, k, s, p, d) == conv(x).shape[-1]
    if p <= k // 2:
        assert ops.conv_output_size(size, k, s, p, d) == nn.MaxPool2d(k, s, p, d)(x).shape[-1]


def test_bad_groups_is_a_clear_error():
    with pytest.raises(ValueError, match="groups=2 does not fit"):
        ops.conv2d(torch.zeros(1, 3, 4, 4), torch.zeros(4, 3, 3, 3), groups=2)
