"""train -> evaluate -> export -> predict -> finetune, end to end on tiny offline data."""

import json
import urllib.error
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from checkpoint_project.cli import main
from checkpoint_project.models import build_model
from labs_core import load_checkpoint
from labs_core.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    argv = [
        "train",
        "--model",
        "cnn",
        "--dataset",
        "synthetic",
        "--epochs",
        "2",
        "--width",
        "8",
        "--lr",
        "0.01",
        "--quiet",
        "--out",
        str(out),
        "--ema",
        "0.9",
        "--tta",
    ]
    assert main(argv) == 0
    return out


def test_train_writes_the_full_report(trained):
    for name in [
        "summary.json",
        "config.json",
        "metrics.jsonl",
        "confusion_matrix.png",
        "confusion_matrix.txt",
        "per_class_accuracy.txt",
        "confidently_wrong.png",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "checkpoints/ema.pt",
    ]:
        assert (trained / name).is_file(), name
    metrics = json.loads((trained / "summary.json").read_text())["metrics"]
    assert (
        metrics["test_acc"] > 0.5
        and "test_acc_tta" in metrics
        and len(metrics["per_class_acc"]) == 10
    )
    assert (
        metrics["test_acc"] <= metrics["test_top5_acc"] <= 1
    )  # ten classes: top-5 is reported too


def test_the_test_set_is_read_once_for_every_report(tmp_path, monkeypatch, capsys):
    """One pass over the test split feeds accuracy, top-5, confusion matrix, per-class and gallery;
    flip TTA adds only the mirror images' pass."""
    from checkpoint_project import train as train_module
    from labs_core.trainer import Trainer

    calls = {"predict": 0, "flipped": 0}
    predict, probs = Trainer.predict, train_module.predict_probs

    def counting_predict(self, loader):
        calls["predict"] += 1
        return predict(self, loader)

    def counting_probs(*args, **kwargs):
        calls["flipped"] += 1
        assert kwargs.get("flip_only")
        return probs(*args, **kwargs)

    monkeypatch.setattr(Trainer, "predict", counting_predict)
    monkeypatch.setattr(train_module, "predict_probs", counting_probs)
    for tta, flipped in ((False, 0), (True, 1)):
        calls.update(predict=0, flipped=0)
        argv = [
            "train",
            "--dataset",
            "synthetic",
            "--epochs",
            "1",
            "--width",
            "4",
            "--max-steps",
            "2",
            "--out",
            str(tmp_path / str(tta)),
            "--tta" if tta else "--no-tta",
        ]
        assert main(argv) == 0
        assert calls == {"predict": 1, "flipped": flipped}
        printed = capsys.readouterr().out
        assert "top-5" in printed and "per-class test accuracy" in printed


def test_plain_train_script_is_the_same_entry_point(tmp_path):
    from checkpoint_project.train import main as train_main

    assert (
        train_main(
            [
                "--dataset",
                "synthetic",
                "--epochs",
                "1",
                "--width",
                "4",
                "--quiet",
                "--out",
                str(tmp_path / "r"),
                "--max-steps",
                "2",
                "--profile",
                "1",
            ]
        )
        == 0
    )
    assert (tmp_path / "r" / "profile" / "trace.json").is_file()
    assert "Name" in (tmp_path / "r" / "profile" / "top_ops.txt").read_text()


def test_evaluate_single_ensemble_and_tta(trained, capsys):
    best, last = trained / "checkpoints" / "best.pt", trained / "checkpoints" / "last.pt"
    assert main(["evaluate", "--checkpoint", str(best), str(last), "--tta"]) == 0
    out = capsys.readouterr().out
    assert out.count("test accuracy") == 3 and "ensemble of 2" in out


def test_export_onnx_and_predict_with_both_models(trained, tmp_path, capsys):
    best = trained / "checkpoints" / "best.pt"
    onnx_path = tmp_path / "model.onnx"
    assert (
        main(["export", "--checkpoint", str(best), "--format", "onnx", "--out", str(onnx_path)])
        == 0
    )
    proto = onnx.load(onnx_path)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["classes"])[0] == "class0" and len(json.loads(meta["mean"])) == 3
    assert (
        proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    )  # a symbolic (dynamic) batch axis
    images = []
    for i, (mode, size) in enumerate(
        [("RGB", (50, 70)), ("L", (20, 20)), ("RGBA", (40, 40)), ("P", (33, 17))]
    ):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(
            (np.random.default_rng(i).random((*size, 3)) * 255).astype("uint8")
        ).convert(mode).save(path)
        images.append(str(path))
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(onnx_path), *images, "--top-k", "2"]) == 0
    from_onnx = capsys.readouterr().out.splitlines()
    assert main(["predict", "--checkpoint", str(best), *images, "--top-k", "2"]) == 0
    from_torch = capsys.readouterr().out.splitlines()
    assert len(from_onnx) == 4
    for a, b in zip(
        from_onnx, from_torch, strict=True
    ):  # same classes, probabilities to 3 decimals
        assert a == b


