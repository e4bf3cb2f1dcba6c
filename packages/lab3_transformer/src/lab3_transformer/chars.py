"""``lab3-transformer --task chars``: a character-level GPT on real text, and ``sample`` from it.

Training goes through the core trainer like every lab: random windows of ``--block-size``
characters, ``--eval-every`` optimizer steps per epoch, the whole validation split (or
``--val-windows`` of it) after each, the best checkpoint by validation loss. The tokenizer is
saved in the checkpoint and the run directory, so sampling needs no data.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from labs_core import LabError, arg
from labs_core.checkpoint import atomic_write_text, load_checkpoint, load_model_state
from labs_core.config import ConfigPart, parse_config
from labs_core.data.text import (
    CharData,
    CharTokenizer,
    RandomWindows,
    ValidationWindows,
    load_text_dataset,
)
from labs_core.device import pick_device
from labs_core.optim import build_optimizer
from labs_core.plots import plot_curves
from labs_core.run import Plan

from .lm import LN2, MAX_SAMPLE_TOKENS, lm_loss, sample_text, stream_text
from .model import TinyTransformer, TransformerConfig

PROG = "lab3-transformer"


def chars_plan(run) -> Plan:
    """``--task chars``: the text's characters, a GPT with tied embeddings, the language-model
    loss; the report adds the whole validation split's loss and a sample."""
    cfg = run.cfg
    source = cfg.data_dir if cfg.dataset == "text" else "tiny Shakespeare"
    data = CharData.from_text(
        load_text_dataset(cfg.dataset, cfg.data_dir), cfg.block_size, source=source
    )
    for note in data.notes:
        run.say(f"note: {note}")
    train_ids, val_ids = data.train, data.val
    if (
        cfg.overfit
    ):  # the first N windows' worth of text, trained on (random windows) and evaluated on
        train_ids = val_ids = data.train[: cfg.overfit * cfg.block_size + 1]
        if len(train_ids) < cfg.block_size + 1:
            raise LabError(f"--overfit {cfg.overfit}: the training split holds no full window")
    tokenizer, device = data.tokenizer, run.device
    model_cfg = TransformerConfig(
        len(tokenizer),
        cfg.block_size,
        cfg.dim,
        cfg.heads,
        cfg.layers,
        dropout=cfg.dropout,
        positions=cfg.positions,
        attention=cfg.attention,
        tie_weights=True,
    )
    train = RandomWindows(
        train_ids,
        cfg.block_size,
        cfg.batch_size,
        cfg.eval_every,
        seed=cfg.seed,
        device=device,
        **run.shard,
    )
    val = ValidationWindows(
        val_ids, cfg.block_size, 256, limit=cfg.val_windows, device=device, **run.shard
    )

    def report(run, trainer):
        run_dir = run.run_dir
        atomic_write_text(run_dir / "tokenizer.json", json.dumps(tokenizer.state_dict()))
        plot_curves(
            trainer.history,
            run_dir / "loss_curve.png",
            {"loss (nats/char)": ["train_loss", "val_loss"]},
            title=f"{PROG}: characters",
        )
        last = trainer.history[-1]
        whole = whole_split_loss(
            trainer, ValidationWindows(val_ids, cfg.block_size, 256, device=device)
        )
        metrics = {"full_val_loss": whole, "full_val_bpc": whole / LN2}
        part = f"{val.tokens:,} characters" if cfg.val_windows else "the whole split"
        run.say(
            f"validation loss on the whole split: {whole:.4f} nats/char = {whole / LN2:.4f}"
            f" bits/char (last evaluation, {part}: {last['val_loss']:.4f}; best"
            f" {trainer.best['value']:.4f}) after {trainer.global_step} steps,"
            f" {last['elapsed_s']:.1f} s of training"
        )
        if not cfg.sample_tokens:
            return metrics
        model = trainer.module
        start = (
            "\n" if "\n" in tokenizer.index else tokenizer.decode(data.train[:1])
        )  # no line breaks
        text = sample_text(
            model, tokenizer, start, cfg.sample_tokens, temperature=0.8, top_k=40, seed=cfg.seed
        )
        atomic_write_text(run_dir / "sample.txt", text)
        run.say(
            f"\n--- a sample (temperature 0.8, top-k 40; saved as {run_dir / 'sample.txt'})"
            f" ---{text}\n---"
        )
        return metrics

    model = TinyTransformer(model_cfg)
    model.grad_checkpoint = cfg.grad_checkpoint
    return Plan(
        model=model,
        train_loader=train,
        val_loader=val,
        loss_fn=lm_loss,
        metrics=("loss", "bpc"),
        added_metrics=("elapsed_s",),
        make_optimizer=make_optimizer,
        description=(
            f"characters of {source} ({len(data.train):,} train / {len(data.val):,} validation,"
            f" {len(tokenizer)} symbols; windows of {cfg.block_size}, {cfg.eval_every} steps per"
            f" evaluation, {val.tokens:,} validation characters)"
        ),
        resolved={"task": "chars", "model": vars(model_cfg), "vocabulary": tokenizer.chars},
        checkpoint={"model_config": vars(model_cfg), "tokenizer": tokenizer.state_dict()},
        report=report,
    )


