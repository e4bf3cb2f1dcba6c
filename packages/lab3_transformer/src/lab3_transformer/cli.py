"""lab3-transformer: a tiny decoder-only transformer learns a toy task, or writes Shakespeare.

    lab3-transformer --task reverse|sort|add [--show-attention] [flags]
    lab3-transformer --task chars [--dataset tinyshakespeare|text] [--data-dir DIR|FILE] [flags]
    lab3-transformer sample --checkpoint PATH [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from labs_core import Callback, LabError, arg
from labs_core.cli import run_lab
from labs_core.config import OptimOptions, RunOptions
from labs_core.data import FastLoader
from labs_core.data.text import TEXT_DATASETS
from labs_core.plots import plot_curves
from labs_core.run import Plan, execute
from labs_core.validate import When, check_model_fits

from .model import TinyTransformer, TransformerConfig
from .tasks import TASKS, VOCAB, lengths, split_examples, token_name

PROG = "lab3-transformer"
ALL_TASKS = (*TASKS, "chars")
CHARS_ONLY = When("task", "chars")  # a flag of one kind of task changes nothing for the other
TOY_ONLY = When("task", *TASKS, text="the toy tasks (--task " + ", ".join(TASKS) + ")")
# --task chars: what the flags mean when not given (measured by benchmarks/char_lm.py). Training
# is counted in optimizer steps; an "epoch" is --eval-every steps of random windows.
CHARS_WARMUP_STEPS = 100  # --warmup-epochs counts epochs of --eval-every steps; the recipe means steps
CHARS_RECIPE = {"max_steps": 1400, "batch_size": 16, "lr": 3e-3, "scheduler": "cosine", "warmup_epochs": 0.5,
                "weight_decay": 0.1, "grad_clip": 1.0, "dim": 96, "heads": 4, "layers": 3, "positions": "learned",
                "attention": "scratch", "precision": "bf16", "monitor": "val_loss"}


@dataclass
class Lab3Config(OptimOptions, RunOptions):
    lab = "lab3-transformer"
    overfit_epochs = 150

    task: str = arg("reverse", "the toy task, or chars: a character-level language model of real text, whose "
                    "defaults differ where not given: " + ", ".join(f"--{k.replace('_', '-')} {v}"
                                                                   for k, v in CHARS_RECIPE.items()),
                    choices=ALL_TASKS)
    length: int = arg(8, "source length for reverse and sort; digits per number for add (default 4 there)",
                      low=2, high=256, applies=TOY_ONLY)
    num_train: int = arg(20000, "training sequences", low=1, high=1_000_000, applies=TOY_ONLY)
    num_test: int = arg(1000, "held-out sequences (whole-sequence accuracy is measured on these)", low=1, high=100_000,
                        applies=TOY_ONLY)
    epochs: int = arg(8, "number of training epochs")
    batch_size: int = arg(128, "batch size")
    lr: float = arg(2e-3, "peak learning rate (one-cycle schedule)")
    scheduler: str = arg("onecycle", "learning-rate schedule", choices=("none", "cosine", "onecycle", "step"))
    weight_decay: float = arg(0.01, "weight decay (AdamW)")
    dim: int = arg(64, "model width", low=1, high=2048)
    heads: int = arg(4, "attention heads", low=1, high=1024)
    layers: int = arg(2, "transformer blocks", low=1, high=1024)
    dropout: float = arg(0.0, "dropout in the residual branches")
    positions: str = arg("sinusoidal", "positional encoding", choices=("sinusoidal", "learned"))
    attention: str = arg("scratch", "our attention or F.scaled_dot_product_attention", choices=("scratch", "torch"))
    show_attention: bool = arg(False, "print one held-out example's attention per layer and head; save heatmaps",
                               applies=TOY_ONLY)
    grad_checkpoint: bool = arg(False, "activation checkpointing: keep only each block's input in the forward pass "
                                "and recompute the block in the backward pass (less memory, more time)")
    monitor: str = arg("val_seq_acc", "metric that decides the best checkpoint and early stopping "
                       "(--task chars: val_loss)")
    dataset: str = arg("tinyshakespeare", "--task chars: tinyshakespeare (downloaded into --data-dir) or text "
                       "(the UTF-8 file --data-dir names)", choices=TEXT_DATASETS, applies=CHARS_ONLY)
    data_dir: str = arg("data", "--task chars: folder for the downloaded corpus, or the text file (--dataset text)",
                        applies=CHARS_ONLY)
    block_size: int = arg(64, "--task chars: context length in characters", low=1, high=65536, applies=CHARS_ONLY)
    eval_every: int = arg(200, "--task chars: optimizer steps between evaluations (one epoch of random windows)",
                          low=1, applies=CHARS_ONLY)
    val_windows: int = arg(256, "--task chars: validation windows per evaluation, spread evenly "
                           "(0: the whole validation split; the report always adds the whole split)",
                           low=0, applies=CHARS_ONLY)
    sample_tokens: int = arg(300, "--task chars: characters sampled at the end of training (0: none)",
                             low=0, high=10_000, applies=CHARS_ONLY)

    def resolve(self, explicit: set[str]) -> None:
        chars = self.task == "chars"
        if chars:
            for name, value in CHARS_RECIPE.items():
                if name not in explicit:
                    setattr(self, name, value)
        super().resolve(explicit)
        if chars and "epochs" not in explicit and self.max_steps:  # as many evaluation rounds as the steps need
            self.epochs = -(-self.max_steps // self.eval_every)
        if chars and "warmup_epochs" not in explicit:  # the recipe's warm-up is 100 steps, whatever --eval-every
            self.warmup_epochs = CHARS_WARMUP_STEPS / self.eval_every
        if self.task == "add" and "length" not in explicit:
            self.length = 4  # 4-digit sums learn in seconds; 8 digits need a longer run

    def validate(self) -> None:
        super().validate()
        if self.overfit > self.num_train:
            raise LabError(f"--overfit {self.overfit}: the run generates only {self.num_train} training sequences "
                           "(see --num-train)")
        if not 0 <= self.dropout < 1:
            raise LabError(f"--dropout must be in [0, 1) (got {self.dropout})")
        if self.dim % self.heads:
            raise LabError(f"--dim {self.dim} must be divisible by --heads {self.heads}")
        check_model_fits(12 * self.dim**2 * self.layers, f"--dim {self.dim} --layers {self.layers}")
        if self.show_attention and self.attention != "scratch":
            raise LabError("--show-attention needs --attention scratch (the fused kernel returns no weights)")


def sequence_loss(src_len: int):
    """Cross-entropy on the target positions only; token and teacher-forced sequence accuracy."""

    def loss_fn(logits, batch):
        y = batch[1]  # (B, T)
        pred_logits = logits[:, src_len:]  # position src_len holds SEP and predicts target[0]
        loss = F.cross_entropy(pred_logits.reshape(-1, VOCAB), y.reshape(-1))
        hit = pred_logits.argmax(-1) == y
        return {"loss": loss, "acc": hit.float().mean(), "seq_acc": hit.all(dim=1).float().mean()}

    return loss_fn


def forward(model, batch):
    return model(batch[0][:, :-1])  # teacher forcing: predict each next token


@torch.no_grad()
def greedy_accuracy(model, x: torch.Tensor, y: torch.Tensor, src_len: int, batch: int = 500) -> float:
    """Whole-sequence accuracy of greedy decoding from ``source SEP`` alone."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        out = model.generate(x[i:i + batch, :src_len + 1], y.shape[1])
        correct += (out[:, src_len + 1:] == y[i:i + batch]).all(dim=1).sum().item()
    model.train(was)
    return correct / len(x)


