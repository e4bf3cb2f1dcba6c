"""lab3-transformer: a tiny decoder-only transformer learns a toy task, or writes Shakespeare.

lab3-transformer --task reverse|sort|add [--show-attention] [flags]
lab3-transformer --task chars [--dataset tinyshakespeare|text] [--data-dir DIR|FILE] [flags]
lab3-transformer sample --checkpoint PATH [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K]
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

from labs_core import LabError, arg
from labs_core.cli import run_lab
from labs_core.config import OptimOptions, RunOptions, apply_recipe, override
from labs_core.data import FastLoader
from labs_core.data.text import TEXT_DATASETS
from labs_core.run import Plan, Run, execute
from labs_core.validate import When, check_model_fits

from .chars import chars_plan, sample_command
from .figures import toy_report
from .lm import MAX_SAMPLE_TOKENS
from .metrics import GreedyEval, sequence_loss, teacher_forced
from .model import TinyTransformer, TransformerConfig
from .tasks import TASKS, VOCAB, lengths, split_examples

PROG = "lab3-transformer"
ALL_TASKS = (*TASKS, "chars")
CHARS_ONLY = When("task", "chars")  # a flag of one kind of task changes nothing for the other
TOY_ONLY = When("task", *TASKS, text="the toy tasks (--task " + ", ".join(TASKS) + ")")
# --task chars: what the flags mean when not given (measured by benchmarks/char_lm.py). Training
# is counted in optimizer steps; an "epoch" is --eval-every steps of random windows.
CHARS_WARMUP_STEPS = (
    100  # --warmup-epochs counts epochs of --eval-every steps; the recipe means steps
)
CHARS_RECIPE = {
    "max_steps": 1400,
    "batch_size": 16,
    "lr": 3e-3,
    "scheduler": "cosine",
    "warmup_epochs": 0.5,
    "weight_decay": 0.1,
    "grad_clip": 1.0,
    "dim": 96,
    "heads": 4,
    "layers": 3,
    "positions": "learned",
    "attention": "scratch",
    "precision": "bf16",
    "monitor": "val_loss",
}


@dataclass
class Lab3Config(OptimOptions, RunOptions):
    lab = "lab3-transformer"
    overfit_epochs = 150

    task: str = arg(
        "reverse",
        "the toy task, or chars: a character-level language model of real text, whose "
        "defaults differ where not given: "
        + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in CHARS_RECIPE.items()),
        choices=ALL_TASKS,
    )
    length: int = arg(
        8,
        "source length for reverse and sort; digits per number for add (default 4 there)",
        low=2,
        high=256,
        applies=TOY_ONLY,
    )
    num_train: int = arg(20000, "training sequences", low=1, high=1_000_000, applies=TOY_ONLY)
    num_test: int = arg(
        1000,
        "held-out sequences (whole-sequence accuracy is measured on these)",
        low=1,
        high=100_000,
        applies=TOY_ONLY,
    )
    epochs: int = override("epochs", 8)
    batch_size: int = override("batch_size", 128)
    lr: float = arg(2e-3, "peak learning rate (one-cycle schedule)")
    scheduler: str = override("scheduler", "onecycle")
    weight_decay: float = arg(0.01, "weight decay (AdamW)")
    dim: int = arg(64, "model width", low=1, high=2048)
    heads: int = arg(4, "attention heads", low=1, high=1024)
    layers: int = arg(2, "transformer blocks", low=1, high=1024)
    dropout: float = arg(0.0, "dropout in the residual branches", low=0, below=1)
    positions: str = arg("sinusoidal", "positional encoding", choices=("sinusoidal", "learned"))
    attention: str = arg(
        "scratch", "our attention or F.scaled_dot_product_attention", choices=("scratch", "torch")
    )
    show_attention: bool = arg(
        False,
        "print one held-out example's attention per layer and head; save heatmaps",
        applies=TOY_ONLY,
    )
    grad_checkpoint: bool = arg(
        False,
        "activation checkpointing: keep only each block's input in the forward pass "
        "and recompute the block in the backward pass (less memory, more time)",
    )
    monitor: str = arg(
        "val_greedy_seq_acc",
        "metric that decides the best checkpoint and early stopping (--task chars: val_loss)",
    )
    dataset: str = arg(
        "tinyshakespeare",
        "--task chars: tinyshakespeare (downloaded into --data-dir) or text "
        "(the UTF-8 file --data-dir names)",
        choices=TEXT_DATASETS,
        applies=CHARS_ONLY,
    )
    data_dir: str = arg(
        "data",
        "--task chars: folder for the downloaded corpus, or the text file (--dataset text)",
        applies=CHARS_ONLY,
    )
    block_size: int = arg(
        64, "--task chars: context length in characters", low=1, high=65536, applies=CHARS_ONLY
    )
    eval_every: int = arg(
        200,
        "--task chars: optimizer steps between evaluations (one epoch of random windows)",
        low=1,
        applies=CHARS_ONLY,
    )
    val_windows: int = arg(
        256,
        "--task chars: validation windows per evaluation, spread evenly "
        "(0: the whole validation split; the report always adds the whole split)",
        low=0,
        applies=CHARS_ONLY,
    )
    sample_tokens: int = arg(
        300,
        "--task chars: characters sampled at the end of training (0: none)",
        low=0,
        high=MAX_SAMPLE_TOKENS,
        applies=CHARS_ONLY,
    )

    def resolve(self, explicit: set[str]) -> None:
        chars = self.task == "chars"
        if chars:
            apply_recipe(self, CHARS_RECIPE, explicit)
        super().resolve(explicit)
        if (
            chars and "epochs" not in explicit and self.max_steps
        ):  # as many evaluation rounds as the steps need
            self.epochs = -(-self.max_steps // self.eval_every)
        if (
            chars and "warmup_epochs" not in explicit
        ):  # the recipe's warm-up is 100 steps, whatever --eval-every
            self.warmup_epochs = CHARS_WARMUP_STEPS / self.eval_every
        if self.task == "add" and "length" not in explicit:
            self.length = 4  # 4-digit sums learn in seconds; 8 digits need a longer run

    def validate(self) -> None:
        super().validate()
        if self.overfit > self.num_train:
            raise LabError(
                f"--overfit {self.overfit}: the run generates only {self.num_train} training"
                " sequences (see --num-train)"
            )
        if self.dim % self.heads:
            raise LabError(f"--dim {self.dim} must be divisible by --heads {self.heads}")
        check_model_fits(12 * self.dim**2 * self.layers, f"--dim {self.dim} --layers {self.layers}")
        if self.show_attention and self.attention != "scratch":
            raise LabError(
                "--show-attention needs --attention scratch (the fused kernel returns no weights)"
            )


def toy_plan(run: Run) -> Plan:
    """A toy task (reverse, sort, add): generated sequences, the tiny transformer, the sequence
    loss with teacher-forced accuracies, greedy decoding of the held-out set after each epoch."""
    cfg, device = run.cfg, run.device
    src_len, tgt_len = lengths(cfg.task, cfg.length)
    (train_x, train_y), (test_x, test_y) = split_examples(
        cfg.task, cfg.num_train, cfg.num_test, cfg.length, seed=1234
    )
    if cfg.overfit:
        train_x, train_y = train_x[: cfg.overfit], train_y[: cfg.overfit]
        test_x, test_y = train_x, train_y
    model_cfg = TransformerConfig(
        VOCAB,
        src_len + 1 + tgt_len,
        cfg.dim,
        cfg.heads,
        cfg.layers,
        dropout=cfg.dropout,
        positions=cfg.positions,
        attention=cfg.attention,
    )
    model = TinyTransformer(model_cfg)
    model.grad_checkpoint = cfg.grad_checkpoint
    return Plan(
        model=model,
        train_loader=FastLoader(
            train_x, train_y, cfg.batch_size, device=device, seed=cfg.seed, **run.shard
        ),
        val_loader=FastLoader(test_x, test_y, 1000, device=device, shuffle=False, **run.shard),
        loss_fn=sequence_loss(src_len),
        forward_fn=teacher_forced,
        metrics=("loss", "acc", "forced_seq_acc"),
        added_metrics=("val_greedy_seq_acc",),
        description=(
            f"task {cfg.task} ({len(train_x)} train / {len(test_x)} held-out; "
            f"source {src_len}, target {tgt_len})"
        ),
        callbacks=[GreedyEval(test_x.to(device), test_y.to(device), src_len)],
        resolved={"task": cfg.task, "model": vars(model_cfg)},
        checkpoint={"model_config": vars(model_cfg)},
        report=functools.partial(toy_report, example=test_x[0], src_len=src_len, tgt_len=tgt_len),
    )


def build_plan(run: Run) -> Plan:
    return chars_plan(run) if run.cfg.task == "chars" else toy_plan(run)


def train(cfg: Lab3Config) -> dict:
    """One run as ``cfg`` says (what ``lab3-transformer`` does); returns its summary."""
    return execute(cfg, build_plan).summary


def main(argv: list[str] | None = None) -> int:
    return run_lab(
        PROG,
        Lab3Config,
        build_plan,
        argv,
        __doc__.splitlines()[0],
        subcommands={"sample": sample_command},
    )


if __name__ == "__main__":
    sys.exit(main())
