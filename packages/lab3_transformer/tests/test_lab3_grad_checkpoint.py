"""``--grad-checkpoint``: each block recomputed in the backward pass gives the plain model's
outputs and gradients, dropout included (its masks are replayed from the saved RNG state)."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from lab3_transformer.cli import main
from lab3_transformer.model import TinyTransformer, TransformerConfig
from lab3_transformer.tasks import VOCAB


@pytest.mark.parametrize("attention", ["scratch", "torch"])
def test_checkpointed_blocks_give_the_plain_gradients_with_dropout(attention):
    torch.manual_seed(0)
    plain = TinyTransformer(
        TransformerConfig(
            VOCAB, 12, dim=32, heads=4, layers=3, dropout=0.2, attention=attention, tie_weights=True
        )
    )
    ckpt = copy.deepcopy(plain)
    ckpt.grad_checkpoint = True
    x, y = torch.randint(0, VOCAB, (6, 12)), torch.randint(0, VOCAB, (6, 12))
    for model in (plain, ckpt):
        torch.manual_seed(1)  # the same dropout masks in both forward passes
        model.out = model(x)
        F.cross_entropy(model.out.reshape(-1, VOCAB), y.reshape(-1)).backward()
    torch.testing.assert_close(ckpt.out, plain.out, rtol=0, atol=0)
    grads = dict(plain.named_parameters())
    for name, p in ckpt.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-5, atol=1e-7, msg=name)
    # a different mask in the recomputation would show: the dropout did act
    torch.manual_seed(2)
    assert not torch.equal(plain(x), plain.out)


def test_sampling_and_evaluation_are_unchanged_by_it():
    torch.manual_seed(0)
    model = TinyTransformer(TransformerConfig(VOCAB, 12, dim=16, heads=2)).eval()
    prefix = torch.randint(0, VOCAB, (2, 4))
    expected = model.generate(prefix, 6)  # the KV-cache-free greedy path, eval mode
    model.grad_checkpoint = True
    assert torch.equal(model.generate(prefix, 6), expected)


def test_a_run_with_grad_checkpoint_ends_where_the_plain_run_does(tmp_path):
    base = [
        "--task",
        "reverse",
        "--length",
        "4",
        "--num-train",
        "256",
        "--num-test",
        "32",
        "--epochs",
        "1",
        "--max-steps",
        "3",
        "--batch-size",
        "64",
        "--dim",
        "16",
        "--heads",
        "2",
        "--dropout",
        "0.1",
        "--quiet",
    ]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--out", str(tmp_path / "ckpt"), "--grad-checkpoint"]) == 0
    plain, ckpt = (
        json.loads((tmp_path / n / "metrics.jsonl").read_text().splitlines()[-1])
        for n in ("plain", "ckpt")
    )
    for key in ("train_loss", "val_loss", "grad_norm"):
        assert ckpt[key] == pytest.approx(plain[key], rel=1e-5), key
