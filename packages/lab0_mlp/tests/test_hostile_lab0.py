"""Every flag of lab0-mlp at every hostile value (generated from Lab0Config's declarations, so a
new flag is covered without a new case): a tiny run, or one line on stderr and exit code 2."""

import pytest

from lab0_mlp.cli import Lab0Config, main
from labs_core.data.datasets import DATASETS
from labs_core.testing import (
    hostile_cases,
    hostile_params,
    run_hostile_case,
    write_dataset,
)

TINY = ["--hidden", "8", "--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--quiet"]
BASES = {
    "digits": TINY,
    "files": [
        *TINY,
        "--dataset",
        "imagefolder",
        "--data-dir",
        "{data}/imagefolder/images",
        "--loader",
        "standard",
        "--augment",
        "--optimizer",
        "sgd",
        "--scheduler",
        "cosine",
    ],
    "csv": [*TINY, "--dataset", "csv", "--data-dir", "{data}/csv/table.csv"],
}
CASES = hostile_cases(Lab0Config, BASES, "lab0-mlp")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_dataset("imagefolder", root / "imagefolder")
    write_dataset("csv", root / "csv")
    return root


@pytest.mark.parametrize("case, argv, runs", hostile_params(CASES))
def test_every_flag_at_every_hostile_value(case, argv, runs, data, tmp_path, monkeypatch, capsys):
    run_hostile_case(main, argv, runs, data, tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset(name, tmp_path, monkeypatch, capsys):
    """Every --dataset value trains (an MLP takes images and rows of numbers alike)."""
    flags = write_dataset(name, tmp_path / "data")
    assert (
        run_hostile_case(main, [*TINY, *flags], True, tmp_path, tmp_path, monkeypatch, capsys) == 0
    )
