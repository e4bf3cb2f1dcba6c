"""Validation accuracy against training time on real CIFAR-10, through the project's own `train`.

    uv run python benchmarks/cifar10_accuracy.py --data-dir ../shared/data/cifar10-jpg/train.tar.gz
        [--recipe cpu|fast|cnn|resnet] [--seeds N] [--ablate] [-- extra train flags]

``--data-dir`` is an image folder (``DIR/train/<class>/*.jpg``, as CIFAR-10's JPEG copy unpacks) or
the ``.tar.gz`` archive, unpacked once into ``data/cifar10-jpg/`` (the images decode once too: the
core caches them as uint8 tensors beside them). Each run is exactly

    checkpoint-project train --dataset imagefolder --data-dir DIR --test-fraction 0 --recipe R
        --seed S

in its own process, as a user runs it: the 50,000 images split 45,000 / 5,000 (the core's split,
drawn from the run's seed; no test split is carved out of them, as none would be were CIFAR-10's
test images in ``DIR/test``), so the accuracy is on 5,000 held-out images, measured after every
epoch without test-time augmentation. Its ``metrics.jsonl`` gives the validation accuracy and the
training time then (``elapsed_s``: training and the per-epoch evaluations, not the start-up); the
time to 85% / 90% / 94% is the first epoch at or above it. The final line of a run adds the
validation accuracy with flip TTA, computed from the run's last checkpoint (what the recipe's
report uses). ``--ablate`` runs the CPU recipe with one ingredient undone at a time. Run it on an
idle machine: every figure is wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpg" / "train.tar.gz"
TARGETS = (0.85, 0.90, 0.94)
STRETCH = ["--epochs", "24"]  # the stretch goal: 90% within 15 minutes
ABLATIONS = {  # label: flags that undo one ingredient of the cpu recipe
    "plain SGD settings (lr 0.2, momentum 0.9, wd 5e-4, one learning rate for all)": [
        "--lr",
        "0.2",
        "--momentum",
        "0.9",
        "--weight-decay",
        "5e-4",
        "--norm-bias-lr",
        "1",
    ],
    "the custom CNN (no whitening, ReLU, dropout) instead of the compact net": [
        "--model",
        "cnn",
        "--width",
        "32",
    ],
}


def image_folder(path: Path) -> Path:
    """The folder holding ``train/``: ``path`` itself, or the archive unpacked into
    data/cifar10-jpg."""
    if path.is_dir():
        return path
    if not path.is_file():
        raise SystemExit(f"benchmark: no image folder or archive at {path}")
    target = ROOT / "data" / "cifar10-jpg"
    if not (target / "train").is_dir():
        print(f"unpacking {path} into {target} ...", flush=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent if target.parent.exists() else None))
        with tarfile.open(path) as tar:
            tar.extractall(tmp, filter="data")
        target.parent.mkdir(parents=True, exist_ok=True)
        (tmp / "train").rename(target / "train") if target.exists() else tmp.rename(target)
    return target


def run_train(data: Path, recipe: str, seed: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [
            sys.executable,
            "-m",
            "checkpoint_project.train",
            "--dataset",
            "imagefolder",
            "--data-dir",
            str(data),
            "--test-fraction",
            "0",
            "--recipe",
            recipe,
            "--seed",
            str(seed),
            "--out",
            str(out),
            *extra,
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"train failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        startup = next((line for line in proc.stdout.splitlines() if "recipe" in line), "")
        tta = flip_tta_val_accuracy(out / "checkpoints" / "last.pt", data)
    return {"history": history, "process_s": wall, "startup": startup.strip(), "tta": tta}


def flip_tta_val_accuracy(checkpoint: Path, data: Path) -> float:
    """The run's final model on its own validation split, averaged with the mirror images."""
    import torch

    from checkpoint_project.inference import load_trained, predict_probs
    from labs_core.data import build_loaders, load_dataset

    model, ckpt = load_trained(checkpoint)
    cfg = ckpt["config"]
    loaders = build_loaders(
        load_dataset("imagefolder", data),
        batch_size=500,
        seed=cfg["seed"],
        val_fraction=cfg["val_fraction"],
        stratify=cfg["stratify"],
        test_fraction=0,
    )
    with torch.autocast("cpu", torch.bfloat16, enabled=cfg["precision"] == "bf16"):
        probs, targets = predict_probs(model, loaders.val, "cpu", tta=True)
    return (probs.argmax(1) == targets).float().mean().item()


