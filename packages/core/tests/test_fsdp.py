"""FSDP (``--fsdp``) in one process: a one-process group is enough to shard, train and gather, so
the state-dict conversions are checked here in milliseconds; two-process runs are in
test_distributed.
"""

import pytest
import torch
import torch.distributed as dist
from torch import nn

from labs_core import Trainer, fsdp, seed_everything
from labs_core.errors import LabError

from core_testutils import blob_data, fast_loader, tiny_mlp


@pytest.fixture
def group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def trained(sharded: bool, epochs=2, state=None, bn=True):
    seed_everything(0)
    x, y = blob_data(n=64)
    model = tiny_mlp(dropout=0.0, bn=bn)
    if sharded:
        fsdp.shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    t = Trainer(
        model,
        opt,
        fast_loader(x, y, 16, augment=True, pad=1),
        fast_loader(x, y, 32, shuffle=False),
        epochs=epochs,
        grad_accum=2,
        grad_clip=1.0,
    )
    if state is not None:
        t.load_state_dict(state)
    t.fit()
    return t


def test_a_sharded_run_trains_as_a_plain_one_and_saves_the_same_checkpoint(group):
    plain, sharded = trained(False), trained(True)
    assert sharded.sharded and not plain.sharded
    for a, b in zip(plain.history, sharded.history, strict=True):
        for key in ("train_loss", "val_loss", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    p, s = plain.state_dict(), sharded.state_dict()
    assert list(p["model"]) == list(s["model"])  # the plain model's keys: no wrapper names
    for k, v in p["model"].items():
        assert not isinstance(s["model"][k], torch.distributed.tensor.DTensor)
        torch.testing.assert_close(s["model"][k], v, rtol=1e-5, atol=1e-6)
    # the optimizer's state in optimizer.state_dict()'s own format: parameters numbered in group
    # order
    assert s["optimizer"]["param_groups"] == p["optimizer"]["param_groups"]
    assert sorted(s["optimizer"]["state"]) == sorted(p["optimizer"]["state"]) == list(range(6))
    for i, st in p["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(
                s["optimizer"]["state"][i][name], st[name], rtol=1e-5, atol=1e-6
            )


def test_checkpoints_cross_between_sharded_and_plain_runs(group):
    """A plain checkpoint resumes sharded, and a sharded one resumes plain: both end where an
    unbroken plain run does."""
    straight = trained(False, epochs=3).module.state_dict()
    from_plain = trained(True, epochs=3, state=trained(False, epochs=1).state_dict())
    from_sharded = trained(False, epochs=3, state=trained(True, epochs=1).state_dict())
    for k, v in straight.items():
        torch.testing.assert_close(from_plain.state_dict()["model"][k], v, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(from_sharded.module.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_of_another_model_is_refused_in_one_line(group):
    state = trained(False, epochs=1, bn=False).state_dict()
    with pytest.raises(LabError, match="does not fit this model: missing keys"):
        trained(True, epochs=1, state=state)


def test_unshard_gives_a_plain_model_with_the_trained_weights(group):
    seed_everything(0)
    plain = tiny_mlp(dropout=0.0, bn=True)
    t = trained(True)
    skeleton = fsdp.skeleton(plain)
    assert all(p.is_meta for p in skeleton.parameters())
    weights = t.state_dict()["model"]
    t.unshard(skeleton)
    assert not t.sharded and not fsdp.is_sharded(t.module) and t.wrapped is t.module
    for k, v in t.module.state_dict().items():
        assert type(v) is torch.Tensor
        torch.testing.assert_close(v, weights[k])
    x, y = blob_data(n=64)
    logits, _ = t.predict(fast_loader(x, y, 32, shuffle=False))  # one process alone: no collective
    assert logits.shape == (64, 3)


def test_shard_units_are_the_blocks_and_tied_weights_stay_with_the_root():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))
            self.norm = nn.LayerNorm(8)
            self.act = nn.ReLU()  # no parameters: nothing to shard
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.embed.weight

    m = Tied()
    assert fsdp.shard_units(m) == [*m.blocks, m.norm]


def test_the_sharded_trainer_refuses_a_rank_0_only_state_dict(group):
    t = trained(True, epochs=1)
    with pytest.raises(ValueError, match="gathered from every process"):
        t.state_dict(gather=False)


def test_a_sharded_model_evaluated_before_any_training_still_trains(group):
    """Fine-tuning measures the validation accuracy first: the sharded model's first forward then
    runs without gradients, and must not leave it with tensors training cannot update."""
    seed_everything(0)
    x, y = blob_data(n=64)
    model = fsdp.shard(tiny_mlp(dropout=0.0, bn=True))
    t = Trainer(
        model, torch.optim.AdamW(model.parameters(), lr=0.01), fast_loader(x, y, 16), epochs=1
    )
    before = t.evaluate(fast_loader(x, y, 32, shuffle=False))["val_loss"]
    t.fit()
    assert t.evaluate(fast_loader(x, y, 32, shuffle=False))["val_loss"] < before
