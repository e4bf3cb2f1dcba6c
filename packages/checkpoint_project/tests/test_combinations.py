"""Flags compose: the combinations the README documents for ``train`` and ``finetune``, each run to
its report on tiny data, or refused at start-up in one line naming the combination.

The in-process matrix is an all-pairs covering set (``labs_core.testing.pairwise``), not the full
product: every pair of values of any two of --loader fast|standard, --channels-last on|off,
--precision fp32|bf16, --grad-accum 1|2, --ema, --tta, the model and the data source (synthetic
tensors, or an image folder: the standard loader then streams files) appears in some case.
--resume, the finders and torchrun (plain and --fsdp, with the default recipe) have
cases of their own (torchrun marked slow; --compile: lab0's combinations and
test_grad_checkpoint.py).
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from checkpoint_project.cli import main
from labs_core.testing import check_torchrun_run, pairwise, torchrun

TINY = ["--epochs", "1", "--max-steps", "2", "--width", "4", "--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three classes of 16x16 images in PNG and JPEG (each class its own colour, with noise)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("red", "green", "blue")):
        (root / name).mkdir()
        for i in range(30):
            pixels = np.full((16, 16, 3), 40, np.uint8)
            pixels[..., c] = 200
            noisy = np.clip(pixels + rng.normal(0, 25, pixels.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def data_args(source: str, folder: Path) -> list[str]:
    if source == "imagefolder":
        return ["--dataset", "imagefolder", "--data-dir", str(folder), "--image-size", "16"]
    return ["--dataset", "synthetic"]


TRAIN_CASES = pairwise(
    {
        "loader": ("fast", "standard"),
        "data": ("synthetic", "imagefolder"),
        "channels_last": (True, False),
        "precision": ("fp32", "bf16"),
        "grad_accum": (1, 2),
        "ema": (0.0, 0.9),
        "tta": (True, False),
        "model": ("compact", "resnet", "cnn"),
    },
    seed_cases=(
        {
            "loader": "standard",
            "data": "imagefolder",
            "channels_last": True,
            "precision": "bf16",
            "grad_accum": 2,
            "ema": 0.9,
            "tta": True,
            "model": "compact",
        },
    ),
)  # the cpu recipe, streamed


def case_id(case: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in case.items())


@pytest.mark.parametrize("case", TRAIN_CASES, ids=case_id)
def test_train_combination_runs_to_its_report(case, folder, tmp_path):
    out = tmp_path / "run"
    argv = [
        "train",
        *data_args(case["data"], folder),
        *TINY,
        "--model",
        case["model"],
        "--loader",
        case["loader"],
        "--precision",
        case["precision"],
        "--grad-accum",
        str(case["grad_accum"]),
        "--channels-last" if case["channels_last"] else "--no-channels-last",
        "--tta" if case["tta"] else "--no-tta",
        "--out",
        str(out),
    ]
    if case["ema"]:
        argv += ["--ema", str(case["ema"])]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["precision"] == case["precision"]
    assert ("test_acc_tta" in summary["metrics"]) == case["tta"]
    assert (out / "checkpoints" / "ema.pt").is_file() == bool(case["ema"])
    for name in ("confusion_matrix.png", "per_class_accuracy.txt", "confidently_wrong.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert (config["loader"], config["channels_last"], config["grad_accum"]) == (
        case["loader"],
        case["channels_last"],
        case["grad_accum"],
    )


def test_the_gallery_shows_streamed_test_images(folder, tmp_path):
    """--loader standard gives the report file paths, not tensors: the gallery decodes the few it
    shows."""
    import torch

    from checkpoint_project.train import gallery
    from labs_core.data.imagefolder import scan

    files, labels = scan(folder, ["red", "green", "blue"])
    probs = torch.full((len(files), 3), 0.1)
    probs[:, 0] = 0.8  # everything "red": the green and blue images are confidently wrong
    n = gallery(
        files,
        probs,
        torch.tensor(labels),
        ["red", "green", "blue"],
        tmp_path / "g.png",
        count=4,
        image_size=16,
    )
    assert n == 4 and Image.open(tmp_path / "g.png").size[0] > 100


FINETUNE_CASES = pairwise(
    {
        "loader": ("fast", "standard"),
        "channels_last": (True, False),
        "precision": ("fp32", "bf16"),
        "grad_accum": (1, 2),
    }
)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pre") / "run"
    assert (
        main(["train", "--dataset", "synthetic", *TINY, "--model", "cnn", "--out", str(out)]) == 0
    )
    return out / "checkpoints" / "last.pt"


@pytest.mark.parametrize("case", FINETUNE_CASES, ids=case_id)
def test_finetune_combination_runs_to_its_report(case, pretrained, folder, tmp_path):
    out = tmp_path / "ft"
    argv = [
        "finetune",
        "--from",
        str(pretrained),
        *data_args("imagefolder", folder),
        "--head-epochs",
        "1",
        "--stage-epochs",
        "1",
        "--unfreeze",
        "1",
        "--batch-size",
        "8",
        "--val-fraction",
        "0.25",
        "--quiet",
        "--loader",
        case["loader"],
        "--precision",
        case["precision"],
        "--grad-accum",
        str(case["grad_accum"]),
        "--channels-last" if case["channels_last"] else "--no-channels-last",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert len(json.loads((out / "phases.json").read_text())) == 2
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 2


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_resume_continues_a_longer_plan_and_leaves_a_finished_run_alone(tmp_path, capsys):
    out = tmp_path / "run"
    common = [
        "train",
        "--dataset",
        "synthetic",
        "--width",
        "4",
        "--batch-size",
        "256",
        "--quiet",
        "--model",
        "cnn",
        "--loader",
        "standard",
        "--channels-last",
        "--grad-accum",
        "2",
        "--out",
        str(out),
    ]
    assert main([*common, "--epochs", "1"]) == 0
    assert main([*common, "--epochs", "2", "--resume"]) == 0  # the plan goes further: it continues
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 2
    before = snapshot(out)
    capsys.readouterr()
    for epochs in ("2", "1"):  # adds nothing: said in one line, exit 0, not a byte changed or added
        assert main([*common, "--epochs", epochs, "--resume"]) == 0
        printed, err = capsys.readouterr()
        assert (
            printed
            == "train: already finished 2 epochs; nothing to do (give --epochs more than 2 to"
            " continue)\n"
        )
        assert err == ""
        assert snapshot(out) == before


def test_resume_after_a_max_steps_cut_with_the_same_cut_does_nothing(tmp_path, capsys):
    out = tmp_path / "cut"
    common = [
        "train",
        "--dataset",
        "synthetic",
        "--width",
        "4",
        "--batch-size",
        "256",
        "--quiet",
        "--model",
        "cnn",
        "--epochs",
        "2",
        "--max-steps",
        "3",
        "--out",
        str(out),
    ]
    assert main(common) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert main([*common, "--resume"]) == 0
    assert "already took 3 steps (--max-steps 3); nothing to do" in capsys.readouterr().out
    assert snapshot(out) == before


FINDER_CASES = [
    [
        "--lr-find",
        "--lr-find-steps",
        "10",
        "--loader",
        "standard",
        "--channels-last",
        "--precision",
        "bf16",
    ],
    ["--lr-find", "--lr-find-steps", "10", "--loader", "fast", "--grad-accum", "2"],
    [
        "--lr-find-then-train",
        "--lr-find-steps",
        "10",
        "--max-steps",
        "2",
        "--epochs",
        "1",
        "--ema",
        "0.9",
        "--tta",
    ],
    [
        "--find-batch-size",
        "--memory-budget",
        "8G",
        "--loader",
        "standard",
        "--channels-last",
        "--precision",
        "bf16",
        "--grad-accum",
        "2",
    ],
]


@pytest.mark.parametrize("flags", FINDER_CASES, ids=lambda f: " ".join(f[:1] + f[3:]))
def test_finders_with_the_data_pipeline_flags(flags, folder, tmp_path):
    out = tmp_path / "find"
    assert (
        main(
            [
                "train",
                *data_args("imagefolder", folder),
                "--width",
                "4",
                "--model",
                "cnn",
                "--quiet",
                *flags,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = "batch_size.json" if "--find-batch-size" in flags else "lr_find.json"
    assert (out / report).is_file()
    assert (out / "summary.json").is_file() == ("--lr-find-then-train" in flags)


REFUSED = [
    (["--fsdp"], "--fsdp shards the model across processes: launch the run with torchrun"),
    (["--lr-find", "--resume"], "--resume"),
    (["--find-batch-size", "--batch-size", "8"], "--batch-size"),
    (["--num-workers", "2"], "--num-workers applies to --loader standard only"),
    (["--grad-checkpoint", "--model", "cnn"], "--grad-checkpoint applies to --model"),
]


@pytest.mark.parametrize(
    "flags, message", REFUSED, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_combinations_refused_at_start_up_in_one_line(flags, message, tmp_path, capsys):
    out = tmp_path / "refused"
    assert main(["train", "--dataset", "synthetic", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


@pytest.mark.slow
def test_fsdp_with_the_default_recipe_under_torchrun(tmp_path):
    """The cpu recipe (channels-last, the compact net) sharded over two processes: FSDP needs
    contiguous parameters, the activations stay channels-last."""
    out = tmp_path / "fsdp"
    r = torchrun(
        "checkpoint_project.train",
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--batch-size",
        "32",
        "--width",
        "4",
        "--fsdp",
        "--quiet",
        "--out",
        str(out),
    )
    summary = check_torchrun_run(r, out)
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == "cpu" and config["channels_last"] and config["resolved"]["sharded"]
    assert "test_acc_tta" in summary["metrics"]


@pytest.mark.slow
def test_torchrun_streams_files_with_channels_last_and_accumulation(folder, tmp_path):
    out = tmp_path / "ddp"
    r = torchrun(
        "checkpoint_project.train",
        *data_args("imagefolder", folder),
        *TINY,
        "--model",
        "resnet",
        "--loader",
        "standard",
        "--channels-last",
        "--grad-accum",
        "2",
        "--ema",
        "0.9",
        "--out",
        str(out),
    )
    check_torchrun_run(r, out)
    assert (out / "confidently_wrong.png").is_file() and (out / "checkpoints" / "ema.pt").is_file()
