"""The PyTorch Labs course: map, quizzes, progress and learning log (``course --help``)."""

from .paths import data_dir, root, runs_dir
from .record import mark_notebook

__all__ = ["data_dir", "mark_notebook", "root", "runs_dir"]
