"""Data: datasets by name, a decode-once cache, and fast (on-device) and standard loaders."""

from .base import DataSplits
from .datasets import DATASETS, Loaders, build_loaders, load_dataset, split_data
from .idx import read_idx, write_idx
from .loader import EpochSampler, FastLoader, StandardLoader, translate_batch

__all__ = [
    "DATASETS",
    "DataSplits",
    "EpochSampler",
    "FastLoader",
    "Loaders",
    "StandardLoader",
    "build_loaders",
    "load_dataset",
    "read_idx",
    "split_data",
    "translate_batch",
    "write_idx",
]
