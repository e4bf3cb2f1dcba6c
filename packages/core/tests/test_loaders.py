import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from labs_core.data import DataSplits, FastLoader, build_loaders, split_data, translate_batch
from labs_core.data.loader import StandardLoader, TensorImageDataset
from labs_core.data.split import stratified_split


def images(n=40, shape=(3, 10, 10), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8), torch.arange(n) % 4


def test_fast_loader_covers_a_seeded_permutation_and_normalises():
    x, y = images()
    loader = FastLoader(x, y, 16, seed=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    batches = list(loader)
    assert len(loader) == 3 and [len(b[1]) for b in batches] == [16, 16, 8]
    xs = torch.cat([b[0] for b in batches])
    ys = torch.cat([b[1] for b in batches])
    order = torch.randperm(40, generator=torch.Generator().manual_seed(3 * 1_000_003))
    torch.testing.assert_close(xs, (x[order].float() / 255 - 0.5) / 0.25)
    assert torch.equal(ys, y[order])
    loader.set_epoch(1)
    assert not torch.equal(torch.cat([b[1] for b in loader]), ys)  # a new order each epoch


def test_translate_equals_random_crop_of_padded_image():
    x, _ = images(n=6)
    pad = 3
    dx = torch.tensor([-3, -1, 0, 1, 2, 3])
    dy = torch.tensor([3, 0, -2, 1, -3, 0])
    out = translate_batch(x, dx, dy, pad)
    padded = F.pad(x, (pad, pad, pad, pad))
    for i in range(
        6
    ):  # torchvision's RandomCrop(10, padding=3) at offset (top, left) = (pad+dy, pad+dx)
        top, left = pad + dy[i].item(), pad + dx[i].item()
        assert torch.equal(out[i], padded[i, :, top : top + 10, left : left + 10])


def test_augmentation_is_seeded_flips_only_when_allowed_and_resumable():
    x, y = images()
    a = FastLoader(x, y, 8, seed=1, augment=True, pad=2, flip=True)
    b = FastLoader(x, y, 8, seed=1, augment=True, pad=2, flip=True)
    first = [t[0] for t in a]
    assert all(torch.equal(p, q[0]) for p, q in zip(first, b, strict=True))
    plain = [t[0] for t in FastLoader(x, y, 8, seed=1)]
    assert not all(torch.equal(p, q) for p, q in zip(first, plain, strict=True))
    # Resume at batch 3: exactly the tail of the full epoch, without replaying the first batches.
    tail = [t[0] for t in b.iter_from(3)]
    assert all(torch.equal(p, q) for p, q in zip(first[3:], tail, strict=True))
    # No flip requested: every augmented image is a pure translation of its source.
    c = FastLoader(x, y, 40, seed=1, augment=True, pad=0, flip=False)
    xs, ys = next(iter(c))
    order = torch.randperm(40, generator=torch.Generator().manual_seed(1_000_003))
    torch.testing.assert_close(xs, x[order].float() / 255)


def test_balanced_sampler_balances_a_nine_to_one_set():
    y = torch.tensor([0] * 900 + [1] * 100)
    data = DataSplits(
        "imb",
        ["major", "minor"],
        train=(torch.zeros(1000, 1, 4, 4, dtype=torch.uint8), y),
        test=(torch.zeros(10, 1, 4, 4, dtype=torch.uint8), torch.zeros(10, dtype=torch.long)),
    )
    plain = build_loaders(data, batch_size=100, val_fraction=0, augment=False)
    balanced = build_loaders(
        data, batch_size=100, val_fraction=0, augment=False, balanced_sampler=True
    )
    minor_plain = torch.cat([b[1] for b in plain.train]).float().mean().item()
    minor_bal = torch.cat([b[1] for b in balanced.train]).float().mean().item()
    assert minor_plain == pytest.approx(0.1)
    assert 0.44 < minor_bal < 0.56
    per_batch = [b[1].float().mean().item() for b in balanced.train]
    assert all(0.3 < p < 0.7 for p in per_batch)


def test_class_weights_match_sklearn_balanced():
    y = torch.tensor([0] * 90 + [1] * 10 + [2] * 30)
    data = DataSplits(
        "w",
        ["a", "b", "c"],
        train=(torch.zeros(130, 1, 2, 2, dtype=torch.uint8), y),
        test=(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.arange(3)),
    )
    loaders = build_loaders(data, batch_size=10, val_fraction=0, use_class_weights=True)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y.numpy())
    torch.testing.assert_close(loaders.class_weights, torch.tensor(expected, dtype=torch.float32))


def test_stratified_split_keeps_proportions_and_is_seeded():
    y = torch.tensor([0] * 80 + [1] * 20)
    keep, held = stratified_split(y, 0.25, seed=5)
    assert len(held) == 25 and y[held].sum().item() == 5
    assert torch.equal(held, stratified_split(y, 0.25, seed=5)[1])
    assert not torch.equal(held, stratified_split(y, 0.25, seed=6)[1])
    assert len(set(keep.tolist()) & set(held.tolist())) == 0