def time_to(history: list[dict], target: float) -> float | None:
    return next((h["elapsed_s"] for h in history if h["val_acc"] >= target), None)


def show_run(label: str, seed: int, result: dict) -> None:
    print(f"\n{label}, seed {seed}: {result['startup']}")
    print("| epoch | training time | val accuracy |\n|---|---|---|")
    for h in result["history"]:
        print(f"| {h['epoch']} | {h['elapsed_s']:.1f} s | {h['val_acc']:.4f} |")
    last = result["history"][-1]
    print(
        f"final: {last['val_acc']:.4f} after {last['elapsed_s']:.1f} s of training "
        f"({result['process_s']:.1f} s for the whole command); with flip TTA {result['tta']:.4f}",
        flush=True,
    )


def summary_row(label: str, results: list[dict]) -> str:
    cells = []
    for target in TARGETS:
        times = [time_to(r["history"], target) for r in results]
        reached = [t for t in times if t is not None]
        spread = f" ± {statistics.stdev(reached):.1f}" if len(reached) > 1 else ""
        cells.append(
            f"{statistics.mean(reached):.1f} s{spread} ({len(reached)}/{len(results)})"
            if reached
            else f"not reached (0/{len(results)})"
        )
    finals = [r["history"][-1]["val_acc"] for r in results]
    ttas = [r["tta"] for r in results]
    spread = f" ± {statistics.stdev(finals):.4f}" if len(finals) > 1 else ""
    train_s = statistics.mean(r["history"][-1]["elapsed_s"] for r in results)
    return (
        f"| {label} | {' | '.join(cells)} | {statistics.mean(finals):.4f}{spread} | "
        f"{statistics.mean(ttas):.4f} | {train_s:.1f} s |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data-dir",
        type=Path,
        default=SHARED_ARCHIVE,
        help="image folder with train/, or the .tar.gz",
    )
    p.add_argument("--recipe", default="cpu", choices=("cpu", "fast", "cnn", "resnet"))
    p.add_argument("--seeds", type=int, default=1, help="runs with seeds 0..N-1 (mean and spread)")
    p.add_argument(
        "--ablate",
        action="store_true",
        help="also run the cpu recipe with one ingredient undone at a time",
    )
    p.add_argument(
        "--stretch",
        action="store_true",
        help=f"also run the cpu recipe for {' '.join(STRETCH)} (90%% in 15 min?)",
    )
    p.add_argument("extra", nargs="*", help="more train flags, after --")
    args = p.parse_args()
    data = image_folder(args.data_dir)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(f"machine: {machine()}")
    rows = []
    results = []
    for seed in range(args.seeds):
        results.append(run_train(data, args.recipe, seed, args.extra))
        show_run(f"recipe {args.recipe}", seed, results[-1])
    if results:  # --seeds 0: only the ablations or the stretch run
        rows.append(summary_row(f"recipe {args.recipe} {' '.join(args.extra)}".strip(), results))
    if args.ablate:
        for label, flags in ABLATIONS.items():
            result = run_train(data, "cpu", 0, [*flags, *args.extra])
            show_run(label, 0, result)
            rows.append(summary_row(f"cpu recipe, {label}", [result]))
    if args.stretch:
        result = run_train(data, "cpu", 0, [*STRETCH, *args.extra])
        show_run(f"stretch, cpu recipe {' '.join(STRETCH)}", 0, result)
        rows.append(summary_row(f"cpu recipe {' '.join(STRETCH)}", [result]))
    print(
        "\n| run | time to 85% | time to 90% | time to 94% | final val accuracy | with flip TTA |"
        " training |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