def write_folder(root: Path, seed: int, classes: int, n: int) -> None:
    data = make_synthetic(num_train=n, num_test=1, num_classes=classes, seed=seed)
    for i, (img, label) in enumerate(zip(*data.train, strict=True)):
        d = root / f"kind{int(label)}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{i}.png")


def test_finetune_phases_unfreeze_from_the_top(tmp_path, capsys):
    pre = tmp_path / "pre"
    assert (
        main(
            [
                "train",
                "--dataset",
                "synthetic",
                "--epochs",
                "1",
                "--width",
                "8",
                "--lr",
                "0.01",
                "--quiet",
                "--out",
                str(pre),
            ]
        )
        == 0
    )
    folder = tmp_path / "new_task"
    write_folder(folder, seed=99, classes=4, n=120)
    out = tmp_path / "ft"
    argv = [
        "finetune",
        "--from",
        str(pre / "checkpoints" / "best.pt"),
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(folder),
        "--image-size",
        "32",
        "--head-epochs",
        "2",
        "--stage-epochs",
        "1",
        "--unfreeze",
        "2",
        "--lr",
        "0.01",
        "--val-fraction",
        "0.25",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    phases = json.loads((out / "phases.json").read_text())
    assert [p["phase"] for p in phases] == [0, 1, 2]
    assert all(p["val_acc_after"] == pytest.approx(p["val_acc_before"] + p["gain"]) for p in phases)
    logs = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(d["epoch"], d["phase"]) for d in logs] == [(1, 0), (2, 0), (3, 1), (4, 2)]
    printed = capsys.readouterr().out
    assert (
        "phase 0 (head only, backbone frozen)" in printed
        and "phase 2 (head + top 2 stage(s))" in printed
    )
    # Phase 0 moved the head only: the pre-trained stages are unchanged after it.
    pre_state = load_checkpoint(pre / "checkpoints" / "best.pt")["model"]
    last = load_checkpoint(out / "checkpoints" / "last.pt")["model"]  # after every phase ran
    assert any(
        not torch.equal(pre_state[k], last[k]) for k in pre_state if k.startswith("stages.2.")
    )
    # The fine-tuned model is a checkpoint-project checkpoint like any other.
    assert main(["evaluate", "--checkpoint", str(out / "checkpoints" / "best.pt")]) == 0


