"""Faults of the machine, each ending in one line: a full or read-only disk, SIGTERM, a kill during
a write, a run stopped before its first epoch, a read-only data folder, a FIFO or device as a data
file, out of memory (``labs_core.faults``, ``labs_core.fits``, ``labs_core.files``)."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_cli import main

from labs_core import LabError, faults, fits, load_checkpoint
from labs_core.checkpoint import atomic_write_bytes, atomic_write_file, save_checkpoint
from labs_core.data import cache as cache_module
from labs_core.data.idx import write_idx
from labs_core.data.mnist import load_mnist_family
from labs_core.data.text import read_text
from labs_core.plots import plot_curves
from labs_core.rundir import LOCK_NAME, RUN_MARKERS, clear_leftovers

ROOT = Path(__file__).resolve().parents[3]


def run(out, *argv):
    return main(["--out", str(out), "--quiet", "--lr", "0.01", *argv])


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name == LOCK_NAME]


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- a full or read-only disk
def failing_save(monkeypatch, fail_on: int, exc: BaseException, free: int | None = None):
    """torch.save that, from its ``fail_on``-th call, writes part of the file and raises ``exc``
    (what a disk that fills up mid-write does)."""
    real = torch.save
    calls = []

    def save(obj, f, *a, **kw):
        calls.append(1)
        if len(calls) >= fail_on:
            f.write(b"PK\x03\x04 half a checkpoint")
            raise exc
        return real(obj, f, *a, **kw)

    monkeypatch.setattr("labs_core.checkpoint.torch.save", save)
    if free is not None:
        monkeypatch.setattr(
            "labs_core.faults.shutil.disk_usage", lambda p: SimpleNamespace(free=free)
        )


@pytest.mark.parametrize(
    "exc, free, says",
    [
        (OSError(errno.ENOSPC, "No space left on device"), None, "no space left on device"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), None, "disk quota exceeded"),
        (OSError(errno.EROFS, "Read-only file system"), None, "read-only file system"),
        (
            RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0"),
            0,
            "no space left",
        ),
        (
            RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
            1 << 30,
            "part-way",
        ),
    ],
)
def test_a_checkpoint_write_that_fails_is_one_line_and_keeps_the_last_good_one(
    tmp_path, monkeypatch, capsys, exc, free, says
):
    out = tmp_path / "run"
    failing_save(
        monkeypatch, 3, exc, free
    )  # epoch 1 writes last.pt and best.pt; epoch 2's last.pt fails
    assert run(out, "--epochs", "3") == faults.FAULT_EXIT
    err = one_line(capsys.readouterr().err)
    assert says in err and f"cannot write {out / 'checkpoints' / 'last.pt'}" in err
    assert "the previous last.pt is kept" in err
    assert leftovers(out) == []  # no temp file, no lock
    monkeypatch.undo()
    assert (
        load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1
    )  # the last good one, whole
    assert run(out, "--epochs", "3", "--resume") == 0  # and the run goes on from it


def test_every_writer_is_atomic_a_failed_figure_leaves_no_partial_png(tmp_path, monkeypatch):
    path = tmp_path / "curves.png"
    history = [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}]
    plot_curves(history, path)
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("labs_core.checkpoint.os.fsync", full)
    with pytest.raises(
        faults.MachineFault, match="no space left on device; the previous curves.png is kept"
    ):
        plot_curves(history * 2, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "curves.png"
    ]
    with pytest.raises(faults.MachineFault):
        plot_curves(history, tmp_path / "new.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]  # nothing half-written


def test_metrics_jsonl_and_reports_are_written_whole(tmp_path, monkeypatch):
    """metrics.jsonl is rewritten atomically each epoch: a disk full at epoch 2 leaves epoch 1's
    lines, whole; the confusion-matrix report and figures are atomic too."""
    out = tmp_path / "run"
    real = atomic_write_bytes
    seen = []

    def spy(path, write):
        seen.append(Path(path).name)
        if (
            Path(path).name == "metrics.jsonl" and seen.count("metrics.jsonl") == 3
        ):  # history, epoch 1, epoch 2
            raise faults.MachineFault(f"cannot write {path}: no space left on device")
        return real(path, write)

    monkeypatch.setattr("labs_core.callbacks.atomic_write_bytes", spy)
    assert run(out, "--epochs", "2") == faults.FAULT_EXIT
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1]
    monkeypatch.undo()
    real_file = atomic_write_file
    monkeypatch.setattr(
        "labs_core.checkpoint.atomic_write_file",
        lambda p, w: (seen.append(Path(p).name), real_file(p, w)),
    )
    assert run(tmp_path / "whole", "--epochs", "1") == 0
    assert {"confusion_matrix.txt", "confusion_matrix.png", "summary.json", "config.json"} <= set(
        seen
    )


def test_a_lock_that_cannot_be_written_is_not_left_behind(tmp_path, monkeypatch):
    from labs_core.rundir import RunDirLock

    real = os.fdopen

    def full(fd, mode="r", *a, **kw):
        f = real(fd, mode, *a, **kw)
        f.write = lambda s: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
        return f

    monkeypatch.setattr("labs_core.rundir.os.fdopen", full)
    with pytest.raises(OSError):
        RunDirLock(tmp_path / "run").acquire()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_fault_lines_for_errors_raised_outside_the_atomic_writers():
    line, code = faults.fault_line(OSError(errno.ENOSPC, "No space left on device"))
    assert line == "no space left on device" and code == 1
    line, code = faults.fault_line(OSError(errno.EACCES, "Permission denied", "x.txt"))
    assert line == "x.txt: Permission denied" and code == 2
    assert faults.fault_line(ValueError("a bug")) is None  # a bug is shown whole
    assert faults.fault_line(OSError(errno.EPIPE, "Broken pipe")) is None


# ---------------------------------------------------------------- SIGTERM and kills
SLOW_RUN = """
import sys, time
sys.path.insert(0, {tests!r})
from labs_core.callbacks import Clock
Clock.on_step_end = lambda self, trainer, loss: time.sleep(0.02)
from test_cli import main
sys.exit(main(["--out", {out!r}, "--epochs", "500", "--quiet", "--lr", "0.01"]))
"""


def start_slow_run(out: Path) -> subprocess.Popen:
    script = SLOW_RUN.format(tests=str(Path(__file__).parent), out=str(out))
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_sigterm_ends_a_run_like_ctrl_c(tmp_path):
    out = tmp_path / "run"
    proc = start_slow_run(out)
    try:
        wait_for(out / "checkpoints" / "last.pt", proc)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143
    assert one_line(err) == "demo: terminated (SIGTERM)\n"
    assert leftovers(out) == []  # the lock released, no stray temp file in checkpoints/
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] >= 1


def test_a_signal_during_an_atomic_write_waits_until_the_file_is_whole(tmp_path):
    path = tmp_path / "last.pt"
    state = {"model": {"w": torch.arange(1000.0)}}

    def write(f):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-write
        torch.save(state, f)

    with faults.signals_raise(), pytest.raises(faults.Terminated):
        atomic_write_bytes(path, write)
    assert torch.equal(load_checkpoint(path)["model"]["w"], state["model"]["w"])
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert (
        signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    )  # the handler is gone with the command


def test_an_ignored_signal_stays_ignored(monkeypatch):
    monkeypatch.setattr(
        signal,
        "getsignal",
        lambda sig: (
            signal.SIG_IGN
            if sig == signal.SIGHUP
            else signal.default_int_handler
            if sig == signal.SIGINT
            else signal.SIG_DFL
        ),
    )
    installed = []
    monkeypatch.setattr(signal, "signal", lambda sig, handler: installed.append(sig))
    with faults.signals_raise():  # under nohup: SIGHUP is not made to stop the run
        assert signal.SIGHUP not in installed and {signal.SIGINT, signal.SIGTERM} <= set(installed)


def test_a_resume_clears_the_temp_files_of_a_killed_write(tmp_path):
    out = tmp_path / "run"
    assert run(out, "--epochs", "1") == 0
    killed = [out / "checkpoints" / ".last.pt.k1ll3d.tmp", out / ".metrics.jsonl.k1ll3d.tmp"]
    for path in killed:
        path.write_bytes(b"PK half")
    (out / "checkpoints" / "notes.tmp").write_text("mine")  # not an atomic write's: kept
    assert run(out, "--epochs", "2", "--resume") == 0
    assert not any(p.exists() for p in killed) and (out / "checkpoints" / "notes.tmp").exists()
    assert clear_leftovers(out) == []


# ---------------------------------------------------------------- stopped before the first epoch
def test_a_non_finite_loss_before_the_first_epoch_leaves_nothing_that_blocks_the_retry(
    tmp_path, monkeypatch, capsys
):
    from labs_core.trainer import ClassificationLoss

    real = ClassificationLoss.__call__
    monkeypatch.setattr(
        ClassificationLoss,
        "__call__",
        lambda self, logits, batch: {
            **real(self, logits, batch),
            "loss": logits.sum() * float("nan"),
        },
    )
    out = tmp_path / "run"
    assert run(out, "--epochs", "2") == 2
    err = one_line(capsys.readouterr().err)
    assert "loss became nan" in err and "last good checkpoint: none yet" in err
    assert not any((out / name).exists() for name in RUN_MARKERS) and leftovers(out) == []
    monkeypatch.undo()
    assert run(out, "--epochs", "1") == 0  # the retry is not refused as "already holds a run"


def test_an_interrupt_before_the_first_epoch_leaves_nothing_but_keeps_an_earlier_run(
    tmp_path, monkeypatch
):
    from labs_core.trainer import Trainer

    def stopped(self):
        raise faults.Terminated(signal.SIGTERM)

    out = tmp_path / "run"
    monkeypatch.setattr(Trainer, "fit", stopped)
    assert run(out, "--epochs", "1") == 143
    assert not any((out / name).exists() for name in RUN_MARKERS)
    monkeypatch.undo()
    assert run(out, "--epochs", "1") == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    monkeypatch.setattr(Trainer, "fit", stopped)
    assert run(out, "--epochs", "2", "--resume") == 143  # a run with a checkpoint: nothing removed
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


# ---------------------------------------------------------------- a read-only data folder
def write_mnist(folder: Path, n: int = 20) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for split, count in (("train", n), ("t10k", n // 2)):
        write_idx(
            folder / f"{split}-images-idx3-ubyte",
            rng.integers(0, 255, (count, 28, 28), dtype=np.uint8),
        )
        write_idx(
            folder / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, (count,), dtype=np.uint8)
        )


def test_a_read_only_data_folder_caches_in_the_users_cache_folder(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_mnist(data / "mnist")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    real = cache_module._writable
    # tests run as root, whom chmod does not stop: the data folder answers as a read-only one would
    monkeypatch.setattr(
        cache_module, "_writable", lambda folder: not folder.is_relative_to(data) and real(folder)
    )
    first = load_mnist_family("mnist", data, download=False)
    assert not (data / ".cache").exists()
    entries = list((tmp_path / "xdg" / "pytorch-labs").rglob("*.pt"))
    assert len(entries) == 1 and entries[0].parent.name.startswith("data-")
    again = load_mnist_family("mnist", data, download=False)  # read back from there
    assert torch.equal(first.train[0], again.train[0])
    assert len(list((tmp_path / "xdg").rglob("*.pt"))) == 1


def test_writable_is_tried_not_guessed(tmp_path):
    (tmp_path / "file").write_text("x")
    assert (
        cache_module._writable(tmp_path / "new" / "cache") and (tmp_path / "new" / "cache").is_dir()
    )
    assert not cache_module._writable(tmp_path / "file" / "cache")  # cannot be made


def test_no_writable_cache_folder_at_all_still_loads(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    write_mnist(data / "mnist")
    monkeypatch.setattr(cache_module, "_writable", lambda folder: False)
    assert len(load_mnist_family("mnist", data, download=False).train[0]) == 20
    assert "no writable cache folder" in capsys.readouterr().err


def test_a_cache_the_disk_refuses_costs_only_the_speed_up(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    write_mnist(data / "mnist")

    def full(path, write):
        raise faults.MachineFault(f"cannot write {path}: no space left on device")

    monkeypatch.setattr(cache_module, "atomic_write_bytes", full)
    assert len(load_mnist_family("mnist", data, download=False).train[0]) == 20
    assert "continuing without it" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="a bind mount needs root")
def test_a_real_read_only_bind_mount_when_the_machine_allows_one(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_mnist(data / "mnist")
    mounted = subprocess.run(
        ["mount", "--bind", "-o", "ro", str(data), str(data)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("no bind mounts here (a container without CAP_SYS_ADMIN)")
    try:
        subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(data)], check=False, capture_output=True
        )
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert len(load_mnist_family("mnist", data, download=False).train[0]) == 20
        assert list((tmp_path / "xdg").rglob("*.pt"))
    finally:
        subprocess.run(["umount", str(data)], check=False)


# ---------------------------------------------------------------- FIFOs and devices
def returns_quickly(fn, seconds: float = 20):
    """``fn()``'s exception or result, failing the test (rather than hanging it) if it blocks."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["value"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked"
    return box["value"]


