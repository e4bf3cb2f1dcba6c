import json

import pytest
import torch

from lab1_conv.cli import main
from lab1_conv.model import CNN
from labs_core import seed_everything


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_cnn_adapts_to_image_shapes(shape):
    for conv in ("scratch", "torch"):
        for head in ("avg", "flatten"):
            model = CNN(shape, 10, conv=conv, head=head)
            assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_scratch_and_torch_cnn_are_the_same_network():
    seed_everything(0)
    a = CNN((1, 8, 8), 10, conv="scratch")
    seed_everything(0)
    b = CNN((1, 8, 8), 10, conv="torch")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    x = torch.randn(4, 1, 8, 8)
    a.eval()
    b.eval()
    torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)


def test_overfit_32_reaches_full_accuracy(tmp_path):
    out = tmp_path / "run"
    assert main(["--overfit", "32", "--epochs", "40", "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["val_acc"] == 1.0
    assert (out / "filters.png").is_file() and (out / "feature_maps.png").is_file()


def test_training_on_digits_beats_chance_by_far_with_both_convs(tmp_path):
    accs = {}
    for conv in ("scratch", "torch"):
        out = tmp_path / conv
        assert main(["--epochs", "5", "--conv", conv, "--widths", "16", "32", "--quiet", "--out", str(out)]) == 0
        accs[conv] = json.loads((out / "summary.json").read_text())["metrics"]["test_acc"]
        assert (out / "filters.png").is_file() and (out / "feature_maps.png").is_file()
        assert (out / "confusion_matrix.png").is_file()
    assert min(accs.values()) > 0.8  # chance is 0.10
    assert abs(accs["scratch"] - accs["torch"]) < 0.03  # the two convolutions train alike


def test_shapes_table(capsys):
    assert main(["--shapes", "--dataset", "synthetic", "--image-size", "28"]) == 0
    out = capsys.readouterr().out
    assert "features.0" in out and "floor((28 + 2*1 - 1*(3-1) - 1)/1) + 1 = 28  ok" in out
    assert "MISMATCH" not in out and "total parameters" in out


def test_compare_baseline_and_cnn(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--dataset", "digits", "--epochs", "4", "--quiet", "--out", str(out)]) == 0
    table = json.loads((out / "comparison.json").read_text())
    assert set(table) == {"logreg", "cnn"}
    assert table["cnn"]["test_acc"] > table["logreg"]["test_acc"]
    assert "logreg" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--widths", "0"], "--widths needs"),
    (["--conv", "fft"], "invalid choice"),
    (["--dropout", "1.5"], "--dropout must be in"),
])
def test_bad_input(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
