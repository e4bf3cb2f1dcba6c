"""Recipes (what `train` does by default on a CPU or a GPU) and the CPU recipe's compact net."""

import json

import pytest
import torch

from checkpoint_project.cli import main
from checkpoint_project.models import CompactNet, PatchWhitening, build_model
from checkpoint_project.train import RECIPES, TrainConfig, whitening_sample
from labs_core.config import parse_config
from labs_core.data import load_dataset


def config(*argv):
    return parse_config(TrainConfig, list(argv), "train")


def test_patch_whitening_makes_2x2_patches_decorrelated_with_unit_variance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 12, 12, generator=g)
    x = x + 0.8 * x.roll(1, 3) + 0.5 * x[:, :1]  # neighbouring pixels and channels correlated
    w = PatchWhitening(3, eps=0.0)
    w.fit(x)
    out = w(x).detach()[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()  # the positive half
    torch.testing.assert_close(
        torch.cov(out.T), torch.eye(12, dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(w.conv.weight[12:], -w.conv.weight[:12])  # and its mirror half
    assert (
        not w.conv.weight.requires_grad and w.conv.bias.requires_grad
    )  # fixed filters, a learned bias


def test_whitening_reads_the_images_as_the_loaders_normalise_them():
    data = load_dataset("synthetic", synthetic={"num_train": 200, "num_test": 20})
    sample = whitening_sample(data, count=50)
    assert sample.shape == (50, *data.input_shape)
    expected = (
        data.train[0][0].float() / 255 - torch.tensor(data.mean).view(-1, 1, 1)
    ) / torch.tensor(data.std).view(-1, 1, 1)
    torch.testing.assert_close(sample[0], expected)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 8, 8)])
def test_compact_net_fits_any_image_size_from_8_pixels(shape):
    model = build_model("compact", shape, 10)
    assert isinstance(model, CompactNet) and model(torch.zeros(2, *shape)).shape == (2, 10)
    assert [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)][1:] == [
        32,
        32,
        128,
        128,
        128,
        128,
    ]


def test_auto_recipe_is_cpu_without_a_gpu_and_flags_given_win(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = config()
    assert cfg.recipe == "cpu" and cfg.model == "compact"
    assert {k: getattr(cfg, k) for k in RECIPES["cpu"] if k != "precision"} == {
        k: v for k, v in RECIPES["cpu"].items() if k != "precision"
    }
    cfg = config("--epochs", "3", "--lr", "0.05")
    assert (cfg.recipe, cfg.epochs, cfg.lr, cfg.batch_size) == ("cpu", 3, 0.05, 512)
    cfg = config("--device", "cpu", "--recipe", "fast")
    assert (cfg.model, cfg.epochs) == ("fast", 10)


def test_auto_recipe_on_a_gpu_is_fast(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = config()
    assert (cfg.recipe, cfg.model, cfg.precision) == ("fast", "fast", "bf16")
    assert config("--device", "cpu").recipe == "cpu"  # a GPU machine told to use its CPU


@pytest.mark.parametrize(
    "model, recipe", [("cnn", "cnn"), ("resnet", "resnet"), ("fast", "fast"), ("compact", "cpu")]
)
def test_a_model_given_brings_its_own_recipe(model, recipe):
    cfg = config("--model", model)
    assert cfg.recipe == recipe and cfg.model == model
    assert cfg.optimizer == RECIPES[recipe]["optimizer"] and cfg.epochs == RECIPES[recipe]["epochs"]


def test_bf16_only_where_the_cpu_runs_it_natively(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert config().precision == "fp32"
    assert config("--precision", "bf16").precision == "bf16"  # asked for: given
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert config().precision == "bf16"


def test_the_cpu_recipe_learns_says_so_and_saves_its_whitened_stem(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "synthetic",
                "--epochs",
                "2",
                "--batch-size",
                "64",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "recipe cpu: --model compact, 2 epochs" in printed
    assert json.loads((out / "summary.json").read_text())["metrics"]["test_acc"] > 0.8
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["elapsed_s"] > 0  # the training time every run logs (the benchmark reads it)
    from checkpoint_project.inference import load_trained

    model, _ = load_trained(out / "checkpoints" / "last.pt")
    assert (
        model.whiten.conv.weight.abs().sum() > 0
    )  # the data's filters, restored from the checkpoint


def test_a_newcomer_follows_train_to_the_optimizer_step_in_six_frames(tmp_path):
    """docs/architecture.md's road: main -> run_lab -> execute -> fit -> train_one_epoch -> step."""
    from checkpoint_project.train import main
    from labs_core.testing import check_road

    argv = [
        "--dataset",
        "synthetic",
        "--image-size",
        "8",
        "--epochs",
        "1",
        "--max-steps",
        "1",
        "--model",
        "cnn",
        "--quiet",
        "--out",
        str(tmp_path / "run"),
    ]
    check_road(main, argv)
