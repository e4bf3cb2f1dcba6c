"""`course progress`: each item done only on evidence of its deliverable, read from the runs'
summary.json and config.json as the labs write them; why an item is not done; one next step."""

from __future__ import annotations

import json
import re

import pytest
from course_testutils import (
    GOOD,
    NOTEBOOKS,
    assert_fits,
    fake_notebook,
    fake_run,
    right,
    run_from_command,
)

from labs_course.catalog import load_map
from labs_course.evidence import MISSING, RunFolder, parse_spec


def status(out: str, title: str) -> str:
    m = re.search(rf"^  (done|not yet)\s+{re.escape(title)}", out, re.MULTILINE)
    assert m, title
    return m.group(1)


def detail(out: str, title: str, word: str) -> str:
    """The ``evidence:`` / ``so far:`` / ``needs:`` text under an item, unwrapped."""
    lines = out.splitlines()
    i = next(
        n
        for n, line in enumerate(lines)
        if re.match(rf"^  (done|not yet)\s+{re.escape(title)}", line)
    )
    block = []
    for line in lines[i + 1 :]:
        if not line.startswith("           "):
            break
        block.append(line.strip())
    text = " ".join(block)
    m = re.search(rf"{word}: (.*?)(?= (?:needs|so far|evidence): |$)", text)
    return m.group(1) if m else ""


def next_step(out: str) -> tuple[str, tuple[str, ...]]:
    """(title, actions) of the one "Next step" block."""
    assert out.count("Next step") == 1
    tail = out[out.index("Next step") :]
    head, _, body = tail.partition("\n")
    while body and not body.startswith("    "):  # a wrapped title
        more, _, body = body.partition("\n")
        head += " " + more.strip()
    title = head.split("): ", 1)[1] if "): " in head else head
    actions, current = [], None
    for line in body.splitlines():
        s = line.strip()
        if s.startswith(("$ uv run ", "open notebooks/", "counts as done")):
            if current:
                actions.append(current)
            current = s if not s.startswith("counts") else None
            if s.startswith("counts"):
                break
        elif current:
            current += " " + s
    return title, tuple(actions)


def test_nothing_yet(course, home):
    code, out, err = course("progress")
    assert code == 0 and err == ""
    assert_fits(out)
    assert (
        out.index("First day")
        < out.index("Phase 0: warmup labs")
        < out.index("Phase 1: PyTorch foundations")
    )
    assert "done     " not in out and "0 of 9 done" in out and "0 of 8 done" in out
    title, actions = next_step(out)
    assert title == "Hour 1: Tensors"
    assert actions == (
        (
            "open notebooks/2-1-1-tensors.ipynb (uv run jupyter lab) and run it to the end, "
            "every exercise done"
        ),
    )
    code, shown, _ = course()
    assert next_step(shown) == (title, actions)  # `course` shows the same one step
    assert "lesson tensors" not in out.split("Next step")[1]  # a lesson writes no evidence


def test_the_review_findings(course, home):
    """lab1-conv --overfit 32 is not a CIFAR-10 result, a synthetic run is not CIFAR-10, and a plain
    lab0-mlp --overfit 32 is not Phase 1's custom-modules deliverable."""
    fake_run(
        home, "lab1-conv", "a", config={"overfit": 32}, metrics={"val_acc": 1.0, "train_acc": 1.0}
    )
    fake_run(
        home,
        "checkpoint-project",
        "b",
        config={"dataset": "synthetic", "epochs": 1},
        metrics={"test_acc": 0.42, "val_acc": 0.44},
    )
    fake_run(
        home, "lab0-mlp", "c", config={"overfit": 32}, metrics={"val_acc": 1.0, "train_loss": 4e-5}
    )
    fake_run(home, "checkpoint-project", "d", config={"overfit": 32}, metrics={"val_acc": 1.0})
    code, out, _ = course("progress")
    assert code == 0
    assert_fits(out)
    assert status(out, "Lab 6: CNN Classifier") == "not yet"
    assert status(out, "Checkpoint project") == "not yet"
    assert status(out, "Lab 2: Custom Modules") == "not yet"
    assert status(out, "Lab 0: Python") == "not yet"  # the Phase 0 lab wants the loop by hand
    assert "does not count" in detail(out, "Checkpoint project", "so far")
    assert (
        status(out, "Lab 1: Convolutional baseline") == "done"
    )  # what lab1-conv --overfit 32 is for
    assert status(out, "Done when: overfit 32 samples") == "done"  # MLP and CNN both at 100%


