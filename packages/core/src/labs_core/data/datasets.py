"""The dataset registry and the step from a dataset to train / val / test loaders."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from ..errors import LabError
from .base import DataSplits
from .loader import (
    FastLoader,
    StandardLoader,
    TensorImageDataset,
    balanced_sample_weights,
    class_weights,
)
from .split import random_split, stratified_split

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "imagefolder", "csv", "synthetic")
TEST_FRACTION = 0.2  # held out as the test split when a source has none
TEST_SPLIT_SEED = 0  # the same test split for every run seed, so runs are comparable


def load_dataset(
    name: str,
    data_dir: str | Path = "data",
    *,
    image_size: int = 0,
    download: bool = True,
    skip_bad_files: bool = False,
    label_column: str = "label",
    decode: bool = True,
    synthetic: dict | None = None,
) -> DataSplits:
    """Load a dataset by name. Errors a user can cause come back as one-line ``LabError``s."""
    data_dir = Path(data_dir)
    if name == "digits":
        from .digits import load_digits

        return load_digits()
    if name in ("mnist", "fashion-mnist"):
        from .mnist import load_mnist_family

        return load_mnist_family(name, data_dir, download)
    if name == "cifar10":
        from .cifar import load_cifar10

        return load_cifar10(data_dir, download)
    if name == "imagefolder":
        from .imagefolder import load_imagefolder

        return load_imagefolder(data_dir, image_size or 32, skip_bad_files, decode)
    if name == "csv":
        from .tabular import load_csv

        return load_csv(data_dir, label_column)
    if name == "synthetic":
        from .synthetic import make_synthetic

        opts = dict(synthetic or {})
        if image_size:
            c = opts.get("shape", (3, 32, 32))[0]
            opts["shape"] = (c, image_size, image_size)
        return make_synthetic(**opts)
    raise LabError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def take(x, idx: Tensor):
    """Index a tensor or a list of paths."""
    if isinstance(x, list):
        return [x[i] for i in idx.tolist()]
    return x[idx]


@dataclass
class Loaders:
    train: object
    val: object | None
    test: object | None
    data: DataSplits  # with train/val/test as actually used (after splitting)
    class_weights: Tensor | None = None


def split_data(
    data: DataSplits,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    stratify: bool = True,
    overfit: int = 0,
    test_fraction: float | None = None,
) -> DataSplits:
    """Fill in the test split (fixed seed) and the validation split (run seed); apply overfit mode.
    ``test_fraction`` (default ``TEST_FRACTION``; 0: none) applies to sources without a test split;
    given for one that has its own, it would change nothing, and is refused."""
    split = stratified_split if stratify else (lambda y, f, s: random_split(len(y), f, s))
    train, test, val = data.train, data.test, data.val
    if data.num_classes < 2:
        raise LabError(
            f"{data.name}: only one class ({', '.join(data.classes) or 'none'}); a classifier needs"
            " at least two"
        )

    def hold_out(pair, fraction, seed, what):
        keep, held = split(pair[1], fraction, seed)
        if len(keep) == 0 or len(held) == 0:
            raise LabError(
                f"{data.name}: {len(pair[1])} sample(s) are too few to hold out a {what} split"
            )
        return (take(pair[0], keep), pair[1][keep]), (take(pair[0], held), pair[1][held])

    if test is not None and test_fraction is not None:
        raise LabError(
            f"--test-fraction: {data.name} has its own test split; the flag would change nothing"
        )
    if test is None and (TEST_FRACTION if test_fraction is None else test_fraction) > 0:
        train, test = hold_out(
            train,
            TEST_FRACTION if test_fraction is None else test_fraction,
            TEST_SPLIT_SEED,
            "test",
        )
    if overfit:
        if overfit > len(train[1]):
            raise LabError(
                f"--overfit {overfit}: the training split has only {len(train[1])} samples"
            )
        train = (take(train[0], torch.arange(overfit)), train[1][:overfit])
        val = train  # train and evaluate on the same fixed samples
    elif val is None and val_fraction > 0:
        train, val = hold_out(train, val_fraction, seed, "validation (see --val-fraction)")
    if len(train[1]) == 0:
        raise LabError(f"{data.name}: no training samples left after the splits")
    out = replace(data, train=train, val=val, test=test)
    if data.kind == "tabular":  # standardise with statistics of the training rows only
        mean = train[0].mean(dim=0)
        std = (
            train[0].std(dim=0).nan_to_num(1.0).clamp(min=1e-6)
            if len(train[0]) > 1
            else torch.ones_like(mean)
        )
        out = replace(out, mean=tuple(mean.tolist()), std=tuple(std.tolist()))
    return out


def build_loaders(
    data: DataSplits,
    *,
    batch_size: int,
    device="cpu",
    seed: int = 0,
    val_fraction: float = 0.1,
    stratify: bool = True,
    augment: bool = True,
    overfit: int = 0,
    loader: str = "fast",
    num_workers: int = 0,
    balanced_sampler: bool = False,
    use_class_weights: bool = False,
    eval_batch_size: int | None = None,
    pad: int | None = None,
    channels_last: bool = False,
    rank: int = 0,
    world: int = 1,
    test_fraction: float | None = None,
) -> Loaders:
    """Split ``data`` and wrap each split in a fast (on-device) or standard (DataLoader) loader.

    Under data parallelism (``world`` > 1) the train and validation loaders give this ``rank`` its
    own slice; the test loader stays whole (only rank 0 reports on it)."""
    shard = {"rank": rank, "world": world}
    data = split_data(
        data,
        seed=seed,
        val_fraction=val_fraction,
        stratify=stratify,
        overfit=overfit,
        test_fraction=test_fraction,
    )
    augment = augment and not overfit
    x_train, y_train = data.train
    n_classes = data.num_classes
    weights = balanced_sample_weights(y_train, n_classes) if balanced_sampler else None
    cw = class_weights(y_train, n_classes) if use_class_weights else None
    eval_bs = eval_batch_size or max(batch_size, 256)
    if pad is None:  # random-crop padding: 1/8 of the image side (4 px for 32x32, 2 for 28x28)
        side = data.input_shape[-1] if data.kind == "image" else 0
        pad = max(1, side // 8) if side >= 16 else 1
    elif augment and data.kind == "image" and pad >= min(data.input_shape[1:]):
        raise LabError(
            f"--pad {pad}: shifts as large as the image ({'x'.join(map(str, data.input_shape[1:]))}"
            " px) can move it out of the frame entirely; give a --pad below its side"
        )

    if loader == "fast":
        if isinstance(x_train, list):
            raise LabError(
                "the fast loader needs decoded images; use --loader standard for streaming from"
                " files"
            )
        common = dict(device=device, mean=data.mean, std=data.std, channels_last=channels_last)
        train = FastLoader(
            x_train,
            y_train,
            batch_size,
            shuffle=True,
            seed=seed,
            augment=augment,
            pad=pad,
            flip=data.flip,
            sample_weights=weights,
            **common,
            **shard,
        )

        def make_eval(pair, sharded=True):
            return (
                None
                if pair is None
                else FastLoader(
                    pair[0], pair[1], eval_bs, shuffle=False, **common, **(shard if sharded else {})
                )
            )

    elif loader == "standard":
        train_tf = _standard_transform(data, augment, pad)
        eval_tf = _standard_transform(data, False, pad)
        train = StandardLoader(
            _dataset(data, data.train, train_tf),
            batch_size,
            seed=seed,
            shuffle=True,
            num_workers=num_workers,
            device=device,
            sample_weights=weights,
            **shard,
        )

        def make_eval(pair, sharded=True):
            return (
                None
                if pair is None
                else StandardLoader(
                    _dataset(data, pair, eval_tf),
                    eval_bs,
                    seed=seed,
                    shuffle=False,
                    num_workers=num_workers,
                    device=device,
                    **(shard if sharded else {}),
                )
            )

    else:
        raise LabError(f"unknown loader {loader!r} (fast or standard)")
    return Loaders(
        train=train,
        val=make_eval(data.val),
        test=make_eval(data.test, sharded=False),
        data=data,
        class_weights=cw,
    )


def _standard_transform(data: DataSplits, augment: bool, pad: int):
    from torchvision.transforms import v2

    if data.kind == "tabular":
        mean, std = torch.tensor(data.mean), torch.tensor(data.std)
        return lambda row: (row - mean) / std
    steps = []
    if augment:
        steps.append(v2.RandomCrop(data.input_shape[-1], padding=pad))
        if data.flip:
            steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(data.mean), list(data.std))]
    return v2.Compose(steps)


def _dataset(data: DataSplits, pair, transform):
    x, y = pair
    if isinstance(x, list):
        from .imagefolder import ImageFileDataset

        return ImageFileDataset(x, y.tolist(), data.image_size, transform, skip_bad=data.skip_bad)
    if data.kind == "tabular":
        return torch.utils.data.TensorDataset(transform(x), y)
    return TensorImageDataset(x, y, transform)