def test_split_data_test_split_is_fixed_and_overfit_uses_same_samples():
    x, y = images(n=100)
    data = DataSplits("d", list("abcd"), train=(x, y))
    a, b = split_data(data, seed=1), split_data(data, seed=2)
    assert (
        torch.equal(a.test[1], b.test[1]) and len(a.test[1]) == 20
    )  # same test split for every seed
    assert not torch.equal(a.val[0], b.val[0])  # validation split follows the run seed
    o = split_data(data, overfit=8)
    assert o.train[0] is o.val[0] or torch.equal(o.train[0], o.val[0])
    assert len(o.train[0]) == 8


def test_test_fraction_sets_or_removes_the_held_out_test_split(tmp_path, capsys):
    from labs_core import LabError

    x, y = images(n=100)
    data = DataSplits(name="folder", classes=["a", "b", "c", "d"], train=(x, y))
    assert len(split_data(data, val_fraction=0.1).test[1]) == 20  # the default: 20% held out
    assert (
        len(split_data(data, val_fraction=0.1, test_fraction=0.3).test[1]) == 32
    )  # per class: round(25 * 0.3)
    none = split_data(data, val_fraction=0.1, test_fraction=0)
    assert (
        none.test is None and len(none.train[1]) + len(none.val[1]) == 100
    )  # every image trains or validates
    with_test = DataSplits(
        name="cifar10", classes=["a", "b", "c", "d"], train=(x, y), test=(x[:8], y[:8])
    )
    with pytest.raises(LabError, match="has its own test split"):
        split_data(with_test, test_fraction=0)
    # from the command line: given for a dataset with its own test split, refused in one line
    from labs_core.experiment import classifier_main

    build = lambda d: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, d.num_classes))  # noqa: E731
    from labs_core import RunConfig

    argv = [
        "--dataset",
        "digits",
        "--test-fraction",
        "0",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "r"),
    ]
    assert classifier_main(RunConfig, build, "demo", argv) == 2
    assert (
        "digits has its own test split" in capsys.readouterr().err and not (tmp_path / "r").exists()
    )


def test_tabular_standardised_with_training_statistics_only():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g) * torch.tensor([1.0, 10.0, 0.1]) + 5
    data = DataSplits(
        "t",
        ["a", "b"],
        train=(x, torch.arange(200) % 2),
        kind="tabular",
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
    )
    loaders = build_loaders(data, batch_size=1000, seed=0, augment=True)
    used = loaders.data
    torch.testing.assert_close(torch.tensor(used.mean), used.train[0].mean(0))
    xs = next(iter(loaders.train))[0]
    torch.testing.assert_close(xs.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(xs.std(0), torch.ones(3), atol=1e-5, rtol=0)


def test_standard_loader_with_workers_is_reproducible_per_epoch():
    from torchvision.transforms import v2

    x, y = images(n=24)
    tf = v2.Compose(
        [
            v2.RandomCrop(10, padding=2),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )

    def epoch(e, workers):
        loader = StandardLoader(TensorImageDataset(x, y, tf), 8, seed=4, num_workers=workers)
        loader.set_epoch(e)
        return torch.cat([b[0] for b in loader])

    a = epoch(0, 2)
    assert torch.equal(a, epoch(0, 2))
    assert not torch.equal(a, epoch(1, 2))


def test_standard_and_fast_paths_see_the_same_data():
    x, y = images(n=32)
    data = DataSplits(
        "d", list("abcd"), train=(x, y), test=(x[:8], y[:8]), mean=(0.5,) * 3, std=(0.2,) * 3
    )
    fast = build_loaders(data, batch_size=8, loader="fast", augment=False)
    std = build_loaders(data, batch_size=8, loader="standard", augment=False)
    fx = torch.cat([b[0] for b in fast.test])
    sx = torch.cat([b[0] for b in std.test])
    torch.testing.assert_close(fx, sx)
    f_order = torch.cat([b[1] for b in fast.train])
    s_order = torch.cat([b[1] for b in std.train])
    assert torch.equal(f_order, s_order)  # same seeded order on both paths


def test_imagefolder_streams_from_disk_on_the_standard_path(tmp_path):
    from labs_core.data import load_dataset

    from core_testutils import make_image_folder

    make_image_folder(tmp_path / "imgs", corrupt=False)
    data = load_dataset("imagefolder", tmp_path / "imgs", image_size=16, decode=False)
    assert isinstance(data.train[0], list) and data.input_shape == (3, 16, 16)
    loaders = build_loaders(data, batch_size=4, loader="standard", val_fraction=0.25)
    xb, yb = next(iter(loaders.train))
    assert xb.shape == (4, 3, 16, 16) and xb.dtype == torch.float32
    decoded = load_dataset("imagefolder", tmp_path / "imgs", image_size=16)
    assert decoded.classes == data.classes
