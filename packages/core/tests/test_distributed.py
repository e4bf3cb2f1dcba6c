"""Data parallelism under torchrun: two CPU processes (gloo), seconds each."""

import os
import subprocess
import textwrap
import time

import pytest
import torch

from labs_core import Trainer, seed_everything
from labs_core.checkpoint import load_checkpoint
from labs_core.data import FastLoader
from labs_core.testing import check_launch, failure_report, launch

from core_testutils import blob_data, tiny_mlp

pytestmark = pytest.mark.slow  # each test launches two processes

COMMON = """
import sys, time
import torch
sys.path.insert(0, {tests!r})
from core_testutils import blob_data, tiny_mlp
from labs_core import Callback, Trainer, seed_everything, distributed
from labs_core.callbacks import Checkpointing
from labs_core.checkpoint import load_checkpoint
from labs_core.data import FastLoader
torch.set_num_threads(1)
info, device = distributed.init(torch.device("cpu"), timeout_s={timeout})
out = {out!r}

def make(batch, epochs, dropout, callbacks=(), shuffle_seed=0, sharded=False, bn=False,
         grad_accum=1, val_batch=32, val_n=96):
    seed_everything(0)
    x, y = blob_data(n=96)
    model = tiny_mlp(dropout=dropout, bn=bn)
    if sharded:
        from labs_core import fsdp
        fsdp.shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = FastLoader(x, y, batch, seed=shuffle_seed, augment=True, pad=1, mean=(0.5,),
                        std=(0.25,), rank=info.rank, world=info.world)
    return Trainer(model, opt, loader,
                   FastLoader(x[:val_n], y[:val_n], val_batch, shuffle=False, mean=(0.5,),
                              std=(0.25,), rank=info.rank, world=info.world),
                   epochs=epochs, callbacks=list(callbacks), grad_accum=grad_accum)
"""