def make_optimizer(cfg, model):
    """The core optimizer, with weight decay on matrices only and, for Adam(W), beta2 0.99: the
    second-moment average then forgets in ~100 steps, not ~1,000, which suits short runs."""
    optimizer = build_optimizer(cfg, model, decay_matrices_only=True)
    if cfg.optimizer in ("adam", "adamw"):
        for group in optimizer.param_groups:
            group["betas"] = (0.9, 0.99)
    return optimizer


@torch.no_grad()
def whole_split_loss(trainer, windows: ValidationWindows) -> float:
    """Mean loss over every window of the validation split, on this process alone (the end-of-run
    report runs on rank 0 only, so no collective ``trainer.evaluate``)."""
    model = trainer.module
    was = model.training
    model.eval()
    total = 0.0
    for x, y in windows:
        with trainer.precision.autocast():
            logits = model(x)
        total += lm_loss(logits.float(), (x, y))["loss"].item() * y.numel()
    model.train(was)
    return total / windows.tokens


@dataclass
class SampleConfig(ConfigPart):
    checkpoint: str = arg(
        "",
        "a --task chars checkpoint (.pt), or its run directory (its best.pt); default: "
        "the latest --task chars run under runs/lab3-transformer",
    )
    prompt: str = arg("\n", "text to continue (default: a new line)")
    tokens: int = arg(
        500,
        f"characters to generate (at most {MAX_SAMPLE_TOKENS:,}); printed as they come",
        low=1,
        high=MAX_SAMPLE_TOKENS,
    )
    temperature: float = arg(
        0.8, "softmax temperature (0: always the most likely character)", low=0
    )
    top_k: int = arg(40, "sample among the K most likely characters (0: all)", low=0)
    seed: int = arg(0, "random seed: the same seed gives the same text", low=0, high=2**32 - 1)
    cache: bool = arg(
        True, "keep keys and values of the context (KV cache): one token per forward step"
    )
    device: str = arg("cpu", "cpu, cuda, cuda:N, mps or auto")

    def validate(self) -> None:
        super().validate()  # every number within its bounds, and finite


def latest_chars_run(root: str | Path = "runs") -> Path:
    """The newest run directory of ``--task chars`` with a best checkpoint."""
    runs = []
    for config in Path(root, PROG).glob("*/config.json"):
        try:
            task = json.loads(config.read_text()).get("task")
        except (OSError, ValueError):
            continue
        if task == "chars" and (config.parent / "checkpoints" / "best.pt").is_file():
            runs.append(config.parent)
    if not runs:
        raise LabError(
            f"no --task chars run under {Path(root, PROG)}: train one with `{PROG} --task chars`, "
            "or give --checkpoint PATH"
        )
    return max(runs, key=lambda p: (p / "checkpoints" / "best.pt").stat().st_mtime)


def load_char_model(path: str | Path, device) -> tuple[TinyTransformer, CharTokenizer]:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "best.pt"
    state = load_checkpoint(path)
    if "tokenizer" not in state or "model_config" not in state:
        task = (state.get("config") or {}).get("task", "another lab's")
        raise LabError(
            f"{path} holds a --task {task} model; sample needs a --task chars checkpoint"
        )
    model = TinyTransformer(TransformerConfig(**state["model_config"]))
    load_model_state(model, state["model"], f"checkpoint {path}")
    return model.to(device), CharTokenizer.from_state_dict(state["tokenizer"])


def sample_command(argv: list[str]) -> int:
    try:
        cfg = parse_config(
            SampleConfig, argv, f"{PROG} sample", "Generate text from a --task chars checkpoint."
        )
    except SystemExit as exc:
        return int(exc.code or 0)
    model, tokenizer = load_char_model(
        cfg.checkpoint or latest_chars_run(), pick_device(cfg.device)
    )
    tokenizer.encode(
        cfg.prompt
    )  # a character the model never saw: refused before anything is printed
    sys.stdout.write(cfg.prompt)
    for char in stream_text(
        model,
        tokenizer,
        cfg.prompt,
        cfg.tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        seed=cfg.seed,
        cache=cfg.cache,
    ):
        sys.stdout.write(char)  # each character as it is sampled: a long sample shows at once
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0