def test_best_evidence_so_far(course, home):
    fake_run(home, "checkpoint-project", "a", metrics={"test_acc": 0.72})
    fake_run(home, "checkpoint-project", "b", metrics={"test_acc": 0.8013, "test_acc_tta": 0.81})
    fake_run(
        home, "checkpoint-project", "c", config={"dataset": "synthetic"}, metrics={"test_acc": 0.95}
    )
    fake_run(home, "lab1-conv", "d", config={"dataset": "cifar10"}, metrics={"test_acc": 0.83})
    code, out, _ = course("progress")
    assert status(out, "Checkpoint project") == "not yet"
    assert (
        detail(out, "Checkpoint project", "so far")
        == "best CIFAR-10 test accuracy 0.8013 in runs/checkpoint-project/b, target >= 0.85"
    )
    assert (
        detail(out, "Lab 6: CNN Classifier", "so far")
        == "best CIFAR-10 test accuracy 0.83 in runs/lab1-conv/d, target >= 0.85"
    )
    fake_run(home, "checkpoint-project", "e", metrics={"test_acc": 0.8612})
    code, out, _ = course("progress")
    assert (
        status(out, "Checkpoint project") == "done"
        and status(out, "Lab 6: CNN Classifier") == "done"
    )
    assert "runs/checkpoint-project/e" in detail(out, "Checkpoint project", "evidence")
    assert "test_acc=0.8612" in detail(out, "Checkpoint project", "evidence")


def test_flip_tta_counts_and_finetune_is_not_the_project(course, home):
    fake_run(home, "checkpoint-project", "a", metrics={"test_acc": 0.84, "test_acc_tta": 0.86})
    fake_run(
        home,
        "checkpoint-project",
        "f",
        config={"source": "torchvision:resnet18"},
        metrics={"test_acc": 0.95},
    )
    code, out, _ = course("progress")
    assert "runs/checkpoint-project/a" in detail(out, "Checkpoint project", "evidence")
    assert status(out, "Lab 6: CNN Classifier") == "done"


def test_two_model_families(course, home):
    fake_run(home, "lab0-mlp", "a", config={"overfit": 32}, metrics={"val_acc": 1.0})
    fake_run(
        home, "lab0-mlp", "b", config={"overfit": 32, "hidden": [64]}, metrics={"val_acc": 1.0}
    )
    fake_run(home, "lab1-conv", "c", config={"overfit": 32}, metrics={"val_acc": 0.97})
    fake_run(home, "lab1-conv", "d", config={"overfit": 16}, metrics={"val_acc": 1.0})
    code, out, _ = course("progress")
    title = "Done when: overfit 32 samples"
    assert status(out, title) == "not yet"
    assert detail(out, title, "so far").startswith(
        "1 of the 2 different lab values needed: lab=lab0-mlp"
    )
    fake_run(home, "lab3-transformer", "e", config={"overfit": 32}, metrics={"val_acc": 1.0})
    code, out, _ = course("progress")
    assert status(out, title) == "done"
    assert "runs/lab3-transformer/e" in detail(out, title, "evidence")


