import json

import pytest
import torch

from lab0_mlp import lessons
from lab0_mlp.cli import Lab0Config, main
from labs_core import load_checkpoint


def test_tensors_lesson_claims():
    out = []
    facts = lessons.tensors(out.append)
    assert facts["default_float"] == torch.float32 and facts["int_plus_float"] == torch.float32
    assert facts["shared"] and facts["view_fails"] and facts["broadcast_shape"] == (3, 3)
    assert any("share memory" in line for line in out)


def test_autograd_lesson_claims():
    facts = lessons.autograd(lambda s: None)
    assert facts["grad_matches"]
    assert facts["graph"][0] == "SumBackward0" and "PowBackward0" in facts["graph"]
    assert facts["accumulate"] == (3.0, 6.0, 3.0)


def test_linear_regression_recovers_the_line():
    facts = lessons.linreg(lambda s: None)
    assert abs(facts["w"] - facts["true_w"]) < 0.01 and abs(facts["b"] - facts["true_b"]) < 0.01


@pytest.mark.parametrize(
    "name, headings",
    [
        ("tensors", ["== creating tensors", "== view, reshape, permute, contiguous", "== devices"]),
        ("autograd", ["=="]),
        ("linreg", ["=="]),
    ],
)
def test_lessons_run_from_the_cli(name, headings, capsys):
    """``lab0-mlp lesson NAME`` prints the lesson the function of that name teaches, section by
    section, as the function itself does."""
    assert main(["lesson", name]) == 0
    printed = capsys.readouterr().out
    said = []
    getattr(lessons, name)(said.append)
    assert all(h in printed for h in headings)
    assert [line for line in printed.splitlines() if line.startswith("==")] == [
        line for line in "\n".join(said).splitlines() if line.startswith("==")
    ]


def test_unknown_lesson_is_one_line(capsys):
    assert main(["lesson", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage: lab0-mlp lesson" in err


def test_overfit_32_reaches_tiny_loss_and_full_accuracy(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--overfit", "32", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["val_loss"] < 0.01 and summary["metrics"]["val_acc"] == 1.0
    assert summary["epochs_run"] == Lab0Config.overfit_epochs
    printed = capsys.readouterr().out
    assert "grad norms: " in printed and "net.1.weight" in printed
    assert (out / "loss_curve.png").is_file() and (out / "checkpoints" / "best.pt").is_file()


def test_manual_and_core_loops_reach_the_same_weights(tmp_path):
    common = [
        "--epochs",
        "3",
        "--quiet",
        "--hidden",
        "32",
        "--dropout",
        "0.2",
        "--batch-norm",
        "--scheduler",
        "onecycle",
        "--label-smoothing",
        "0.1",
    ]
    assert main(common + ["--loop", "core", "--out", str(tmp_path / "core")]) == 0
    assert main(common + ["--loop", "manual", "--out", str(tmp_path / "manual")]) == 0
    core = load_checkpoint(tmp_path / "core" / "checkpoints" / "last.pt")["model"]
    manual = load_checkpoint(tmp_path / "manual" / "checkpoints" / "last.pt")["model"]
    assert core.keys() == manual.keys()
    for k in core:  # the same arithmetic in the same order: bit-identical weights
        assert torch.equal(core[k], manual[k]), k
    core_log = json.loads((tmp_path / "core" / "summary.json").read_text())["metrics"]
    manual_log = json.loads((tmp_path / "manual" / "summary.json").read_text())["metrics"]
    assert core_log["test_acc"] == manual_log["test_acc"]


def test_scratch_and_torch_layers_train_alike(tmp_path):
    accs = []
    for layers in ("scratch", "torch"):
        out = tmp_path / layers
        assert (
            main(
                [
                    "--epochs",
                    "4",
                    "--quiet",
                    "--layers",
                    layers,
                    "--optim-impl",
                    layers,
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        accs.append(json.loads((out / "summary.json").read_text())["metrics"]["test_acc"])
    assert accs[0] == pytest.approx(accs[1], abs=0.01) and min(accs) > 0.9


def test_manual_loop_refuses_core_only_flags(capsys, monkeypatch):
    assert main(["--loop", "manual", "--precision", "bf16"]) == 2
    assert "needs --loop core" in capsys.readouterr().err
    monkeypatch.setattr(
        "labs_core.device.compile_unavailable", lambda: None
    )  # whether or not g++ is here
    assert (
        main(["--loop", "manual", "--compile"]) == 2
    )  # the hand-written loop trains the model as written
    assert "--compile needs --loop core" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["--loop", "manual"]) == 2
    assert "a torchrun launch needs --loop core" in capsys.readouterr().err


def test_bad_flags(capsys):
    assert main(["--hidden", "0"]) == 2
    assert main(["--layers", "numpy"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "--hidden" in err[0] and "invalid choice" in err[1]


@pytest.mark.slow
def test_runs_under_torchrun_with_two_processes(tmp_path):
    from labs_core.testing import check_torchrun_run, torchrun

    out = tmp_path / "ddp"
    r = torchrun("lab0_mlp.cli", "--epochs", "1", "--hidden", "16", "--quiet", "--out", str(out))
    check_torchrun_run(r, out)
    assert (out / "loss_curve.png").is_file() and (out / "confusion_matrix.png").is_file()


def test_every_flag_is_read_by_the_run(tmp_path):
    """No flag silently does nothing: over a few short runs, the lab reads every field it offers."""
    from lab0_mlp.cli import train
    from labs_core.testing import check_every_flag_is_read

    base = ["--epochs", "1", "--hidden", "8", "--quiet"]
    runs = [
        base + ["--batch-norm", "--grad-norms"],
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
            "--loader",
            "standard",
            "--num-workers",
            "0",
            "--optim-impl",
            "torch",
        ],
        base + ["--loop", "manual", "--layers", "torch"],
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
            "--hidden",
            "8",
            "--quiet",
            "--overfit",
            "16",
            "--find-batch-size",
            "--memory-budget",
            "64G",
        ],
    ]
    check_every_flag_is_read(Lab0Config, train, runs, tmp_path, "lab0-mlp")


def test_a_resume_whose_model_does_not_fit_the_flags_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--epochs", "1", "--quiet", "--out", str(out)]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["--epochs", "2", "--quiet", "--out", str(out), "--resume", "--hidden", "32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit this model" in err
    assert {
        p: p.read_bytes() for p in out.rglob("*") if p.is_file()
    } == before  # config.json, tb/ untouched
    assert (
        main(["--epochs", "1", "--quiet", "--out", str(out)]) == 2
    )  # a second fresh run is refused
    assert "already holds a run" in capsys.readouterr().err


def test_a_newcomer_follows_the_command_to_the_optimizer_step_in_six_frames(tmp_path):
    """docs/architecture.md's road: main -> run_lab -> execute -> fit -> train_one_epoch -> step."""
    from labs_core.testing import check_road

    check_road(
        main,
        [
            *["--epochs", "1", "--max-steps", "1", "--hidden", "8"],
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ],
    )
