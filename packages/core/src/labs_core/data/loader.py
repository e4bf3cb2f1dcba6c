"""Loaders. The fast path keeps a whole split on the training device as uint8 and does everything
per batch with tensor ops; the standard path streams from disk through a DataLoader.

Both derive each epoch's order from ``(seed, epoch)`` only, so a resumed run sees exactly the
batches an unbroken run would have seen.
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import LabError, one_line
from ..seed import seed_worker


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def epoch_order(
    n: int, seed: int, epoch: int, shuffle: bool, weights: Tensor | None = None
) -> Tensor:
    """This epoch's sample order: a permutation, or ``n`` class-balanced draws when ``weights`` is
    given."""
    if weights is not None:
        return torch.multinomial(
            weights, n, replacement=True, generator=epoch_generator(seed, epoch)
        )
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=epoch_generator(seed, epoch))


def balanced_sample_weights(y: Tensor, num_classes: int) -> Tensor:
    """Per-sample weights 1 / count(class): every class is drawn equally often in expectation."""
    counts = torch.bincount(y, minlength=num_classes).clamp(min=1).double()
    return (1.0 / counts)[y]


def class_weights(y: Tensor, num_classes: int) -> Tensor:
    """Loss weights ``N / (C * count(class))`` (1 for balanced data), as scikit-learn's
    'balanced'."""
    counts = torch.bincount(y, minlength=num_classes).clamp(min=1).float()
    return len(y) / (num_classes * counts)


def translate_batch(x: Tensor, dx: Tensor, dy: Tensor, pad: int) -> Tensor:
    """Shift each image of ``x (B, C, H, W)`` by ``(dx[b], dy[b])`` pixels, zero-filled:
    the same as a random crop of size (H, W) from the image zero-padded by ``pad``.
    Images that share a shift are cut from the padded batch together, one slice per shift
    ((2 * pad + 1)^2 of them): plain strided copies, several times faster than a per-pixel gather.
    """
    b, c, h, w = x.shape
    side = 2 * pad + 1
    which = (dy + pad) * side + (dx + pad)  # each image's shift, numbered 0 .. side^2 - 1
    order = which.argsort()
    xp = F.pad(
        x.index_select(0, order), (pad, pad, pad, pad)
    )  # (B, C, H+2p, W+2p), grouped by shift
    out = torch.empty_like(x)
    start = 0
    for shift, count in enumerate(torch.bincount(which, minlength=side * side).tolist()):
        top, left = divmod(shift, side)  # = (dy + pad, dx + pad)
        out[start : start + count] = xp[start : start + count, :, top : top + h, left : left + w]
        start += count
    return out.index_select(0, order.argsort())  # back in the batch's order


class EpochLoader(abc.ABC):
    """What the trainer asks of a loader that draws each epoch from ``(seed, epoch)``: the epoch
    to draw, the state a checkpoint keeps, and ``iter_from(start)`` to resume mid-epoch."""

    seed: int
    epoch: int

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch = state["seed"], state["epoch"]

    def __iter__(self):
        return self.iter_from(0)

    @abc.abstractmethod
    def iter_from(self, start: int):
        """This epoch's batches from batch ``start`` on."""


