"""Real file formats written here and read back through the code a user's data goes through."""

import gzip
import pickle
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from labs_core import LabError
from labs_core.data import cifar as cifar_mod
from labs_core.data import load_dataset, read_idx, write_idx
from labs_core.data import mnist as mnist_mod
from labs_core.data.download import md5_of

from core_testutils import make_image_folder


def write_mnist(folder, n_train=30, n_test=10, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", y)
        arrays[split] = (x, y)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_round_trip(tmp_path, gz):
    arrays = write_mnist(tmp_path / "mnist", gz=gz)
    data = load_dataset("mnist", tmp_path, download=False)
    assert data.train[0].shape == (30, 1, 28, 28) and data.train[0].dtype == torch.uint8
    assert torch.equal(data.train[0][:, 0], torch.from_numpy(arrays["train"][0]))
    assert torch.equal(data.test[1], torch.from_numpy(arrays["t10k"][1]).long())
    assert data.classes == [str(i) for i in range(10)] and data.mean == (0.1307,) and not data.flip


def test_fashion_mnist_in_torchvision_layout(tmp_path):
    write_mnist(tmp_path / "fashion-mnist" / "raw")
    data = load_dataset("fashion-mnist", tmp_path, download=False)
    assert data.classes[0] == "T-shirt/top" and data.flip


@pytest.mark.parametrize(
    "damage, message",
    [
        ("magic", "not an IDX file"),
        ("truncate", "header promises"),
        ("count", "has 30 images but"),
        ("labels", "holds label"),
    ],
)
def test_bad_idx_files_are_clear_errors(tmp_path, damage, message):
    write_mnist(tmp_path / "mnist", gz=False)
    f = tmp_path / "mnist" / "train-images-idx3-ubyte"
    if damage == "magic":
        f.write_bytes(b"\x12\x34" + f.read_bytes()[2:])
    elif damage == "truncate":
        f.write_bytes(f.read_bytes()[:-100])
    elif damage == "count":
        write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte", np.zeros(29, np.uint8))
    else:
        write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte", np.full(30, 12, np.uint8))
    with pytest.raises(LabError, match=message):
        load_dataset("mnist", tmp_path, download=False)


def test_read_idx_rejects_wrong_dims(tmp_path):
    write_idx(tmp_path / "x.idx", np.zeros((2, 3), np.uint8))
    assert read_idx(tmp_path / "x.idx").shape == (2, 3)
    with pytest.raises(LabError, match="expected 3 dimensions"):
        read_idx(tmp_path / "x.idx", expect_dims=3)


@pytest.fixture
def file_server(tmp_path):
    """A local HTTP server on loopback serving a folder: the download path without the internet."""
    root = tmp_path / "served"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_mnist_download_verifies_checksums(tmp_path, file_server, monkeypatch):
    served, url = file_server
    write_mnist(served)
    md5 = {p.name: md5_of(p) for p in served.iterdir()}
    spec = {**mnist_mod.SPECS["mnist"], "mirrors": ["http://127.0.0.1:1/", url], "md5": md5}
    monkeypatch.setitem(mnist_mod.SPECS, "mnist", spec)
    data = load_dataset("mnist", tmp_path / "data")
    assert len(data.train[0]) == 30
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(md5)


def test_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path, file_server, monkeypatch):
    served, url = file_server
    write_mnist(served)
    md5 = {p.name: md5_of(p) for p in served.iterdir()}
    md5["train-images-idx3-ubyte.gz"] = "0" * 32
    monkeypatch.setitem(
        mnist_mod.SPECS, "mnist", {**mnist_mod.SPECS["mnist"], "mirrors": [url], "md5": md5}
    )
    with pytest.raises(
        LabError,
        match=r"mnist: could not download train-images-idx3-ubyte.gz \(.*checksum mismatch",
    ):
        load_dataset("mnist", tmp_path / "data")
    folder = tmp_path / "data" / "mnist"
    assert not folder.exists() or not list(folder.iterdir())


