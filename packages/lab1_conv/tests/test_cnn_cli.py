import json

import pytest
import torch

from lab1_conv.cli import main
from lab1_conv.model import CNN
from labs_core import seed_everything
from labs_core.testing import check_one_line_error


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_cnn_adapts_to_image_shapes(shape):
    for conv in ("scratch", "torch"):
        for head in ("avg", "flatten"):
            model = CNN(shape, 10, conv=conv, head=head)
            assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_scratch_and_torch_cnn_are_the_same_network():
    """Same weights, same outputs and same gradients for every parameter and the input."""
    seed_everything(0)
    a = CNN((1, 8, 8), 10, dropout=0.0, conv="scratch")
    seed_everything(0)
    b = CNN((1, 8, 8), 10, dropout=0.0, conv="torch")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    x = torch.randn(4, 1, 8, 8)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = torch.tensor([0, 3, 5, 9])
    out_a, out_b = a(xa), b(xb)  # train mode: batch statistics
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-6)
    torch.nn.functional.cross_entropy(out_a, y).backward()
    torch.nn.functional.cross_entropy(out_b, y).backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-6)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_manual_loop_reaches_the_core_loops_weights(tmp_path):
    from labs_core import load_checkpoint

    common = ["--epochs", "2", "--widths", "8", "16", "--quiet", "--conv", "torch"]
    assert main(common + ["--out", str(tmp_path / "core")]) == 0
    assert main(common + ["--loop", "manual", "--out", str(tmp_path / "manual")]) == 0
    core = load_checkpoint(tmp_path / "core" / "checkpoints" / "last.pt")["model"]
    manual = load_checkpoint(tmp_path / "manual" / "checkpoints" / "last.pt")["model"]
    for k in core:
        assert torch.equal(core[k], manual[k]), k


def test_the_fast_recipe_is_the_default_for_mnist_and_fashion_mnist():
    from lab1_conv.cli import FAST_RECIPE, Lab1Config
    from labs_core.config import parse_config

    for name in ("mnist", "fashion-mnist"):
        cfg = parse_config(Lab1Config, ["--dataset", name], "lab1-conv")
        assert cfg.recipe == "fast"
        assert all(getattr(cfg, k) == v for k, v in FAST_RECIPE.items())
    cfg = parse_config(
        Lab1Config, ["--dataset", "mnist", "--epochs", "5", "--conv", "scratch"], "lab1-conv"
    )
    assert cfg.epochs == 5 and cfg.conv == "scratch" and cfg.lr == FAST_RECIPE["lr"]  # flags win
    assert parse_config(Lab1Config, [], "lab1-conv").recipe == "standard"  # digits
    assert parse_config(Lab1Config, ["--recipe", "fast"], "lab1-conv").precision == "bf16"


