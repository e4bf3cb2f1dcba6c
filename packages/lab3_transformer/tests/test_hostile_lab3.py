"""Every flag of lab3-transformer (toy tasks, --task chars, and the sample subcommand) at every
hostile value, generated from the config declarations so a new flag is covered without a new
case: a tiny run, or one line on stderr and exit code 2."""

import shutil

import pytest

from lab3_transformer.chars import SampleConfig
from lab3_transformer.cli import Lab3Config, main
from labs_core.testing import (
    FILE_DAMAGES,
    check_outcome,
    damage_file,
    hostile_cases,
    hostile_params,
    run_hostile_case,
    run_main,
    write_text,
)

TINY = [
    "--dim",
    "8",
    "--heads",
    "2",
    "--layers",
    "1",
    "--epochs",
    "1",
    "--max-steps",
    "1",
    "--batch-size",
    "8",
    "--quiet",
]
TOY = [*TINY, "--num-train", "32", "--num-test", "8"]
CHARS = [
    *TINY,
    "--task",
    "chars",
    "--dataset",
    "text",
    "--data-dir",
    "{data}/corpus.txt",
    "--block-size",
    "8",
    "--eval-every",
    "1",
    "--val-windows",
    "2",
    "--sample-tokens",
    "4",
]
BASES = {
    "toy": TOY,
    "chars": CHARS,
    "toy sgd cosine": [*TOY, "--optimizer", "sgd", "--scheduler", "cosine"],
}
CASES = hostile_cases(Lab3Config, BASES, "lab3-transformer")
SAMPLE = hostile_cases(
    SampleConfig,
    {
        "sample": [
            "--checkpoint",
            "{data}/run/checkpoints/best.pt",
            "--tokens",
            "4",
            "--prompt",
            "to be",
        ]
    },
    "lab3-transformer sample",
    command=("sample",),
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_text(root)
    # its training split has no line break: the end-of-run sample starts from its first character
    assert main([*[a.replace("{data}", str(root)) for a in CHARS], "--out", str(root / "run")]) == 0
    return root


@pytest.mark.parametrize("case, argv, runs", hostile_params(CASES))
def test_every_flag_at_every_hostile_value(case, argv, runs, data, tmp_path, monkeypatch, capsys):
    run_hostile_case(main, argv, runs, data, tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize("case, argv, runs", hostile_params(SAMPLE))
def test_every_sample_flag_at_every_hostile_value(
    case, argv, runs, data, tmp_path, monkeypatch, capsys
):
    run_hostile_case(main, argv, runs, data, tmp_path, monkeypatch, capsys, out=None)


# --- every file lab3 reads (the text it trains on, the checkpoint sample reads), damaged every way


@pytest.mark.parametrize("how", FILE_DAMAGES)
def test_the_training_text_damaged_in_every_way(how, data, tmp_path, capsys):
    text = tmp_path / "corpus.txt"
    shutil.copy(data / "corpus.txt", text)
    damage_file(text, how)
    argv = [a.replace("{data}/corpus.txt", str(text)) for a in CHARS]
    code, err = run_main(main, [*argv, "--out", str(tmp_path / "run")], capsys)
    check_outcome(code, err)
    if how != "truncated":  # half the text is still a text to train on
        assert code == 2, err
        assert not (tmp_path / "run").exists()  # refused before the run directory exists


@pytest.mark.parametrize("how", [*FILE_DAMAGES, "a toy task's checkpoint"])
def test_the_checkpoint_sample_reads_damaged_in_every_way(how, data, tmp_path, capsys):
    ckpt = tmp_path / "best.pt"
    if how == "a toy task's checkpoint":  # this lab's, but a model with no tokenizer to sample
        assert main([*TOY, "--out", str(tmp_path / "toy")]) == 0
        shutil.copy(tmp_path / "toy" / "checkpoints" / "best.pt", ckpt)
    else:
        shutil.copy(data / "run" / "checkpoints" / "best.pt", ckpt)
        damage_file(ckpt, how)
    code, err = run_main(main, ["sample", "--checkpoint", str(ckpt), "--tokens", "4"], capsys)
    check_outcome(code, err)
    assert code == 2, err
