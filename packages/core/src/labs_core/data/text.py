"""Text for character-level language models: a corpus read or downloaded, a character tokenizer,
the usual split, random training windows and fixed validation windows.

    text = load_text_dataset("tinyshakespeare", "data")      # or ("text", "my.txt")
    data = CharData.from_text(text, block_size=64)            # vocabulary from the training split
    train = RandomWindows(data.train, 64, batch_size=32, steps=250, seed=0)   # (x, y) batches
    val = ValidationWindows(data.val, 64, batch_size=256)     # the same windows every run

A window is ``block_size + 1`` consecutive characters: the model reads the first ``block_size``
and predicts each next one, so ``y`` is ``x`` shifted left by one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..errors import LabError
from ..files import refuse_special
from .download import DownloadFailed, fetch, missing_data_error
from .loader import EpochLoader, epoch_generator

TEXT_DATASETS = ("tinyshakespeare", "text")
TINYSHAKESPEARE = {
    "file": "input.txt",
    "urls": [
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    ],
    "md5": "6fb458f1232090904fb40fe944165e91",
    "source": "karpathy/char-rnn's data/tinyshakespeare/input.txt",
}
TRAIN_FRACTION = 0.9  # the usual split: the first 90% of characters train, the last 10% validate


class CharTokenizer:
    """One token per distinct character, numbered in sorted order. Saved as its character string,
    so a checkpoint can sample without the data."""

    def __init__(self, chars: str):
        self.chars = "".join(sorted(set(chars)))
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(text)

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        try:
            return torch.tensor([self.index[c] for c in text], dtype=torch.long)
        except KeyError as exc:
            unknown = sorted({c for c in text if c not in self.index})
            shown = ", ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise LabError(
                f"{len(unknown)} character(s) the model never saw in training: {shown} "
                f"(its vocabulary: {self.chars!r})"
            ) from exc

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in (ids.tolist() if isinstance(ids, Tensor) else ids))

    def state_dict(self) -> dict:
        return {"chars": self.chars}

    @classmethod
    def from_state_dict(cls, state: dict) -> CharTokenizer:
        return cls(state["chars"])


def read_text(path: str | Path) -> str:
    """A UTF-8 text file; an empty, missing, binary or non-UTF-8 file is one clear error."""
    path = Path(path)
    if path.is_dir():
        raise LabError(f"{path} is a folder; --data-dir for --dataset text names a UTF-8 text file")
    refuse_special(path, "--data-dir for --dataset text")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LabError(
            f"{path}: no such file (--dataset text reads the UTF-8 text file --data-dir names)"
        ) from None
    except OSError as exc:
        raise LabError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not raw.strip():
        raise LabError(f"{path} is empty: a language model needs text to learn from")
    if b"\x00" in raw[: 1 << 16]:
        raise LabError(f"{path} looks like a binary file (it holds NUL bytes), not text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LabError(f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded)") from None


def load_text_dataset(name: str, data_dir: str | Path = "data", download: bool = True) -> str:
    """``text``: the file ``data_dir`` names. ``tinyshakespeare``:
    ``data_dir/tinyshakespeare/input.txt``, downloaded (checksum verified, written atomically) when
    missing."""
    if name == "text":
        return read_text(data_dir)
    if name != "tinyshakespeare":
        raise LabError(f"unknown text dataset {name!r}; choose one of {', '.join(TEXT_DATASETS)}")
    folder = Path(data_dir) / "tinyshakespeare"
    path = folder / TINYSHAKESPEARE["file"]
    if not path.is_file():
        if folder.exists() and not folder.is_dir() or Path(data_dir).is_file():
            raise LabError(
                f"--data-dir {data_dir}: for --dataset tinyshakespeare it is the folder to keep "
                "the corpus in; to read a file of your own, use --dataset text --data-dir FILE"
            )
        why = "input.txt is not downloaded and downloading is off"
        if download:
            try:
                fetch(TINYSHAKESPEARE["urls"], path, TINYSHAKESPEARE["md5"])
            except DownloadFailed as exc:
                why = f"the download failed ({exc})"
        if not path.is_file():
            raise missing_data_error(
                "tinyshakespeare",
                folder,
                [TINYSHAKESPEARE["file"]],
                TINYSHAKESPEARE["source"],
                why,
                offline="train on a text of your own with --dataset text --data-dir FILE",
            )
    return read_text(path)


class CharData:
    """A corpus as token ids, split by position: the first ``train_fraction`` of characters
    train, the rest validate. The vocabulary comes from the training split; validation
    characters outside it are left out (and counted in ``notes``)."""

    def __init__(self, train: Tensor, val: Tensor, tokenizer: CharTokenizer, notes: list[str]):
        self.train, self.val, self.tokenizer, self.notes = train, val, tokenizer, notes

    @classmethod
    def from_text(
        cls,
        text: str,
        block_size: int,
        train_fraction: float = TRAIN_FRACTION,
        source: str = "the text",
    ) -> CharData:
        cut = int(len(text) * train_fraction)
        train_text, val_text = text[:cut], text[cut:]
        tokenizer = CharTokenizer.from_text(train_text)
        if (
            len(tokenizer) < 2
        ):  # one symbol: every next character is certain, the loss is 0 from the start
            raise LabError(
                f"{source}: its training split uses {len(tokenizer)} distinct character(s)"
                f" ({''.join(tokenizer.chars)!r}); a language model needs at least two to learn"
                " anything"
            )
        notes = []
        unseen = [c for c in val_text if c not in tokenizer.index]
        if unseen:
            val_text = "".join(c for c in val_text if c in tokenizer.index)
            notes.append(
                f"{len(unseen)} validation character(s) never seen in training were left out "
                f"({', '.join(repr(c) for c in sorted(set(unseen))[:5])})"
            )
        for split, part in (("training", train_text), ("validation", val_text)):
            if len(part) < block_size + 1:
                raise LabError(
                    f"{source} is too short: its {split} split holds {len(part):,} characters,"
                    f" fewer than one window of --block-size {block_size} + 1 (use a smaller"
                    " --block-size or a longer text)"
                )
        return cls(tokenizer.encode(train_text), tokenizer.encode(val_text), tokenizer, notes)


class RandomWindows(EpochLoader):
    """``steps`` batches of ``batch_size`` windows at random places in ``ids``, drawn again every
    epoch from ``(seed, epoch, rank)``: a resumed run sees the windows an unbroken run would.
    The ids live on ``device``; a batch is one gather, no Python per window."""

    def __init__(
        self,
        ids: Tensor,
        block_size: int,
        batch_size: int,
        steps: int,
        *,
        seed: int = 0,
        device="cpu",
        rank: int = 0,
        world: int = 1,
    ):
        self.device = torch.device(device)
        self.ids = ids.to(self.device)
        self.block_size, self.batch_size, self.steps = block_size, batch_size, steps
        self.seed, self.epoch, self.rank, self.world = seed, 0, rank, world
        self.span = torch.arange(block_size + 1, device=self.device)

    def __len__(self) -> int:
        return self.steps

    def iter_from(self, start: int):
        # Every process draws the same starts and takes its own share: world size changes how
        # the windows are shared out, not which windows an epoch holds.
        g = epoch_generator(self.seed, self.epoch)
        total = self.steps * self.batch_size * self.world
        starts = torch.randint(len(self.ids) - self.block_size, (total,), generator=g)
        starts = starts.view(self.steps, self.world, self.batch_size)[:, self.rank].to(self.device)
        for i in range(start, self.steps):
            w = self.ids[starts[i, :, None] + self.span]  # (B, block_size + 1)
            yield w[:, :-1], w[:, 1:]


class ValidationWindows:
    """The validation split cut into consecutive windows (the last partial one dropped), or
    ``limit`` of them spread evenly over it: the same windows in every run, so losses compare.
    Each position is predicted once, from the characters before it in its window, as with
    random windows in training."""

    def __init__(
        self,
        ids: Tensor,
        block_size: int,
        batch_size: int = 256,
        *,
        limit: int = 0,
        device="cpu",
        rank: int = 0,
        world: int = 1,
    ):
        n = (len(ids) - 1) // block_size
        ids = ids.to(device)
        x = ids[: n * block_size].view(n, block_size)
        y = ids[1 : n * block_size + 1].view(n, block_size)
        if limit and limit < n:
            keep = torch.linspace(0, n - 1, limit).round().long().to(ids.device)
            x, y = x[keep], y[keep]
        self.x, self.y = x[rank::world], y[rank::world]
        self.batch_size = batch_size

    @property
    def tokens(self) -> int:
        return self.x.numel()

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self):
        for i in range(0, len(self.x), self.batch_size):
            yield self.x[i : i + self.batch_size], self.y[i : i + self.batch_size]
