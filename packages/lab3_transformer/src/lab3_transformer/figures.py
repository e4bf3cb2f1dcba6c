"""Attention, shown: one held-out example's attention per layer and head, as text and heatmaps."""

from __future__ import annotations

from pathlib import Path

import torch

from .tasks import token_name


def attention_text(weights: torch.Tensor, tokens: list[str]) -> str:
    """One (T, T) attention matrix as text: rows are queries, columns keys, values in percent."""
    width = 4
    lines = ["     " + "".join(t.rjust(width) for t in tokens)]
    for q, row in zip(tokens, weights.tolist(), strict=True):
        lines.append(
            q.rjust(4)
            + " "
            + "".join((f"{round(100 * v)}" if v >= 0.005 else ".").rjust(width) for v in row)
        )
    return "\n".join(lines)


def show_attention(
    model, seq: torch.Tensor, src_len: int, tgt_len: int, run_dir: Path, say
) -> list[Path]:
    """Decode one held-out example greedily, then print and plot every layer's and head's
    attention."""
    from labs_core.plots import pyplot, save_figure

    plt = pyplot()

    model.eval()
    out = model.generate(seq[None, : src_len + 1], tgt_len)
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
            save_figure(fig, path, dpi=90)
            plt.close(fig)
            paths.append(path)
    return paths


def toy_report(run, trainer, *, example: torch.Tensor, src_len: int, tgt_len: int) -> None:
    """A toy task's report: the loss and accuracy curves, the greedy held-out accuracy, and with
    ``--show-attention`` one held-out ``example``'s attention maps."""
    from labs_core.plots import plot_curves

    cfg, run_dir = run.cfg, run.run_dir
    plot_curves(
        trainer.history,
        run_dir / "loss_curve.png",
        {
            "loss": ["train_loss", "val_loss"],
            "accuracy": ["val_acc", "val_forced_seq_acc", "val_greedy_seq_acc"],
        },
        title=f"lab3-transformer: {cfg.task}",
    )
    greedy = trainer.history[-1]["val_greedy_seq_acc"]
    run.say(f"held-out whole-sequence accuracy (greedy decoding): {greedy:.4f}")
    if cfg.show_attention:
        paths = show_attention(trainer.module.cpu(), example, src_len, tgt_len, run_dir, run.say)
        run.say(f"\nattention heatmaps: {run_dir}/attention_layer*_head*.png ({len(paths)} files)")
