"""Flags compose (lab5-detection): the documented combinations run to their report or are
refused at start-up in one line naming them.

All-pairs over --flavor anchor|anchor-free, --precision fp32|bf16 and --grad-accum 1|2
(``labs_core.testing.pairwise``: every pair of values of any two flags in some case), plus
--resume of a finished run, and torchrun with --fsdp (slow).
"""

import json

import pytest

from lab5_detection.cli import main
from labs_core.testing import check_combination, check_torchrun_run, flags_for, pairwise, torchrun

TINY = [
    "--num-images",
    "32",
    "--num-test",
    "8",
    "--epochs",
    "1",
    "--max-steps",
    "2",
    "--eval-every",
    "1",
    "--batch-size",
    "8",
    "--quiet",
]
CASES = pairwise(
    {"flavor": ("anchor", "anchor-free"), "precision": ("fp32", "bf16"), "grad_accum": (1, 2)}
)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_combination_runs_to_its_report(case, tmp_path, capsys):
    out = tmp_path / "run"
    summary = check_combination(
        main, [*TINY, *flags_for(case), "--out", str(out)], case, out, capsys
    )
    assert (
        summary is not None and summary["steps"] == 2 and summary["precision"] == case["precision"]
    )
    assert (out / "predictions.png").is_file()


def test_a_finished_run_is_left_alone(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--out", str(out)]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main([*TINY, "--out", str(out), "--resume", "--epochs", "1"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_fsdp_with_accumulation_under_torchrun(tmp_path):
    out = tmp_path / "fsdp"
    r = torchrun("lab5_detection.cli", *TINY, "--fsdp", "--grad-accum", "2", "--out", str(out))
    check_torchrun_run(r, out)
    assert json.loads((out / "config.json").read_text())["resolved"]["sharded"]
