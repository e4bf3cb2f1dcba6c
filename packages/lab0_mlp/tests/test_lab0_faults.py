"""Size flags no machine can hold end in one line, before the run directory exists."""

from lab0_mlp.cli import main


def test_a_model_no_machine_can_hold_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    # 64 x 2e9 fp32 weights: the CPU allocator refuses 477 GiB at once (nothing is touched)
    assert main(["--hidden", "2000000000", "--out", str(out), "--epochs", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "out of memory (tried to allocate" in err and "--batch-size, model or data" in err
    assert not out.exists()
