"""Attention and its neighbours from scratch. Twins in the tests: F.scaled_dot_product_attention,
nn.MultiheadAttention, nn.LayerNorm.

Shapes: B batch, T_q / T_k query / key lengths, h heads, d = E / h per-head width, E model width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    key_padding_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """softmax(q k^T / sqrt(d) + mask) v, and the attention weights.

    q (..., T_q, d), k (..., T_k, d), v (..., T_k, d_v) -> out (..., T_q, d_v), weights (..., T_q,
    T_k). ``attn_mask``: boolean (True = may attend, F.scaled_dot_product_attention's convention) or
    additive float, broadcastable to (..., T_q, T_k). ``is_causal``: query i sees keys 0..i.
    ``key_padding_mask`` (B, T_k): True marks padding keys, which nobody attends to.
    A query that may attend to nothing gets zero weights and output instead of NaN.
    """
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (..., T_q, T_k)
    allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device)
    if is_causal:
        allowed = allowed.tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            allowed = allowed & attn_mask
        else:
            scores = scores + attn_mask
    if key_padding_mask is not None:  # (B, T_k) -> (B, 1, 1, T_k) for (B, h, T_q, T_k) scores
        keep = ~key_padding_mask
        allowed = allowed & keep.view(keep.shape[0], *([1] * (scores.dim() - 2)), keep.shape[-1])
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if (
        attn_mask is not None or key_padding_mask is not None
    ):  # (a causal mask alone leaves every row a key)
        weights = weights.nan_to_num(0.0)  # fully masked rows: all -inf -> NaN -> 0
    return weights @ v, weights


class MultiHeadAttention(nn.Module):
    """Project to h heads, attend in each, concatenate, project back. Parameter names follow
    ``nn.MultiheadAttention`` (``in_proj_weight`` (3E, E), ``in_proj_bias``, ``out_proj``), so its
    state dict loads here and the two give the same outputs (batch-first).

    ``attention`` chooses the kernel: "scratch" (ours, returns weights) or "torch"
    (F.scaled_dot_product_attention, fused, no weights).
    """

    def __init__(self, embed_dim: int, num_heads: int, attention: str = "scratch"):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.attention = embed_dim, num_heads, attention
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)  # as nn.MultiheadAttention
        nn.init.zeros_(self.out_proj.bias)
        self.last_weights: Tensor | None = None  # (B, h, T_q, T_k), kept for --show-attention

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        key_padding_mask: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """With a ``cache`` (self-attention while generating), the new tokens' keys and values are
        appended to those of the tokens before them, and the queries attend to all of them."""
        b, tq, e = query.shape
        tk, h = key.shape[1], self.num_heads

        def heads(x: Tensor) -> Tensor:  # (B, T, E) -> (B, h, T, d)
            return x.view(b, x.shape[1], h, e // h).transpose(1, 2)

        if query is key is value:  # self-attention: one matmul for all three projections
            q, k, v = map(
                heads, F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
            )
        else:
            w, bias = self.in_proj_weight.chunk(3), self.in_proj_bias.chunk(3)
            q, k, v = (heads(F.linear(x, w[i], bias[i])) for i, x in enumerate((query, key, value)))
        if cache is not None:
            past = len(cache)
            k, v = cache.extend(k, v)
            tk = k.shape[2]
            if is_causal and past:  # query i sits at position past + i: it sees keys 0..past + i
                if tq > 1:
                    causal = (
                        torch.arange(tk, device=q.device)
                        <= torch.arange(past, tk, device=q.device)[:, None]
                    )
                    attn_mask = causal if attn_mask is None else attn_mask & causal
                is_causal = False  # one new token sees every cached key: no mask at all
        if self.attention == "scratch":
            out, weights = scaled_dot_product_attention(
                q, k, v, attn_mask, is_causal, key_padding_mask
            )
        else:
            mask = attn_mask
            if key_padding_mask is not None:
                pad = ~key_padding_mask.view(b, 1, 1, tk)
                mask = pad if mask is None else mask & pad
            if is_causal and mask is not None:
                mask = mask & torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril()
                is_causal = False
            out, weights = (
                F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal),
                None,
            )
        assert out.shape == (b, h, tq, e // h)
        self.last_weights = None if weights is None else weights.detach()
        return self.out_proj(out.transpose(1, 2).reshape(b, tq, e)), weights


class KVCache:
    """One attention layer's keys and values of the tokens generated so far, (B, h, T, d) each:
    generating a token then needs one forward step of that token alone, not of the whole text."""

    def __init__(self):
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def extend(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class LayerNorm(nn.Module):
    """Normalise each token's features to mean 0, variance 1 (biased), then scale and shift."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)  # one pass for both
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(same): (length, dim).
    Each pair of features rotates at its own frequency, so PE[p + k] is a fixed linear function
    (a rotation) of PE[p]: relative offsets are easy for attention to read."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe
