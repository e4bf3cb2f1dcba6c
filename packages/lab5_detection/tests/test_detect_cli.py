import json

import pytest
import torch

from lab5_detection.cli import main
from lab5_detection.data import CLASSES, make_detection_set, unpad
from lab5_detection.models import AnchorDetector, CenterDetector
from labs_core.testing import check_one_line_error


def test_dataset_is_deterministic_and_boxes_are_tight():
    x, y = make_detection_set(20, 64, 4, seed=5)
    x2, y2 = make_detection_set(20, 64, 4, seed=5)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape == (20, 3, 64, 64) and x.dtype == torch.uint8 and y.shape == (20, 4, 5)
    counts = (y[:, :, 0] >= 0).sum(1)
    assert counts.min() >= 1 and counts.max() <= 4
    for t in map(unpad, y):
        b = t["boxes"]
        assert torch.all(b[:, 2] > b[:, 0]) and torch.all(b[:, 3] > b[:, 1])
        assert (
            torch.all(b >= 0)
            and torch.all(b <= 64)
            and set(t["labels"].tolist()) <= set(range(len(CLASSES)))
        )


@pytest.mark.parametrize("cls", [AnchorDetector, CenterDetector])
def test_models_output_loss_parts_and_detections(cls):
    model = cls(len(CLASSES), 64)
    x, y = make_detection_set(3, 64, 3, seed=0)
    out = model(x.float() / 255)
    parts = model.loss(out, y)
    assert "loss" in parts and len(parts) == 4 and torch.isfinite(parts["loss"])
    parts["loss"].backward()
    dets = model.detect({k: v.detach() for k, v in out.items()})
    assert len(dets) == 3 and all(set(d) == {"boxes", "scores", "labels"} for d in dets)


@pytest.mark.parametrize("flavor", ["anchor", "anchor-free"])
def test_short_run_logs_loss_parts_map_and_figures(flavor, tmp_path, capsys):
    """A smoke run (the mAP an overfit run reaches is measured by benchmarks/lab_targets.py)."""
    out = tmp_path / flavor
    assert (
        main(
            [
                "--flavor",
                flavor,
                "--overfit",
                "4",
                "--epochs",
                "2",
                "--eval-every",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["metrics"]["val_map_50"] <= 1
    assert summary["best"]["metric"] == "val_map_50" and summary["best"]["mode"] == "max"
    printed = capsys.readouterr().out
    assert summary["peak_memory"]["cpu_peak_rss_mib"] > 0  # the run skeleton's, for every lab
    assert "peak memory: process" in printed and f"| run directory: {out}" in printed
    parts = (
        ("train_cls", "train_bg", "train_box")
        if flavor == "anchor"
        else ("train_heatmap", "train_size", "train_offset")
    )
    assert all(p in printed for p in parts) and "val_map_50" in printed
    assert (out / "predictions.png").is_file() and (out / "loss_curve.png").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--flavor", "yolo"], "invalid choice"),
        (["--image-size", "60"], "multiple of 8"),
        (["--dataset", "coco"], "unrecognized arguments: --dataset"),  # lab5 generates its data
        (["--label-smoothing", "0.1"], "unrecognized arguments"),
        (["--num-images", "0"], "at least 1"),
    ],
)
def test_bad_input(argv, message, capsys):
    check_one_line_error(main, argv, message, capsys)


@pytest.mark.slow
def test_runs_under_torchrun_with_two_processes(tmp_path):
    from labs_core.testing import check_torchrun_lab

    out = tmp_path / "ddp"
    check_torchrun_lab(
        "lab5_detection.cli",
        ["--num-images", "64", "--num-test", "16", "--epochs", "1", "--eval-every", "1", "--quiet"],
        out,
    )
    assert (out / "predictions.png").is_file()


def test_every_flag_is_read_by_the_run(tmp_path):
    from lab5_detection.cli import Lab5Config, train
    from labs_core.testing import check_every_flag_is_read

    sgd = [
        "--optimizer",
        "sgd",
        "--momentum",
        "0.8",
        "--scheduler",
        "cosine",
        "--warmup-epochs",
        "0.5",
    ]
    common = ["--num-images", "32", "--num-test", "8", "--epochs", "1", "--quiet"]
    check_every_flag_is_read(
        Lab5Config, train, [common, [*common, *sgd]], tmp_path, "lab5-detection"
    )


def test_a_newcomer_follows_the_command_to_the_optimizer_step_in_six_frames(tmp_path):
    """docs/architecture.md's road: main -> run_lab -> execute -> fit -> train_one_epoch -> step."""
    from labs_core.testing import check_road

    check_road(
        main,
        [
            *["--epochs", "1", "--max-steps", "1", "--num-images", "16", "--num-test", "4"],
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ],
    )
