"""A character-level language model: the same decoder-only transformer, trained to predict the
next character of real text, and sampling from it with a KV cache.

Loss is cross-entropy in nats per character; bits per character is the same number divided by
ln 2 (what a compressor would need per character). A model that knows nothing pays ln(65) = 4.17
nats on tiny Shakespeare's 65 characters; 2.5 spells words badly; 1.5 writes plausible lines.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from labs_core import LabError
from labs_core.data.text import CharTokenizer

from .model import TinyTransformer

LN2 = math.log(2)


def lm_loss(logits: Tensor, batch) -> dict[str, Tensor]:
    """Mean next-character cross-entropy over every position of every window (nats), and in bits."""
    y = batch[1]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    return {"loss": loss, "bpc": loss.detach() / LN2}


def next_token(
    logits: Tensor, temperature: float, top_k: int, generator: torch.Generator | None
) -> Tensor:
    """One token from (V,) logits: argmax when ``temperature`` is 0; else softmax(logits / T)
    over the ``top_k`` most likely tokens (all when 0)."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).to(logits.device)


MAX_SAMPLE_TOKENS = 10_000  # the most characters ``sample --tokens`` generates in one command


@torch.no_grad()
def generate(
    model: TinyTransformer,
    prompt: Tensor,
    tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    cache: bool = True,
) -> Tensor:
    """``prompt`` (T0,) ids followed by ``tokens`` sampled ids (``generate_ids``, collected)."""
    seq = prompt.to(next(model.parameters()).device)
    new = list(
        generate_ids(
            model,
            seq,
            tokens,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
            cache=cache,
        )
    )
    return torch.cat([seq, *new]) if new else seq


@torch.no_grad()
def generate_ids(
    model: TinyTransformer,
    prompt: Tensor,
    tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    cache: bool = True,
):
    """Yield ``tokens`` sampled ids, (1,) each, one at a time after ``prompt`` (T0,) ids, so a
    caller can show each as it comes.

    The model reads at most ``max_len`` tokens. Its context window starts at ``start``; when the
    text outgrows the window, the window jumps forward to the last ``max_len // 2`` tokens.
    With ``cache``, keys and values of the window's tokens are kept, so each new token costs one
    forward step of that token alone; after a jump the window is read once (one step of half a
    window). Without, every token re-reads its whole window: the same logits, ``max_len / 2``
    times the work. Both follow the same window, so they give the same tokens.
    """
    if prompt.numel() == 0:
        raise LabError("the prompt is empty: give at least one character to start from")
    model.eval()
    limit = model.cfg.max_len
    seq = prompt.to(next(model.parameters()).device)
    start = max(0, len(seq) - limit)
    caches = None
    for _ in range(tokens):
        if len(seq) - start > limit:  # the window is full: jump forward, read the new window afresh
            start, caches = len(seq) - max(1, limit // 2), None
        if not cache:
            logits = model(seq[None, start:])[0, -1]
        elif caches is None:
            caches = model.new_caches()
            logits = model(seq[None, start:], caches)[0, -1]
        else:
            logits = model(seq[None, -1:], caches)[0, -1]
        token = next_token(logits, temperature, top_k, generator)
        seq = torch.cat([seq, token])
        yield token


def sample_text(
    model: TinyTransformer,
    tokenizer: CharTokenizer,
    prompt: str,
    tokens: int,
    *,
    temperature: float,
    top_k: int,
    seed: int,
    cache: bool = True,
) -> str:
    """The prompt and ``tokens`` characters after it, reproducible from ``seed``."""
    return prompt + "".join(
        stream_text(
            model,
            tokenizer,
            prompt,
            tokens,
            temperature=temperature,
            top_k=top_k,
            seed=seed,
            cache=cache,
        )
    )


def stream_text(
    model: TinyTransformer,
    tokenizer: CharTokenizer,
    prompt: str,
    tokens: int,
    *,
    temperature: float,
    top_k: int,
    seed: int,
    cache: bool = True,
):
    """The ``tokens`` characters after ``prompt``, yielded one at a time as they are sampled
    (the same characters ``sample_text`` returns for the same ``seed``)."""
    ids = tokenizer.encode(prompt)
    generator = torch.Generator().manual_seed(seed)
    for token in generate_ids(
        model, ids, tokens, temperature=temperature, top_k=top_k, generator=generator, cache=cache
    ):
        yield tokenizer.decode(token.cpu())
