import random

import numpy as np
import torch

from labs_core import Trainer, seed_everything
from labs_core.seed import get_rng_state, set_rng_state

from core_testutils import blob_data, fast_loader, tiny_mlp


def _losses(seed):
    seed_everything(seed)
    x, y = blob_data()
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = Trainer(model, opt, fast_loader(x, y, seed=seed, augment=True, pad=1), epochs=3)
    hist = trainer.fit()
    return [h["train_loss"] for h in hist], [p.detach().clone() for p in model.parameters()]


def test_same_seed_gives_bit_identical_losses_and_weights():
    l1, w1 = _losses(3)
    l2, w2 = _losses(3)
    assert l1 == l2
    for a, b in zip(w1, w2, strict=True):
        assert torch.equal(a, b)


def test_different_seed_differs():
    assert _losses(3)[0] != _losses(4)[0]


def test_seed_everything_seeds_python_numpy_torch():
    seed_everything(11)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(11)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_rng_state_round_trip_is_exact():
    seed_everything(5)
    state = get_rng_state()
    a = (random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist())
    set_rng_state(state)
    assert (
        random.random(),
        np.random.rand(3).tolist(),
        np.random.randn(),
        torch.rand(3).tolist(),
    ) == a


def test_deterministic_switch_sets_torch_flags():
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        seed_everything(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()
