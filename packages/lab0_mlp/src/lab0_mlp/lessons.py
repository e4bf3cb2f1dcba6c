"""Lessons that run: each prints what it shows and returns the facts the tests check.

    lab0-mlp lesson tensors | autograd | linreg
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def tensors(say: Callable[[str], None] = print) -> dict:
    facts = {}
    say("== creating tensors")
    a = torch.tensor([[1, 2], [3, 4]])
    say(f"torch.tensor([[1, 2], [3, 4]]) -> dtype {a.dtype}, shape {tuple(a.shape)}  (ints stay int64)")
    say(f"torch.zeros(2, 3) {torch.zeros(2, 3).tolist()}; torch.ones(2) {torch.ones(2).tolist()}")
    torch.manual_seed(0)
    say(f"torch.randn(3) with seed 0 -> {[round(v, 4) for v in torch.randn(3).tolist()]} (seeded: reproducible)")
    say(f"torch.arange(0, 10, 3) -> {torch.arange(0, 10, 3).tolist()}  (end excluded)")
    facts["default_float"] = torch.zeros(1).dtype

    say("\n== dtypes")
    x = torch.tensor([1.5, 2.5])
    say(f"{x.dtype} -> .to(torch.int32) truncates: {x.to(torch.int32).tolist()}; "
        f"float16 holds 3 significant digits: {torch.tensor(1 / 3, dtype=torch.float16).item():.6f}")
    facts["int_plus_float"] = (torch.tensor([1]) + torch.tensor([0.5])).dtype
    say(f"int64 + float32 promotes to {facts['int_plus_float']}")

    say("\n== NumPy round trips share memory")
    n = np.zeros(3, dtype=np.float32)
    t = torch.from_numpy(n)
    n[0] = 7
    say(f"torch.from_numpy(n); n[0] = 7 -> tensor sees {t.tolist()} (same buffer)")
    back = t.numpy()
    t[1] = 8
    say(f"t.numpy(); t[1] = 8 -> array sees {back.tolist()}; torch.tensor(n) would copy instead")
    facts["shared"] = t[0].item() == 7 and back[1] == 8

    say("\n== view, reshape, permute, contiguous")
    m = torch.arange(6).view(2, 3)
    tr = m.t()
    say(f"arange(6).view(2, 3) = {m.tolist()}; .t() is a view with strides {tr.stride()}, contiguous: {tr.is_contiguous()}")
    try:
        tr.view(6)
        facts["view_fails"] = False
    except RuntimeError:
        facts["view_fails"] = True
        say("  .t().view(6) fails: view needs compatible strides; .reshape(6) copies when it must")
    say(f"  .t().reshape(6) = {tr.reshape(6).tolist()}; .t().contiguous().view(6) = {tr.contiguous().view(6).tolist()}")
    img = torch.zeros(2, 28, 28, 3)
    say(f"permute(0, 3, 1, 2): NHWC {tuple(img.shape)} -> NCHW {tuple(img.permute(0, 3, 1, 2).shape)}")

    say("\n== indexing and broadcasting")
    g = torch.arange(12).view(3, 4)
    say(f"g[1] = {g[1].tolist()}; g[:, 1] = {g[:, 1].tolist()}; g[g > 8] = {g[g > 8].tolist()}")
    col, row = torch.tensor([[0], [10], [20]]), torch.tensor([1, 2, 3])
    b = col + row
    say(f"(3, 1) + (3,) broadcasts to {tuple(b.shape)}: {b.tolist()}  (align right; size-1 dims stretch)")
    facts["broadcast_shape"] = tuple(b.shape)

    say("\n== devices")
    device = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    say(f"best device here: {device}; x.to(device) copies, ops need all operands on one device")
    facts["device"] = device
    return facts


def autograd(say: Callable[[str], None] = print) -> dict:
    say("== y = (3x^2 + 2x).sum(); y.backward()")
    x = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    y = (3 * x**2 + 2 * x).sum()
    y.backward()
    by_hand = 6 * x.detach() + 2
    say(f"x = {x.tolist()}\nx.grad     = {x.grad.tolist()}\n6x + 2     = {by_hand.tolist()}  (the hand derivative)")
    facts = {"grad_matches": torch.allclose(x.grad, by_hand)}

    say("\n== the recorded graph (walking grad_fn back from y)")
    x2 = torch.tensor([1.0, 2.0], requires_grad=True)
    y2 = (3 * x2**2 + 2 * x2).sum()
    names = []

    def walk(fn, depth=0):
        if fn is None:
            return
        names.append(type(fn).__name__)
        say("  " * depth + type(fn).__name__)
        for nxt, _ in fn.next_functions:
            walk(nxt, depth + 1)

    walk(y2.grad_fn)
    facts["graph"] = names

    say("\n== gradients accumulate until zeroed")
    w = torch.tensor(2.0, requires_grad=True)
    (w * 3).backward()
    first = w.grad.item()
    (w * 3).backward()
    second = w.grad.item()
    w.grad = None  # what optimizer.zero_grad(set_to_none=True) does
    (w * 3).backward()
    third = w.grad.item()
    say(f"backward once: {first}; again without zeroing: {second} (summed); after zeroing: {third}")
    facts["accumulate"] = (first, second, third)
    return facts


def linreg(say: Callable[[str], None] = print, steps: int = 500, lr: float = 0.5, seed: int = 0) -> dict:
    """Fit y = w x + b to a noisy line with tensors and autograd only: no nn, no optim."""
    g = torch.Generator().manual_seed(seed)
    true_w, true_b = 2.5, -1.3
    x = torch.rand(2000, generator=g) * 2 - 1
    y = true_w * x + true_b + 0.1 * torch.randn(2000, generator=g)
    w = torch.zeros((), requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    say(f"data: y = {true_w} x + ({true_b}) + noise(0.1), 2000 points; gradient descent, lr {lr}")
    for step in range(steps + 1):
        loss = ((w * x + b - y) ** 2).mean()
        if step % 100 == 0:
            say(f"step {step:>4}  loss {loss.item():.5f}  w {w.item():+.4f}  b {b.item():+.4f}")
        if step == steps:
            break
        loss.backward()
        with torch.no_grad():  # the update itself must not be recorded in the graph
            w -= lr * w.grad
            b -= lr * b.grad
        w.grad = None
        b.grad = None
    say(f"recovered w = {w.item():.4f} (true {true_w}), b = {b.item():.4f} (true {true_b})")
    return {"w": w.item(), "b": b.item(), "true_w": true_w, "true_b": true_b, "loss": loss.item()}


LESSONS = {"tensors": tensors, "autograd": autograd, "linreg": linreg}
