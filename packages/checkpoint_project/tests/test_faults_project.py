"""checkpoint-project on a full disk: `explain` leaves no partial PNG and no temp file, one line."""

import errno

from test_explain_project import photo, trained  # noqa: F401 - the trained fixture

from checkpoint_project.cli import main


def test_explain_on_a_full_disk_leaves_no_partial_png(trained, tmp_path, monkeypatch, capsys):  # noqa: F811
    image = photo(tmp_path / "cat.png")
    out = tmp_path / "maps"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("labs_core.checkpoint.os.fsync", full)
    argv = ["explain", "--checkpoint", str(trained / "checkpoints" / "best.pt"), str(image), "--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot write {out / 'cat.explain.png'}: no space left on device" in err
    assert not out.exists() or list(out.iterdir()) == []  # no partial PNG, no temp file
