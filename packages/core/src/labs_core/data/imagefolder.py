"""Image folders: one sub-folder per class, optionally under ``train/``, ``val/`` and ``test/``.

Images of any size and mode (RGB, grayscale, RGBA, palette, 16-bit) become RGB: transparent
pixels are composited onto white, then the shorter side is resized to ``size`` and the centre
cropped to ``size x size``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import LabError, one_line
from .base import DataSplits, channel_stats
from .cache import cached

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
SPLITS = ("train", "val", "test")


def list_classes(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """Image files and their class indices, in a stable order."""
    files, labels = [], []
    for idx, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for p in sorted(class_dir.rglob("*")):
            if p.is_file() and p.suffix.lower() in EXTENSIONS:
                files.append(p)
                labels.append(idx)
    return files, labels


def open_rgb(path: Path, size: int) -> Image.Image:
    """Decode any image as RGB, ``size x size`` (shorter side resized, centre crop). Raises
    LabError."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            elif im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                im = Image.fromarray((255 * arr / max(arr.max(), 1)).astype(np.uint8))
            im = im.convert("RGB")
    except Image.DecompressionBombError:  # a header claiming an enormous size: never decoded
        raise LabError(
            f"cannot read image {path}: its header claims more than {Image.MAX_IMAGE_PIXELS:,}"
            " pixels (a decompression bomb?)"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise LabError(f"cannot read image {path}: {one_line(exc)}") from None
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def check_classes(classes: list[str], labels: list[int], folder: Path, why: str) -> None:
    """Every class folder gives training images: an empty one would be a class the model can never
    learn."""
    present = set(labels)
    empty = [name for i, name in enumerate(classes) if i not in present]
    if empty:
        raise LabError(
            f"imagefolder: class folder {folder / empty[0]} {why}"
            f"{f' (and {len(empty) - 1} more)' if len(empty) > 1 else ''}; add images or remove it"
        )


def probe_image(path: Path, skip_bad: bool, bad: list[str]) -> bool:
    """Whether ``path`` opens as an image (header and chunks checked, pixels not decoded); an
    unreadable one is recorded in ``bad`` with ``skip_bad``, else it stops the load."""
    try:
        with Image.open(path) as im:
            im.verify()
    except Image.DecompressionBombError:
        reason = (
            f"its header claims more than {Image.MAX_IMAGE_PIXELS:,} pixels (a decompression bomb?)"
        )
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = one_line(exc)
    else:
        return True
    if not skip_bad:
        raise LabError(
            f"cannot read image {path}: {reason} (use --skip-bad-files to skip unreadable images)"
        )
    bad.append(str(path))
    return False


def decode_all(
    files: list[Path], labels: list[int], size: int, skip_bad: bool
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    images, kept, bad = [], [], []
    for path, label in zip(files, labels, strict=True):
        try:
            im = open_rgb(path, size)
        except LabError as exc:
            if not skip_bad:
                raise LabError(f"{exc} (use --skip-bad-files to skip unreadable images)") from None
            bad.append(str(path))
            continue
        images.append(torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1))
        kept.append(label)
    x = torch.stack(images) if images else torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return x, torch.tensor(kept, dtype=torch.int64), bad


def load_imagefolder(
    root: Path, size: int = 32, skip_bad: bool = False, decode: bool = True
) -> DataSplits:
    """Decode every image once (cached) into uint8 tensors, or with ``decode=False`` return the file
    lists for the streaming loader (normalisation statistics then come from up to 256 images)."""
    if not root.is_dir():
        raise LabError(
            f"imagefolder: {root} is not a folder (give --data-dir a folder with one sub-folder per"
            " class)"
        )
    split_dirs = {s: root / s for s in SPLITS if (root / s).is_dir()}
    if "train" not in split_dirs:
        split_dirs = {"train": root}
    classes = list_classes(split_dirs["train"])
    if not classes:
        raise LabError(f"imagefolder: {split_dirs['train']} has no class sub-folders")
    scanned = {s: scan(d, classes) for s, d in split_dirs.items()}
    if not scanned["train"][0]:
        raise LabError(
            f"imagefolder: no images ({', '.join(sorted(EXTENSIONS))}) under {split_dirs['train']}"
        )
    check_classes(classes, scanned["train"][1], split_dirs["train"], "has no images")
    all_files = [f for files, _ in scanned.values() for f in files]
    if (
        not decode
    ):  # streamed later: check now that every file opens, so a bad one stops nothing mid-run
        bad = []
        for split, (files, labels) in scanned.items():
            ok = [i for i, f in enumerate(files) if probe_image(f, skip_bad, bad)]
            scanned[split] = ([files[i] for i in ok], [labels[i] for i in ok])
        if bad:
            print(f"note: skipped {len(bad)} unreadable image(s), e.g. {bad[0]}", file=sys.stderr)
        check_classes(classes, scanned["train"][1], split_dirs["train"], "has no readable images")
        probe = scanned["train"][0][:: max(1, len(scanned["train"][0]) // 256)]
        mean, std = channel_stats(decode_all(probe, [0] * len(probe), size, skip_bad=True)[0])
        pair = lambda s: (scanned[s][0], torch.tensor(scanned[s][1])) if s in scanned else None  # noqa: E731
        notes = [f"skipped {len(bad)} unreadable image(s)"] if bad else []
        return DataSplits(
            name="imagefolder",
            classes=classes,
            train=pair("train"),
            val=pair("val"),
            test=pair("test"),
            mean=mean,
            std=std,
            flip=True,
            notes=notes,
            image_size=size,
            skip_bad=skip_bad,
        )

    def build() -> dict:
        out, bad = {}, []
        for split, (files, labels) in scanned.items():
            x, y, b = decode_all(files, labels, size, skip_bad)
            out[f"{split}_x"], out[f"{split}_y"] = x, y
            bad += b
        out["bad_files"] = len(bad)
        if bad:
            print(f"note: skipped {len(bad)} unreadable image(s), e.g. {bad[0]}", file=sys.stderr)
        return out

    d = cached(
        root / ".labs-cache",
        "imagefolder",
        all_files,
        {
            "size": size,
            "skip_bad": skip_bad,
            "classes": classes,
            "files": [str(f.relative_to(root)) for f in all_files],
        },
        build,
    )
    if len(d["train_x"]) == 0:
        raise LabError(f"imagefolder: none of the images under {split_dirs['train']} could be read")
    check_classes(classes, d["train_y"].tolist(), split_dirs["train"], "has no readable images")
    mean, std = channel_stats(d["train_x"])
    pair = lambda s: (d[f"{s}_x"], d[f"{s}_y"]) if f"{s}_x" in d else None  # noqa: E731
    notes = [f"skipped {d['bad_files']} unreadable image(s)"] if d["bad_files"] else []
    return DataSplits(
        name="imagefolder",
        classes=classes,
        train=pair("train"),
        val=pair("val"),
        test=pair("test"),
        mean=mean,
        std=std,
        flip=True,
        notes=notes,
        image_size=size,
    )


class ImageFileDataset(torch.utils.data.Dataset):
    """The streaming (standard-path) twin: decodes each image from disk when asked."""

    def __init__(
        self,
        files: list[Path],
        labels: list[int],
        size: int,
        transform=None,
        skip_bad: bool = False,
    ):
        self.files, self.labels, self.size, self.transform = files, labels, size, transform
        self.skip_bad = skip_bad  # the header check passed, but the pixels may still not decode
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        for _ in range(
            len(self.files)
        ):  # a file that fails to decode: the next readable one stands in
            if i not in self.bad:
                try:
                    return self._load(i)
                except LabError as exc:
                    if not self.skip_bad:
                        raise LabError(
                            f"{exc} (use --skip-bad-files to skip unreadable images)"
                        ) from None
                    self.bad.add(i)  # said once (per loader process), then skipped
                    print(f"note: skipped an image that does not decode: {exc}", file=sys.stderr)
            i = (i + 1) % len(self.files)
        raise LabError("imagefolder: none of the images could be read")

    def _load(self, i: int):
        im = open_rgb(self.files[i], self.size)
        x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]
