"""Size flags no machine can hold end in one line, before the run directory exists."""

from lab0_mlp.cli import main


def test_a_model_no_machine_can_hold_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    # --hidden is bounded (65,536); eight such layers are 3e10 weights, 448 GiB with Adam's state:
    # refused before the model is built, from what this machine has free
    assert main(["--hidden", *["65536"] * 8, "--out", str(out), "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "GiB to train, more than the" in err and "of memory free here" in err
    assert not out.exists()
