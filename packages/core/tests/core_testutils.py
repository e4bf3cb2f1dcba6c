"""Helpers shared by the core tests (importable: the root pyproject puts this folder on
pythonpath)."""

import torch
from PIL import Image
from torch import nn

from labs_core.data import FastLoader


def tiny_mlp(in_features=16, classes=3, dropout=0.2, bn=False):
    layers = [nn.Flatten(), nn.Linear(in_features, 32)]
    if bn:
        layers.append(nn.BatchNorm1d(32))
    layers += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, classes)]
    return nn.Sequential(*layers)


def blob_data(n=96, classes=3, shape=(1, 4, 4), seed=0):
    """uint8 images whose mean brightness encodes the class: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    base = (y.float() + 0.5) / classes * 200
    x = base.view(-1, 1, 1, 1) + 20 * torch.randn(n, *shape, generator=g)
    return x.clamp(0, 255).to(torch.uint8), y


def fast_loader(x, y, batch_size=16, seed=0, augment=False, **kw):
    return FastLoader(x, y, batch_size, seed=seed, augment=augment, mean=(0.5,), std=(0.25,), **kw)


def make_image_folder(root, with_splits=False, corrupt=True):
    modes = [("RGB", (40, 30)), ("L", (28, 28)), ("RGBA", (16, 50)), ("P", (33, 33))]
    splits = ["train", "val"] if with_splits else [""]
    for split in splits:
        for ci, cls in enumerate(["cat", "dog"]):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i, (mode, size) in enumerate(modes):
                color = (200 * ci + 20 * i) % 256
                im = Image.new("RGB", size, (color, 255 - color, 128)).convert(mode)
                im.save(d / f"{i}.{'jpg' if mode in ('RGB', 'L') else 'png'}")
    if corrupt:
        (root / splits[0] / "dog" / "broken.png").write_bytes(
            b"\x89PNG\r\n\x1a\nthis is not an image"
        )
