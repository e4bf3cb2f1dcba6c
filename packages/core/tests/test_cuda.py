"""CUDA-only checks: run on a GPU machine (skipped elsewhere). CI has no GPU; these run when one is
lent."""

import pytest
import torch

from labs_core import Precision, Trainer, seed_everything
from labs_core.callbacks import Checkpointing
from labs_core.checkpoint import load_checkpoint
from labs_core.data import FastLoader

from core_testutils import blob_data, tiny_mlp

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def cuda_trainer(precision="fp32", epochs=3, callbacks=(), seed=0):
    seed_everything(seed, deterministic=True)
    x, y = blob_data(n=512, shape=(1, 8, 8))
    model = tiny_mlp(in_features=64, dropout=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    loader = FastLoader(
        x, y, 64, device="cuda", seed=seed, augment=True, pad=1, mean=(0.5,), std=(0.25,)
    )
    return Trainer(
        model,
        opt,
        loader,
        FastLoader(x, y, 256, device="cuda", shuffle=False, mean=(0.5,), std=(0.25,)),
        device="cuda",
        precision=Precision(precision, torch.device("cuda")),
        epochs=epochs,
        callbacks=list(callbacks),
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_precisions_train_on_cuda(precision):
    t = cuda_trainer(precision)
    logs = t.fit()[-1]
    assert logs["val_acc"] > 0.6
    if precision == "fp16":
        assert logs["loss_scale"] > 0 and "skipped_steps" in logs
    assert next(t.wrapped.parameters()).is_cuda


def test_fast_loader_batches_live_on_the_gpu():
    x, y = blob_data(n=100)
    xb, yb = next(
        iter(
            FastLoader(
                x, y, 32, device="cuda", augment=True, pad=1, flip=True, mean=(0.5,), std=(0.25,)
            )
        )
    )
    assert xb.is_cuda and yb.is_cuda and xb.dtype == torch.float32


def test_deterministic_resume_on_cuda_is_bit_identical(tmp_path):
    straight = cuda_trainer(epochs=4)
    straight.fit()

    class Stop(Checkpointing):
        def on_epoch_end(self, trainer, logs):
            super().on_epoch_end(trainer, logs)
            if trainer.epoch == 2:
                trainer.should_stop = True

    first = cuda_trainer(epochs=4, callbacks=[Stop(tmp_path)])
    first.fit()
    resumed = cuda_trainer(epochs=4)
    resumed.load_state_dict(load_checkpoint(tmp_path / "last.pt", map_location="cuda"))
    resumed.fit()
    for a, b in zip(
        straight.module.state_dict().values(), resumed.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_peak_memory_reports_the_cuda_allocator():
    from labs_core.memory import peak_memory, reset_peak

    device = torch.device("cuda")
    reset_peak(device)
    block = torch.ones(64 * 2**20 // 4, device=device)  # 64 MiB
    peak = peak_memory(device)
    del block
    assert set(peak) == {"cpu_peak_rss_mib", "cuda_allocated_mib", "cuda_reserved_mib"}
    assert 64 <= peak["cuda_allocated_mib"] <= peak["cuda_reserved_mib"]


def test_batch_finder_catches_a_real_out_of_memory_and_bisects():
    """A real torch.cuda.OutOfMemoryError: the process may use only 256 MiB of the GPU; a probe of n
    needs about 2n MiB (its batch and the step's result)."""
    from labs_core import batch_finder

    device = torch.device("cuda")
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(
        256 * 2**20 / torch.cuda.get_device_properties(device).total_memory
    )
    try:

        def make(n):
            return torch.ones(n, 2**20 // 4, device=device)  # n MiB

        def step(batch):
            return (batch * 2).sum()

        probes = batch_finder.search(
            lambda n: batch_finder.measure(n, make, step, device, None), 4096
        )
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    largest, _ = batch_finder.suggestion(probes)
    assert 64 <= largest < 256
    assert any(p.note == "out of memory" for p in probes) and all(
        p.fits == (p.batch_size <= largest) for p in probes
    )
    assert all(p.peak_mib <= 256 for p in probes if p.fits)
    torch.ones(2**20, device=device).sum().item()  # the GPU is usable afterwards
