"""The tensors, linreg and data lessons: each runs and shows what it claims."""

import numpy as np
import pytest
import torch

from lab0_mlp import lessons
from lab0_mlp.cli import main
from labs_core.data import write_idx


def test_tensors_shows_cat_stack_reductions_and_device_moves():
    out = []
    facts = lessons.tensors(out.append)
    assert facts["cat_shapes"] == {0: (6, 4), 1: (2, 12)}
    assert facts["stack_shapes"] == {0: (3, 2, 4), 1: (2, 3, 4), 2: (2, 4, 3)}
    assert facts["stack_unequal_fails"]
    assert facts["sum_dims"] == {0: [5.0, 7.0, 9.0], 1: [9.0, 12.0]}
    assert facts["max_dim1"] == ([5.0, 6.0], [1, 2]) and facts["keepdim_shape"] == (2, 1)
    assert facts["same_device_is_same"] and 0 < facts["copy_seconds"] < 1
    assert facts["device"] != "cpu" or facts["copy_is_new"]  # a conversion is a new tensor
    text = "\n".join(out)
    for heading in ("== torch.cat", "== reductions", "== devices"):
        assert heading in text
    assert "stack expects each tensor to be equal size" in text  # the real error, printed and read
    assert "is x: True" in text


def test_linreg_by_hand_and_with_nn_adam_both_recover_the_line():
    out = []
    facts = lessons.linreg(out.append)
    for fit in (facts, facts["nn"]):
        assert abs(fit["w"] - facts["true_w"]) < 0.01 and abs(fit["b"] - facts["true_b"]) < 0.01
        # both loops reach the exact least-squares answer for this sample, not just something near
        # the truth
        assert fit["w"] == pytest.approx(facts["lstsq"]["w"], abs=1e-3)
        assert fit["b"] == pytest.approx(facts["lstsq"]["b"], abs=1e-3)
        assert fit["loss"] == pytest.approx(facts["lstsq"]["loss"], rel=1e-3)
    text = "\n".join(out)
    assert "nn.Linear + Adam" in text and "by hand" in text and "least squares" in text


def write_tiny_mnist(folder, n_train=150, n_test=20):
    """The four real IDX files, with random pixels and labels 0..9 in turn."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            folder / f"{split}-images-idx3-ubyte.gz",
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        )
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 10)


def test_data_lesson_on_mnist_files(tmp_path):
    write_tiny_mnist(tmp_path / "mnist")
    out = []
    facts = lessons.data(out.append, data_dir=tmp_path, batch_size=16)
    assert facts["source"] == "mnist" and facts["len"] == 150
    assert facts["batch_shape"] == (16, 1, 28, 28) and facts["label_batch"] == ((16,), torch.int64)
    assert facts["epochs_differ"] and facts["seeded_repeat"] and facts["seeded_epochs_differ"]
    assert facts["workers_same"]
    # the custom Dataset over the PNG folder: 5 images of each of 3 digits, read back exactly
    assert (
        facts["custom_len"] == 15
        and facts["custom_classes"] == ["0", "1", "2"]
        and facts["roundtrip"]
    )
    assert facts["custom_batches"] == [(6, 1, 28, 28), (6, 1, 28, 28), (3, 1, 28, 28)]
    assert "len(loader) = ceil(150 / 16) = 10 batches; the last holds 6" in "\n".join(out)


def test_png_folder_dataset(tmp_path):
    for name, value in (("cat", 10), ("dog", 200)):
        (tmp_path / name).mkdir()
        for k in range(3):
            lessons._save_png(
                np.full((5, 7), value + k, dtype=np.uint8), tmp_path / name / f"{k}.png"
            )
    ds = lessons.PngFolder(tmp_path)
    assert ds.classes == ["cat", "dog"] and len(ds) == 6
    x, y = ds[4]
    assert x.shape == (1, 5, 7) and x.dtype == torch.float32 and y == 1
    assert torch.allclose(x, torch.full((1, 5, 7), 201 / 255))


def test_data_lesson_from_the_cli_uses_bundled_digits_and_never_downloads(
    tmp_path, monkeypatch, capsys
):
    import labs_core.data.mnist

    def no_download(*args, **kwargs):
        raise AssertionError("the data lesson must not download")

    monkeypatch.setattr(labs_core.data.mnist, "fetch", no_download)
    monkeypatch.chdir(tmp_path)  # the default data dir is ./data: empty here
    assert main(["lesson", "data"]) == 0
    printed = capsys.readouterr().out
    assert "no MNIST in data/mnist" in printed and "(64, 1, 8, 8)" in printed
    assert "PngFolder finds classes ['0', '1', '2'], len 15" in printed
