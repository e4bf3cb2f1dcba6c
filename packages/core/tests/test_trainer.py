import math

import pytest
import torch
from torch import nn

from labs_core import (
    Callback,
    EarlyStopping,
    NonFiniteLossError,
    Precision,
    Trainer,
    seed_everything,
)
from labs_core.callbacks import Checkpointing
from labs_core.checkpoint import load_checkpoint

from core_testutils import blob_data, fast_loader, tiny_mlp


def make_trainer(epochs=3, seed=0, callbacks=(), scheduler="onecycle", **kw):
    """Everything built fresh from the seed, as a new process would."""
    seed_everything(seed)
    x, y = blob_data()
    model = tiny_mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    loader = fast_loader(x, y, seed=seed, augment=True, pad=1)
    sched = None
    if scheduler == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=0.01, total_steps=epochs * len(loader)
        )
    return Trainer(
        model,
        opt,
        loader,
        fast_loader(x, y, batch_size=64),
        scheduler=sched,
        scheduler_interval="step",
        epochs=epochs,
        callbacks=callbacks,
        **kw,
    )


class StopAfter(Callback):
    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, trainer, logs):
        if trainer.epoch >= self.epochs:
            trainer.should_stop = True


def weights(model):
    return [t.detach().clone() for t in model.state_dict().values()]


def assert_bit_identical(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_resume_after_two_of_four_epochs_is_bit_identical(tmp_path):
    straight = make_trainer(epochs=4)
    straight.fit()

    first = make_trainer(epochs=4, callbacks=[StopAfter(2), Checkpointing(tmp_path)])
    first.fit()
    assert first.epoch == 2
    resumed = make_trainer(epochs=4, seed=0)
    torch.manual_seed(999)  # whatever happened since: the checkpoint's RNG state must win
    resumed.load_state_dict(load_checkpoint(tmp_path / "last.pt"))
    resumed.fit()
    assert resumed.epoch == 4 and resumed.global_step == straight.global_step
    assert_bit_identical(weights(straight.module), weights(resumed.module))
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]


def test_resume_from_mid_epoch_max_steps_is_bit_identical(tmp_path):
    straight = make_trainer(epochs=2)
    straight.fit()
    first = make_trainer(epochs=2, max_steps=5, callbacks=[Checkpointing(tmp_path)])
    first.fit()
    assert first.global_step == 5 and first.batch_in_epoch == 5 and first.epoch == 0
    resumed = make_trainer(epochs=2)
    resumed.load_state_dict(load_checkpoint(tmp_path / "last.pt"))
    resumed.fit()
    assert resumed.global_step == straight.global_step
    assert_bit_identical(weights(straight.module), weights(resumed.module))


def test_max_steps_stops_after_that_many_optimizer_steps():
    t = make_trainer(epochs=10, max_steps=7)
    t.fit()
    assert t.global_step == 7


