"""Toy sequence tasks, generated from a seed: no download, endless fresh examples.

Every example is ``source SEP target``. Tokens: digits 0-9, PLUS 10, SEP 11.
- reverse: target = source reversed               (attend to the mirrored position)
- sort:    target = source sorted                 (count and compare)
- add:     source = a + b, each L digits, least significant digit first; target = (a + b) mod 10^L,
           least significant first (each output digit looks up the two digits it sums, and the
           carry it wrote one step before: what it reads depends on where it is writing)
"""

from __future__ import annotations

import torch
from torch import Tensor

from labs_core.errors import LabError

DIGITS = 10
PLUS = 10
SEP = 11
VOCAB = 12
TASKS = ("reverse", "sort", "add")


def token_name(t: int) -> str:
    return str(t) if t < DIGITS else ("+" if t == PLUS else "|")


def lengths(task: str, length: int) -> tuple[int, int]:
    """(source length, target length)."""
    return (2 * length + 1, length) if task == "add" else (length, length)


def make_examples(task: str, n: int, length: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` examples: full sequences (n, S + 1 + T) and targets (n, T), int64."""
    g = torch.Generator().manual_seed(seed)
    if task == "reverse":
        src = torch.randint(0, DIGITS, (n, length), generator=g)
        tgt = src.flip(1)
    elif task == "sort":
        src = torch.randint(0, DIGITS, (n, length), generator=g)
        tgt = src.sort(dim=1).values
    elif task == "add":
        a = torch.randint(0, DIGITS, (n, length), generator=g)  # digit i has weight 10^i
        b = torch.randint(0, DIGITS, (n, length), generator=g)
        total = a + b
        tgt = torch.empty_like(a)
        carry = torch.zeros(n, dtype=torch.long)
        for i in range(length):  # column addition, the carry moving left to right (LSB first)
            column = total[:, i] + carry
            tgt[:, i], carry = column % 10, column // 10
        src = torch.cat([a, torch.full((n, 1), PLUS), b], dim=1)
    else:
        raise ValueError(f"unknown task {task!r}")
    sep = torch.full((n, 1), SEP)
    return torch.cat([src, sep, tgt], dim=1), tgt


def split_examples(task: str, n_train: int, n_test: int, length: int, seed: int):
    """Train and held-out sets with no sequence in common."""
    x, y = make_examples(task, n_train + 2 * n_test, length, seed)
    s = lengths(task, length)[0]
    _, first = torch.unique(x[:, :s], dim=0, return_inverse=True)
    seen, keep = set(), []
    for i, key in enumerate(first.tolist()):  # drop duplicate sources so held-out means unseen
        if key not in seen:
            seen.add(key)
            keep.append(i)
    keep = torch.tensor(keep)
    x, y = x[keep], y[keep]
    if (
        len(keep) <= n_test
    ):  # a short --length has few distinct sources: none would be left to train on
        raise LabError(
            f"--length {length}: only {len(keep)} distinct {task} sources exist, not enough for"
            f" {n_test} held-out and any training sequences (a larger --length or a smaller"
            " --num-test)"
        )
    test = slice(0, n_test)
    train = slice(n_test, n_test + n_train)
    return (x[train], y[train]), (x[test], y[test])
