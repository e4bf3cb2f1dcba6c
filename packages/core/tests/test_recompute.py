"""Activation checkpointing (``labs_core.recompute``): the same outputs, gradients and batch-norm
statistics as the plain forward pass, while keeping fewer activations for the backward pass."""

import copy

import torch
from torch import nn

from labs_core.recompute import run_segments


def segments(dropout=0.3):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Dropout(dropout), nn.ReLU()
        ),
        nn.Sequential(nn.Conv2d(8, 4, 3, padding=1), nn.BatchNorm2d(4), nn.GELU()),
    )


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for the backward pass while ``fn`` runs."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_checkpointed_segments_equal_the_plain_model_dropout_and_batch_norm_included():
    plain, ckpt = segments(), segments()
    x = torch.randn(4, 3, 8, 8)
    for step in range(2):  # the second step starts from the first's running statistics
        torch.manual_seed(step)
        ref = plain(x)
        ref.square().mean().backward()
        torch.manual_seed(step)
        out = run_segments(ckpt, x, enabled=True)
        out.square().mean().backward()
        torch.testing.assert_close(out, ref, rtol=0, atol=0)  # the same dropout masks
        for (name, p), q in zip(ckpt.named_parameters(), plain.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7, msg=name)
        # the recomputation ran each batch norm again in training mode; it must not count twice
        for (name, b), c in zip(ckpt.named_buffers(), plain.buffers(), strict=True):
            torch.testing.assert_close(b, c, rtol=0, atol=0, msg=name)


def test_checkpointing_keeps_fewer_activations_and_is_off_without_gradients():
    model = segments(dropout=0.0)
    x = torch.randn(8, 3, 16, 16)
    plain = saved_bytes(lambda: run_segments(copy.deepcopy(model), x, enabled=False))
    ckpt = saved_bytes(lambda: run_segments(copy.deepcopy(model), x, enabled=True))
    assert ckpt < plain / 2, (ckpt, plain)  # only the segments' inputs (and weights) are kept
    with torch.no_grad():  # evaluation: nothing to recompute, the plain path
        torch.testing.assert_close(run_segments(model.eval(), x, enabled=True), model(x))
