"""Every test runs in its own course root (LABS_ROOT) and working folder, both a tmp folder, so
runs/, runs/course/ and LEARNING.md never touch the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

from labs_course.cli import main


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LABS_ROOT", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def course(home, capsys):
    """``course(*argv)`` -> (exit code, stdout, stderr), in-process."""

    def run(*argv: str):
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run