class GreedyEval(Callback):
    """Adds ``val_seq_acc`` (greedy decoding on the held-out set) to each epoch's logs."""

    def __init__(self, x, y, src_len):
        self.x, self.y, self.src_len = x, y, src_len

    def on_validation_end(self, trainer, logs):
        logs["val_seq_acc"] = greedy_accuracy(trainer.module, self.x, self.y, self.src_len)


def attention_text(weights: torch.Tensor, tokens: list[str]) -> str:
    """One (T, T) attention matrix as text: rows are queries, columns keys, values in percent."""
    width = 4
    lines = ["     " + "".join(t.rjust(width) for t in tokens)]
    for q, row in zip(tokens, weights.tolist(), strict=True):
        lines.append(q.rjust(4) + " " + "".join((f"{round(100 * v)}" if v >= 0.005 else ".").rjust(width) for v in row))
    return "\n".join(lines)


def show_attention(model, seq: torch.Tensor, src_len: int, tgt_len: int, run_dir: Path, say) -> list[Path]:
    """Decode one held-out example greedily, then print and plot every layer's and head's attention."""
    from labs_core.plots import pyplot

    plt = pyplot()

    model.eval()
    out = model.generate(seq[None, :src_len + 1], tgt_len)
    model(out[:, :-1])  # one more pass over the finished sequence, to read its attention
    tokens = [token_name(t) for t in out[0, :-1].tolist()]
    paths = []
    for layer, w in enumerate(model.attention_maps()):
        assert w.shape == (1, model.cfg.heads, len(tokens), len(tokens))
        for head in range(w.shape[1]):
            say(f"\nlayer {layer} head {head} (rows: queries, columns: keys, % of attention)")
            say(attention_text(w[0, head], tokens))
            fig, ax = plt.subplots(figsize=(5, 5))
            ax.imshow(w[0, head].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks(range(len(tokens)), labels=tokens)
            ax.set_yticks(range(len(tokens)), labels=tokens)
            ax.set_xlabel("key (attended to)")
            ax.set_ylabel("query (attending)")
            ax.set_title(f"layer {layer}, head {head}")
            fig.tight_layout()
            path = run_dir / f"attention_layer{layer}_head{head}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            paths.append(path)
    return paths


def plan(cfg: Lab3Config, run) -> Plan:
    src_len, tgt_len = lengths(cfg.task, cfg.length)
    (train_x, train_y), (test_x, test_y) = split_examples(cfg.task, cfg.num_train, cfg.num_test, cfg.length, seed=1234)
    if cfg.overfit:
        train_x, train_y = train_x[:cfg.overfit], train_y[:cfg.overfit]
        test_x, test_y = train_x, train_y
    device = run.device
    model_cfg = TransformerConfig(VOCAB, src_len + 1 + tgt_len, cfg.dim, cfg.heads, cfg.layers,
                                  dropout=cfg.dropout, positions=cfg.positions, attention=cfg.attention)

    def report(run, trainer):
        run_dir = run.run_dir
        plot_curves(trainer.history, run_dir / "loss_curve.png",
                    {"loss": ["train_loss", "val_loss"], "accuracy": ["val_acc", "val_seq_acc"]}, title=f"{PROG}: {cfg.task}")
        run.say(f"held-out whole-sequence accuracy (greedy decoding): {trainer.history[-1]['val_seq_acc']:.4f}")
        if cfg.show_attention:
            paths = show_attention(trainer.module.cpu(), test_x[0], src_len, tgt_len, run_dir, run.say)
            run.say(f"\nattention heatmaps: {run_dir}/attention_layer*_head*.png ({len(paths)} files)")

    model = TinyTransformer(model_cfg)
    model.grad_checkpoint = cfg.grad_checkpoint
    return Plan(
        model=model,
        train_loader=FastLoader(train_x, train_y, cfg.batch_size, device=device, seed=cfg.seed, **run.shard),
        val_loader=FastLoader(test_x, test_y, 1000, device=device, shuffle=False, **run.shard),
        loss_fn=sequence_loss(src_len), forward_fn=forward, metrics=("loss", "acc", "seq_acc"),
        added_metrics=("val_seq_acc",),
        description=f"task {cfg.task} ({len(train_x)} train / {len(test_x)} held-out; source {src_len}, target {tgt_len})",
        callbacks=[GreedyEval(test_x.to(device), test_y.to(device), src_len)],
        resolved={"task": cfg.task, "model": vars(model_cfg)}, checkpoint={"model_config": vars(model_cfg)},
        report=report)


def train(cfg: Lab3Config) -> dict:
    if cfg.task == "chars":
        from .chars import plan as chars_plan

        return execute(cfg, lambda run: chars_plan(cfg, run)).summary
    return execute(cfg, lambda run: plan(cfg, run)).summary


def main(argv: list[str] | None = None) -> int:
    from .chars import sample_command

    return run_lab(PROG, Lab3Config, train, argv, __doc__.splitlines()[0], subcommands={"sample": sample_command})


if __name__ == "__main__":
    sys.exit(main())