def torchrun(
    tmp_path, body: str, nproc: int = 2, timeout: float = 600, pg_timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``body`` in two processes. The process-group timeout is the runs' own default (300 s):
    on a busy machine a process can wait on a starved peer, or on one still importing torch, for
    much longer than 30 s, and a timed-out collective is an error (only the stuck-rank test, which
    is about that error, shortens it)."""
    script = tmp_path / "job.py"
    tests = os.path.dirname(__file__)
    # Leave together: a process that exits while its peer still talks to it can abort the peer.
    # First the trainers go (their DDP reducers hold the process group and threads of their own):
    # destroyed after the group, at the interpreter's exit, one aborted a rank with "terminate
    # called without an active exception" (SIGABRT) after its work was done.
    ending = (
        "\nimport gc\n"
        "for _name in [k for k, v in list(globals().items()) if isinstance(v, Trainer)]:\n"
        "    del globals()[_name]\n"
        "gc.collect()\n"
        "distributed.barrier()\n"
        "distributed.shutdown()\n"
    )
    script.write_text(
        COMMON.format(tests=tests, out=str(tmp_path), timeout=pg_timeout)
        + textwrap.dedent(body)
        + ending
    )
    return launch(
        [str(script)], nproc=nproc, timeout=timeout
    )  # each rank's output kept: check_launch


def test_two_processes_agree_and_match_one_process_with_double_batch(tmp_path):
    r = torchrun(
        tmp_path,
        """
        t = make(batch=8, epochs=2, dropout=0.0)
        logs = t.fit()[-1]
        torch.save({"model": t.module.state_dict(), "logs": logs}, f"{out}/rank{info.rank}.pt")
    """,
    )
    check_launch(r)
    a, b = (torch.load(tmp_path / f"rank{i}.pt") for i in (0, 1))
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k  # both ranks end with identical weights
    assert (
        a["logs"] == b["logs"]
    )  # metrics are averaged across ranks: every rank logs the same numbers

    # One process with batch 16 sees, at every step, the union of the two ranks' batches of 8.
    seed_everything(0)
    x, y = blob_data(n=96)
    model = tiny_mlp(dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = FastLoader(x, y, 16, seed=0, augment=True, pad=1, mean=(0.5,), std=(0.25,))
    Trainer(model, opt, loader, epochs=2).fit()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, a["model"][k], rtol=1e-5, atol=1e-6)


def test_stopped_and_resumed_two_process_run_equals_unbroken_run(tmp_path):
    r = torchrun(
        tmp_path,
        """
        straight = make(batch=8, epochs=4, dropout=0.3)
        straight.fit()

        class StopAfter2(Callback):
            def on_epoch_end(self, trainer, logs):
                if trainer.epoch == 2:
                    trainer.should_stop = True

        first = make(batch=8, epochs=4, dropout=0.3,
                     callbacks=[Checkpointing(out if info.is_main else None), StopAfter2()])
        first.fit()
        distributed.barrier()
        resumed = make(batch=8, epochs=4, dropout=0.3)
        torch.manual_seed(1000 + info.rank)  # whatever happened since: the checkpoint must win
        resumed.load_state_dict(load_checkpoint(f"{out}/last.pt"))
        resumed.fit()
        same = all(torch.equal(a, b) for a, b in zip(straight.module.state_dict().values(),
                                                    resumed.module.state_dict().values()))
        open(f"{out}/same{info.rank}.txt", "w").write(str(same))
    """,
    )
    check_launch(r)
    assert (tmp_path / "same0.txt").read_text() == "True" and (
        tmp_path / "same1.txt"
    ).read_text() == "True"
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert not any(k.startswith("module.") for k in ckpt["model"])  # no DDP prefix leaks
    assert len(ckpt["rng_per_rank"]) == 2

    # The 2-process checkpoint resumes in a single process too.
    seed_everything(0)
    x, y = blob_data(n=96)
    model = tiny_mlp(dropout=0.3)
    t = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        FastLoader(x, y, 16, seed=0, mean=(0.5,), std=(0.25,)),
        epochs=3,
    )
    t.load_state_dict(ckpt)
    assert t.epoch == 2
    t.fit()
    assert t.epoch == 3


def test_a_stuck_rank_stops_the_whole_run_with_a_clear_message(tmp_path):
    start = time.perf_counter()
    r = torchrun(
        tmp_path,
        """
        from dataclasses import dataclass
        from torch import nn
        from labs_core import RunConfig
        from labs_core.cli import Guard
        from labs_core.experiment import run_classifier

        @dataclass
        class Cfg(RunConfig):
            lab = "demo"

        class Stuck(Callback):
            def on_step_end(self, trainer, loss):
                if info.rank == 1 and trainer.global_step == 3:
                    time.sleep(120)  # a rank that stops answering

        cfg = Cfg(dataset="synthetic", image_size=8, epochs=2, quiet=True, out=out + "/run",
                  dist_timeout=4)
        build = lambda d: nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, d.num_classes))
        with Guard("demo") as guard:
            run_classifier(cfg, build, callbacks=[Stuck()])
        sys.exit(guard.code)
    """,
        timeout=100,
        pg_timeout=4,
    )
    assert r.returncode != 0
    assert time.perf_counter() - start < 60  # stopped by the process-group timeout, not hung
    assert "demo: error: rank 0: another process failed or did not answer within 4 s" in r.stderr


def test_a_rank_that_fails_leaves_the_group_and_is_reported_in_its_own_words(tmp_path):
    """A rank whose job raises ends with exit code 1, having left the process group at exit
    (``distributed.init`` registers it), not with a SIGABRT in the interpreter's finalisation;
    the report leads with a failing rank's own traceback, whatever else torchrun printed."""
    r = torchrun(
        tmp_path,
        """
        # in flight when it fails
        work = torch.distributed.all_reduce(torch.ones(1000), async_op=True)
        if info.rank == 1:
            raise ValueError("rank one's own error")
        work.wait()
    """,
        pg_timeout=20,
    )
    assert r.returncode != 0 and "SIGABRT" not in r.stderr
    report = failure_report(r)
    assert "ValueError: rank one's own error" in report and "rank 1's own output" in report


