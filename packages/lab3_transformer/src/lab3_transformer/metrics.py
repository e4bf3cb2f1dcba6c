"""How well the toy tasks are learned: the sequence loss with its teacher-forced accuracies, and
whole-sequence accuracy of greedy decoding on the held-out set."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from labs_core import Callback

from .tasks import VOCAB


def sequence_loss(src_len: int):
    """Cross-entropy on the target positions only, and two accuracies of the teacher-forced
    predictions (each position sees the true tokens before it): per token (``acc``) and per whole
    sequence (``forced_seq_acc``). Greedy decoding, where the model reads its own predictions, is
    ``GreedyEval``'s ``val_greedy_seq_acc``."""

    def loss_fn(logits, batch):
        y = batch[1]  # (B, T)
        pred_logits = logits[:, src_len:]  # position src_len holds SEP and predicts target[0]
        loss = F.cross_entropy(pred_logits.reshape(-1, VOCAB), y.reshape(-1))
        hit = pred_logits.argmax(-1) == y
        return {
            "loss": loss,
            "acc": hit.float().mean(),
            "forced_seq_acc": hit.all(dim=1).float().mean(),
        }

    return loss_fn


def teacher_forced(model, batch):
    """The forward pass of teacher forcing: every position predicts the next token."""
    return model(batch[0][:, :-1])


@torch.no_grad()
def greedy_accuracy(
    model, x: torch.Tensor, y: torch.Tensor, src_len: int, batch: int = 500
) -> float:
    """Whole-sequence accuracy of greedy decoding from ``source SEP`` alone."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        out = model.generate(x[i : i + batch, : src_len + 1], y.shape[1])
        correct += (out[:, src_len + 1 :] == y[i : i + batch]).all(dim=1).sum().item()
    model.train(was)
    return correct / len(x)


class GreedyEval(Callback):
    """Adds ``val_greedy_seq_acc`` (greedy decoding of the held-out set) to each epoch's logs."""

    def __init__(self, x, y, src_len):
        self.x, self.y, self.src_len = x, y, src_len

    def on_validation_end(self, trainer, logs):
        logs["val_greedy_seq_acc"] = greedy_accuracy(trainer.module, self.x, self.y, self.src_len)
