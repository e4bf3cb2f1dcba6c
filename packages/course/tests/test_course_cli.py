"""Bad input: one line on stderr, exit code 2, nothing written; --help everywhere; the real
script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from course_testutils import assert_fits, right

BAD = [
    ["quiz", "7"],
    ["quiz"],
    ["quiz", "1", "--seed", "1", "--answers", "a,b"],
    ["quiz", "1", "--seed", "1", "--answers", right("1", 1) + ",a"],
    ["quiz", "1", "--seed", "1", "--answers", "e" + right("1", 1)[1:]],
    ["quiz", "1", "--seed", "1", "--answers", "ab" + right("1", 1)[1:]],
    ["quiz", "1", "--seed", "1", "--answers", ""],
    ["quiz", "1", "--seed", "1", "--answers"],
    ["quiz", "1", "--answers", right("1", 1)],  # which draw? --answers needs --seed
    ["quiz", "1", "--seed", "-1"],
    ["quiz", "1", "--seed", "x"],
    ["quiz", "1", "--pool", "--seed", "1"],
    ["quiz", "0", "--pool", "--answers", "a"],
    ["teach"],
    ["--verbose"],
    ["progress", "--all"],
    ["map", "phase9"],
    ["log", "--last", "0"],
    ["log", "--last", "x"],
    ["log", "note", "--last", "2"],
    ["log", "  "],
]


@pytest.mark.parametrize("argv", BAD, ids=" ".join)
def test_bad_input_is_one_line_and_exit_2(course, home, argv):
    (home / "LEARNING.md").write_text("# Learning log\n\nmine\n")
    code, out, err = course(*argv)
    assert code == 2
    assert err.startswith("course: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert out == ""
    assert (home / "LEARNING.md").read_text() == "# Learning log\n\nmine\n"
    assert not (home / "runs" / "course").exists()


@pytest.mark.parametrize("argv", [[], ["map"], ["quiz"], ["progress"], ["log"]], ids=" ".join)
def test_help(course, argv):
    code, out, err = course(*argv, "--help")
    assert code == 0 and err == "" and out.startswith(f"usage: course {' '.join(argv)}".rstrip())
    assert_fits(out)
    if not argv:
        assert "exits 0, passed" in " ".join(out.split())


def test_the_installed_script(tmp_path):
    script = Path(sys.executable).with_name("course")
    assert script.exists(), "the console script `course` is installed beside python"
    env = {**os.environ, "LABS_ROOT": str(tmp_path)}
    ok = subprocess.run(
        [str(script), "quiz", "0", "--seed", "5", "--answers", right("0", 5)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and "PASS" in ok.stdout
    assert len(list((tmp_path / "runs" / "course" / "quiz").glob("*.json"))) == 1
    bad = subprocess.run(
        [str(script), "quiz", "7"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("course: error: unknown phase") and bad.stderr.count("\n") == 1
