"""`course log`: dated entries appended to ./LEARNING.md, never damaging what is there."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest
from course_testutils import assert_fits

from labs_course import learnlog


def test_creates_with_heading_then_appends(course, home):
    code, out, err = course("log", "Tensor.to returns a copy;", "Module.to moves in place.")
    assert code == 0 and err == "" and "LEARNING.md" in out
    text = (home / "LEARNING.md").read_text()
    assert text.startswith("# Learning log\n")
    assert re.search(
        r"\n## \d{4}-\d{2}-\d{2} \d{2}:\d{2}\n\nTensor.to returns a copy; Module.to moves in"
        r" place.\n$",
        text,
    )
    course("log", "second")
    again = (home / "LEARNING.md").read_text()
    assert again.startswith(text) and again.count("# Learning log") == 1
    assert [body for _, body in learnlog.entries()] == [
        "Tensor.to returns a copy; Module.to moves in place.",
        "second",
    ]


def test_existing_file_is_kept(course, home):
    (home / "LEARNING.md").write_text("# My notes\n\nfree text, no newline at the end")
    assert course("log", "new")[0] == 0
    text = (home / "LEARNING.md").read_text()
    assert text.startswith("# My notes\n\nfree text, no newline at the end\n\n## ")
    assert text.endswith("\n\nnew\n") and "# Learning log" not in text


def test_prints_the_last_entries(course, home):
    code, out, _ = course("log")
    assert code == 0 and "No entries" in out
    for n in range(1, 8):
        course("log", f"entry {n}")
    code, out, _ = course("log")
    assert code == 0 and "The last 5 of 7 entries of LEARNING.md" in " ".join(out.split())
    assert "entry 3" in out and "entry 7" in out and "entry 2" not in out
    code, out, _ = course("log", "--last", "2")
    assert "entry 6" in out and "entry 7" in out and "entry 5" not in out
    assert_fits(out)


def test_unwritable_log_is_left_intact(course, home):
    os.mkdir(home / "LEARNING.md")  # not a file: cannot be opened for writing
    code, out, err = course("log", "lost")
    assert (
        code == 2
        and out == ""
        and err.startswith("course: error: cannot write")
        and err.count("\n") == 1
    )
    assert (home / "LEARNING.md").is_dir() and not os.listdir(home / "LEARNING.md")


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0, reason="root writes through permissions"
)
def test_read_only_log_is_left_intact(course, home):
    path = home / "LEARNING.md"
    path.write_text("# mine\n")
    path.chmod(0o444)
    code, _, err = course("log", "lost")
    assert code == 2 and err.count("\n") == 1
    assert path.read_text() == "# mine\n"


@pytest.mark.parametrize("partial", [False, True])
def test_failed_write_leaves_the_file_as_it_was(course, home, monkeypatch, partial):
    path = home / "LEARNING.md"
    course("log", "kept")
    before = path.read_bytes()
    real_write = os.write

    def failing_write(fd, data):
        if partial:  # half of it lands, then the disk is full
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", failing_write)
    code, _, err = course("log", "this one fails")
    assert code == 2 and err.startswith("course: error: cannot write") and "unchanged" in err
    assert err.count("\n") == 1
    assert path.read_bytes() == before


def test_failed_first_write_leaves_no_file(course, home, monkeypatch):
    monkeypatch.setattr(
        os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error"))
    )
    code, _, _ = course("log", "x")
    assert code == 2 and not (home / "LEARNING.md").exists()


def test_the_log_lives_at_the_course_root(course, home, monkeypatch):
    (home / "notebooks").mkdir()
    monkeypatch.chdir(home / "notebooks")
    code, out, _ = course("log", "from a notebook's folder")
    assert code == 0 and str(home) in " ".join(out.split())
    assert (home / "LEARNING.md").exists() and not (home / "notebooks" / "LEARNING.md").exists()
    code, out, _ = course("log")
    assert "from a notebook's folder" in out


def test_without_labs_root_the_repository_root_is_used(tmp_path, monkeypatch, capsys):
    from labs_course.cli import main

    monkeypatch.delenv("LABS_ROOT", raising=False)
    (tmp_path / "pyproject.toml").write_text('[tool.uv.workspace]\nmembers = ["packages/*"]\n')
    deep = tmp_path / "packages" / "course"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert main(["log", "at the root"]) == 0
    assert main(["quiz", "0", "--seed", "3", "--answers", ",".join(["a"] * 10)]) == 0
    capsys.readouterr()
    assert (tmp_path / "LEARNING.md").exists() and not (deep / "LEARNING.md").exists()
    assert len(list((tmp_path / "runs" / "course" / "quiz").glob("*.json"))) == 1
    assert not (deep / "runs").exists()


def test_learning_md_is_ignored_by_git():
    ignore = Path(__file__).resolve().parents[3] / ".gitignore"
    assert "/LEARNING.md" in ignore.read_text().splitlines()
