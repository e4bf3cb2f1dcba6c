"""The README's promise for every command of the project: a bad flag, value or file ends in one line
on stderr and exit code 2, no traceback; the user's files are never written over (the checkpoint
being exported above all) and a command leaves no stray files behind."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from checkpoint_project import export as export_module
from checkpoint_project.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    argv = [
        "train",
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--width",
        "4",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    return out


def bomb_png(path, side=100_000):
    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def photo(path, seed=0):
    Image.fromarray((np.random.default_rng(seed).random((20, 24, 3)) * 255).astype("uint8")).save(
        path
    )


def setup_files(tmp: Path, best: Path) -> dict:
    """Every bad file a case names, written in its real format."""
    (tmp / "a_dir").mkdir()
    (tmp / "a_file").write_text("mine")
    (tmp / "notes.txt").write_text("epoch,loss\n1,0.5\n")
    ckpt = torch.load(best, weights_only=True)
    torch.save({k: v for k, v in ckpt.items() if k != "classes"}, tmp / "no_classes.pt")
    torch.save([torch.zeros(2)], tmp / "a_list.pt")
    torch.save({"model": {"w": torch.zeros(1)}, "extra": ValueError("x")}, tmp / "objects.pt")
    bomb_png(tmp / "bomb.png")
    (tmp / "random.onnx").write_bytes(
        np.random.default_rng(0).bytes(4096)
    )  # named .onnx, not a model
    photo(tmp / "good.explain.png")  # an explain PNG's name, a picture of the user's
    photo(tmp / "good.png")
    for name in ("cat", "dog"):
        (tmp / "imgs" / name).mkdir(parents=True)
        for i in range(5):
            photo(tmp / "imgs" / name / f"{i}.png", i)
    return {
        "BEST": str(best),
        "DIR": str(tmp / "a_dir"),
        "FILE": str(tmp / "a_file"),
        "TEXT": str(tmp / "notes.txt"),
        "NO_CLASSES": str(tmp / "no_classes.pt"),
        "LIST": str(tmp / "a_list.pt"),
        "OBJECTS": str(tmp / "objects.pt"),
        "BOMB": str(tmp / "bomb.png"),
        "RANDOM": str(tmp / "random.onnx"),
        "GOOD": str(tmp / "good.png"),
        "TMP": str(tmp),
        "RUN": str(best.parent.parent),
    }


CASES = [
    (["export", "--checkpoint", "BEST", "--out", "BEST"], "it is never written over"),
    (["export", "--checkpoint", "BEST", "--out", "TMP/model.pt"], "ends in .onnx"),
    (["export", "--checkpoint", "BEST", "--out", "DIR"], "ends in .onnx"),
    (["export", "--checkpoint", "BEST", "--out", "FILE/model.onnx"], "is a file, not a folder"),
    (["export", "--checkpoint", "DIR", "--out", "TMP/m.onnx"], "is a directory"),
    (["export", "--checkpoint", "BEST", "--out", "RANDOM"], "is not a file this project wrote"),
    (
        ["export", "--checkpoint", "BEST", "--out", "RANDOM", "--overwrite"],
        "is not a file this project wrote",
    ),
    (
        ["explain", "--checkpoint", "BEST", "GOOD", "--out", "TMP", "--overwrite"],
        "is not a file this project wrote",
    ),
    (["evaluate", "--checkpoint", "DIR"], "is a directory"),
    (["evaluate", "--checkpoint", "TEXT"], "not a checkpoint of this project"),
    (["evaluate", "--checkpoint", "OBJECTS"], "not a checkpoint of this project"),
    (["evaluate", "--checkpoint", "NO_CLASSES"], "no 'classes' entry"),
    (["predict", "--checkpoint", "BEST", "BOMB"], "decompression bomb"),
    (["predict", "--checkpoint", "BEST", "DIR"], "is a directory"),
    (["predict", "--checkpoint", "LIST", "GOOD"], "not a checkpoint of this project"),
    (["explain", "--checkpoint", "BEST", "BOMB"], "decompression bomb"),
    (["explain", "--checkpoint", "BEST", "TEXT"], "cannot read image"),
    (["explain", "--checkpoint", "BEST", "DIR"], "no images"),
    (["explain", "--checkpoint", "BEST", "GOOD", "--out", "FILE"], "is a file, not a folder"),
    (["explain", "--checkpoint", "BEST", "GOOD", "--out", "FILE/maps"], "is a file, not a folder"),
    (["explain", "--checkpoint", "BEST", "GOOD", "--top-k", "0"], "--top-k must be at least 1"),
    (["explain", "--checkpoint", "TMP/model.onnx", "GOOD"], "explain needs the .pt checkpoint"),
    (["explain", "--checkpoint", "LIST", "GOOD"], "not a checkpoint of this project"),
    (["explain", "--checkpoint", "DIR", "GOOD"], "is a directory"),
    (
        [
            "finetune",
            "--from",
            "torchvision:resnet18",
            "--weights",
            "LIST",
            "--data-dir",
            "TMP/imgs",
        ],
        "not a state dict",
    ),
    (
        [
            "finetune",
            "--from",
            "torchvision:resnet18",
            "--weights",
            "DIR",
            "--data-dir",
            "TMP/imgs",
        ],
        "is a directory",
    ),
    (["train", "--dataset", "synthetic", "--width", "4", "--out", "RUN"], "already holds a run"),
    (
        [
            "train",
            "--dataset",
            "synthetic",
            "--width",
            "8",
            "--out",
            "RUN",
            "--resume",
            "--epochs",
            "2",
        ],
        "does not fit this model",
    ),
    (["train", "--dataset", "synthetic", "--out", "FILE"], "is a file, not a folder"),
    (["train", "--seed", "-5"], "--seed must be at least 0"),
    (
        ["train", "--dataset", "synthetic", "--model", "cnn", "--grad-checkpoint"],
        "--grad-checkpoint applies to --model resnet or fast (not cnn)",
    ),
]


def files(folder: Path) -> dict:
    return {
        p: p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not {".cache", ".labs-cache"} & set(p.parts)
    }  # data caches: derived


@pytest.mark.parametrize(
    "argv, message", CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES]
)
def test_bad_input_is_one_line_exit_2_and_damages_nothing(
    argv, message, trained, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    subst = setup_files(tmp_path, trained / "checkpoints" / "best.pt")

    def fill(a):  # "TMP/model.pt" -> "<tmp_path>/model.pt"
        head, sep, tail = a.partition("/")
        return subst[head] + sep + tail if head in subst else a

    argv = [fill(a) for a in argv]
    before = {**files(tmp_path), **files(trained)}
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "weights_only" not in err, err
    assert message in err
    assert {**files(tmp_path), **files(trained)} == before  # byte for byte, nothing added
    assert not (tmp_path / "runs").exists()


def test_predict_predicts_every_readable_image_then_lists_the_bad_ones(trained, tmp_path, capsys):
    good = [tmp_path / "a.png", tmp_path / "c.png"]
    for i, path in enumerate(good):
        photo(path, i)
    bomb_png(tmp_path / "b.png")
    images = [str(good[0]), str(tmp_path / "b.png"), str(tmp_path / "missing.png"), str(good[1])]
    assert main(["predict", "--checkpoint", str(trained / "checkpoints" / "best.pt"), *images]) == 2
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == [str(p) for p in good]
    assert err.count("\n") == 1 and "2 of 4 image(s) could not be read" in err
    assert "b.png" in err and "missing.png" in err


def test_export_leaves_only_its_output_on_success_and_nothing_on_failure(
    trained, tmp_path, monkeypatch, capsys
):
    best = trained / "checkpoints" / "best.pt"
    out = tmp_path / "exports"
    assert main(["export", "--checkpoint", str(best), "--out", str(out / "model.onnx")]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "model.onnx"
    ]  # no .model.onnx.*.data beside it
    assert sorted(p.name for p in best.parent.iterdir()) == ["best.pt", "last.pt"]
    monkeypatch.setattr(
        export_module, "TOLERANCE", -1.0
    )  # verification fails after the export was written
    assert main(["export", "--checkpoint", str(best), "--out", str(out / "again.onnx")]) == 2
    assert "onnxruntime differs" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]


def test_an_earlier_export_or_explanation_is_replaced_only_with_overwrite(
    trained, tmp_path, capsys
):
    """The one rule for every file a command writes: only a file this project wrote is replaced,
    and only when the command says so (--overwrite)."""
    best = str(trained / "checkpoints" / "best.pt")
    model = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", best, "--out", str(model)]) == 0
    first = model.read_bytes()
    assert main(["export", "--checkpoint", best, "--out", str(model)]) == 2
    assert "replace it with --overwrite" in capsys.readouterr().err and model.read_bytes() == first
    assert main(["export", "--checkpoint", best, "--out", str(model), "--overwrite"]) == 0
    assert export_module.onnx_is_ours(model)

    photo(tmp_path / "cat.png")
    maps = tmp_path / "maps"
    argv = ["explain", "--checkpoint", best, str(tmp_path / "cat.png"), "--out", str(maps)]
    assert main(argv) == 0
    png = (maps / "cat.explain.png").read_bytes()
    assert main(argv) == 2 and "replace it with --overwrite" in capsys.readouterr().err
    assert (maps / "cat.explain.png").read_bytes() == png
    assert main([*argv, "--overwrite"]) == 0