def test_phase_zero_leaves_the_backbone_weights_alone(tmp_path):
    pre = tmp_path / "pre"
    assert (
        main(
            [
                "train",
                "--dataset",
                "synthetic",
                "--epochs",
                "1",
                "--width",
                "8",
                "--quiet",
                "--out",
                str(pre),
            ]
        )
        == 0
    )
    write_folder(tmp_path / "new", seed=3, classes=3, n=60)
    out = tmp_path / "ft"
    assert (
        main(
            [
                "finetune",
                "--from",
                str(pre / "checkpoints" / "best.pt"),
                "--dataset",
                "imagefolder",
                "--data-dir",
                str(tmp_path / "new"),
                "--image-size",
                "32",
                "--head-epochs",
                "1",
                "--unfreeze",
                "0",
                "--val-fraction",
                "0.25",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    before = load_checkpoint(pre / "checkpoints" / "best.pt")["model"]
    after = load_checkpoint(out / "checkpoints" / "last.pt")["model"]
    weights = [
        k
        for k in before
        if k.startswith("stages.")
        and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert weights and all(torch.equal(before[k], after[k]) for k in weights)


def test_finetune_from_torchvision_offline_says_where_to_put_weights(tmp_path, monkeypatch, capsys):
    write_folder(tmp_path / "imgs", seed=5, classes=2, n=20)

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    argv = [
        "finetune",
        "--from",
        "torchvision:resnet18",
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "imgs"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resnet18-f37072fd.pth" in err and "--weights FILE" in err


def test_finetune_from_torchvision_with_local_weights(tmp_path):
    from torchvision.models import resnet18

    write_folder(tmp_path / "imgs", seed=5, classes=2, n=40)
    weights = tmp_path / "r18.pth"
    torch.save(resnet18(weights=None).state_dict(), weights)
    argv = [
        "finetune",
        "--from",
        "torchvision:resnet18",
        "--weights",
        str(weights),
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "imgs"),
        "--head-epochs",
        "1",
        "--stage-epochs",
        "1",
        "--unfreeze",
        "1",
        "--quiet",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 0
    assert main(["evaluate", "--checkpoint", str(tmp_path / "o" / "checkpoints" / "last.pt")]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "--checkpoint", "missing.pt"], "checkpoint not found: missing.pt"),
        (
            ["export", "--checkpoint", "BEST", "--format", "tflite"],
            "unknown export format 'tflite'",
        ),
        (["predict", "--checkpoint", "BEST", "/etc/hostname"], "cannot read image"),
        (["predict", "--checkpoint", "BEST", "nope.png"], "image not found"),
        (["evaluate", "--checkpoint", "FOREIGN"], "not a checkpoint-project one"),
        (["evaluate", "--checkpoint", "CORRUPT"], "is corrupt"),
        (["train", "--model", "vit"], "invalid choice"),
        (["finetune", "--dataset", "synthetic"], "--from is required"),
        (["launch"], "unknown command 'launch'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, trained, tmp_path, capsys):
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}, "lab": "lab1-conv", "config": {}}, foreign)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((trained / "checkpoints" / "best.pt").read_bytes()[:1000])
    subst = {
        "BEST": str(trained / "checkpoints" / "best.pt"),
        "FOREIGN": str(foreign),
        "CORRUPT": str(corrupt),
    }
    argv = [subst.get(a, a) for a in argv]
    before = (trained / "checkpoints" / "best.pt").read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert (
        trained / "checkpoints" / "best.pt"
    ).read_bytes() == before  # nothing already written is damaged


def test_offline_cifar_says_how_to_run_offline(tmp_path, monkeypatch, capsys):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    assert main(["train", "--data-dir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        "cifar10: could not download" in err
        and "--dataset synthetic" in err
        and "imagefolder" in err
    )


@pytest.mark.parametrize("name", ["cnn", "resnet", "fast"])
def test_models_fit_cifar_shapes_and_other_channels(name):
    for shape in [(3, 32, 32), (1, 28, 28)]:
        model = build_model(name, shape, 10, 8)
        assert model(torch.zeros(2, *shape)).shape == (2, 10)
    if name == "cnn":
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) >= 3 and any(isinstance(m, torch.nn.Dropout) for m in model.modules())


@pytest.mark.slow
def test_torchrun_two_processes_then_resume_in_one_process_for_more_epochs(tmp_path):
    from labs_core.testing import check_torchrun_run, torchrun

    out = tmp_path / "ddp"
    r = torchrun(
        "checkpoint_project.train",
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--width",
        "4",
        "--batch-size",
        "64",
        "--quiet",
        "--out",
        str(out),
    )
    check_torchrun_run(r, out)
    config = json.loads((out / "config.json").read_text())
    assert config["resolved"]["global_batch_size"] == 128
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["model"])
    # The 2-process run continues in one process, for more epochs: its one-cycle schedule is
    # re-planned (it used to die with "Tried to step 9 times" after a few steps).
    assert (
        main(
            [
                "train",
                "--dataset",
                "synthetic",
                "--epochs",
                "2",
                "--width",
                "4",
                "--batch-size",
                "64",
                "--quiet",
                "--out",
                str(out),
                "--resume",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["processes"] == 1
    assert main(["evaluate", "--checkpoint", str(out / "checkpoints" / "last.pt")]) == 0


def test_a_max_steps_cut_resumes_without_it(tmp_path):
    out = tmp_path / "cut"
    common = [
        "train",
        "--dataset",
        "synthetic",
        "--epochs",
        "2",
        "--width",
        "4",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main([*common, "--max-steps", "5"]) == 0
    assert main([*common, "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 2


@pytest.mark.slow
def test_finetune_under_torchrun(tmp_path):
    from labs_core.testing import check_torchrun_run, torchrun

    pre = tmp_path / "pre"
    assert (
        main(
            [
                "train",
                "--dataset",
                "synthetic",
                "--epochs",
                "1",
                "--width",
                "4",
                "--quiet",
                "--out",
                str(pre),
            ]
        )
        == 0
    )
    write_folder(tmp_path / "new", seed=3, classes=3, n=60)
    out = tmp_path / "ft"
    r = torchrun(
        "checkpoint_project.cli",
        "finetune",
        "--from",
        str(pre / "checkpoints" / "best.pt"),
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "new"),
        "--image-size",
        "32",
        "--head-epochs",
        "1",
        "--stage-epochs",
        "1",
        "--unfreeze",
        "1",
        "--val-fraction",
        "0.25",
        "--quiet",
        "--out",
        str(out),
    )
    check_torchrun_run(r, out)
    assert len(json.loads((out / "phases.json").read_text())) == 2


def test_every_train_flag_is_read_by_the_run(tmp_path):
    import dataclasses

    from checkpoint_project.train import TrainConfig, train
    from labs_core.config import parse_config
    from labs_core.testing import fields_read

    base = [
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--width",
        "4",
        "--max-steps",
        "2",
        "--quiet",
    ]
    runs = [
        base + ["--ema", "0.9", "--tta", "--profile", "1"],
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
            "--dataset",
            "synthetic",
            "--width",
            "4",
            "--quiet",
            "--overfit",
            "16",
            "--find-batch-size",
            "--memory-budget",
            "64G",
        ],
    ]
    configs = [
        parse_config(TrainConfig, [*argv, "--out", str(tmp_path / str(i))], "train")
        for i, argv in enumerate(runs)
    ]
    unread = {f.name for f in dataclasses.fields(TrainConfig)} - fields_read(train, configs)
    assert not unread