def test_overfit_32_reaches_full_accuracy(tmp_path):
    out = tmp_path / "run"
    assert main(["--overfit", "32", "--epochs", "40", "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["val_acc"] == 1.0
    assert (out / "filters.png").is_file() and (out / "feature_maps.png").is_file()


def test_a_short_run_writes_its_figures(tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "--epochs",
                "1",
                "--max-steps",
                "3",
                "--widths",
                "8",
                "16",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    for name in ("filters.png", "feature_maps.png", "confusion_matrix.png", "summary.json"):
        assert (out / name).is_file(), name


def test_shapes_table(capsys):
    assert main(["--shapes", "--dataset", "synthetic", "--image-size", "28"]) == 0
    out = capsys.readouterr().out
    assert "features.0" in out and "floor((28 + 2*1 - 1*(3-1) - 1)/1) + 1 = 28  ok" in out
    assert "MISMATCH" not in out and "total parameters" in out


def test_compare_baseline_and_cnn(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--widths",
                "8",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    table = json.loads((out / "comparison.json").read_text())
    assert set(table) == {"logreg", "cnn"} and all(
        0 <= row["test_acc"] <= 1 for row in table.values()
    )
    assert (out / "cnn" / "summary.json").is_file() and (out / "logreg" / "summary.json").is_file()
    assert "logreg" in capsys.readouterr().out


def test_explain_writes_the_maps_of_n_test_digits(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "--epochs",
        "1",
        "--max-steps",
        "3",
        "--widths",
        "8",
        "16",
        "--explain",
        "3",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "why these predictions" in printed and "for 3 test images" in printed
    from PIL import Image

    with Image.open(out / "explain.png") as im:  # three rows (one per digit) of five panels
        assert im.width > 600 and im.height > 3 * 150


def test_explain_takes_the_first_test_images_in_order(tmp_path, monkeypatch):
    import lab1_conv.figures as figures

    seen = {}

    def record(model, x, mean, std, classes, path, labels=None, **_):
        seen.update(x=x.clone(), labels=labels.clone(), path=path)

    monkeypatch.setattr(figures, "write_explanations", record)
    out = tmp_path / "run"
    assert (
        main(
            [
                "--epochs",
                "1",
                "--max-steps",
                "1",
                "--widths",
                "8",
                "--batch-size",
                "16",
                "--explain",
                "20",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    from labs_core.data import load_dataset

    data = load_dataset("digits", "data")
    assert len(seen["x"]) == 20 and torch.equal(
        seen["labels"], data.test[1][:20]
    )  # across two test batches
    assert seen["path"] == out / "explain.png"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--widths", "0"], "--widths needs"),
        (["--conv", "fft"], "invalid choice"),
        (["--dropout", "1.5"], "--dropout must be in"),
        (["--explain", "2", "--model", "logreg"], "--model logreg has not"),
        (["--explain", "2", "--overfit", "8"], "--overfit runs have no test split"),
        (["--explain", "2", "--shapes"], "--shapes trains nothing"),
        (["--explain", "33"], "--explain must be at most 32"),
        (["--explain", "-1"], "--explain must be at least 0"),
        (["compare", "--lr-find"], "compare trains two models; run a finder with lab1-conv itself"),
        (["--explain", "2", "--lr-find"], "a finder alone stops before training"),
    ],
)
def test_bad_input(argv, message, capsys):
    check_one_line_error(main, argv, message, capsys)


@pytest.mark.slow
def test_runs_under_torchrun_with_two_processes(tmp_path):
    from labs_core.testing import check_torchrun_run, torchrun

    out = tmp_path / "ddp"
    r = torchrun(
        "lab1_conv.cli",
        "--epochs",
        "1",
        "--widths",
        "8",
        "--conv",
        "torch",
        "--quiet",
        "--explain",
        "2",
        "--out",
        str(out),
    )
    check_torchrun_run(r, out)
    assert (
        (out / "filters.png").is_file()
        and (out / "feature_maps.png").is_file()
        and (out / "explain.png").is_file()
    )


@pytest.mark.slow
def test_fsdp_trains_as_ddp_and_its_checkpoint_resumes_in_one_process(tmp_path):
    """--fsdp: the CNN sharded over two processes learns step for step as under DDP (batch norm and
    accumulation included), the report runs on the gathered model, and the checkpoint (one format
    for every process count) continues in one process without --fsdp."""
    from labs_core.testing import check_torchrun_run, torchrun

    args = [
        "--epochs",
        "1",
        "--widths",
        "8",
        "--conv",
        "torch",
        "--grad-accum",
        "2",
        "--grad-clip",
        "1",
        "--quiet",
    ]
    logs = {}
    for name, extra in (("ddp", []), ("fsdp", ["--fsdp"])):
        out = tmp_path / name
        check_torchrun_run(torchrun("lab1_conv.cli", *args, *extra, "--out", str(out)), out)
        logs[name] = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("train_loss", "train_acc", "grad_norm", "val_loss", "val_acc"):
        assert logs["fsdp"][key] == pytest.approx(logs["ddp"][key], rel=1e-4, abs=1e-6), key
    out = tmp_path / "fsdp"
    assert json.loads((out / "config.json").read_text())["resolved"]["sharded"] is True
    assert (out / "filters.png").is_file() and (out / "feature_maps.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["metrics"]["test_acc"] <= 1 and "test_macro_f1" in summary["metrics"]
    assert (out / "confusion_matrix.png").is_file()  # the report ran on the gathered model
    assert main([*args, "--epochs", "2", "--out", str(out), "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["processes"] == 1


def test_every_flag_is_read_by_the_run(tmp_path):
    from lab1_conv.cli import Lab1Config, train
    from labs_core.testing import check_every_flag_is_read

    base = ["--epochs", "1", "--max-steps", "2", "--widths", "8", "--quiet"]
    runs = [
        base,
        base + ["--shapes"],
        ["--epochs", "1", "--widths", "8", "--quiet", "--loop", "manual"],
        base
        + [
            "--optimizer",
            "sgd",
            "--momentum",
            "0.8",
            "--scheduler",
            "cosine",
            "--warmup-epochs",
            "0.5",
        ],
        base
        + [
            "--lr-find",
            "--lr-find-then-train",
            "--lr-find-steps",
            "10",
            "--lr-find-start",
            "1e-4",
            "--lr-find-end",
            "1",
        ],
        [
            "--widths",
            "8",
            "--quiet",
            "--overfit",
            "16",
            "--find-batch-size",
            "--memory-budget",
            "64G",
        ],
    ]
    check_every_flag_is_read(Lab1Config, train, runs, tmp_path, "lab1-conv")


def test_overfit_with_an_abbreviated_epochs_flag_is_refused(tmp_path, capsys):
    """The review's case: ``--overfit 8 --epoch 3`` ran 60 epochs without a word."""
    assert main(["--overfit", "8", "--epoch", "3", "--out", str(tmp_path / "run")]) == 2
    assert "unrecognized arguments: --epoch 3" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_newcomer_follows_the_command_to_the_optimizer_step_in_six_frames(tmp_path):
    """docs/architecture.md's road: main -> run_lab -> execute -> fit -> train_one_epoch -> step."""
    from labs_core.testing import check_road

    check_road(
        main,
        [
            *["--epochs", "1", "--max-steps", "1", "--widths", "8"],
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ],
    )