def test_gpu_lab_needs_cuda_in_half_precision(course, home):
    fake_run(home, "lab1-conv", "a", config={"precision": "bf16"})
    fake_run(home, "lab1-conv", "b", config={"device": "cuda"}, summary={"device": "cuda:0"})
    code, out, _ = course("progress")
    assert status(out, "Lab 5: GPU & Mixed Precision") == "not yet"
    fake_notebook(home, "2-3-9-gpu-training", 4, 4)  # a notebook on a CPU is not the deliverable
    code, out, _ = course("progress")
    assert status(out, "Lab 5: GPU & Mixed Precision") == "not yet"
    fake_run(
        home, "checkpoint-project", "c", config={"precision": "fp16"}, summary={"device": "cuda:1"}
    )
    code, out, _ = course("progress")
    assert status(out, "Lab 5: GPU & Mixed Precision") == "done"
    assert "device=cuda:1, precision=fp16" in detail(out, "Lab 5: GPU", "evidence")


def test_detection_needs_both_flavors_and_the_next_step_says_which(course, home):
    for name in (
        "2-1-1-tensors",
        "2-1-2-autograd",
        "2-2-5-datasets-and-dataloaders",
        "04_cnn_example",
    ):
        fake_notebook(home, name, 2, 2)
    run_from_command(
        home, "lab0-mlp --loop manual --overfit 32", "a", {"val_acc": 1.0, "train_loss": 1e-3}
    )
    run_from_command(home, "lab1-conv --overfit 32", "b", {"val_acc": 1.0})
    fake_notebook(home, "2-3-8-saving-and-loading", 1, 1)
    run_from_command(home, "lab3-transformer --task sort", "c", {"val_greedy_seq_acc": 0.997})
    run_from_command(
        home,
        "checkpoint-project finetune --from torchvision:resnet18 --data-dir DIR",
        "d",
        {"test_acc": 0.9, "phases": [{"phase": 0, "gain": 0.3}, {"phase": 1, "gain": 0.02}]},
    )
    run_from_command(home, "lab5-detection --flavor anchor --overfit 8", "e", {"val_map_50": 0.5})
    code, out, _ = course("progress")
    assert next_step(out) == (
        "Lab 5: Detection flavors",
        (
            "$ uv run lab5-detection --flavor anchor --overfit 8",
            "$ uv run lab5-detection --flavor anchor-free --overfit 8",
        ),
    )
    assert (
        detail(out, "Lab 5: Detection", "so far")
        == "best mAP@0.5 0.5 in runs/lab5-detection/e, target >= 0.9"
    )
    run_from_command(home, "lab5-detection --flavor anchor --overfit 8", "f", {"val_map_50": 1.0})
    code, out, _ = course("progress")
    assert next_step(out) == (
        "Lab 5: Detection flavors",
        ("$ uv run lab5-detection --flavor anchor-free --overfit 8",),
    )
    run_from_command(
        home, "lab5-detection --flavor anchor-free --overfit 8", "g", {"val_map_50": 0.96}
    )
    code, out, _ = course("progress")
    assert status(out, "Lab 5: Detection flavors") == "done"
    assert next_step(out)[0] == "Lab 6: Scripting and tooling"


def test_finetune_must_improve(course, home):
    fake_run(
        home,
        "checkpoint-project",
        "a",
        config={"source": "x.pt"},
        metrics={"phases": [{"phase": 0, "gain": 0.2}, {"phase": 1, "gain": -0.01}]},
    )
    code, out, _ = course("progress")
    assert status(out, "Lab 4: Pretrained usage") == "not yet"
    assert "validation accuracy gained by unfreezing -0.01" in detail(
        out, "Lab 4: Pretrained", "so far"
    )
    fake_run(
        home,
        "checkpoint-project",
        "b",
        config={"source": "x.pt"},
        metrics={"phases": [{"phase": 0, "gain": 0.2}, {"phase": 1, "gain": 0.01}]},
    )
    code, out, _ = course("progress")
    assert status(out, "Lab 4: Pretrained usage") == "done"


