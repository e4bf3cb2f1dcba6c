"""The run directory's guard (``labs_core.rundir``): a finished run is never overwritten unless
``--overwrite`` says so, two runs never write into one folder, and the lock goes with the run."""

import os
import subprocess
import sys

import pytest
from test_cli import main

from labs_core import LabError, load_checkpoint
from labs_core.rundir import LOCK_NAME, RunDirLock


def run(*argv):
    return main([*argv, "--quiet", "--lr", "0.01"])


def snapshot(folder):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def finished(tmp_path):
    out = tmp_path / "run"
    assert run("--out", str(out), "--epochs", "1") == 0
    return out


def test_a_second_run_into_a_finished_run_is_refused_and_changes_nothing(finished, capsys):
    before = snapshot(finished)
    capsys.readouterr()
    assert run("--out", str(finished), "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a run" in err and "--overwrite" in err
    assert snapshot(finished) == before


def test_overwrite_replaces_the_old_run_without_mixing_them(finished, capsys):
    import matplotlib.pyplot as plt

    from labs_core.plots import save_figure

    save_figure(plt.figure(figsize=(1, 1)), finished / "stale_figure.png")  # a figure a run wrote
    (finished / "photo.png").write_bytes(b"\x89PNG mine")  # the user's own files
    (finished / "notes.md").write_text("mine")
    (finished / "notes.txt").write_text("mine too")
    assert run("--out", str(finished), "--epochs", "2", "--overwrite") == 0
    assert len((finished / "metrics.jsonl").read_text().splitlines()) == 2  # this run's epochs only
    assert len(list((finished / "tb").glob("events.out.tfevents.*"))) == 1  # one TensorBoard file
    assert not (finished / "stale_figure.png").exists()  # the old run's figures go too
    assert (finished / "notes.md").read_text() == "mine"  # what is not a run's file stays
    assert (finished / "notes.txt").read_text() == "mine too"
    assert (finished / "photo.png").read_bytes() == b"\x89PNG mine"
    assert load_checkpoint(finished / "checkpoints" / "last.pt")["epoch"] == 2
    assert not (finished / LOCK_NAME).exists()


def test_resume_continues_and_overwrite_with_it_is_refused(finished, capsys):
    assert run("--out", str(finished), "--epochs", "2", "--resume") == 0
    before = snapshot(finished)
    assert run("--out", str(finished), "--epochs", "3", "--resume", "--overwrite") == 2
    assert "give one of them" in capsys.readouterr().err
    assert snapshot(finished) == before


def test_out_naming_a_file_is_one_line(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("keep")
    assert run("--out", str(f), "--epochs", "1") == 2
    assert run("--out", str(f / "run"), "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "is a file, not a folder" in err and "Traceback" not in err
    assert f.read_text() == "keep"


def test_a_run_in_progress_holds_the_folder(tmp_path, capsys):
    """A lock held by a live process refuses the second run before it writes; once that process is
    gone its lock is stale and taken over."""
    out = tmp_path / "run"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(f"{proc.pid} {os.uname().nodename}\n")
        assert run("--out", str(out), "--epochs", "1") == 2
        err = capsys.readouterr().err
        assert (
            err.count("\n") == 1 and "in use by another run" in err and f"process {proc.pid}" in err
        )
        assert [p.name for p in out.iterdir()] == [LOCK_NAME]
    finally:
        proc.kill()
        proc.wait()
    assert run("--out", str(out), "--epochs", "1") == 0  # the lock's process is dead: taken over
    assert not (out / LOCK_NAME).exists()


def test_the_lock_is_released_on_ctrl_c(tmp_path, monkeypatch, capsys):
    from labs_core.trainer import Trainer

    def interrupted(self):
        assert (out / LOCK_NAME).is_file()  # held while training
        raise KeyboardInterrupt

    out = tmp_path / "run"
    monkeypatch.setattr(Trainer, "fit", interrupted)
    assert run("--out", str(out), "--epochs", "1") == 130
    assert not (out / LOCK_NAME).exists()


def test_one_lock_per_folder(tmp_path):
    with RunDirLock(tmp_path / "run"), pytest.raises(LabError, match="in use by another run"):
        RunDirLock(tmp_path / "run").acquire()
    with RunDirLock(tmp_path / "run"):  # released: free again
        pass