class FastLoader(EpochLoader):
    """Batches from tensors that live on ``device``. No per-sample Python, no workers.

    Images are stored as uint8 ``(N, C, H, W)``; each batch is gathered by index, augmented
    (random translation of up to ``pad`` pixels = random crop with padding; horizontal flip when
    ``flip``), converted to float and normalised, all as batched ops on the device. Tabular float
    rows are only gathered and normalised. Augmentation parameters are drawn per epoch from
    ``(seed, epoch)``, so skipping to batch k (resume) needs no replay.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        device="cpu",
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        augment: bool = False,
        pad: int = 2,
        flip: bool = False,
        mean=None,
        std=None,
        sample_weights: Tensor | None = None,
        channels_last: bool = False,
        chunk_samples: int = 4096,
        rank: int = 0,
        world: int = 1,
    ):
        self.device = torch.device(device)
        self.rank, self.world = rank, world
        self.chunk_samples = chunk_samples
        self.x = x.to(self.device)
        self.y = y.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.epoch = seed, 0
        self.is_image = x.dtype == torch.uint8 and x.dim() == 4
        self.augment = augment and self.is_image
        self.pad, self.flip = pad, flip
        self.sample_weights = sample_weights
        self.channels_last = channels_last
        # Normalisation folded into one multiply-add: (x / 255 - mean) / std = x * scale + shift.
        shape = (1, -1, 1, 1) if self.is_image else (1, -1)
        m = torch.tensor(mean if mean is not None else [0.0], dtype=torch.float64)
        sd = torch.tensor(std if std is not None else [1.0], dtype=torch.float64)
        unit = 255.0 if self.is_image else 1.0
        self.scale = (1.0 / (unit * sd)).float().to(self.device).view(shape)
        self.shift = (-m / sd).float().to(self.device).view(shape)

    def positions(self) -> Tensor:
        """Which places of each epoch's order this process takes: all of them in one process; under
        data parallelism every ``world``-th one from ``rank`` (training drops the few left over so
        every process runs the same number of steps; evaluation keeps them all)."""
        n = len(self.x)
        usable = (n // self.world) * self.world if self.shuffle else n
        return torch.arange(self.rank, usable, self.world)

    def __len__(self) -> int:
        n = len(self.positions())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def iter_from(self, start: int):
        n_all, bs = len(self.x), self.batch_size
        pos = self.positions()  # every process draws the same order and takes its own places in it
        order = epoch_order(n_all, self.seed, self.epoch, self.shuffle, self.sample_weights)[
            pos
        ].to(self.device)
        n = len(order)
        if (
            self.augment
        ):  # drawn for every place, so a sample's augmentation does not depend on world size
            g = epoch_generator(self.seed + 7919, self.epoch)
            shifts = torch.randint(-self.pad, self.pad + 1, (2, n_all), generator=g)[:, pos].to(
                self.device
            )
            flips = (
                (torch.rand(n_all, generator=g) < 0.5)[pos].to(self.device) if self.flip else None
            )
        # Work on chunks of several batches: at lab scale a batch is tiny and per-op overhead, not
        # arithmetic, would dominate. Every op is per-sample, so chunking changes no value.
        per_chunk = max(1, self.chunk_samples // bs)
        for c0 in range(start, len(self), per_chunk):
            c1 = min(c0 + per_chunk, len(self))
            lo, hi = c0 * bs, min(c1 * bs, n)
            idx = order[lo:hi]
            x = self.x[idx]
            if self.augment:
                if self.pad:
                    x = translate_batch(x, shifts[0, lo:hi], shifts[1, lo:hi], self.pad)
                if flips is not None:
                    x = torch.where(flips[lo:hi, None, None, None], x.flip(3), x)
            x, y = self.prepare(x), self.y[idx]
            for b in range(c1 - c0):
                yield x[b * bs : (b + 1) * bs], y[b * bs : (b + 1) * bs]

    def prepare(self, x: Tensor) -> Tensor:
        """uint8 -> float, normalised (and channels-last when asked). Integer tokens pass
        through."""
        if not self.is_image and not x.is_floating_point():
            return x  # token ids (sequence tasks): nothing to normalise
        x = torch.mul(x, self.scale).add_(self.shift)  # uint8 * float32 -> float32 in one pass
        if self.channels_last and self.is_image:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class EpochSampler(torch.utils.data.Sampler):
    """A sampler whose order is ``epoch_order(seed, epoch)``: reproducible and resumable. Under data
    parallelism (``world`` > 1) each rank takes every ``world``-th place, as DistributedSampler."""

    def __init__(
        self,
        n: int,
        seed: int = 0,
        shuffle: bool = True,
        weights: Tensor | None = None,
        rank: int = 0,
        world: int = 1,
    ):
        self.n, self.seed, self.shuffle, self.weights, self.epoch = n, seed, shuffle, weights, 0
        usable = (n // world) * world if shuffle else n
        self.places = torch.arange(rank, usable, world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.places)

    def __iter__(self):
        return iter(
            epoch_order(self.n, self.seed, self.epoch, self.shuffle, self.weights)[
                self.places
            ].tolist()
        )


class StandardLoader:
    """A ``DataLoader`` over a map-style dataset with torchvision transforms, made resumable.

    Worker RNGs are seeded (``seed_worker``) from a generator reseeded every epoch, so random
    augmentation in workers is reproducible too. Pinned memory when training on CUDA.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        num_workers: int = 0,
        device="cpu",
        sample_weights: Tensor | None = None,
        drop_last: bool = False,
        rank: int = 0,
        world: int = 1,
    ):
        self.seed, self.epoch = seed, 0
        self.sampler = EpochSampler(len(dataset), seed, shuffle, sample_weights, rank, world)
        self.generator = torch.Generator()
        # a worker per batch at most: batch i goes to worker i % workers, so the ones beyond the
        # batch count would never get work (and each costs a process); results are unchanged
        num_workers = min(num_workers, max(1, -(-len(self.sampler) // batch_size)))
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=num_workers,
            worker_init_fn=seed_worker,
            generator=self.generator,
            drop_last=drop_last,
            pin_memory=torch.device(device).type == "cuda",
            persistent_workers=False,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(self.seed * 1_000_003 + epoch + 17)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.seed = state["seed"]
        self.set_epoch(state["epoch"])

    def __iter__(self):
        try:
            yield from self.loader
        except LabError as exc:  # from a worker: its message is the worker's whole traceback
            lines = [line for line in str(exc).splitlines() if line.strip()]
            last = lines[-1] if lines else ""
            raise LabError(
                last.split("LabError: ", 1)[-1] if "LabError: " in last else one_line(exc)
            ) from None


class TensorImageDataset(torch.utils.data.Dataset):
    """uint8 images in memory, served one at a time through a transform (the standard path's
    twin)."""

    def __init__(self, x: Tensor, y: Tensor, transform=None):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        img = self.x[i]
        return (self.transform(img) if self.transform is not None else img), int(self.y[i])
