"""What the labs reach: the accuracy targets that do not belong in the unit suite.

    uv run python benchmarks/lab_targets.py [--only lab3|lab5]

Each line runs a lab's own command (its ``main``) into a temporary directory and prints the figure
with the wall time and the machine: lab3's overfit check and its reversal task (whose attention
should follow the mirrored source position), and lab5's overfit check for both detector flavours.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from lab3_transformer.cli import main as lab3  # noqa: E402
from lab3_transformer.model import TinyTransformer, TransformerConfig  # noqa: E402
from lab3_transformer.tasks import split_examples  # noqa: E402
from lab5_detection.cli import main as lab5  # noqa: E402


def timed(fn, argv, out: Path) -> tuple[dict, float]:
    t0 = time.perf_counter()
    assert fn([*argv, "--out", str(out), "--quiet"]) == 0
    return json.loads((out / "summary.json").read_text()), time.perf_counter() - t0


def mirror_attention(ckpt_path: Path, s: int) -> float:
    """Best share, over heads, of target positions whose attention peaks on the mirrored source."""
    ckpt = torch.load(ckpt_path, weights_only=True)
    model = TinyTransformer(TransformerConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    _, (x, _) = split_examples("reverse", 4000, 200, s, seed=1234)
    with torch.no_grad():
        model(x[:, :-1])
    queries, expected = torch.arange(s, 2 * s), s - 1 - torch.arange(s)
    return max(
        (w[:, h, queries].argmax(-1) == expected).float().mean().item()
        for w in model.attention_maps()
        for h in range(w.shape[1])
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("lab3", "lab5"))
    args = p.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "lab3"):
            s, secs = timed(
                lab3,
                [
                    "--task",
                    "sort",
                    "--length",
                    "4",
                    "--overfit",
                    "32",
                    "--dim",
                    "32",
                    "--heads",
                    "2",
                    "--epochs",
                    "120",
                    "--lr",
                    "3e-3",
                ],
                tmp / "l3o",
            )
            print(
                "lab3 --overfit 32 (sort): held-out=train seq acc"
                f" {s['metrics']['val_greedy_seq_acc']:.3f} (goal 1.0), {secs:.1f} s"
            )
            s, secs = timed(
                lab3,
                [
                    "--task",
                    "reverse",
                    "--length",
                    "5",
                    "--num-train",
                    "4000",
                    "--num-test",
                    "200",
                    "--epochs",
                    "8",
                    "--dim",
                    "32",
                    "--heads",
                    "2",
                    "--batch-size",
                    "64",
                    "--lr",
                    "3e-3",
                ],
                tmp / "l3r",
            )
            share = mirror_attention(tmp / "l3r" / "checkpoints" / "last.pt", 5)
            print(
                "lab3 reverse (4k examples, 8 epochs): held-out seq acc"
                f" {s['metrics']['val_greedy_seq_acc']:.3f} (goal >= 0.95), mirror-attention share"
                f" {share:.2f} (goal >= 0.8), {secs:.1f} s"
            )
        if args.only in (None, "lab5"):
            for flavor in ("anchor", "anchor-free"):
                s, secs = timed(
                    lab5, ["--flavor", flavor, "--overfit", "8", "--epochs", "60"], tmp / flavor
                )
                print(
                    f"lab5 --overfit 8 ({flavor}): mAP@0.5 {s['metrics']['val_map_50']:.3f} (goal"
                    f" >= 0.9), {secs:.1f} s"
                )


if __name__ == "__main__":
    main()