def test_accumulation_under_two_processes_equals_one_process_with_the_whole_batch(tmp_path):
    """k micro-batches of b on each of 2 processes = one step on 2*k*b samples; the non-final
    micro-batches skip DDP's all-reduce (``no_sync``)."""
    r = torchrun(
        tmp_path,
        """
        from torch.nn.parallel import DistributedDataParallel as DDP
        calls = []
        original = DDP.no_sync
        def counting(self):
            calls.append(1)
            return original(self)
        DDP.no_sync = counting
        seed_everything(0)
        x, y = blob_data(n=96)
        model = tiny_mlp(dropout=0.0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        loader = FastLoader(x, y, 4, seed=0, augment=True, pad=1, mean=(0.5,), std=(0.25,),
                            rank=info.rank, world=2)
        t = Trainer(model, opt, loader, epochs=2, grad_accum=3)
        t.fit()
        torch.save({"model": t.module.state_dict(), "no_sync": len(calls), "steps": t.global_step},
                   f"{out}/rank{info.rank}.pt")
    """,
    )
    check_launch(r)
    a = torch.load(tmp_path / "rank0.pt")
    assert (
        a["steps"] == 8 and a["no_sync"] == 8 * 2
    )  # 8 steps of 3 micro-batches: 2 of each skip the sync
    seed_everything(0)
    x, y = blob_data(n=96)
    model = tiny_mlp(dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    Trainer(
        model,
        opt,
        FastLoader(x, y, 24, seed=0, augment=True, pad=1, mean=(0.5,), std=(0.25,)),
        epochs=2,
    ).fit()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, a["model"][k], rtol=1e-5, atol=1e-6)


def test_sharded_fsdp_training_equals_ddp_and_its_checkpoints_cross_process_counts(tmp_path):
    """--fsdp: the same steps as DDP (accumulation, dropout, batch norm, validation slices of
    unequal length), one checkpoint format both ways: a one-process checkpoint continues sharded
    over two processes as under DDP, and a sharded two-process checkpoint continues in one
    process."""
    seed_everything(0)
    x, y = blob_data(n=96)
    model = tiny_mlp(dropout=0.3, bn=True)
    single = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        FastLoader(x, y, 16, seed=0, augment=True, pad=1, mean=(0.5,), std=(0.25,)),
        epochs=1,
    )
    single.fit()
    torch.save(single.state_dict(), tmp_path / "single.pt")
    r = torchrun(
        tmp_path,
        """
        # 91 validation rows: 46 and 45 per process, in 10 and 9 batches of 5
        kw = dict(batch=8, epochs=2, dropout=0.3, bn=True, grad_accum=2, val_batch=5, val_n=91)
        ddp = make(**kw)  # each made just before its fit: make seeds, fit draws dropout masks
        ddp.fit()
        sharded = make(**kw, callbacks=[Checkpointing(out if info.is_main else None)], sharded=True)
        sharded.fit()
        from_single = {}
        for name in ("ddp", "sharded"):
            t = make(batch=8, epochs=2, dropout=0.3, bn=True, sharded=name == "sharded")
            t.load_state_dict(load_checkpoint(f"{out}/single.pt"))
            t.fit()
            from_single[name] = t.state_dict()["model"]
        if info.is_main:
            torch.save({"ddp": ddp.history, "sharded": sharded.history,
                        "ddp_model": ddp.module.state_dict(),
                        "sharded_model": sharded.state_dict()["model"], "from_single": from_single},
                       f"{out}/runs.pt")
        else:
            sharded.state_dict()  # the gathers are collectives: every process takes part
    """,
    )
    check_launch(r)
    runs = torch.load(tmp_path / "runs.pt")
    for a, b in zip(runs["ddp"], runs["sharded"], strict=True):
        for key in (
            "train_loss",
            "train_acc",
            "grad_norm",
            "val_loss",
            "val_acc",
        ):  # batch norm's statistics too
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    for k, v in runs["ddp_model"].items():  # rank 0's weights and batch-norm statistics
        torch.testing.assert_close(runs["sharded_model"][k], v, rtol=1e-4, atol=1e-5)
    for k, v in runs["from_single"]["ddp"].items():
        torch.testing.assert_close(runs["from_single"]["sharded"][k], v, rtol=1e-4, atol=1e-5)

    ckpt = load_checkpoint(tmp_path / "last.pt")  # written by the sharded run: a plain checkpoint
    assert list(ckpt["model"]) == list(runs["ddp_model"]) and len(ckpt["rng_per_rank"]) == 2
    model = tiny_mlp(dropout=0.3, bn=True)
    t = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        FastLoader(x, y, 16, seed=0, mean=(0.5,), std=(0.25,)),
        epochs=3,
    )
    t.load_state_dict(ckpt)
    assert t.epoch == 2 and t.optimizer.state_dict()["state"][0]["momentum_buffer"].shape == (
        32,
        16,
    )
    t.fit()
    assert t.epoch == 3