def test_offline_message_names_dataset_folder_and_files(tmp_path, monkeypatch):
    monkeypatch.setitem(
        mnist_mod.SPECS,
        "fashion-mnist",
        {**mnist_mod.SPECS["fashion-mnist"], "mirrors": ["http://127.0.0.1:1/"]},
    )
    with pytest.raises(LabError) as info:
        load_dataset("fashion-mnist", tmp_path)
    msg = str(info.value)
    assert msg.startswith("fashion-mnist: could not download")
    assert (
        str(tmp_path / "fashion-mnist") in msg
        and "t10k-labels-idx1-ubyte" in msg
        and "\n" not in msg
    )


def write_cifar(folder, n=20, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [*cifar_mod.TRAIN_BATCHES, cifar_mod.TEST_BATCH]:
        d = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"x.png"] * n,
        }
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
        batches[name] = d
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in cifar_mod.CLASSES]}, f, protocol=2)
    return batches


def test_cifar_pickle_batches(tmp_path):
    batches = write_cifar(tmp_path / "cifar-10-batches-py")
    data = load_dataset("cifar10", tmp_path, download=False)
    assert data.train[0].shape == (100, 3, 32, 32) and data.test[0].shape == (20, 3, 32, 32)
    first = batches["data_batch_1"][b"data"][0].reshape(3, 32, 32)
    assert torch.equal(data.train[0][0], torch.from_numpy(first))
    assert data.train[1][:20].tolist() == batches["data_batch_1"][b"labels"]
    assert data.classes[0] == "airplane" and data.flip


