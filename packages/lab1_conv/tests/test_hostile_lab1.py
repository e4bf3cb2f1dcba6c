"""Every flag of lab1-conv at every hostile value (generated from Lab1Config's declarations, so a
new flag is covered without a new case), and lab1 against every dataset the core loads: a tiny
run, or one line on stderr and exit code 2."""

import pytest

from lab1_conv.cli import Lab1Config, main
from labs_core.data.datasets import DATASETS
from labs_core.testing import (
    hostile_cases,
    hostile_params,
    run_hostile_case,
    write_dataset,
)

TINY = ["--widths", "4", "--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--quiet"]
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
        "--optimizer",
        "sgd",
        "--scheduler",
        "cosine",
    ],
}
CASES = hostile_cases(Lab1Config, BASES, "lab1-conv")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for name in DATASETS:
        write_dataset(name, root / name)
    return root


@pytest.mark.parametrize("case, argv, runs", hostile_params(CASES))
def test_every_flag_at_every_hostile_value(case, argv, runs, data, tmp_path, monkeypatch, capsys):
    run_hostile_case(main, argv, runs, data, tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset(name, data, tmp_path, monkeypatch, capsys):
    """Every --dataset value: images train (the fast recipe for the MNIST family), a CSV's rows are
    refused in one line (a convolution needs pixels)."""
    flags = [
        a.replace(str(data / name), "{data}/" + name) for a in write_dataset(name, data / name)
    ]
    code = run_hostile_case(main, [*TINY, *flags], True, data, tmp_path, monkeypatch, capsys)
    assert code == (2 if name == "csv" else 0)