def test_a_fifo_or_device_as_a_data_file_is_refused_up_front(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    for read, path in (
        (read_text, fifo),
        (read_text, Path("/dev/zero")),
        (load_checkpoint, fifo),
        (lambda p: __import__("labs_core.data.idx", fromlist=["x"]).read_idx(p), Path("/dev/zero")),
    ):
        exc = returns_quickly(lambda read=read, path=path: read(path))
        assert isinstance(exc, LabError), exc
        assert "not a regular file" in str(exc) and str(path) in str(exc)
    assert "a FIFO (named pipe)" in str(returns_quickly(lambda: read_text(fifo)))
    assert "a character device" in str(returns_quickly(lambda: read_text("/dev/zero")))


def test_a_fifo_given_to_a_command_is_one_line_exit_2(tmp_path, capsys):
    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)
    code = returns_quickly(
        lambda: run(tmp_path / "run", "--dataset", "csv", "--data-dir", str(fifo))
    )
    assert code == 2
    assert "a FIFO (named pipe), not a regular file" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- out of memory
def test_a_step_that_cannot_fit_is_refused_before_the_run_directory_exists(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(fits, "headroom", lambda device: (64 << 10, "of the machine's memory"))
    out = tmp_path / "run"
    assert run(out, "--epochs", "1", "--batch-size", "64") == 2
    err = one_line(capsys.readouterr().err)
    assert "one training step needs about" in err and "more than the 64.0 KiB left" in err
    assert "--batch-size" in err and not out.exists()


def test_the_estimate_counts_what_a_step_really_adds():
    from torch import nn

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    batch = (torch.zeros(128, 1, 8, 8), torch.zeros(128, dtype=torch.long))
    need = fits.step_bytes(model, lambda m, b: m(b[0]), batch, "adam")
    params = sum(p.numel() * 4 for p in model.parameters())
    assert need["gradients"] == params and need["optimizer"] == 2 * params
    # saved for backward: the input (128x64), the hidden before and after ReLU (128x256 each), the
    # logits
    assert 128 * (64 + 256) * 4 <= need["activations"] <= 128 * (64 + 3 * 256 + 10) * 4
    for p in model[1].parameters():
        p.requires_grad_(False)  # frozen: nothing saved for its backward, no gradient, no state
    frozen = fits.step_bytes(model, lambda m, b: m(b[0]), batch, "sgd")
    assert frozen["activations"] < need["activations"] and frozen["optimizer"] == 0
    assert frozen["gradients"] == sum(p.numel() * 4 for p in model[3].parameters())


@pytest.mark.parametrize(
    "exc, says",
    [
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate"
                " memory: you tried to allocate 4000000000000 bytes. Error code 12 (Cannot allocate"
                " memory)"
            ),
            "out of memory (tried to allocate 3.6 TiB)",
        ),
        (MemoryError(), "out of memory;"),
        (
            torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.1 GiB total)"
            ),
            "out of memory (tried to allocate 20.00 GiB)",
        ),
    ],
)
def test_an_allocation_failure_during_a_run_is_one_line_and_half_writes_nothing(
    tmp_path, monkeypatch, capsys, exc, says
):
    from labs_core.trainer import ClassificationLoss

    real = ClassificationLoss.__call__
    calls = []

    def loss(self, logits, batch):
        calls.append(1)
        if len(calls) > 40:  # in the second epoch (29 training and 4 validation batches an epoch)
            raise exc
        return real(self, logits, batch)

    monkeypatch.setattr(ClassificationLoss, "__call__", loss)
    out = tmp_path / "run"
    assert run(out, "--epochs", "50") == faults.FAULT_EXIT
    err = one_line(capsys.readouterr().err)
    assert says in err and "--batch-size" in err
    assert leftovers(out) == []
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] >= 1


