"""MNIST and Fashion-MNIST: the four standard IDX files, gzipped or not, downloaded when missing."""

from __future__ import annotations

from pathlib import Path

from ..errors import LabError
from .base import DataSplits
from .cache import cached
from .download import DownloadFailed, fetch, missing_data_error
from .idx import read_idx

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Published MD5 checksums of the .gz files.
SPECS = {
    "mnist": {
        "folder": "mnist",
        "mirrors": [
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ],
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "classes": [str(i) for i in range(10)],
        "mean": (0.1307,),
        "std": (0.3081,),
        "flip": False,  # a mirrored 2 or 7 is not a digit
    },
    "fashion-mnist": {
        "folder": "fashion-mnist",
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "classes": [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
        "mean": (0.2860,),
        "std": (0.3530,),
        "flip": True,  # a mirrored shoe is still a shoe
    },
}


def find_file(folder: Path, stem: str) -> Path | None:
    """The raw or gzipped file, in ``folder`` or torchvision's ``<folder>/raw`` layout."""
    for base in (folder, folder / "raw"):
        for name in (stem, stem + ".gz"):
            if (base / name).is_file():
                return base / name
    return None


def load_mnist_family(name: str, data_dir: Path, download: bool = True) -> DataSplits:
    spec = SPECS[name]
    folder = data_dir / spec["folder"]
    paths = {key: find_file(folder, stem) for key, stem in FILES.items()}
    missing = [FILES[k] for k, p in paths.items() if p is None]
    if missing:
        expected = [f"{stem}[.gz]" for stem in FILES.values()]
        if not download:
            raise missing_data_error(
                name, folder, expected, spec["mirrors"][0], f"missing {', '.join(missing)}"
            )
        for stem in missing:
            gz = stem + ".gz"
            try:
                fetch([m + gz for m in spec["mirrors"]], folder / gz, spec["md5"][gz])
            except DownloadFailed as exc:
                raise missing_data_error(
                    name, folder, expected, spec["mirrors"][0], f"could not download {gz} ({exc})"
                ) from None
        paths = {key: find_file(folder, stem) for key, stem in FILES.items()}

    def build() -> dict:
        out = {}
        for split in ("train", "test"):
            x = read_idx(paths[f"{split}_images"], expect_dims=3)
            y = read_idx(paths[f"{split}_labels"], expect_dims=1)
            if len(x) != len(y):
                raise LabError(
                    f"{name}: {paths[f'{split}_images'].name} has {len(x)} images but "
                    f"{paths[f'{split}_labels'].name} has {len(y)} labels"
                )
            if y.numel() and int(y.max()) >= 10:
                raise LabError(
                    f"{name}: {paths[f'{split}_labels']} holds label {int(y.max())}; expected 0..9"
                )
            out[f"{split}_x"], out[f"{split}_y"] = x.unsqueeze(1), y.long()
        return out

    d = cached(data_dir / ".cache", name, list(paths.values()), {"format": "idx"}, build)
    return DataSplits(
        name=name,
        classes=list(spec["classes"]),
        train=(d["train_x"], d["train_y"]),
        test=(d["test_x"], d["test_y"]),
        mean=spec["mean"],
        std=spec["std"],
        flip=spec["flip"],
    )
