"""Flags compose (lab3-transformer): the documented combinations run to their report or are
refused at start-up in one line naming them.

All-pairs over --task reverse|chars, --precision fp32|bf16, --grad-accum 1|2, --attention
scratch|torch and --grad-checkpoint on|off (``labs_core.testing.pairwise``: every pair of values of
any two flags in some case, not the full product), plus --resume of a finished run, and torchrun
with --fsdp (slow).
"""

import json
import random

import pytest

from lab3_transformer.cli import main
from labs_core.testing import check_combination, check_torchrun_run, flags_for, pairwise, torchrun

MODEL = ["--dim", "16", "--heads", "2", "--layers", "1", "--batch-size", "16", "--quiet"]
CASES = pairwise(
    {
        "task": ("reverse", "chars"),
        "precision": ("fp32", "bf16"),
        "grad_accum": (1, 2),
        "attention": ("scratch", "torch"),
        "grad_checkpoint": (True, False),
    }
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    words = ["the", "king", "queen", "of", "and", "to", "my", "lord", "what", "is"]
    path = tmp_path_factory.mktemp("text") / "words.txt"
    path.write_text(
        "\n".join(" ".join(rng.choice(words) for _ in range(6)) for _ in range(200)) + "\n"
    )
    return path


def task_args(task: str, corpus) -> list[str]:
    if task == "chars":
        return [
            "--dataset",
            "text",
            "--data-dir",
            str(corpus),
            "--block-size",
            "16",
            "--eval-every",
            "2",
            "--val-windows",
            "8",
            "--sample-tokens",
            "8",
            "--max-steps",
            "2",
        ]
    return [
        "--length",
        "4",
        "--num-train",
        "64",
        "--num-test",
        "16",
        "--epochs",
        "1",
        "--max-steps",
        "2",
    ]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_combination_runs_to_its_report(case, corpus, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*MODEL, *task_args(case["task"], corpus), *flags_for(case), "--out", str(out)]
    summary = check_combination(main, argv, case, out, capsys)
    steps = (
        2 if case["task"] == "reverse" else 1 if case["grad_accum"] == 2 else 2
    )  # chars: an epoch is 2 batches
    assert (
        summary is not None
        and summary["steps"] == steps
        and summary["precision"] == case["precision"]
    )
    assert (out / "checkpoints" / "best.pt").is_file()


def test_a_finished_run_is_left_alone(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*MODEL, *task_args("reverse", None), "--out", str(out)]
    assert main(argv) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    assert capsys.readouterr().out.startswith(
        "lab3-transformer: already took 2 steps (--max-steps 2); nothing"
    )
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_fsdp_with_accumulation_under_torchrun(tmp_path):
    out = tmp_path / "fsdp"
    r = torchrun(
        "lab3_transformer.cli",
        *MODEL,
        "--length",
        "4",
        "--num-train",
        "128",
        "--num-test",
        "16",
        "--epochs",
        "1",
        "--fsdp",
        "--grad-accum",
        "2",
        "--precision",
        "bf16",
        "--out",
        str(out),
    )
    check_torchrun_run(r, out)
    assert json.loads((out / "config.json").read_text())["resolved"]["sharded"]
