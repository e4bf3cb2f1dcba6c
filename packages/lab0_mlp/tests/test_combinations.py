"""Flags compose (lab0-mlp): the documented combinations run to their report or are refused at
start-up in one line naming them.

All-pairs over --loader fast|standard, --channels-last on|off, --precision fp32|bf16,
--grad-accum 1|2 and --loop core|manual (``labs_core.testing.pairwise``: every pair of values of
any two flags in some case, not the full product), plus --resume (a longer plan continues, a
finished run is left alone), the finders with the data-pipeline flags, and --compile (slow).
"""

import json
import shutil

import pytest

from lab0_mlp.cli import main
from labs_core.testing import check_combination, flags_for, pairwise

TINY = ["--epochs", "1", "--max-steps", "2", "--hidden", "16", "--batch-size", "32", "--quiet"]
CASES = pairwise(
    {
        "loader": ("fast", "standard"),
        "channels_last": (True, False),
        "precision": ("fp32", "bf16"),
        "grad_accum": (1, 2),
        "loop": ("core", "manual"),
    }
)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_combination_runs_to_its_report_or_is_refused_in_one_line(case, tmp_path, capsys):
    out = tmp_path / "run"
    tiny = (
        TINY if case["loop"] == "core" else [a for a in TINY if a not in ("--max-steps", "2")]
    )  # core's flag
    summary = check_combination(
        main, [*tiny, *flags_for(case), "--out", str(out)], case, out, capsys
    )
    if case["loop"] == "core" or (case["precision"], case["grad_accum"]) == ("fp32", 1):
        assert (
            summary is not None and summary["precision"] == case["precision"]
        )  # the manual loop: fp32, no
        assert (out / "confusion_matrix.png").is_file() and (
            out / "loss_curve.png"
        ).is_file()  # accumulation


def test_resume_continues_only_a_plan_that_goes_further(tmp_path, capsys):
    out = tmp_path / "run"
    common = [
        "--hidden",
        "16",
        "--quiet",
        "--loader",
        "standard",
        "--grad-accum",
        "2",
        "--out",
        str(out),
    ]
    assert main([*common, "--epochs", "1"]) == 0
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 2
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    assert capsys.readouterr().out.startswith("lab0-mlp: already finished 2 epochs; nothing to do")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_lr_finder_with_the_data_pipeline_flags(tmp_path):
    """(--find-batch-size with them: the checkpoint project's combinations test.)"""
    out = tmp_path / "find"
    assert (
        main(
            [
                "--hidden",
                "16",
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
def test_compile_with_bf16_and_accumulation(tmp_path):
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        pytest.skip("--compile needs a C++ compiler")
    out = tmp_path / "compiled"
    assert (
        main([*TINY, "--compile", "--precision", "bf16", "--grad-accum", "2", "--out", str(out)])
        == 0
    )
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
