"""SGD with momentum and Adam, written out. They subclass ``torch.optim.Optimizer`` only for its
bookkeeping (param groups, state dict, zero_grad), so they plug into the core trainer and its
checkpoints; ``step`` is ours. Tests show the same parameter trajectory as ``torch.optim``'s.
"""

from __future__ import annotations

import torch


class SGD(torch.optim.Optimizer):
    """v <- mu * v + g;  p <- p - lr * (g + mu * v if nesterov else v).  g includes weight decay."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        super().__init__(
            params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        )

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd:
                    g = g.add(p, alpha=wd)
                if mu:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = g.clone()  # first step: v = g (as torch.optim)
                    else:
                        state["momentum_buffer"].mul_(mu).add_(g)
                    v = state["momentum_buffer"]
                    g = g.add(v, alpha=mu) if group["nesterov"] else v
                p.add_(g, alpha=-lr)


class Adam(torch.optim.Optimizer):
    """m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  bias-corrected m_hat, v_hat;
    p <- p - lr * m_hat / (sqrt(v_hat) + eps). ``decoupled=True`` gives AdamW (decay p directly)."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ):
        super().__init__(
            params,
            dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=decoupled),
        )

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd and group["decoupled"]:
                    p.mul_(1 - lr * wd)
                elif wd:
                    g = g.add(p, alpha=wd)
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat_scale = lr / (1 - b1**t)
                denom = (v.sqrt() / ((1 - b2**t) ** 0.5)).add_(eps)
                p.addcdiv_(m, denom, value=-m_hat_scale)
