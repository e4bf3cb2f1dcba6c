"""Time to validation loss 1.88 on tiny Shakespeare: lab3's --task chars defaults beside nanoGPT.

    uv run python benchmarks/char_lm.py [--data ../shared/data/tinyshakespeare/input.txt]
        [--nanogpt DIR] [--seeds N] [--ablate] [--stretch] [--target 1.88]

(a) lab3: exactly ``lab3-transformer --task chars --dataset text --data-dir input.txt`` (the lab's
    defaults), in its own process as a user runs it. Its metrics.jsonl gives the validation loss
    after every evaluation and the training time then (``elapsed_s``); the time to the target is
    the first evaluation at or below it. Its summary gives the loss on the whole validation split.
(b) nanoGPT (``--nanogpt DIR``, a checkout of karpathy/nanoGPT): its own ``train.py`` with the
    configuration its README gives for CPUs (4 layers, 4 heads, width 128, context 64, batch 12,
    2,000 steps, learning rate 1e-3 decayed over the run, no dropout, eval_iters 20), run the
    same way. Its log gives the validation loss every 250 steps; the time of each is taken when
    the line is printed, from the start of its first training step.
``--ablate`` adds lab3 runs with one ingredient of the recipe changed back, to show what each
contributes; ``--stretch`` a larger model for longer, timed to validation loss 1.75. Run it on an
idle machine: every figure is wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

SHARED_TEXT = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"
)
NANOGPT_CPU = [
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=1",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--max_iters=2000",
    "--lr_decay_iters=2000",
    "--dropout=0.0",
]
ABLATIONS = {  # label: flags that undo one part of the recipe
    "fp32 instead of bf16 autocast": ["--precision", "fp32"],
    "fused attention (F.scaled_dot_product_attention)": ["--attention", "torch"],
    "nanoGPT's schedule: lr 1e-3, batch 12, 2,000 steps": [
        "--lr",
        "1e-3",
        "--batch-size",
        "12",
        "--max-steps",
        "2000",
    ],
    "nanoGPT's model size: width 128, 4 blocks": ["--dim", "128", "--layers", "4"],
}
STRETCH = [
    "--dim",
    "128",
    "--layers",
    "4",
    "--max-steps",
    "1800",
]  # lower loss within nanoGPT's time
STRETCH_TARGET = 1.75


def run_lab3(data: Path, seed: int, extra: list[str], target: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [
            sys.executable,
            "-m",
            "lab3_transformer.cli",
            "--task",
            "chars",
            "--dataset",
            "text",
            "--data-dir",
            str(data),
            "--seed",
            str(seed),
            "--quiet",
            "--sample-tokens",
            "0",
            "--out",
            str(out),
            *extra,
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"lab3 run failed:\n{proc.stderr[-2000:]}")
        summary = json.loads((out / "summary.json").read_text())
        history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    hit = next((h for h in history if h["val_loss"] <= target), None)
    return {
        "time_to_target": hit["elapsed_s"] if hit else None,
        "step_at_target": hit["step"] if hit else None,
        "val_loss": history[-1]["val_loss"],
        "full_val_loss": summary["metrics"]["full_val_loss"],
        "steps": summary["steps"],
        "train_s": history[-1]["elapsed_s"],
        "process_s": wall,
    }


def run_nanogpt(repo: Path, data: Path, target: float) -> dict:
    """nanoGPT's own train.py, its CPU configuration; times read off its log as it prints."""
    work = Path(tempfile.mkdtemp())
    shutil.copytree(repo, work / "nanoGPT", ignore=shutil.ignore_patterns(".git", "out*"))
    root = work / "nanoGPT"
    prep = root / "data" / "shakespeare_char"
    shutil.copy(data, prep / "input.txt")
    subprocess.run([sys.executable, "prepare.py"], cwd=prep, check=True, capture_output=True)
    cmd = [
        sys.executable,
        "-u",
        "train.py",
        "config/train_shakespeare_char.py",
        *NANOGPT_CPU,
        f"--out_dir={work / 'out'}",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    evals, start = [], None
    for line in proc.stdout:
        now = time.perf_counter()
        if start is None and line.startswith("iter 0:"):
            start = (
                now - float(re.search(r"time ([\d.]+)ms", line).group(1)) / 1000
            )  # step 0's own time
        m = re.match(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", line)
        if m and start is not None:
            evals.append((int(m.group(1)), float(m.group(3)), now - start))
    proc.wait()
    wall = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    if proc.returncode or not evals:
        raise SystemExit(f"nanoGPT run failed (exit {proc.returncode})")
    hit = next((e for e in evals if e[1] <= target), None)
    return {
        "time_to_target": hit[2] if hit else None,
        "step_at_target": hit[0] if hit else None,
        "val_loss": evals[-1][1],
        "full_val_loss": None,
        "steps": evals[-1][0],
        "train_s": evals[-1][2],
        "process_s": wall,
    }


def fmt(v, spec=".1f", unit=" s"):
    return "not reached" if v is None else f"{v:{spec}}{unit}"


def report(label: str, runs: list[dict], target: float) -> None:
    times = [r["time_to_target"] for r in runs]
    reached = [t for t in times if t is not None]
    spread = f" ± {statistics.stdev(reached):.1f}" if len(reached) > 1 else ""
    full = [r["full_val_loss"] for r in runs if r["full_val_loss"] is not None]
    print(
        f"| {label} | {fmt(statistics.mean(reached) if reached else None)}{spread}"
        f" ({len(reached)}/{len(runs)} reached, step"
        f" {', '.join(str(r['step_at_target']) for r in runs)}) |"
        f" {statistics.mean(r['val_loss'] for r in runs):.4f} |"
        f" {f'{statistics.mean(full):.4f}' if full else '-'} |"
        f" {statistics.mean(r['train_s'] for r in runs):.1f} s |"
        f" {statistics.mean(r['process_s'] for r in runs):.1f} s |",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED_TEXT, help="tiny Shakespeare's input.txt")
    p.add_argument("--nanogpt", type=Path, help="a karpathy/nanoGPT checkout to run beside lab3")
    p.add_argument(
        "--seeds", type=int, default=1, help="lab3 runs with seeds 0..N-1 (mean and spread)"
    )
    p.add_argument(
        "--target", type=float, default=1.88, help="validation loss to reach (nats per character)"
    )
    p.add_argument(
        "--ablate", action="store_true", help="also run the recipe with one part undone at a time"
    )
    p.add_argument(
        "--stretch",
        action="store_true",
        help=f"also run {' '.join(STRETCH)}: time to {STRETCH_TARGET}",
    )
    args = p.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"no text at {args.data}; pass --data PATH/input.txt")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(f"machine: {machine()}")
    print(f"target: validation loss <= {args.target} nats/char on {args.data.name}\n")
    print(
        "| run | time to target (training) | last val loss (its eval) | whole-split val loss |"
        " training | process |"
    )
    print("|---|---|---|---|---|---|")
    if args.nanogpt:
        report(
            "nanoGPT train.py, CPU config (2,000 steps)",
            [run_nanogpt(args.nanogpt, args.data, args.target)],
            args.target,
        )
    report(
        "lab3-transformer --task chars (defaults)",
        [run_lab3(args.data, s, [], args.target) for s in range(args.seeds)],
        args.target,
    )
    if args.ablate:
        for label, flags in ABLATIONS.items():
            report(f"lab3, {label}", [run_lab3(args.data, 0, flags, args.target)], args.target)
    if args.stretch:
        print(f"\nstretch: time to validation loss <= {STRETCH_TARGET}")
        report(
            f"lab3 {' '.join(STRETCH)}",
            [run_lab3(args.data, 0, STRETCH, STRETCH_TARGET)],
            STRETCH_TARGET,
        )


if __name__ == "__main__":
    main()
