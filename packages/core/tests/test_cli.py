"""The generated CLI and a whole run through ``classifier_main``, as a lab uses them."""

import dataclasses
import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from labs_core import RunConfig, arg, load_checkpoint
from labs_core.config import build_parser, parse_config
from labs_core.experiment import classifier_main


@dataclass
class DemoConfig(RunConfig):
    lab = "demo"
    dataset: str = arg("synthetic", "dataset")
    image_size: int = arg(8, "image side")
    epochs: int = arg(2, "epochs")
    hidden: list[int] = arg(help="hidden sizes", default_factory=lambda: [32])


def build(data):
    c, h, w = data.input_shape
    sizes = [c * h * w, 32]
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(sizes[0], 32),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(32, data.num_classes),
    )


def main(argv):
    return classifier_main(DemoConfig, build, "demo", argv)


def test_help_documents_every_flag(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(DemoConfig):
        assert f"--{f.name.replace('_', '-')}" in out
    for shared in [
        "--dataset",
        "--data-dir",
        "--epochs",
        "--batch-size",
        "--lr",
        "--seed",
        "--device",
        "--precision",
        "--deterministic",
        "--overfit",
        "--max-steps",
        "--out",
        "--resume",
        "--quiet",
    ]:
        assert shared in out


def test_parsing_types_and_defaults():
    cfg = parse_config(
        DemoConfig,
        ["--lr", "0.5", "--hidden", "8", "4", "--deterministic", "--no-augment", "--resume"],
        "demo",
    )
    assert cfg.lr == 0.5 and cfg.hidden == [8, 4] and cfg.deterministic and not cfg.augment
    assert cfg.resume == "latest"
    assert parse_config(DemoConfig, ["--resume", "x.pt"], "demo").resume == "x.pt"
    assert parse_config(DemoConfig, [], "demo").resume is None
    assert build_parser(DemoConfig, "demo").prog == "demo"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--lr", "-0.1"], "--lr must be a positive number"),
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--grad-clip", "nan"], "--grad-clip must be a finite number"),
        (["--seed", "99999999999999999999"], "--seed must be at most 4294967295"),
        (["--seed", "-1"], "--seed must be at least 0"),
        (["--batch-size", "99999999999999999999"], "--batch-size must be at most"),
        (
            ["--monitor", "val_acuracy"],
            (
                "--monitor val_acuracy: not a metric of this run; it logs train_loss, train_acc,"
                " val_loss, val_acc"
            ),
        ),
        (
            ["--optimizer", "adam", "--momentum", "0.5"],
            "--momentum applies to --optimizer sgd only",
        ),
        (["--out", "{tmp}/nothing", "--resume"], "holds no checkpoint to continue"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--epochs", "two"], "invalid int value"),
        (["--precision", "fp8"], "invalid choice"),
        (["--device", "cuda:7"], "--device cuda:7"),
        (["--device", "potato"], "not a device name"),
        (["--resume", "missing.pt"], "checkpoint not found: missing.pt"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (
            ["--dataset", "mnist", "--data-dir", "{tmp}"],
            "mnist: could not download train-images-idx3-ubyte.gz",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))
    assert not [
        p for p in tmp_path.rglob("*") if p.is_file() and "idx" in p.name
    ]  # no half-written data


def test_full_run_writes_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--out", str(out), "--epochs", "2", "--lr", "0.01"]) == 0
    printed = capsys.readouterr().out
    assert f"run directory: {out}" in printed and "test accuracy" in printed
    for name in [
        "config.json",
        "metrics.jsonl",
        "summary.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "confusion_matrix.png",
        "confusion_matrix.txt",
    ]:
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert {"train_loss", "val_loss", "train_acc", "val_acc", "test_acc"} <= set(summary["metrics"])
    assert (
        set(summary["best"]) == {"metric", "value", "epoch", "mode"}
        and summary["best"]["mode"] == "min"
    )
    assert summary["epochs_run"] == 2 and summary["steps"] > 0 and summary["seed"] == 0
    assert (
        summary["device"] == "cpu"
        and summary["precision"] == "fp32"
        and summary["wall_seconds"] > 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["lr"] == 0.01 and config["resolved"]["classes"][0] == "class0"
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["config"]["lr"] == 0.01 and ckpt["classes"][0] == "class0"
    assert {
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "epoch",
        "global_step",
        "best",
        "rng",
        "data",
        "versions",
    } <= set(ckpt)
    acc = EventAccumulator(str(out / "tb"), size_guidance={"images": 0})
    acc.Reload()
    assert "confusion_matrix" in acc.Tags()["images"]


def test_cli_resume_is_bit_identical(tmp_path):
    common = ["--lr", "0.01", "--quiet", "--scheduler", "none"]
    assert main(common + ["--out", str(tmp_path / "a"), "--epochs", "4"]) == 0
    assert main(common + ["--out", str(tmp_path / "b"), "--epochs", "2"]) == 0
    assert (
        main(
            common + ["--resume", str(tmp_path / "b" / "checkpoints" / "last.pt"), "--epochs", "4"]
        )
        == 0
    )
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert b["epoch"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4  # the resumed run appended to the same log


def test_resume_without_path_takes_latest_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--quiet", "--epochs", "1"]) == 0
    assert main(["--resume", "--epochs", "2"]) == 0
    assert "resuming from runs/demo/" in capsys.readouterr().out


def test_divergence_is_one_line_and_keeps_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["--out", str(out), "--epochs", "3", "--lr", "1e30", "--optimizer", "sgd", "--quiet"])
        == 2
    )
    err = capsys.readouterr().err
    low = err.lower()
    assert err.count("\n") == 1 and ("loss became nan" in low or "loss became inf" in low)
    assert "last good checkpoint:" in low and "at step" in low


def test_overfit_mode_trains_and_evaluates_on_same_samples(tmp_path):
    out = tmp_path / "run"
    assert (
        main(["--out", str(out), "--overfit", "8", "--epochs", "40", "--lr", "0.01", "--quiet"])
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["val_acc"] == 1.0
    config = json.loads((out / "config.json").read_text())
    assert config["resolved"]["dataset"].startswith("synthetic (8 train / 8 val")


def test_an_abbreviated_flag_is_refused_not_guessed(tmp_path, capsys):
    """argparse would read ``--epoch`` as ``--epochs``, but a recipe decides by the flags given
    whole: what was parsed would not be what runs. So a prefix is refused in one line."""
    assert main(["--epoch", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unrecognized arguments: --epoch 1" in err
    assert not (tmp_path / "run").exists()


def test_recipe_values_apply_only_to_flags_not_given():
    from labs_core.config import apply_recipe

    recipe = {"epochs": 7, "lr": 0.5, "hidden": [4, 4]}
    cfg = parse_config(DemoConfig, ["--lr", "0.1"], "demo")
    apply_recipe(cfg, recipe, {"lr"})
    assert cfg.epochs == 7 and cfg.lr == 0.1 and cfg.hidden == [4, 4]
    cfg.hidden.append(1)
    assert recipe["hidden"] == [4, 4]  # the recipe is copied, never shared with a config


def test_override_keeps_the_parts_help_choices_and_bounds():
    from labs_core.config import override

    @dataclass
    class Short(RunConfig):
        lab = "demo"
        epochs: int = override("epochs", 3)
        scheduler: str = override("scheduler", "cosine", "the schedule this lab likes")

    fields = {f.name: f for f in dataclasses.fields(Short)}
    assert Short().epochs == 3 and fields["epochs"].metadata["help"] == "number of training epochs"
    assert fields["scheduler"].metadata["choices"] == ("none", "cosine", "onecycle", "step")
    assert fields["scheduler"].metadata["help"] == "the schedule this lab likes"
    with pytest.raises(TypeError, match="no config part declares"):
        override("no_such_field", 1)
