"""Issue 24, for the core: every flag of the classification parts at every hostile value
(generated from the declarations), every file a classifier reads damaged in every way, and the
values that would make a run meaningless. Each ends in a run or one line with exit code 2."""

import urllib.error
import urllib.request

import pytest
import torch
from test_cli import DemoConfig, main

from labs_core import LabError
from labs_core.checkpoint import load_checkpoint, save_checkpoint
from labs_core.config import parse_config
from labs_core.data import load_dataset
from labs_core.data.text import CharData
from labs_core.faults import fault_line
from labs_core.testing import (
    FILE_DAMAGES,
    check_outcome,
    damage_file,
    hostile_cases,
    hostile_ids,
    hostile_params,
    run_hostile_case,
    run_main,
    write_dataset,
)
from labs_core.validate import rules

TINY = ["--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--quiet"]
BASES = {
    "synthetic": TINY,
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
    "csv": [*TINY, "--dataset", "csv", "--data-dir", "{data}/csv/table.csv"],
}
CASES = hostile_cases(DemoConfig, BASES, "demo")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_dataset("imagefolder", root / "imagefolder")
    write_dataset("csv", root / "csv")
    return root


@pytest.fixture
def offline(monkeypatch):
    def refuse(*a, **k):
        raise urllib.error.URLError("no network in the tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_the_table_covers_every_numeric_and_free_text_field():
    covered = {case.split()[1].split("=")[0] for case in hostile_ids(CASES)}
    for name in (
        "--lr",
        "--epochs",
        "--pad",
        "--num-workers",
        "--momentum",
        "--warmup-epochs",
        "--label-column",
        "--image-size",
        "--seed",
        "--device",
        "--monitor",
        "--dist-timeout",
    ):
        assert name in covered, name
    assert "files --momentum=0.0" in hostile_ids(
        CASES
    )  # tried where it applies (sgd), not refused unread


@pytest.mark.parametrize("case, argv, runs", hostile_params(CASES))
def test_every_flag_at_every_hostile_value(case, argv, runs, data, tmp_path, monkeypatch, capsys):
    run_hostile_case(main, argv, runs, data, tmp_path, monkeypatch, capsys)


# --- flags that change nothing: one declarative rule ----------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--optimizer", "adam", "--momentum", "0.5"],
            "--momentum applies to --optimizer sgd only (this run uses --optimizer adam)",
        ),
        (["--warmup-epochs", "1"], "--warmup-epochs applies to --scheduler cosine only"),
        (["--num-workers", "2"], "--num-workers applies to --loader standard only"),
        (
            ["--no-augment", "--pad", "2"],
            "--pad applies to --augment only (this run uses --no-augment)",
        ),
        (["--overfit", "8", "--pad", "2"], "--pad applies to a run without --overfit"),
        (
            ["--overfit", "8", "--val-fraction", "0.3"],
            "--val-fraction applies to a run without --overfit",
        ),
        (
            ["--dataset", "digits", "--image-size", "16"],
            "--image-size applies to --dataset imagefolder or synthetic",
        ),
        (["--label-column", "y"], "--label-column applies to --dataset csv only"),
        (["--skip-bad-files"], "--skip-bad-files applies to --dataset imagefolder only"),
        (
            ["--dataset", "digits", "--data-dir", "x"],
            "--data-dir applies to a dataset read from files",
        ),
        (
            ["--dataset", "csv", "--data-dir", "t.csv", "--augment"],
            "--augment applies to image data",
        ),
        (
            ["--dataset", "csv", "--data-dir", "t.csv", "--channels-last"],
            "--channels-last applies to image data",
        ),
        (["--dataset", "csv", "--data-dir", "t.csv", "--pad", "1"], "--pad applies to image data"),
        (
            ["--sync-bn"],
            "--sync-bn applies to runs launched by torchrun with 2 or more processes only (this"
            " run uses one process)",
        ),
        (["--dist-timeout", "60"], "--dist-timeout applies to runs launched by torchrun"),
    ],
)
def test_a_flag_that_changes_nothing_is_refused_in_one_line(argv, message, capsys):
    code, err = run_main(main, [*argv, "--epochs", "1", "--quiet"], capsys)
    assert (
        code == 2 and err.count("\n") == 1 and message in err and "would change nothing" in err
    ), err