WALK = [
    "Hour 1: Tensors",
    "Hour 2: Autograd",
    "Hour 3: Datasets and DataLoaders",
    "Hour 4: A simple vision model, and fast.ai's Learner",
    "Lab 0: Python + PyTorch fundamentals",
    "Lab 1: Convolutional baseline",
    "Lab 2: Training utilities + hygiene",
    "Lab 3: Transformer mini",
    "Lab 4: Pretrained usage",
    "Lab 5: Detection flavors",
    "Lab 5: Detection flavors",
    "Lab 6: Scripting and tooling",
    "Phase 0 quiz (added here: the document has none)",
    "Lab 2: Custom Modules (lab2_modules)",
    "Lab 3: Training Loop (lab3_training_loop)",
    "Lab 5: GPU & Mixed Precision (lab5_gpu_mixed_precision)",
    "Lab 6: CNN Classifier (lab6_cnn_classifier)",
    "Phase 1 quiz",
    "2.1.3 nn.Module",
]


def test_doing_the_next_step_moves_it_on(course, home):
    """Walk the course: each time do the first thing the next step says (creating the evidence
    the command would write), and check the step moves on, in the map's order."""
    seen, stamp = [], 0
    while len(seen) < len(WALK):
        code, out, _ = course("progress")
        code, shown, _ = course()
        title, actions = next_step(out)
        assert next_step(shown) == (title, actions)
        assert not seen or seen[-1] != (title, actions), f"doing {seen[-1]} changed nothing"
        seen.append((title, actions))
        action = actions[0]
        if action.startswith("open notebooks/"):
            fake_notebook(home, action.removeprefix("open notebooks/").split(".ipynb")[0], 3, 3)
        elif action.startswith("$ uv run course quiz "):
            phase = action.split()[-1]
            assert course("quiz", phase, "--seed", "1", "--answers", right(phase, 1))[0] == 0
        else:
            stamp += 1
            command = action.removeprefix("$ uv run ")
            lab = command.split()[0]
            run_from_command(home, command, f"20260216-{stamp:06d}", GOOD[lab])
    assert [t for t, _ in seen] == WALK
    assert seen[6][1] == ("$ uv run lab1-conv --model logreg --epochs 2",)  # the cnn run is there
    assert all(status(out, i.title) == "done" for s in load_map() if s.checklist for i in s.items)


def test_everything_done(course, home):
    for name in NOTEBOOKS:
        fake_notebook(home, name, 2, 2)
    for n, (command, metrics) in enumerate(
        [
            ("lab0-mlp --loop manual --overfit 32", GOOD["lab0-mlp"]),
            ("lab1-conv --overfit 32", GOOD["lab1-conv"]),
            ("lab3-transformer --task reverse", GOOD["lab3-transformer"]),
            ("checkpoint-project finetune --from x.pt --data-dir DIR", GOOD["checkpoint-project"]),
            ("lab5-detection --flavor anchor --overfit 8", GOOD["lab5-detection"]),
            ("lab5-detection --flavor anchor-free --overfit 8", GOOD["lab5-detection"]),
            ("lab0-mlp --deterministic", GOOD["lab0-mlp"]),
            ("lab1-conv --device cuda --precision fp16", GOOD["lab1-conv"]),
            ("checkpoint-project train", GOOD["checkpoint-project"]),
        ]
    ):
        run_from_command(home, command, f"run{n}", metrics)
    for phase in ("0", "1"):
        course("quiz", phase, "--seed", "2", "--answers", right(phase, 2))
    code, out, _ = course("progress")
    assert code == 0 and "not yet" not in out
    assert "9 of 9 done" in out and "8 of 8 done" in out and "16 of 16 done" in out
    assert "Next step: none. Every item of the course is done." in out


