"""The 8x8 handwritten digits bundled with scikit-learn (UCI "Optical Recognition of Handwritten
Digits", CC BY 4.0): 1,797 real images, 10 classes. The images ship inside this package
(``digits.npz``, pixel values 0..16 rescaled to 0..255), so they load with no network at all.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch

from .base import DataSplits, channel_stats

TEST_FRACTION = 0.2
SPLIT_SEED = 0  # a fixed test split, the same for every run


def load_digits() -> DataSplits:
    with resources.files(__package__).joinpath("digits.npz").open("rb") as f:
        npz = np.load(f)
        x = torch.from_numpy(npz["images"].copy()).unsqueeze(1)  # (1797, 1, 8, 8) uint8
        y = torch.from_numpy(npz["labels"].astype(np.int64))
    from .split import stratified_split

    train_idx, test_idx = stratified_split(y, TEST_FRACTION, SPLIT_SEED)
    mean, std = channel_stats(x[train_idx])
    return DataSplits(
        name="digits",
        classes=[str(i) for i in range(10)],
        train=(x[train_idx], y[train_idx]),
        test=(x[test_idx], y[test_idx]),
        mean=mean,
        std=std,
        flip=False,
    )