def test_torchrun_flags_are_read_when_torchrun_launched_the_run(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it (parsing starts no process group)
    cfg = parse_config(DemoConfig, ["--sync-bn", "--dist-timeout", "60"], "demo")
    assert cfg.sync_bn and cfg.dist_timeout == 60


def test_a_lab_keeps_the_cores_rule_for_a_field_it_redeclares():
    from dataclasses import dataclass

    from labs_core import arg

    @dataclass
    class Redeclared(DemoConfig):
        augment: bool = arg(False, "off by default here")

    assert [r.field for r in rules(Redeclared, "augment")] == ["dataset", "overfit"]
    with pytest.raises(LabError, match="--augment applies to image data"):
        parse_config(Redeclared, ["--dataset", "csv", "--augment"], "demo")


def test_a_dataset_of_a_kind_the_lab_cannot_take_is_refused_before_loading():
    from dataclasses import dataclass

    @dataclass
    class ImagesOnly(DemoConfig):
        data_kinds = ("image",)

    with pytest.raises(
        LabError, match="--dataset csv is tabular data; demo's models take image data only"
    ):
        parse_config(ImagesOnly, ["--dataset", "csv", "--data-dir", "missing.csv"], "demo")


# --- values that make a run meaningless -----------------------------------------------------------


def test_shifts_as_large_as_the_image_are_refused(capsys, tmp_path):
    code, err = run_main(
        main, ["--image-size", "8", "--pad", "8", "--out", str(tmp_path / "r"), *TINY], capsys
    )
    assert code == 2 and "--pad 8: shifts as large as the image (8x8 px)" in err
    assert not (tmp_path / "r").exists()
    code, err = run_main(
        main, ["--image-size", "8", "--pad", "7", "--out", str(tmp_path / "r"), *TINY], capsys
    )
    assert code == 0, err


def test_a_text_of_one_repeated_character_is_refused():
    with pytest.raises(LabError, match="1 distinct character"):
        CharData.from_text("a" * 500, block_size=8, source="t.txt")
    assert len(CharData.from_text("ab" * 250, block_size=8).tokenizer) == 2


@pytest.mark.parametrize(
    "damage, message",
    [
        ("nan", "weight 'w' holds 1 NaN or infinite value"),
        ("inf", "weight 'w' holds 2 NaN or infinite value"),
        ("epoch", "its 'epoch' is -3"),
        ("step", "its 'global_step' is -1"),
    ],
)
def test_a_checkpoint_with_nonsense_numbers_is_refused(damage, message, tmp_path):
    w = torch.zeros(3)
    state = {"model": {"w": w, "n": torch.zeros(2, dtype=torch.long)}, "epoch": 2, "global_step": 5}
    if damage == "nan":
        w[1] = float("nan")
    elif damage == "inf":
        w[:2] = float("inf")
    elif damage == "epoch":
        state["epoch"] = -3
    else:
        state["global_step"] = -1
    save_checkpoint(tmp_path / "c.pt", state)
    with pytest.raises(LabError, match=message):
        load_checkpoint(tmp_path / "c.pt")


def test_a_csv_label_cell_left_empty_is_refused_not_a_class(tmp_path):
    (tmp_path / "t.csv").write_text("a,label\n1,x\n2,\n3,y\n")
    with pytest.raises(LabError, match="line 3: the 'label' cell is empty"):
        load_dataset("csv", tmp_path / "t.csv")


def test_an_allocation_too_large_is_one_line_naming_the_size():
    try:
        torch.empty(2**62, dtype=torch.uint8)
    except RuntimeError as exc:
        message, code = fault_line(exc)
    assert message.startswith("out of memory") and "\n" not in message and code == 1
    assert fault_line(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert fault_line(MemoryError())[0].startswith("out of memory")


# --- every file a classifier reads: missing, empty, truncated, the wrong kind, another lab's


def _files(root, name):
    """(the file to damage, the flags that read it) for one dataset written by ``write_dataset``."""
    argv = write_dataset(name, root)
    target = {
        "mnist": root / "mnist" / "train-images-idx3-ubyte",
        "cifar10": root / "cifar-10-batches-py" / "data_batch_1",
        "imagefolder": root / "images" / "c0" / "0.png",
        "csv": root / "table.csv",
    }[name]
    return target, argv


@pytest.mark.parametrize("how", FILE_DAMAGES)
@pytest.mark.parametrize("name", ["mnist", "cifar10", "imagefolder", "csv"])
def test_every_data_file_damaged_in_every_way(name, how, tmp_path, monkeypatch, capsys, offline):
    monkeypatch.chdir(tmp_path)
    target, argv = _files(tmp_path / "data", name)
    damage_file(target, how)
    code, err = run_main(
        main,
        (
            [*argv, *TINY, "--image-size", "8", "--out", str(tmp_path / "run")]
            if name == "imagefolder"
            else [*argv, *TINY, "--out", str(tmp_path / "run")]
        ),
        capsys,
    )
    check_outcome(code, err)
    if name != "imagefolder" or how not in ("missing", "a folder"):  # one image fewer still trains
        assert code == 2, err


@pytest.mark.parametrize("how", [*FILE_DAMAGES, "nan weights", "negative epoch"])
def test_every_checkpoint_damage_for_resume(how, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--out", str(out), *TINY]) == 0
    ckpt = out / "checkpoints" / "last.pt"
    if how in ("nan weights", "negative epoch"):
        state = torch.load(ckpt, weights_only=True)
        if how == "nan weights":
            next(iter(state["model"].values())).fill_(float("nan"))
        else:
            state["epoch"] = -1
        torch.save(state, ckpt)
    else:
        damage_file(ckpt, how)
    capsys.readouterr()
    before = sorted(p.name for p in out.rglob("*"))
    code, err = run_main(
        main, ["--out", str(out), "--resume", *TINY[:-1], "--epochs", "2", "--quiet"], capsys
    )
    check_outcome(code, err)
    assert code == 2, err
    assert sorted(p.name for p in out.rglob("*")) == before


def test_a_model_too_large_for_the_memory_free_is_refused_before_it_is_built(monkeypatch):
    from labs_core import memory
    from labs_core.validate import check_model_fits

    monkeypatch.setattr(memory, "available_mib", lambda: 1024.0)
    check_model_fits(10_000_000, "--dim 8")  # 150 MiB to train: fits
    with pytest.raises(
        LabError, match=r"--dim 9999: a model of 100,000,000 parameters needs about 1.5 GiB"
    ):
        check_model_fits(100_000_000, "--dim 9999")
