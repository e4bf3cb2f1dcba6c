"""`course progress`: each checklist item marked done from evidence on disk, and what comes next."""

from __future__ import annotations

import json
import re

from course_testutils import RIGHT, assert_fits, fake_run

from labs_course import mark_notebook


def status(out: str, title: str) -> str:
    m = re.search(rf"^  (done|not yet)\s+{re.escape(title)}", out, re.MULTILINE)
    assert m, title
    return m.group(1)


def evidence(out: str, title: str) -> str:
    lines = out.splitlines()
    i = next(n for n, line in enumerate(lines) if title in line)
    return lines[i + 1].strip() if lines[i + 1].strip().startswith("evidence:") else ""


def test_nothing_yet(course, home):
    code, out, err = course("progress")
    assert code == 0 and err == ""
    assert "0 of 8 done" in out and "done     " not in out
    assert out.index("Phase 1: PyTorch foundations") < out.index("Phase 0: warmup labs")
    assert "next: Lab 1: Tensors & Autograd (lab1_tensors)" in out
    assert "$ uv run lab0-mlp lesson tensors" in out and "open notebooks/2-1-2-autograd.ipynb" in out
    assert "next: Lab 0: Python + PyTorch fundamentals" in out
    assert_fits(out)


def test_runs_mark_labs_done(course, home):
    fake_run(home, "lab0-mlp", config={"loop": "manual"})
    fake_run(home, "lab3-transformer", finished=False)  # no summary.json: not finished
    fake_run(home, "lab1-conv", config={"loop": "core"}, summary={"device": "cuda:0", "precision": "bf16"})
    fake_run(home, "lab5-detection", config={"deterministic": True})
    code, out, _ = course("progress")
    assert code == 0
    assert_fits(out)
    assert status(out, "Lab 0: Python") == "done"
    assert evidence(out, "Lab 0: Python") == "evidence: finished run runs/lab0-mlp/20260216-100000"
    assert status(out, "Lab 3: Training Loop") == "done"
    assert "(loop=manual)" in evidence(out, "Lab 3: Training Loop")
    assert status(out, "Lab 3: Transformer mini") == "not yet"
    assert status(out, "Lab 5: GPU & Mixed Precision") == "done"
    assert "device=cuda:0, precision=bf16" in " ".join(out.split())
    assert status(out, "Lab 6: Scripting and tooling") == "done"
    assert status(out, "Lab 6: CNN Classifier") == "done"
    assert status(out, "Lab 4: Data Loading") == "not yet"
    assert "next: Lab 1: Tensors & Autograd" in out and "next: Lab 3: Transformer mini" in out


def test_conditions_must_match(course, home):
    fake_run(home, "lab1-conv", "a", config={"loop": "core"}, summary={"device": "cpu", "precision": "bf16"})
    fake_run(home, "checkpoint-project", "b", config={"source": "torchvision:resnet18", "model": "resnet18"})
    code, out, _ = course("progress")
    assert status(out, "Lab 3: Training Loop") == "not yet"  # loop=core
    assert status(out, "Lab 5: GPU & Mixed Precision") == "not yet"  # bf16, but on a CPU
    assert status(out, "Lab 4: Pretrained usage") == "done"  # a finetune run ...
    assert status(out, "Checkpoint project") == "not yet"  # ... is not the project's train
    fake_run(home, "checkpoint-project", "c", config={"model": "resnet", "dataset": "cifar10"})
    code, out, _ = course("progress")
    assert status(out, "Checkpoint project") == "done"
    assert "runs/checkpoint-project/c" in evidence(out, "Checkpoint project")


def test_notebooks_and_quiz(course, home):
    mark_notebook("2-1-2-autograd")
    mark_notebook("notebooks/2-2-5-datasets-and-dataloaders.ipynb")
    code, out, _ = course("progress")
    assert status(out, "Lab 1: Tensors & Autograd") == "done"
    assert evidence(out, "Lab 1: Tensors & Autograd").startswith("evidence: notebook 2-1-2-autograd ran")
    assert status(out, "Lab 4: Data Loading") == "done"
    course("quiz", "1", "--answers", "a,a,a,a,a,a,a,a,a,a")
    code, out, _ = course("progress")
    assert status(out, "Phase 1 quiz") == "not yet" and "last try 3/10" in out
    course("quiz", "1", "--answers", RIGHT["1"])
    code, out, _ = course("progress")
    assert status(out, "Phase 1 quiz") == "done" and "quiz 1 passed, 10/10" in out
    assert "The first day, the ten lessons and the topic notebooks: 4 of 20 done" in " ".join(out.split())


def test_everything_done(course, home):
    for lab in ("lab0-mlp", "lab3-transformer", "lab5-detection"):
        fake_run(home, lab, config={"loop": "manual"})
    fake_run(home, "lab1-conv", config={"dataset": "imagefolder", "deterministic": True},
             summary={"device": "cuda", "precision": "fp16"})
    fake_run(home, "checkpoint-project", "train", config={"model": "resnet"})
    fake_run(home, "checkpoint-project", "finetune", config={"source": "x.pt", "model": "resnet"})
    mark_notebook("02_autograd_and_backprop")
    for phase in ("0", "1"):
        course("quiz", phase, "--answers", RIGHT[phase])
    code, out, _ = course("progress")
    assert code == 0 and "not yet" not in out and "next:" not in out
    assert "8 of 8 done" in out and "Phase 1 is complete" in out and "Phase 0 is complete" in out


def test_damaged_evidence_is_ignored(course, home):
    (home / "runs" / "course").mkdir(parents=True)
    (home / "runs" / "course" / "notebooks.json").write_text("[1, 2")
    (home / "runs" / "course" / "quiz.json").write_text(json.dumps({"not": "a list"}))
    run = fake_run(home, "lab0-mlp", config={"loop": "manual"})
    (run / "config.json").write_text("{broken")
    code, out, err = course("progress")
    assert code == 0 and err == ""
    assert status(out, "Lab 0: Python") == "done"  # finished; its config is not needed here
    assert status(out, "Lab 3: Training Loop") == "not yet"  # the condition needs the config
