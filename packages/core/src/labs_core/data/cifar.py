"""CIFAR-10: the ``cifar-10-batches-py`` pickle batches, downloaded and extracted when missing.

The batches are Python pickles. Unpickling can run code, so we use an unpickler that only
rebuilds NumPy arrays and plain containers: a tampered batch file fails instead of executing.
"""

from __future__ import annotations

import pickle
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import LabError
from ..files import refuse_special
from .base import DataSplits
from .cache import cached
from .download import DownloadFailed, fetch, missing_data_error

URLS = ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickle batch -> (uint8 images (N, 3, 32, 32), int64 labels (N,))."""
    refuse_special(path, "a CIFAR-10 batch")
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(d[b"data"] if b"data" in d else d["data"], dtype=np.uint8)
        labels = d.get(b"labels", d.get("labels"))
    except (
        OSError,
        EOFError,
        pickle.UnpicklingError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
    ) as exc:
        raise LabError(f"cannot read CIFAR batch {path}: {exc}") from exc
    if labels is None or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise LabError(
            f"{path} is not a CIFAR-10 batch (data {data.shape}, expected (N, 3072) with N labels)"
        )
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > 9):
        raise LabError(f"{path}: labels must lie in 0..9")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), y


def _download(data_dir: Path) -> None:
    """Fetch and verify the archive, extract it beside, then move the folder into place."""
    archive = data_dir / ARCHIVE
    if not archive.exists():
        fetch(URLS, archive, ARCHIVE_MD5)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".extract-") as tmp:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        target = data_dir / FOLDER
        if target.exists():  # partial folder from an older attempt: replace it whole
            shutil.rmtree(target)
        (Path(tmp) / FOLDER).rename(target)


def load_cifar10(data_dir: Path, download: bool = True) -> DataSplits:
    folder = data_dir / FOLDER
    names = [*TRAIN_BATCHES, TEST_BATCH]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        if not download:
            raise missing_data_error(
                "cifar10", folder, names, URLS[0], f"missing {', '.join(missing)}"
            )
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            _download(data_dir)
        except DownloadFailed as exc:
            raise missing_data_error(
                "cifar10", folder, names, URLS[0], f"could not download {ARCHIVE} ({exc})"
            ) from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise LabError(
                f"cifar10: {data_dir / ARCHIVE} is damaged ({exc}); delete it and try again"
            ) from exc

    def build() -> dict:
        parts = [read_batch(folder / n) for n in TRAIN_BATCHES]
        test_x, test_y = read_batch(folder / TEST_BATCH)
        return {
            "train_x": torch.cat([p[0] for p in parts]),
            "train_y": torch.cat([p[1] for p in parts]),
            "test_x": test_x,
            "test_y": test_y,
        }

    d = cached(
        data_dir / ".cache", "cifar10", [folder / n for n in names], {"format": "pickle"}, build
    )
    return DataSplits(
        name="cifar10",
        classes=list(CLASSES),
        train=(d["train_x"], d["train_y"]),
        test=(d["test_x"], d["test_y"]),
        mean=MEAN,
        std=STD,
        flip=True,
    )
