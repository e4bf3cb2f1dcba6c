"""What every dataset loads into: uint8 image tensors (or float features) and integer labels."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class DataSplits:
    """A dataset in memory.

    ``train`` / ``test`` (and ``val`` when the source has one) are ``(x, y)`` pairs:
    images as ``uint8 Tensor[N, C, H, W]``, tabular rows as ``float32 Tensor[N, F]``;
    labels as ``int64 Tensor[N]`` with values in ``range(len(classes))``.
    ``mean`` / ``std`` are per channel in [0, 1] units (images) or per feature (tabular) and
    are what the loaders normalise with.
    """

    name: str
    classes: list[str]
    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor] | None = None
    val: tuple[Tensor, Tensor] | None = None
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    flip: bool = False  # is a horizontal flip label-preserving? (not for digits)
    kind: str = "image"  # "image" or "tabular"
    notes: list[str] = field(default_factory=list)  # e.g. "skipped 2 unreadable files"
    image_size: int = 0  # side length for image-file sources (their x is then a list of paths)
    skip_bad: bool = (
        False  # image-file sources: a file that fails to decode mid-run is skipped, not fatal
    )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) for images, (F,) for tabular data."""
        x = self.train[0]
        if isinstance(x, list):  # image files streamed from disk
            return (3, self.image_size, self.image_size)
        return tuple(x.shape[1:])


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images ``(N, C, H, W)``, in [0, 1] units."""
    xf = x.double().div_(255)
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3))
    # rounded for readable configs, then floored: a constant channel must not divide by zero
    return tuple(round(v, 4) for v in mean.tolist()), tuple(
        max(round(v, 4), 1e-3) for v in std.tolist()
    )
