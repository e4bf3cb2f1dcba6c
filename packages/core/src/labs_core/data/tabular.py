"""CSV files of tabular data: numeric feature columns and one label column."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from ..errors import LabError
from ..files import refuse_special
from .base import DataSplits


def load_csv(path: Path, label_column: str = "label") -> DataSplits:
    """Read ``path``; every column but ``label_column`` must be numeric. Labels become class
    indices.

    Features are returned raw; the loaders standardise them with training-split statistics
    (computed after the validation split, so no validation row leaks into them).
    """
    if path.is_dir():
        candidates = sorted(path.glob("*.csv"))
        if len(candidates) != 1:
            raise LabError(f"csv: {path} is a folder; give --data-dir the CSV file itself")
        path = candidates[0]
    refuse_special(path, "csv: --data-dir")
    if not path.is_file():
        raise LabError(f"csv: file not found: {path}")
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabError(f"csv: cannot read {path}: {exc}") from exc
    if len(rows) < 2:
        raise LabError(f"csv: {path} needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise LabError(
            f"csv: {path} has no column {label_column!r} (columns: {', '.join(header)}; see"
            " --label-column)"
        )
    li = header.index(label_column)
    feature_names = [h for i, h in enumerate(header) if i != li]
    if not feature_names:
        raise LabError(f"csv: {path} has no feature columns besides {label_column!r}")
    features, labels = [], []
    for n, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise LabError(
                f"csv: {path} line {n} has {len(row)} fields, the header has {len(header)}"
            )
        try:
            features.append([float(c) for i, c in enumerate(row) if i != li])
        except ValueError:
            bad = next(header[i] for i, c in enumerate(row) if i != li and not _is_float(c))
            raise LabError(f"csv: {path} line {n}: column {bad!r} is not a number") from None
        if not row[li].strip():  # an empty cell would become a class of its own, named ""
            raise LabError(
                f"csv: {path} line {n}: the {label_column!r} cell is empty (every row needs a"
                " label)"
            )
        labels.append(row[li].strip())
    if not labels:
        raise LabError(f"csv: {path} has no data rows (only a header and blank lines)")
    classes = sorted(set(labels), key=_label_sort_key)
    index = {c: i for i, c in enumerate(classes)}
    x = torch.tensor(features, dtype=torch.float32)
    if not torch.isfinite(x).all():
        raise LabError(f"csv: {path} holds missing or infinite values")
    y = torch.tensor([index[v] for v in labels], dtype=torch.int64)
    return DataSplits(
        name="csv",
        classes=classes,
        train=(x, y),
        kind="tabular",
        mean=tuple([0.0] * x.shape[1]),
        std=tuple([1.0] * x.shape[1]),
        notes=[f"features: {', '.join(feature_names)}"],
    )


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _label_sort_key(v: str):
    return (0, float(v), v) if _is_float(v) else (1, 0.0, v)