def test_gradient_accumulation_matches_larger_batch():
    x, y = blob_data(n=64)

    def run(batch, accum):
        seed_everything(0)
        model = tiny_mlp(dropout=0.0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loader = fast_loader(x, y, batch_size=batch, seed=1)
        loader.shuffle = False
        Trainer(model, opt, loader, epochs=2, grad_accum=accum).fit()
        return weights(model)

    for a, b in zip(run(32, 1), run(16, 2), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_clipping_bounds_the_update():
    seed_everything(0)
    x, y = blob_data()
    model = tiny_mlp(dropout=0.0)
    before = weights(model)
    lr = 1.0
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    t = Trainer(model, opt, fast_loader(x, y, batch_size=96), epochs=1, grad_clip=0.01)
    logs = t.fit()[-1]
    step = torch.sqrt(
        sum(((a - b) ** 2).sum() for a, b in zip(weights(model), before, strict=True))
    )
    assert step.item() <= lr * 0.01 + 1e-6
    assert logs["grad_norm"] > 0.01  # the logged norm is the unclipped one


def test_scheduler_per_step_and_per_epoch():
    t = make_trainer(epochs=2, scheduler=None)
    t.scheduler = torch.optim.lr_scheduler.StepLR(t.optimizer, step_size=1, gamma=0.5)
    t.scheduler_interval = "epoch"
    t.fit()
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.25)
    t = make_trainer(epochs=1)  # onecycle, stepped once per optimizer step
    t.fit()
    assert t.scheduler.last_epoch == t.global_step == len(t.train_loader)


def test_early_stopping_on_patience():
    t = make_trainer(epochs=20, scheduler=None, monitor="val_acc", mode="max")
    t.callbacks.append(EarlyStopping(patience=2))
    # Freeze learning so the monitored metric cannot improve after epoch 1.
    for g in t.optimizer.param_groups:
        g["lr"] = 0.0
    t.fit()
    assert t.epoch == 3
    assert "early stopping" in t.stop_reason and t.best["epoch"] == 1


def test_non_finite_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    class Poison(Callback):
        def on_epoch_start(self, trainer):  # the second epoch starts with broken weights
            if trainer.epoch == 1:
                with torch.no_grad():
                    trainer.wrapped[1].weight.fill_(float("nan"))

    t = make_trainer(epochs=3, scheduler=None, callbacks=[Checkpointing(tmp_path), Poison()])
    with pytest.raises(NonFiniteLossError, match=r"at step 7 \(epoch 2, batch 1\)"):
        t.fit()
    good = load_checkpoint(tmp_path / "last.pt")
    assert good["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())


def test_evaluate_uses_inference_mode_and_restores_train_mode():
    seen = {}

    def forward(model, batch):
        seen["grad"] = torch.is_grad_enabled()
        seen["training"] = model.training
        return model(batch[0])

    t = make_trainer(epochs=1, forward_fn=forward)
    t.wrapped.train()
    t.evaluate(t.val_loader)
    assert seen == {"grad": False, "training": False}
    assert t.wrapped.training


def test_overfit_small_set_reaches_full_accuracy():
    seed_everything(0)
    x, y = blob_data(n=16, shape=(1, 4, 4))
    model = tiny_mlp(dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    loader = fast_loader(x, y, batch_size=16)
    hist = Trainer(model, opt, loader, fast_loader(x, y, batch_size=16), epochs=60).fit()
    assert hist[-1]["val_acc"] == 1.0


def test_bf16_autocast_on_cpu_computes_loss_in_fp32():
    dtypes = {}

    def loss_fn(out, batch):
        dtypes["out"] = out.dtype
        return {"loss": nn.functional.cross_entropy(out, batch[1])}

    def forward(model, batch):
        out = model(batch[0])
        dtypes["forward"] = out.dtype
        return out

    t = make_trainer(
        epochs=1,
        precision=Precision("bf16", torch.device("cpu")),
        loss_fn=loss_fn,
        forward_fn=forward,
    )
    t.fit()
    assert dtypes == {"forward": torch.bfloat16, "out": torch.float32}


def test_fp16_scaler_logs_loss_scale_and_counts_skipped_steps():
    t = make_trainer(epochs=1, scheduler=None, precision=Precision("fp16", torch.device("cpu")))
    # Make the first step's gradients infinite: the scaler must skip it and halve its scale.
    first = {"done": False}

    def hook(grad):
        if not first["done"]:
            first["done"] = True
            return grad * float("inf")
        return grad

    t.wrapped[1].weight.register_hook(hook)
    logs = t.fit()[-1]
    assert t.skipped_steps == 1
    assert logs["skipped_steps"] == 1
    assert logs["loss_scale"] == 65536.0 / 2
    assert math.isfinite(logs["train_loss"])


def test_on_validation_end_metrics_decide_the_best_epoch(tmp_path):
    class Score(Callback):
        def on_validation_end(self, trainer, logs):
            logs["val_score"] = [0.2, 0.9, 0.5][trainer.epoch - 1]

    t = make_trainer(
        epochs=3,
        scheduler=None,
        monitor="val_score",
        mode="max",
        callbacks=[Score(), Checkpointing(tmp_path)],
    )
    t.fit()
    assert t.best == {"metric": "val_score", "value": 0.9, "epoch": 2}
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2


def test_deferred_nan_check_names_the_first_bad_step(tmp_path):
    """The GPU path (no host sync per step), exercised on the CPU."""

    class Poison(Callback):
        def on_step_end(self, trainer, loss):
            if trainer.global_step == 8:
                with torch.no_grad():
                    trainer.wrapped[1].weight.fill_(float("nan"))

    t = make_trainer(
        epochs=2, scheduler=None, callbacks=[Checkpointing(tmp_path), Poison()], nan_check_every=4
    )
    with pytest.raises(NonFiniteLossError, match=r"non-finite at step 9 \(epoch 2\)"):
        t.fit()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


class Score(Callback):
    """A monitored metric with a fixed course: best at epoch 3, worse after."""

    course = [5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8, 3.9]

    def on_validation_end(self, trainer, logs):
        logs["val_score"] = self.course[logs["epoch"] - 1]


def test_early_stopping_run_killed_and_resumed_stops_where_the_unbroken_one_does(tmp_path):
    def make():
        return make_trainer(
            epochs=8,
            monitor="val_score",
            mode="min",
            callbacks=[Score(), EarlyStopping(patience=2), Checkpointing(tmp_path)],
        )

    straight = make()
    straight.fit()
    assert straight.epoch == 5 and "early stopping" in straight.stop_reason

    killed = make()
    killed.callbacks.insert(0, StopAfter(4))  # killed after epoch 4's checkpoint
    killed.fit()
    assert killed.epoch == 4
    resumed = make()
    resumed.load_state_dict(load_checkpoint(tmp_path / "last.pt"))
    resumed.fit()
    assert (
        resumed.epoch == 5 and "early stopping" in resumed.stop_reason
    )  # not 6: the counter was saved
    assert_bit_identical(weights(straight.module), weights(resumed.module))
    assert resumed.history == straight.history


def test_checkpointing_runs_after_every_other_callback():
    order = []

    class Note(Callback):
        def __init__(self, name):
            self.name = name

        def on_epoch_end(self, trainer, logs):
            order.append(self.name)

    class LateCheckpoint(Note):
        order = 100

    t = make_trainer(epochs=1, callbacks=[LateCheckpoint("checkpoint"), Note("a"), Note("b")])
    t.fit()
    assert order == ["a", "b", "checkpoint"]


def test_callbacks_see_the_true_mean_loss_of_an_accumulated_step():
    x, y = blob_data(n=64)

    def first_step_loss(batch, accum):
        seen = []

        class Record(Callback):
            def on_step_end(self, trainer, loss):
                seen.append(loss.item())

        seed_everything(0)
        model = tiny_mlp(dropout=0.0)
        loader = fast_loader(x, y, batch_size=batch, seed=1)
        loader.shuffle = False
        Trainer(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            loader,
            epochs=1,
            grad_accum=accum,
            callbacks=[Record()],
        ).fit()
        return seen[0]

    whole = first_step_loss(32, 1)
    assert first_step_loss(16, 2) == pytest.approx(whole, rel=1e-6)  # not whole / 2
    assert first_step_loss(8, 4) == pytest.approx(whole, rel=1e-6)
