"""Flags compose (lab1-conv): the documented combinations run to their report or are refused at
start-up in one line naming them.

All-pairs over --loader fast|standard, --channels-last on|off, --precision fp32|bf16,
--grad-accum 1|2, --conv scratch|torch and --recipe standard|fast (``labs_core.testing.pairwise``:
every pair of values of any two flags in some case, not the full product), plus --resume, the
learning-rate finder with the data-pipeline flags, and torchrun with --fsdp and the fast recipe
(channels-last, bf16; slow).
"""

import json

import pytest

from lab1_conv.cli import main
from labs_core.testing import check_combination, check_torchrun_run, flags_for, pairwise, torchrun

TINY = ["--epochs", "1", "--max-steps", "2", "--widths", "4", "8", "--batch-size", "32", "--quiet"]
CASES = pairwise(
    {
        "loader": ("fast", "standard"),
        "channels_last": (True, False),
        "precision": ("fp32", "bf16"),
        "grad_accum": (1, 2),
        "conv": ("scratch", "torch"),
        "recipe": ("standard", "fast"),
    }
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
    for name in ("confusion_matrix.png", "filters.png", "feature_maps.png"):
        assert (out / name).is_file(), name


def test_resume_continues_only_a_plan_that_goes_further(tmp_path, capsys):
    out = tmp_path / "run"
    common = [
        "--widths",
        "4",
        "--quiet",
        "--channels-last",
        "--precision",
        "bf16",
        "--out",
        str(out),
    ]
    assert main([*common, "--epochs", "1"]) == 0
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 2
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main([*common, "--epochs", "1", "--resume"]) == 0
    assert capsys.readouterr().out.startswith("lab1-conv: already finished 2 epochs; nothing to do")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_lr_finder_with_the_data_pipeline_flags(tmp_path):
    out = tmp_path / "find"
    assert (
        main(
            [
                "--widths",
                "4",
                "--quiet",
                "--lr-find",
                "--lr-find-steps",
                "10",
                "--loader",
                "standard",
                "--channels-last",
                "--precision",
                "bf16",
                "--grad-accum",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "lr_find.json").is_file()


@pytest.mark.slow
def test_fsdp_with_the_fast_recipe_under_torchrun(tmp_path):
    """The fast recipe trains channels-last in bf16: sharded, its parameters are made contiguous."""
    out = tmp_path / "fsdp"
    r = torchrun(
        "lab1_conv.cli", *TINY, "--recipe", "fast", "--fsdp", "--grad-accum", "2", "--out", str(out)
    )
    check_torchrun_run(r, out)
    config = json.loads((out / "config.json").read_text())
    assert (
        config["channels_last"] and config["precision"] == "bf16" and config["resolved"]["sharded"]
    )
