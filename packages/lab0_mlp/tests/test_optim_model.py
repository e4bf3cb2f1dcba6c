import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lab0_mlp import optim
from lab0_mlp.model import MLP


def trajectory(make_opt, steps=25, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = make_opt(model.parameters())
    g = torch.Generator().manual_seed(seed + 100)
    points = []
    for _ in range(steps):
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        points.append([p.detach().clone() for p in model.parameters()])
    return points


def assert_same_path(a, b):
    for pa, pb in zip(a, b, strict=True):
        for x, y in zip(pa, pb, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kw",
    [
        dict(momentum=0.0),
        dict(momentum=0.9),
        dict(momentum=0.9, nesterov=True),
        dict(momentum=0.5, weight_decay=1e-2),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_sgd_follows_torch_optim(kw, seed):
    assert_same_path(
        trajectory(lambda p: optim.SGD(p, lr=0.1, **kw), seed=seed),
        trajectory(lambda p: torch.optim.SGD(p, lr=0.1, foreach=False, **kw), seed=seed),
    )


@pytest.mark.parametrize(
    "kw, ref",
    [
        (dict(), dict()),
        (dict(weight_decay=1e-2), dict(weight_decay=1e-2)),
        (dict(betas=(0.8, 0.99), eps=1e-6), dict(betas=(0.8, 0.99), eps=1e-6)),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_adam_follows_torch_optim(kw, ref, seed):
    assert_same_path(
        trajectory(lambda p: optim.Adam(p, lr=0.01, **kw), seed=seed),
        trajectory(lambda p: torch.optim.Adam(p, lr=0.01, foreach=False, **ref), seed=seed),
    )


def test_decoupled_adam_follows_adamw():
    assert_same_path(
        trajectory(lambda p: optim.Adam(p, lr=0.01, weight_decay=0.1, decoupled=True)),
        trajectory(lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1, foreach=False)),
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda p: optim.Adam(p, lr=0.1, weight_decay=0.01),
        lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    ],
)
def test_scratch_optimizer_state_round_trips(make):
    """The whole state survives a save and load, and the next step from the loaded copy equals
    the next step of the original."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = make(model.parameters())
    for _ in range(3):
        model(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    buffer = io.BytesIO()  # through a file, as a checkpoint goes (a live state dict shares tensors)
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    twin = nn.Linear(3, 2)
    twin.load_state_dict(model.state_dict())
    opt2 = make(twin.parameters())
    opt2.load_state_dict(state)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert a["state"][k].keys() == b["state"][k].keys()
        for name, value in a["state"][k].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][k][name])), (
                k,
                name,
            )
    x = torch.randn(4, 3)
    for m, o in ((model, opt), (twin, opt2)):
        m(x).pow(2).sum().backward()
        o.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("bn", [False, True])
def test_scratch_and_torch_mlp_are_the_same_network(bn):
    torch.manual_seed(0)
    a = MLP((1, 8, 8), 10, [32, 16], dropout=0.2, batch_norm=bn, layers="scratch")
    torch.manual_seed(0)
    b = MLP((1, 8, 8), 10, [32, 16], dropout=0.2, batch_norm=bn, layers="torch")
    assert list(a.state_dict()) == list(b.state_dict())
    for k in a.state_dict():
        assert torch.equal(a.state_dict()[k], b.state_dict()[k]), k
    x = torch.randn(12, 1, 8, 8)
    torch.manual_seed(1)
    ya = a(x)
    torch.manual_seed(1)
    yb = b(x)
    torch.testing.assert_close(ya, yb)


def test_parameters_versus_buffers_and_hooks():
    model = MLP((4,), 3, [5], batch_norm=True, layers="scratch")
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    assert "net.2.running_mean" in buffers and "net.2.running_mean" not in params
    assert "net.2.weight" in params and all(p.requires_grad for p in params.values())
    seen = {}
    model.net[1].register_forward_hook(lambda m, i, o: seen.__setitem__("forward", tuple(o.shape)))
    model.net[1].register_full_backward_hook(
        lambda m, gi, go: seen.__setitem__("backward", tuple(go[0].shape))
    )
    model(torch.randn(7, 4, requires_grad=True)).sum().backward()
    assert seen == {"forward": (7, 5), "backward": (7, 5)}
