"""Shared by the course's tests (a module of its own: every package's tests folder is on the path,
so the name must not collide with another package's conftest)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from labs_course import quiz
from labs_course.catalog import load_quiz

SERIES = [
    "2-1-1-tensors",
    "2-1-2-autograd",
    "2-1-3-nn-module",
    "2-1-4-training-loop",
    "2-2-5-datasets-and-dataloaders",
    "2-2-6-mnist-project",
    "2-2-7-debugging-and-visualization",
    "2-3-8-saving-and-loading",
    "2-3-9-gpu-training",
    "2-3-10-fashion-mnist-project",
]
TOPICS = [
    "01_tensors_basics",
    "02_autograd_and_backprop",
    "03_nn_training_loop",
    "04_cnn_example",
    "05_custom_datasets",
    "06_advanced_pytorch",
]
LAB_NOTEBOOKS = ["3-transformer", "5-detection"]  # Phase 0's labs 3 and 5
NOTEBOOKS = SERIES + TOPICS + LAB_NOTEBOOKS

# What each lab writes into config.json when a flag is not given (the keys the map's evidence
# reads; the labs' own defaults), so a run can be faked from a command line.
DEFAULTS = {
    "lab0-mlp": {
        "loop": "core",
        "layers": "scratch",
        "batch_norm": False,
        "hidden": [256, 128],
        "augment": False,
        "dataset": "digits",
        "precision": "fp32",
    },
    "lab1-conv": {
        "loop": "core",
        "model": "cnn",
        "conv": "scratch",
        "augment": True,
        "dataset": "digits",
        "precision": "fp32",
    },
    "lab3-transformer": {"task": "reverse", "precision": "fp32"},
    "lab5-detection": {"flavor": "anchor", "precision": "fp32"},
    "checkpoint-project": {
        "dataset": "cifar10",
        "augment": True,
        "precision": "bf16",
        "model": "compact",
    },
}
COMMON = {
    "overfit": 0,
    "patience": 0,
    "val_fraction": 0.1,
    "deterministic": False,
    "loader": "fast",
    "device": "auto",
    "seed": 0,
}
FLAGS = {"from": "source"}  # a flag whose config key has another name


# Metrics that reach every target, per lab, for the runs the walk creates.
GOOD = {
    "lab0-mlp": {"test_acc": 0.97, "val_acc": 1.0, "train_loss": 0.001},
    "lab1-conv": {"test_acc": 0.96, "val_acc": 1.0},
    "lab3-transformer": {"val_greedy_seq_acc": 0.99, "val_acc": 1.0},
    "lab5-detection": {"val_map_50": 0.95},
    "checkpoint-project": {
        "test_acc": 0.87,
        "phases": [{"phase": 0, "gain": 0.3}, {"phase": 1, "gain": 0.05}],
    },
}


def right(phase: str, seed: int) -> str:
    """Every answer right, for draw ``seed`` of ``phase``."""
    return ",".join(q.answer for q in quiz.draw(load_quiz(phase), seed).questions)


def wrong(phase: str, seed: int, n: int) -> str:
    """The right answers of draw ``seed`` with the first ``n`` made wrong."""
    letters = right(phase, seed).split(",")
    for i in range(n):
        letters[i] = "a" if letters[i] != "a" else "b"
    return ",".join(letters)


def fake_run(
    home: Path,
    lab: str,
    stamp: str = "20260216-100000",
    config: dict | None = None,
    summary: dict | None = None,
    finished: bool = True,
    metrics: dict | None = None,
) -> Path:
    """A run folder as the labs write it: config.json (the flags, ``lab``, ``resolved``) and, when
    finished, summary.json (``metrics``, ``best``, ``device``, ``precision``, ...)."""
    run = home / "runs" / lab / stamp
    run.mkdir(parents=True)
    cfg = {**COMMON, **DEFAULTS[lab], **(config or {}), "lab": lab, "resolved": {"device": "cpu"}}
    (run / "config.json").write_text(json.dumps(cfg))
    if finished:
        full = {
            "metrics": {"train_loss": 0.5, "val_loss": 0.5, "lr": 0.001, **(metrics or {})},
            "best": {"metric": "val_loss", "value": 0.5, "epoch": 1, "mode": "min"},
            "epochs_run": 1,
            "steps": 10,
            "wall_seconds": 1.0,
            "device": "cpu",
            "precision": cfg["precision"],
            "seed": 0,
            "skipped_steps": 0,
            "stop_reason": "",
            "processes": 1,
            **(summary or {}),
        }
        (run / "summary.json").write_text(json.dumps(full))
    return run


def run_from_command(home: Path, command: str, stamp: str, metrics: dict) -> Path:
    """The run that ``command`` (a map command without `uv run`) writes, with ``metrics``."""
    words = shlex.split(command)
    lab = words[0]
    if lab == "checkpoint-project" and words[1] == "finetune":
        config = {"dataset": "imagefolder"}
    else:
        config = {}
    words = [w for w in words[1:] if w not in ("train", "finetune")]
    i = 0
    while i < len(words):
        key = words[i].removeprefix("--").replace("-", "_")
        key = FLAGS.get(key, key)
        if i + 1 < len(words) and not words[i + 1].startswith("--"):
            values = []
            while i + 1 < len(words) and not words[i + 1].startswith("--"):
                values.append(words[i + 1])
                i += 1
            value = values[0] if len(values) == 1 else values
            config[key] = int(value) if isinstance(value, str) and value.isdigit() else value
        else:
            config[key] = True
        i += 1
    device = config.get("device", "auto")
    summary = {"device": "cuda:0" if device.startswith("cuda") else "cpu"}
    return fake_run(home, lab, stamp, config=config, summary=summary, metrics=metrics)


def fake_notebook(
    home: Path, name: str, passed: int, total: int | None = None, when: str = "2026-02-16 10:00:00"
):
    """Record notebook ``name`` in runs/course/notebooks.json in the shared format:
    ``{"when", "passed", "total"}``; ``total=None`` writes an old-format timestamp."""
    path = home / "runs" / "course" / "notebooks.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = json.loads(path.read_text()) if path.exists() else {}
    done[name] = when if total is None else {"when": when, "passed": passed, "total": total}
    path.write_text(json.dumps(done))


def assert_fits(text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= 80, f"{len(line)} columns: {line!r}"