def test_cifar_batch_that_would_run_code_is_refused(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(LabError, match="refusing to load builtins.print"):
        load_dataset("cifar10", tmp_path, download=False)


def test_cifar_download_extracts_archive(tmp_path, file_server, monkeypatch):
    import tarfile

    served, url = file_server
    write_cifar(tmp_path / "src" / "cifar-10-batches-py")
    with tarfile.open(served / "cifar.tgz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setattr(cifar_mod, "URLS", [url + "cifar.tgz"])
    monkeypatch.setattr(cifar_mod, "ARCHIVE_MD5", md5_of(served / "cifar.tgz"))
    data = load_dataset("cifar10", tmp_path / "data")
    assert len(data.train[0]) == 100
    monkeypatch.setattr(cifar_mod, "ARCHIVE_MD5", "f" * 32)
    with pytest.raises(LabError, match="checksum mismatch"):
        load_dataset("cifar10", tmp_path / "other")


def test_imagefolder_mixed_modes_and_sizes(tmp_path):
    make_image_folder(tmp_path / "imgs", corrupt=False)
    data = load_dataset("imagefolder", tmp_path / "imgs", image_size=16)
    assert data.classes == ["cat", "dog"]
    assert data.train[0].shape == (8, 3, 16, 16) and data.train[0].dtype == torch.uint8
    assert data.train[1].tolist() == [0] * 4 + [1] * 4
    assert data.test is None and data.val is None and len(data.mean) == 3


def test_imagefolder_corrupt_file_is_named_or_skipped(tmp_path):
    make_image_folder(tmp_path / "imgs")
    with pytest.raises(LabError, match=r"cannot read image .*broken\.png.*--skip-bad-files"):
        load_dataset("imagefolder", tmp_path / "imgs", image_size=16)
    data = load_dataset("imagefolder", tmp_path / "imgs", image_size=16, skip_bad_files=True)
    assert len(data.train[0]) == 8 and data.notes == ["skipped 1 unreadable image(s)"]


def test_imagefolder_with_train_val_splits(tmp_path):
    make_image_folder(tmp_path / "imgs", with_splits=True, corrupt=False)
    data = load_dataset("imagefolder", tmp_path / "imgs", image_size=12)
    assert len(data.train[0]) == 8 and len(data.val[0]) == 8 and data.test is None


def test_imagefolder_not_a_folder(tmp_path):
    with pytest.raises(LabError, match="is not a folder"):
        load_dataset("imagefolder", tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabError, match="no class sub-folders"):
        load_dataset("imagefolder", tmp_path / "empty")


def test_csv_tabular(tmp_path):
    rows = ["a,b,label"] + [f"{i},{2 * i % 7},{'yes' if i % 3 else 'no'}" for i in range(30)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    data = load_dataset("csv", tmp_path / "t.csv")
    assert data.kind == "tabular" and data.classes == ["no", "yes"] and data.input_shape == (2,)
    assert data.train[0].dtype == torch.float32 and data.train[1].tolist()[:3] == [0, 1, 1]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a,b\n1,2\n", "no column 'label'"),
        ("a,label\nx,1\n", "column 'a' is not a number"),
        ("a,label\n1,2,3\n", "line 2 has 3 fields"),
        ("a,label\n", "at least one data row"),
    ],
)
def test_bad_csv(tmp_path, text, message):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(LabError, match=message):
        load_dataset("csv", tmp_path / "t.csv")


def test_synthetic_is_deterministic_and_shaped():
    a = load_dataset(
        "synthetic", image_size=12, synthetic={"num_train": 50, "num_test": 10, "num_classes": 5}
    )
    b = load_dataset(
        "synthetic", image_size=12, synthetic={"num_train": 50, "num_test": 10, "num_classes": 5}
    )
    assert a.train[0].shape == (50, 3, 12, 12) and torch.equal(a.train[0], b.train[0])
    assert torch.equal(a.train[1], b.train[1]) and a.num_classes == 5


def test_digits_ships_inside_the_package():
    data = load_dataset("digits")
    assert data.train[0].shape[1:] == (1, 8, 8)
    assert len(data.train[0]) + len(data.test[0]) == 1797
    assert not data.flip and data.num_classes == 10
    from sklearn.datasets import load_digits

    ref = load_digits()
    ours = torch.cat([data.train[0], data.test[0]]).flatten(1).float() * 16 / 255
    assert torch.allclose(
        ours.sum(0), torch.tensor(ref.data.sum(0), dtype=torch.float32), atol=1.0 * 1797 / 32
    )


def test_cache_is_reused_rebuilt_when_damaged_and_keyed_by_content(tmp_path, monkeypatch, capsys):
    write_mnist(tmp_path / "mnist")
    calls = []
    real = mnist_mod.read_idx
    monkeypatch.setattr(mnist_mod, "read_idx", lambda *a, **k: calls.append(a) or real(*a, **k))
    load_dataset("mnist", tmp_path, download=False)
    assert len(calls) == 4
    t0 = time.perf_counter()
    again = load_dataset("mnist", tmp_path, download=False)
    assert len(calls) == 4 and time.perf_counter() - t0 < 5  # served from the cache, no decoding
    cache_files = list((tmp_path / ".cache").glob("mnist-*.pt"))
    assert len(cache_files) == 1
    data = cache_files[0].read_bytes()
    cache_files[0].write_bytes(data[: len(data) // 3])  # damage it
    rebuilt = load_dataset("mnist", tmp_path, download=False)
    assert len(calls) == 8 and "damaged" in capsys.readouterr().err
    assert torch.equal(rebuilt.train[0], again.train[0])
    # New content -> new key -> decoded again.
    write_mnist(tmp_path / "mnist", seed=1)
    changed = load_dataset("mnist", tmp_path, download=False)
    assert len(calls) == 12 and not torch.equal(changed.train[0], again.train[0])


def test_gzip_garbage_is_clear(tmp_path):
    write_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"abc")[:5])
    with pytest.raises(LabError, match="cannot read"):
        load_dataset("mnist", tmp_path, download=False)


def test_a_constant_channel_gets_a_usable_std():
    from labs_core.data.base import channel_stats

    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    x[:, 0] = torch.arange(4).view(4, 1, 1) * 50  # red varies, green and blue are 0 everywhere
    mean, std = channel_stats(x)
    assert std[0] > 0.1 and std[1] > 0 and std[2] > 0  # normalising never divides by zero
