"""The pieces of an MLP, written from scratch. Each has a PyTorch twin it is tested against:

Linear          <-> nn.Linear          (same init, same outputs and gradients)
ReLU            <-> nn.ReLU
ReLUFunction    <-> torch.relu         (hand-written backward, gradcheck in float64)
LinearFunction  <-> F.linear           (hand-written backward, gradcheck in float64)
BatchNorm1d     <-> nn.BatchNorm1d     (running statistics are buffers, not parameters)
Dropout         <-> nn.Dropout
log_softmax     <-> F.log_softmax      (log-sum-exp: stable for huge logits)
cross_entropy   <-> F.cross_entropy
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class LinearFunction(torch.autograd.Function):
    """y = x W^T + b with the backward pass written by hand.

    x (N, in), W (out, in), b (out,) -> y (N, out). Given dL/dy (N, out):
    dL/dx = dL/dy W (N, in);  dL/dW = (dL/dy)^T x (out, in);  dL/db = sum over N of dL/dy (out,).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight, bias)
        y = x @ weight.t()
        return y + bias if bias is not None else y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x, weight, bias = ctx.saved_tensors
        grad_x = grad_y @ weight if ctx.needs_input_grad[0] else None
        grad_w = grad_y.t() @ x if ctx.needs_input_grad[1] else None
        grad_b = grad_y.sum(dim=0) if bias is not None and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class ReLUFunction(torch.autograd.Function):
    """max(x, 0); its derivative is 1 where x > 0 and 0 elsewhere (PyTorch also uses 0 at x ==
    0)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        mask = x > 0
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad_y: Tensor) -> Tensor:
        (mask,) = ctx.saved_tensors
        return grad_y * mask


class Linear(nn.Module):
    """A fully connected layer with its own ``Parameter``s, initialised exactly as ``nn.Linear``.

    nn.Linear draws W ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a = sqrt(5) works out to
    that) and b from the same range; we draw in the same order so one seed gives the same numbers.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, custom_backward: bool = True
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.custom_backward = custom_backward
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_features
        # kaiming_uniform(a=sqrt(5)): gain sqrt(2 / (1 + a^2)), bound sqrt(3) * gain / sqrt(fan_in);
        # computed in that order so the floats match nn.Linear's to the last bit.
        std = math.sqrt(2.0 / (1 + 5)) / math.sqrt(fan_in) if fan_in > 0 else 0.0
        w_bound = math.sqrt(3.0) * std
        b_bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        with torch.no_grad():
            self.weight.uniform_(-w_bound, w_bound)
            if self.bias is not None:
                self.bias.uniform_(-b_bound, b_bound)

    def forward(self, x: Tensor) -> Tensor:
        if self.custom_backward:
            return LinearFunction.apply(x, self.weight, self.bias)
        y = x @ self.weight.t()  # let autograd derive the backward pass
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features},"
            f" bias={self.bias is not None}"
        )


class ReLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return ReLUFunction.apply(x)


class Dropout(nn.Module):
    """Zero each activation with probability p in training and scale the rest by 1/(1-p)
    ("inverted" dropout), so evaluation needs no rescaling."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty_like(x).bernoulli_(1 - self.p)  # same RNG use as nn.Dropout
        return x * keep / (1 - self.p)


class BatchNorm1d(nn.Module):
    """Normalise each feature over the batch, then scale (gamma) and shift (beta).

    gamma and beta are Parameters (learned by the optimizer); running_mean / running_var are
    buffers: saved in the state dict and moved with ``.to()``, but never touched by the optimizer.
    Training uses the batch's statistics (biased variance) and updates the running ones with
    momentum and the unbiased variance; evaluation uses the running ones, as nn.BatchNorm1d.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:  # x (N, F)
        if self.training:
            mean = x.mean(dim=0)
            var = x.var(dim=0, unbiased=False)
            with torch.no_grad():
                n = x.shape[0]
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
                self.num_batches_tracked += 1
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


def log_softmax(logits: Tensor, dim: int = -1) -> Tensor:
    """log(exp(z_i) / sum_j exp(z_j)) = z_i - logsumexp(z), with the max subtracted first so that
    exp never overflows: logsumexp(z) = m + log(sum_j exp(z_j - m)), m = max_j z_j."""
    m = logits.amax(dim=dim, keepdim=True).detach()  # a constant shift: no gradient needed
    shifted = logits - m
    return shifted - torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))


def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean negative log-likelihood of the target class. logits (N, C), target (N,) -> scalar."""
    logp = log_softmax(logits, dim=1)
    return -logp.gather(1, target[:, None]).mean()
