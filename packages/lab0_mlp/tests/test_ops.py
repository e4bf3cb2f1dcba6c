import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lab0_mlp import ops


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(1, 3, 5), (8, 16, 4), (32, 7, 1)])
@pytest.mark.parametrize("custom", [True, False])
def test_linear_matches_nn_linear_init_forward_backward(seed, shape, custom):
    n, fin, fout = shape
    torch.manual_seed(seed)
    ours = ops.Linear(fin, fout, custom_backward=custom)
    torch.manual_seed(seed)
    ref = nn.Linear(fin, fout)
    assert torch.equal(ours.weight, ref.weight) and torch.equal(
        ours.bias, ref.bias
    )  # same init, bit for bit
    x = torch.randn(n, fin, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = ours(x), ref(x2)
    torch.testing.assert_close(y, y2)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad)


def test_hand_written_backwards_pass_gradcheck():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ops.LinearFunction.apply, (x, w, b))
    assert torch.autograd.gradcheck(ops.LinearFunction.apply, (x, w, None))
    z = torch.randn(6, 5, dtype=torch.float64)
    z = (z + 0.1 * z.sign()).requires_grad_(True)  # keep away from the kink at 0
    assert torch.autograd.gradcheck(ops.ReLUFunction.apply, (z,))


def test_relu_matches_torch_including_zero():
    x = torch.tensor([-2.0, 0.0, 3.0, -0.0, 1e-8], requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    ops.ReLU()(x).sum().backward()
    torch.relu(x2).sum().backward()
    assert torch.equal(ops.ReLU()(x), torch.relu(x2)) and torch.equal(x.grad, x2.grad)


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e6])
@pytest.mark.parametrize("seed", [0, 1])
def test_log_softmax_and_cross_entropy_are_stable(scale, seed):
    torch.manual_seed(seed)
    logits = (torch.randn(16, 10) * scale).requires_grad_(True)
    logits2 = logits.detach().clone().requires_grad_(True)
    target = torch.randint(0, 10, (16,))
    torch.testing.assert_close(ops.log_softmax(logits, 1), F.log_softmax(logits2, 1))
    loss, ref = ops.cross_entropy(logits, target), F.cross_entropy(logits2, target)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(logits.grad, logits2.grad)


def test_naive_softmax_overflows_where_ours_does_not():
    z = torch.tensor([[1000.0, 0.0]])
    naive = torch.log(torch.exp(z) / torch.exp(z).sum(1, keepdim=True))
    assert not torch.isfinite(naive).all()
    torch.testing.assert_close(ops.log_softmax(z), torch.tensor([[0.0, -1000.0]]))


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_matches_nn_and_keeps_statistics_in_buffers(train):
    torch.manual_seed(0)
    ours, ref = ops.BatchNorm1d(6), nn.BatchNorm1d(6)
    with torch.no_grad():
        ours.weight.uniform_()
        ref.weight.copy_(ours.weight)
    ours.train(train)
    ref.train(train)
    for _ in range(3):
        x = torch.randn(20, 6) * 3 + 1
        x2 = x.clone().requires_grad_(True)
        x = x.requires_grad_(True)
        y, y2 = ours(x), ref(x2)
        torch.testing.assert_close(y, y2)
        y.pow(2).sum().backward()
        y2.pow(2).sum().backward()
        torch.testing.assert_close(x.grad, x2.grad)
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name))
    assert [n for n, _ in ours.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in ours.named_buffers()] == [
        "running_mean",
        "running_var",
        "num_batches_tracked",
    ]
    assert set(ours.state_dict()) == set(ref.state_dict())


def test_dropout_matches_nn_dropout_for_the_same_seed():
    x = torch.randn(50, 40)
    torch.manual_seed(3)
    ours = ops.Dropout(0.3)(x)
    torch.manual_seed(3)
    ref = nn.Dropout(0.3)(x)
    torch.testing.assert_close(ours, ref)
    assert torch.equal(ops.Dropout(0.3).eval()(x), x)