def test_notebook_records(course, home):
    fake_notebook(home, "2-1-1-tensors", 3, 5)
    fake_notebook(home, "01_tensors_basics", 0, 0)
    fake_notebook(home, "2-1-2-autograd", 0, None)  # the old format: a timestamp
    code, out, err = course("progress")
    assert err == ""
    assert status(out, "Hour 1: Tensors") == "not yet"
    assert (
        detail(out, "Hour 1: Tensors", "so far")
        == "notebook 2-1-1-tensors: 3 of 5 exercises done (2026-02-16 10:00)"
    )
    assert status(out, "Hour 2: Autograd") == "not yet"
    assert "before exercises were counted" in detail(out, "Hour 2: Autograd", "so far")
    fake_notebook(home, "2-1-1-tensors", 5, 5)
    fake_notebook(home, "2-1-2-autograd", True, 1)  # wrong types: ignored, with a warning
    code, out, err = course("progress")
    assert status(out, "Hour 1: Tensors") == "done"
    assert (
        detail(out, "Hour 1: Tensors", "evidence")
        == "notebook 2-1-1-tensors: 5 of 5 exercises done (2026-02-16 10:00)"
    )
    assert status(out, "Hour 2: Autograd") == "not yet"
    assert err.count("\n") == 1 and "ignored 2-1-2-autograd" in err


def test_damaged_evidence_is_ignored(course, home):
    (home / "runs" / "course").mkdir(parents=True)
    (home / "runs" / "course" / "notebooks.json").write_text("[1, 2")
    run = fake_run(
        home,
        "lab0-mlp",
        config={"loop": "manual", "overfit": 32},
        metrics={"val_acc": 1.0, "train_loss": 0.001},
    )
    code, out, _ = course("progress")
    assert status(out, "Lab 0: Python") == "done"
    (run / "config.json").write_text("{broken")
    (run / "summary.json").write_text(json.dumps([1, 2]))
    code, out, err = course("progress")
    assert code == 0 and err.count("\n") == 1 and "notebooks.json" in err
    assert status(out, "Lab 0: Python") == "not yet"


def test_the_evidence_language():
    spec = parse_spec(
        "runs:2/flavor lab5-detection|lab1-conv overfit>=1 summary.metrics.val_map_50>=0.9 !source"
    )
    assert (spec.count, spec.distinct, spec.labs) == (2, "flavor", ("lab5-detection", "lab1-conv"))
    assert [str(c) for c in spec.where] == [
        "overfit>=1",
        "summary.metrics.val_map_50>=0.9",
        "!source",
    ]
    for bad in [
        "run:lab0-mlp x>=abc",
        "run:lab0-mlp x>=",
        "run:lab0-mlp x>=inf",
        "runs:1/lab *",
        "runs:2/lab",
        "runs:lab *",
        "run:lab0-mlp|lab9 x=1",
        "run:* x=a>b",
        "run:* x=<1",
    ]:
        with pytest.raises(ValueError):
            parse_spec(bad)


def test_conditions_read_the_real_files(home):
    run = fake_run(
        home,
        "checkpoint-project",
        config={"source": "x.pt", "augment": True},
        metrics={"test_acc": 0.9, "flag": True, "phases": [{"gain": 0.1}, {"gain": -0.2}]},
    )
    folder = RunFolder(run, "checkpoint-project", 0.0)

    def holds(text):
        return folder.meets(parse_spec(f"run:* {text}").where)

    assert holds("summary.metrics.test_acc>=0.9") and not holds("summary.metrics.test_acc>0.9")
    assert holds("summary.metrics.phases.0.gain>0") and not holds(
        "summary.metrics.phases.-1.gain>0"
    )
    assert (
        not holds("summary.metrics.phases.2.gain>0")
        and folder.value("summary.metrics.phases.x") is MISSING
    )
    assert not holds("summary.metrics.flag>=1")  # a boolean is not a number
    assert not holds("source>=1")  # nor is a string
    assert (
        holds("augment=true")
        and holds("augment!=false")
        and holds("source=*")
        and holds("!nothing")
    )
    assert holds("summary.device=cpu") and not holds("summary.device=cuda*")
    assert not holds("summary.metrics.missing<=1")
