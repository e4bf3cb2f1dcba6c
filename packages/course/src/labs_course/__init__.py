"""The PyTorch Labs course: map, quizzes, progress and learning log (``course --help``)."""

from .exercises import check
from .paths import data_dir, root, runs_dir
from .record import mark_notebook

__all__ = ["check", "data_dir", "mark_notebook", "root", "runs_dir"]
