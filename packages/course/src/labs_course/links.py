"""The repository's address, in one place: Colab links and the notebooks' install cell use it."""

from __future__ import annotations

REPOSITORY = "https://github.com/pytorch-labs/pytorch-labs"
BRANCH = "main"

# (distribution, folder under packages/) for everything a notebook may import
PACKAGES = [
    ("labs-core", "core"),
    ("lab0-mlp", "lab0_mlp"),
    ("lab1-conv", "lab1_conv"),
    ("lab3-transformer", "lab3_transformer"),
    ("lab5-detection", "lab5_detection"),
    ("checkpoint-project", "checkpoint_project"),
    ("labs-course", "course"),
]


def github_path() -> str:
    """``owner/name`` of the repository."""
    return REPOSITORY.removeprefix("https://github.com/").strip("/")


def colab_url(notebook: str) -> str:
    """The link that opens ``notebooks/<notebook>`` on Colab, straight from the repository."""
    return f"https://colab.research.google.com/github/{github_path()}/blob/{BRANCH}/notebooks/{notebook}"
