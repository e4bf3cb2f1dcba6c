"""Shared by the course's tests (a module of its own: every package's tests folder is on the path,
so the name must not collide with another package's conftest)."""

from __future__ import annotations

import json
from pathlib import Path

SERIES = ["2-1-1-tensors", "2-1-2-autograd", "2-1-3-nn-module", "2-1-4-training-loop",
          "2-2-5-datasets-and-dataloaders", "2-2-6-mnist-project", "2-2-7-debugging-and-visualization",
          "2-3-8-saving-and-loading", "2-3-9-gpu-training", "2-3-10-fashion-mnist-project"]
TOPICS = ["01_tensors_basics", "02_autograd_and_backprop", "03_nn_training_loop", "04_cnn_example",
          "05_custom_datasets", "06_advanced_pytorch"]
LAB_NOTEBOOKS = ["3-transformer", "5-detection"]  # Phase 0's labs 3 and 5
NOTEBOOKS = SERIES + TOPICS + LAB_NOTEBOOKS
RIGHT = {"0": "b,c,b,d,a,b,c,a,d,b", "1": "d,b,a,c,b,c,a,d,a,b"}  # every answer right


def fake_run(home: Path, lab: str, stamp: str = "20260216-100000", config: dict | None = None,
             summary: dict | None = None, finished: bool = True) -> Path:
    run = home / "runs" / lab / stamp
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"lab": lab, **(config or {})}))
    if finished:
        (run / "summary.json").write_text(json.dumps({"device": "cpu", "precision": "fp32", **(summary or {})}))
    return run


def assert_fits(text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= 80, f"{len(line)} columns: {line!r}"