MEMORY_LIMITED = """
import resource, sys
sys.path.insert(0, {tests!r})
import torch
from labs_core.trainer import ClassificationLoss
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (1 << 30), resource.RLIM_INFINITY))
real = ClassificationLoss.__call__
calls = []
def loss(self, logits, batch):
    calls.append(1)
    if len(calls) == 40:  # in the second epoch (33 loss calls an epoch)
        {allocate}
    return real(self, logits, batch)
ClassificationLoss.__call__ = loss
from test_cli import main
sys.exit(main(["--out", {out!r}, "--epochs", "40", "--quiet", "--lr", "0.01"]))
"""


@pytest.mark.parametrize("allocate", ["torch.empty(1 << 34)", "bytearray(1 << 34)"])
def test_a_process_under_a_memory_limit_ends_in_one_line(tmp_path, allocate):
    """RLIMIT_AS (``ulimit -v``): the real CPU allocator's failure and Python's ``MemoryError``."""
    out = tmp_path / "run"
    script = MEMORY_LIMITED.format(
        tests=str(Path(__file__).parent), out=str(out), allocate=allocate
    )
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == faults.FAULT_EXIT, proc.stderr
    assert one_line(proc.stderr).startswith("demo: error: out of memory")
    assert leftovers(out) == []
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] >= 1


