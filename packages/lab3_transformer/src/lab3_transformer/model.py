"""A decoder-only transformer (GPT-style, pre-norm) small enough to watch.

Why decoder-only: one stack of identical blocks reads ``source SEP target`` left to right and
predicts each next token; the causal mask is the only thing that separates "reading" from
"writing", so the attention maps show directly which source token each output token looks at.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from labs_core.recompute import run_segments

from .ops import KVCache, LayerNorm, MultiHeadAttention, sinusoidal_positions


@dataclass
class TransformerConfig:
    vocab_size: int
    max_len: int  # longest input the model will see
    dim: int = 64  # width of every token's vector
    heads: int = 4  # attention heads per layer; each works in dim / heads dimensions
    layers: int = 2  # transformer blocks
    mlp_ratio: int = 4  # hidden width of each block's MLP, in multiples of dim
    dropout: float = 0.0  # toy tasks are noise-free: no regularisation needed
    positions: str = "sinusoidal"  # or "learned": how a token knows where it is
    attention: str = "scratch"  # or "torch": F.scaled_dot_product_attention
    tie_weights: bool = (
        False  # the output layer reuses the token embedding matrix (language models)
    )


class Block(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x)). Normalising inside the residual branch
    keeps the residual stream an untouched sum, which trains stably without warm-up tricks."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.norm1 = LayerNorm(cfg.dim)
        self.attn = MultiHeadAttention(cfg.dim, cfg.heads, cfg.attention)
        self.norm2 = LayerNorm(cfg.dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim, cfg.mlp_ratio * cfg.dim),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.dim, cfg.dim),
        )
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:  # (B, T, E)
        h = self.norm1(x)
        a, _ = self.attn(h, h, h, is_causal=True, cache=cache)
        x = x + self.drop(a)
        return x + self.drop(self.mlp(self.norm2(x)))


class TinyTransformer(nn.Module):
    # --grad-checkpoint: in training, keep only each block's input and recompute the block's
    # activations in the backward pass (dropout masks replayed from the saved RNG state)
    grad_checkpoint = False

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        if cfg.positions == "learned":
            self.pos = nn.Parameter(torch.zeros(cfg.max_len, cfg.dim).normal_(std=0.02))
        elif cfg.positions == "sinusoidal":
            self.register_buffer(
                "pos", sinusoidal_positions(cfg.max_len, cfg.dim), persistent=False
            )
        else:
            raise ValueError("positions must be 'sinusoidal' or 'learned'")
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size)
        if cfg.tie_weights:
            # Weight tying: reading a token in (a row of ``embed``) and scoring it as the next token
            # (a row of ``head``) use one vector per token. Fewer parameters, and every step trains
            # the embedding of every token through the output layer, not only the tokens it read.
            nn.init.normal_(self.embed.weight, std=0.02)
            self.head.weight = self.embed.weight

    def forward(self, tokens: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        """(B, T) int -> logits (B, T, V). With ``caches`` (one per block, from ``new_caches``),
        ``tokens`` continue the cached ones: their positions start after them."""
        start = len(caches[0]) if caches else 0
        t = start + tokens.shape[1]
        if t > self.cfg.max_len:
            raise ValueError(f"sequence of {t} tokens is longer than max_len {self.cfg.max_len}")
        x = self.embed(tokens) + self.pos[start:t]  # (B, T, E)
        if caches:
            for block, cache in zip(self.blocks, caches, strict=True):
                x = block(x, cache)
        else:
            x = run_segments(self.blocks, x, enabled=self.grad_checkpoint and self.training)
        return self.head(self.norm(x))

    def new_caches(self) -> list[KVCache]:
        return [KVCache() for _ in self.blocks]

    def attention_maps(self) -> list[Tensor]:
        """Each layer's weights from the last forward pass: (B, heads, T, T) (scratch attention
        only)."""
        return [b.attn.last_weights for b in self.blocks]

    @torch.no_grad()
    def generate(self, prefix: Tensor, steps: int) -> Tensor:
        """Greedy decoding: append the most likely next token ``steps`` times. (B, T0) -> (B, T0 +
        steps)."""
        out = prefix
        for _ in range(steps):
            next_token = self(out)[:, -1].argmax(dim=-1, keepdim=True)
            out = torch.cat([out, next_token], dim=1)
        return out
