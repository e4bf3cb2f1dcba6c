"""checkpoint-project on a full disk: `explain` leaves no partial PNG and no temp file, one line."""

import errno
import os
import threading

from test_explain_project import photo, trained  # noqa: F401 - the trained fixture

from checkpoint_project.cli import main


def test_explain_on_a_full_disk_leaves_no_partial_png(trained, tmp_path, monkeypatch, capsys):  # noqa: F811
    image = photo(tmp_path / "cat.png")
    out = tmp_path / "maps"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("labs_core.checkpoint.os.fsync", full)
    argv = [
        "explain",
        "--checkpoint",
        str(trained / "checkpoints" / "best.pt"),
        str(image),
        "--out",
        str(out),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot write {out / 'cat.explain.png'}: no space left on device" in err
    assert not out.exists() or list(out.iterdir()) == []  # no partial PNG, no temp file


def run_briefly(argv, seconds=120):
    """``main(argv)`` in a thread, failing the test (rather than hanging it) if it blocks."""
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("code", main(argv)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked"
    return box["code"]


def test_a_fifo_given_as_an_image_model_or_output_never_blocks(trained, tmp_path, capsys):  # noqa: F811
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    best = str(trained / "checkpoints" / "best.pt")
    good = photo(tmp_path / "good.png")
    assert run_briefly(["predict", "--checkpoint", best, str(good), str(fifo)]) == 2
    out, err = capsys.readouterr()
    assert (
        out.startswith(str(good))
        and "a FIFO (named pipe), not a regular file" in err
        and err.count("\n") == 1
    )
    assert (
        run_briefly(["explain", "--checkpoint", best, str(fifo), "--out", str(tmp_path / "maps")])
        == 2
    )
    assert f"{fifo} is a FIFO (named pipe), not an image file" in capsys.readouterr().err
    onnx = tmp_path / "model.onnx"
    os.mkfifo(onnx)
    assert run_briefly(["export", "--checkpoint", best, "--out", str(onnx)]) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert run_briefly(["predict", "--checkpoint", str(fifo), str(good)]) == 2
    assert "not a regular file" in capsys.readouterr().err