def test_save_checkpoint_fault_names_the_file(tmp_path, monkeypatch):
    failing_save(monkeypatch, 1, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(
        faults.MachineFault, match=r"cannot write .*ck\.pt: no space left on device$"
    ):
        save_checkpoint(tmp_path / "ck.pt", {"model": {}})
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 200 KiB file system (tmpfs), where the machine lets a test mount one (root with
    CAP_SYS_ADMIN); skipped elsewhere."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


def test_a_real_full_disk_is_one_line_and_keeps_what_was_written(tiny_disk, capsys):
    out = tiny_disk / "run"
    assert run(out, "--epochs", "5") == faults.FAULT_EXIT
    err = one_line(capsys.readouterr().err)
    assert "no space left on device" in err and str(out) in err
    assert leftovers(out) == []
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] >= 1


def test_a_full_disk_under_tensorboard_is_one_line_naming_its_folder(tmp_path, monkeypatch, capsys):
    from tensorboard.summary.writer import record_writer

    real = record_writer.RecordWriter.write
    writes = []

    def write(self, data):
        writes.append(1)
        if len(writes) > 30:  # past the first epoch's scalars
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", write)
    printed = []
    monkeypatch.setattr(
        threading, "excepthook", printed.append
    )  # what would print a thread's traceback
    out = tmp_path / "run"
    assert run(out, "--epochs", "20") == faults.FAULT_EXIT
    assert printed == []  # the writer thread's error is not printed: the one line says it
    err = one_line(capsys.readouterr().err)
    assert f"cannot write TensorBoard events in {out / 'tb'}: no space left on device" in err
    assert leftovers(out) == [] and load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] >= 1
