import io
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from labs_core import ProgressBar, RunLogger, Trainer, seed_everything

from core_testutils import blob_data, fast_loader, tiny_mlp


def test_tensorboard_jsonl_and_console(tmp_path):
    seed_everything(0)
    x, y = blob_data()
    model = tiny_mlp()
    stream = io.StringIO()
    logger = RunLogger(tmp_path, stream=stream, log_every=2)
    t = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        fast_loader(x, y),
        fast_loader(x, y),
        epochs=3,
        callbacks=[logger, ProgressBar(quiet=True)],
        grad_norm_every=1,
    )
    t.fit()
    logger.close()

    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [d["epoch"] for d in lines] == [1, 2, 3]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "grad_norm"} <= set(lines[0])

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {
        "epoch/train_loss",
        "epoch/val_acc",
        "epoch/lr",
        "epoch/grad_norm",
        "step/train_loss",
    } <= tags
    val = [e.value for e in acc.Scalars("epoch/val_loss")]
    assert val == [round_trip(d["val_loss"]) for d in lines]

    console = stream.getvalue().splitlines()
    assert len(console) == 3 and console[0].startswith("epoch   1/3") and "val_acc" in console[0]


def round_trip(v):
    return torch.tensor(v, dtype=torch.float32).item()


def test_quiet_logger_prints_nothing(tmp_path):
    x, y = blob_data()
    stream = io.StringIO()
    model = tiny_mlp()
    Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        fast_loader(x, y),
        epochs=1,
        callbacks=[RunLogger(tmp_path, quiet=True, stream=stream)],
    ).fit()
    assert stream.getvalue() == ""
    assert ProgressBar(quiet=False).enabled is False  # stderr is not a terminal under pytest


def test_an_epoch_logged_but_not_checkpointed_appears_once_after_resume(tmp_path):
    """A kill between the logger's write and the checkpoint: the resumed run's logs (metrics.jsonl
    and TensorBoard) hold every epoch exactly once."""
    from labs_core import Callback
    from labs_core.callbacks import Checkpointing
    from labs_core.checkpoint import load_checkpoint

    class KillAfterLogging(Callback):
        order = 50  # after the logger, before the checkpoint

        def on_epoch_end(self, trainer, logs):
            if trainer.epoch == 3:
                raise KeyboardInterrupt

    def make(*extra):
        seed_everything(0)
        x, y = blob_data()
        model = tiny_mlp()
        logger = RunLogger(tmp_path, quiet=True, log_every=1)
        t = Trainer(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            fast_loader(x, y),
            fast_loader(x, y),
            epochs=5,
            callbacks=[logger, Checkpointing(tmp_path / "checkpoints"), *extra],
        )
        return t, logger

    first, logger = make(KillAfterLogging())
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    logger.close()
    assert [
        json.loads(s)["epoch"] for s in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ] == [1, 2, 3]

    resumed, logger = make()
    resumed.load_state_dict(load_checkpoint(tmp_path / "checkpoints" / "last.pt"))
    assert resumed.epoch == 2
    resumed.fit()
    logger.close()
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [d["epoch"] for d in lines] == [1, 2, 3, 4, 5]
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("epoch/val_loss")]
    assert steps == [d["step"] for d in lines]  # one point per epoch, at its optimizer step
    assert len([e for e in acc.Scalars("step/train_loss")]) == resumed.global_step
