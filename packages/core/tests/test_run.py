"""The run skeleton (``labs_core.run``) as a user meets it: resume targets, the monitored metric,
schedules re-planned on resume, nothing written before a run is known to fit."""

import json

import torch
from test_cli import main

from labs_core import load_checkpoint
from labs_core.config import metric_mode


def run(tmp_path, *argv):
    return main([*argv, "--quiet", "--lr", "0.01"])


def test_out_and_bare_resume_continue_that_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "mine"
    assert run(tmp_path, "--out", str(out), "--epochs", "1") == 0
    assert (
        run(tmp_path, "--out", str(out), "--epochs", "2", "--resume") == 0
    )  # no runs/demo/ exists
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 2
    assert not (tmp_path / "runs").exists()


def test_metric_directions():
    assert metric_mode("val_loss") == "min" and metric_mode("train_loss") == "min"
    assert metric_mode("val_acc") == "max" and metric_mode("val_seq_acc") == "max"
    assert metric_mode("val_map_50") == "max" and metric_mode("test_macro_f1") == "max"
    assert metric_mode("lr") is None and metric_mode("val_score") is None


def test_without_a_validation_split_the_monitor_falls_back_with_its_direction(tmp_path):
    for monitor, fallback, pick in (("val_loss", "train_loss", min), ("val_acc", "train_acc", max)):
        out = tmp_path / monitor
        assert (
            run(
                tmp_path,
                "--out",
                str(out),
                "--epochs",
                "4",
                "--val-fraction",
                "0",
                "--monitor",
                monitor,
            )
            == 0
        )
        summary = json.loads((out / "summary.json").read_text())
        history = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
        best = pick(history, key=lambda h: h[fallback])
        assert summary["best"]["metric"] == fallback and summary["best"]["epoch"] == best["epoch"]
        assert (
            load_checkpoint(out / "checkpoints" / "best.pt")["epoch"] == best["epoch"]
        )  # the best, not the worst


def test_a_metric_whose_direction_is_unknown_needs_monitor_mode(tmp_path, capsys):
    assert run(tmp_path, "--out", str(tmp_path / "a"), "--monitor", "lr") == 2
    assert "--monitor-mode" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # refused before anything was written
    assert (
        run(
            tmp_path,
            "--out",
            str(tmp_path / "b"),
            "--monitor",
            "lr",
            "--monitor-mode",
            "min",
            "--epochs",
            "1",
        )
        == 0
    )
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["best"]["mode"] == "min"


def test_resume_for_more_epochs_replans_the_schedule(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(tmp_path, "--out", str(out), "--epochs", "1", "--scheduler", "onecycle") == 0
    assert (
        main(
            [
                "--out",
                str(out),
                "--epochs",
                "3",
                "--scheduler",
                "onecycle",
                "--resume",
                "--lr",
                "0.01",
            ]
        )
        == 0
    )
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert (
        ckpt["epoch"] == 3
        and ckpt["schedule"]["total_steps"] == 3 * ckpt["schedule"]["steps_per_epoch"]
    )
    assert "schedule re-planned" in capsys.readouterr().out
    # it ends where an unbroken 3-epoch one-cycle run ends: at the schedule's floor
    assert ckpt["optimizer"]["param_groups"][0]["lr"] < 1e-5


def test_a_max_steps_cut_resumed_without_it_runs_to_the_end(tmp_path):
    out = tmp_path / "run"
    assert (
        run(
            tmp_path,
            "--out",
            str(out),
            "--epochs",
            "2",
            "--scheduler",
            "cosine",
            "--max-steps",
            "5",
        )
        == 0
    )
    assert load_checkpoint(out / "checkpoints" / "last.pt")["global_step"] == 5
    assert (
        run(tmp_path, "--out", str(out), "--epochs", "2", "--scheduler", "cosine", "--resume") == 0
    )
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 2 * ckpt["schedule"]["steps_per_epoch"]
    history = [json.loads(s)["epoch"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert history == [1, 2]  # the partial epoch of the cut run is logged once, whole


def test_a_checkpoint_that_does_not_fit_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(tmp_path, "--out", str(out), "--epochs", "1") == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert (
        main(["--out", str(out), "--resume", "--image-size", "4", "--epochs", "2", "--quiet"]) == 2
    )
    assert "does not fit this model" in capsys.readouterr().err
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_resuming_another_labs_checkpoint_is_refused(tmp_path, capsys):
    path = tmp_path / "other.pt"
    torch.save({"model": {}, "lab": "lab3-transformer"}, path)
    assert main(["--resume", str(path), "--quiet"]) == 2
    assert "is a lab3-transformer checkpoint" in capsys.readouterr().err


def test_a_patience_run_cut_and_resumed_stops_where_the_unbroken_one_does(tmp_path):
    common = [
        "--epochs",
        "40",
        "--patience",
        "2",
        "--monitor",
        "val_loss",
        "--lr",
        "0.05",
        "--quiet",
    ]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    unbroken = json.loads((tmp_path / "a" / "summary.json").read_text())
    stopped = unbroken["epochs_run"]
    assert "early stopping" in unbroken["stop_reason"] and 3 <= stopped < 40
    steps_per_epoch = unbroken["steps"] // stopped
    cut = ["--out", str(tmp_path / "b")]
    assert (
        main([*common, *cut, "--max-steps", str((stopped - 1) * steps_per_epoch)]) == 0
    )  # "killed" an epoch early
    assert main([*common, *cut, "--resume"]) == 0
    resumed = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert resumed["epochs_run"] == stopped and resumed["best"] == unbroken["best"]
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    timeless = lambda h: [{k: v for k, v in e.items() if k != "elapsed_s"} for e in h]  # noqa: E731 (wall time differs)
    assert timeless(a["history"]) == timeless(b["history"])
