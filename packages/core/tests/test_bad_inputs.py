"""The README's promise, input by input: a bad flag, value or file ends in one line on stderr and
exit code 2, no traceback, and nothing is written (no run directory; the user's files unchanged).
Each case writes its data, in the real format, into tmp_path; the run goes through a lab's whole
``main`` (the demo classifier of test_cli)."""

import gzip
import struct
import zlib

import pytest
import torch
from PIL import Image
from test_cli import main

from labs_core.data.idx import write_idx


def png(path, size=(8, 8), color=(10, 120, 200)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def bomb_png(path, side=100_000):
    """A valid PNG whose header claims side x side pixels (PIL refuses it as a decompression
    bomb)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def image_folder(root, classes=("cat", "dog"), n=6):
    for ci, name in enumerate(classes):
        for i in range(n):
            png(root / name / f"{i}.png", color=(100 * ci, 20 * i, 50))
    return root


def with_bomb(tmp):
    bomb_png(image_folder(tmp / "images") / "cat" / "huge.png")
    return ["--dataset", "imagefolder", "--data-dir", str(tmp / "images")]


def empty_class(tmp):
    (image_folder(tmp / "images") / "bird").mkdir()
    return ["--dataset", "imagefolder", "--data-dir", str(tmp / "images")]


def one_class(tmp):
    image_folder(tmp / "images", classes=("cat",))
    return ["--dataset", "imagefolder", "--data-dir", str(tmp / "images")]


def csv_file(text):
    def setup(tmp):
        (tmp / "t.csv").write_text(text)
        return ["--dataset", "csv", "--data-dir", str(tmp / "t.csv")]

    return setup


def corrupt_mnist(tmp):
    folder = tmp / "data" / "mnist"
    folder.mkdir(parents=True)
    for stem, array in (
        ("train-images-idx3-ubyte", torch.zeros(4, 28, 28)),
        ("train-labels-idx1-ubyte", torch.zeros(4)),
        ("t10k-images-idx3-ubyte", torch.zeros(4, 28, 28)),
        ("t10k-labels-idx1-ubyte", torch.zeros(4)),
    ):
        write_idx(folder / f"{stem}.gz", array.numpy())
    damaged = bytearray(gzip.compress(b"\0\0\x08\x03" + b"\0" * 4000))
    damaged[12:24] = b"\xff" * 12  # a corrupt deflate stream, a valid gzip header
    (folder / "train-images-idx3-ubyte.gz").write_bytes(bytes(damaged))
    return ["--dataset", "mnist", "--data-dir", str(tmp / "data")]


def checkpoint_file(content):
    def setup(tmp):
        path = tmp / "ckpt.pt"
        if content == "dir":
            path.mkdir()
        elif content == "text":
            path.write_text("epoch,loss\n1,0.5\n")
        elif content == "pickle":
            torch.save({"model": {"w": torch.zeros(1)}, "extra": ValueError("x")}, path)
        elif content == "no optimizer":
            torch.save({"model": {"w": torch.zeros(1)}, "epoch": 1}, path)
        return ["--resume", str(path)]

    return setup


def existing_file(tmp):
    (tmp / "taken").write_text("mine")
    return ["--out", str(tmp / "taken")]


CASES = {
    "decompression bomb PNG": (with_bomb, "decompression bomb"),
    "decompression bomb PNG, standard loader": (
        lambda t: [*with_bomb(t), "--loader", "standard"],
        "decompression bomb",
    ),
    "class folder with no images": (empty_class, "bird has no images"),
    "one class": (one_class, "only one class"),
    "CSV of blank rows": (csv_file("a,b,label\n\n , ,\n\n"), "has no data rows"),
    "CSV too few rows to split": (csv_file("a,label\n1,x\n2,y\n"), "too few to hold out"),
    "CSV without feature columns": (
        csv_file("label\nx\ny\nx\ny\nx\ny\nx\ny\n"),
        "no feature columns",
    ),
    "corrupt gzip MNIST": (corrupt_mnist, "corrupt gzip data"),
    "--overfit above the dataset": (
        lambda t: [*image_folder_args(t), "--overfit", "500"],
        "--overfit 500",
    ),
    "--seed beyond torch's range": (lambda t: ["--seed", str(2**70)], "--seed must be at most"),
    "--lr inf": (lambda t: ["--lr", "inf"], "--lr must be a finite number"),
    "checkpoint is a directory": (checkpoint_file("dir"), "is a directory"),
    "checkpoint is a text file": (checkpoint_file("text"), "not a checkpoint of this project"),
    "checkpoint holds Python objects": (
        checkpoint_file("pickle"),
        "not a checkpoint of this project",
    ),
    "checkpoint missing an entry": (checkpoint_file("no optimizer"), "no 'optimizer'"),
    "--out names a file": (existing_file, "is a file, not a folder"),
    "--fsdp outside torchrun": (
        lambda t: ["--fsdp"],
        "--fsdp shards the model across processes: launch the run with torchrun",
    ),
}


def image_folder_args(tmp):
    return ["--dataset", "imagefolder", "--data-dir", str(image_folder(tmp / "images"))]


def files(folder):
    """Every file under ``folder`` but the data cache's (file hashes memoised beside the data:
    documented, derived, never the user's)."""
    return {
        p: p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not {".labs-cache", ".cache"} & set(p.parts)
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    setup, message = CASES[case]
    monkeypatch.chdir(tmp_path)
    argv = setup(tmp_path)
    before = files(tmp_path)
    out = tmp_path / "run"
    argv = argv if "--out" in argv else [*argv, "--out", str(out)]
    assert main([*argv, "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err
    assert "weights_only" not in err
    assert not out.exists() and not (tmp_path / "runs").exists()
    assert files(tmp_path) == before  # the user's files byte for byte, and nothing added


@pytest.mark.parametrize("loader", ["fast", "standard"])
def test_skip_bad_files_skips_and_counts_a_bomb_with_either_loader(loader, tmp_path, capsys):
    argv = [
        *with_bomb(tmp_path),
        "--skip-bad-files",
        "--loader",
        loader,
        "--out",
        str(tmp_path / "run"),
    ]
    assert main([*argv, "--epochs", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 unreadable image(s)" in err and "huge.png" in err and "Traceback" not in err


def test_standard_loader_worker_failure_is_one_line(tmp_path, capsys, monkeypatch):
    """An image that opens but fails to decode in a DataLoader worker: one line, not its
    traceback."""
    from labs_core.data import imagefolder

    argv = [
        *image_folder_args(tmp_path),
        "--loader",
        "standard",
        "--num-workers",
        "1",
        "--out",
        str(tmp_path / "run"),
    ]
    real = imagefolder.open_rgb

    def flaky(path, size):
        if path.name == "3.png":
            raise imagefolder.LabError(f"cannot read image {path}: broken data stream")
        return real(path, size)

    monkeypatch.setattr(imagefolder, "open_rgb", flaky)
    assert main([*argv, "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "cannot read image" in err
        and "3.png" in err
        and "Traceback" not in err
    )


def undecodable_png_folder(tmp):
    """Images plus one PNG whose chunks are well formed (right CRCs) but whose pixel data is not
    zlib: the up-front check passes, the pixels do not decode, so the standard loader meets it
    only mid-run."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    root = image_folder(tmp / "images")
    path = root / "dog" / "cut.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", b"these are not compressed pixels")
        + chunk(b"IEND", b"")
    )
    with Image.open(path) as im:
        im.verify()  # passes: what makes this case need a guard during training
    return [
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(root),
        "--loader",
        "standard",
        "--image-size",
        "16",
    ]


def test_standard_loader_skips_an_image_that_fails_only_to_decode(tmp_path, capsys):
    argv = [*undecodable_png_folder(tmp_path), "--skip-bad-files", "--out", str(tmp_path / "run")]
    assert main([*argv, "--epochs", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert (
        "skipped an image that does not decode" in err
        and "cut.png" in err
        and "Traceback" not in err
    )


def test_standard_loader_stops_in_one_line_on_an_image_that_fails_only_to_decode(tmp_path, capsys):
    argv = [*undecodable_png_folder(tmp_path), "--out", str(tmp_path / "run")]
    assert main([*argv, "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "cut.png" in err
        and "--skip-bad-files" in err
        and "Traceback" not in err
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--fsdp", "--precision", "fp16"], "--fsdp with --precision fp16 is not supported"),
        (["--fsdp", "--sync-bn"], "--sync-bn with --fsdp is not supported"),
    ],
)
def test_fsdp_refuses_the_flags_it_cannot_serve_under_torchrun(
    flags, message, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv(
        "WORLD_SIZE", "2"
    )  # as torchrun sets it: refused at parse time, before any process group
    out = tmp_path / "run"
    assert main([*flags, "--epochs", "1", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not out.exists()
