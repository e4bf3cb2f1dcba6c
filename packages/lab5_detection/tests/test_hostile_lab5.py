"""Every flag of lab5-detection at every hostile value (generated from Lab5Config's declarations,
so a new flag is covered without a new case): a tiny run, or one line and exit code 2."""

import pytest

from lab5_detection.cli import Lab5Config, main
from labs_core.testing import hostile_cases, hostile_params, run_hostile_case

TINY = [
    "--num-images",
    "8",
    "--num-test",
    "4",
    "--image-size",
    "32",
    "--epochs",
    "1",
    "--max-steps",
    "1",
    "--batch-size",
    "4",
    "--quiet",
]
BASES = {"shapes": TINY, "sgd cosine": [*TINY, "--optimizer", "sgd", "--scheduler", "cosine"]}
CASES = hostile_cases(Lab5Config, BASES, "lab5-detection")


@pytest.mark.parametrize("case, argv, runs", hostile_params(CASES))
def test_every_flag_at_every_hostile_value(case, argv, runs, tmp_path, monkeypatch, capsys):
    run_hostile_case(main, argv, runs, tmp_path, tmp_path, monkeypatch, capsys)
