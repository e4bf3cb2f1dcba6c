"""Lessons that run: each prints what it shows and returns the facts the tests check.

lab0-mlp lesson tensors | autograd | linreg | data
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


def tensors(say: Callable[[str], None] = print) -> dict:
    facts = {}
    say("== creating tensors")
    a = torch.tensor([[1, 2], [3, 4]])
    say(
        f"torch.tensor([[1, 2], [3, 4]]) -> dtype {a.dtype}, shape {tuple(a.shape)}  (ints stay"
        " int64)"
    )
    say(f"torch.zeros(2, 3) {torch.zeros(2, 3).tolist()}; torch.ones(2) {torch.ones(2).tolist()}")
    torch.manual_seed(0)
    say(
        f"torch.randn(3) with seed 0 -> {[round(v, 4) for v in torch.randn(3).tolist()]} (seeded:"
        " reproducible)"
    )
    say(f"torch.arange(0, 10, 3) -> {torch.arange(0, 10, 3).tolist()}  (end excluded)")
    facts["default_float"] = torch.zeros(1).dtype

    say("\n== dtypes")
    x = torch.tensor([1.5, 2.5])
    say(
        f"{x.dtype} -> .to(torch.int32) truncates: {x.to(torch.int32).tolist()}; "
        f"float16 holds 3 significant digits: {torch.tensor(1 / 3, dtype=torch.float16).item():.6f}"
    )
    facts["int_plus_float"] = (torch.tensor([1]) + torch.tensor([0.5])).dtype
    say(f"int64 + float32 promotes to {facts['int_plus_float']}")

    say("\n== NumPy round trips share memory")
    n = np.zeros(3, dtype=np.float32)
    t = torch.from_numpy(n)
    n[0] = 7
    say(f"torch.from_numpy(n); n[0] = 7 -> tensor sees {t.tolist()} (same buffer)")
    back = t.numpy()
    t[1] = 8
    say(f"t.numpy(); t[1] = 8 -> array sees {back.tolist()}; torch.tensor(n) would copy instead")
    facts["shared"] = t[0].item() == 7 and back[1] == 8

    say("\n== view, reshape, permute, contiguous")
    m = torch.arange(6).view(2, 3)
    tr = m.t()
    say(
        f"arange(6).view(2, 3) = {m.tolist()}; .t() is a view with strides {tr.stride()},"
        f" contiguous: {tr.is_contiguous()}"
    )
    try:
        tr.view(6)
        facts["view_fails"] = False
    except RuntimeError:
        facts["view_fails"] = True
        say("  .t().view(6) fails: view needs compatible strides; .reshape(6) copies when it must")
    say(
        f"  .t().reshape(6) = {tr.reshape(6).tolist()}; .t().contiguous().view(6) ="
        f" {tr.contiguous().view(6).tolist()}"
    )
    img = torch.zeros(2, 28, 28, 3)
    say(
        f"permute(0, 3, 1, 2): NHWC {tuple(img.shape)} -> NCHW"
        f" {tuple(img.permute(0, 3, 1, 2).shape)}"
    )

    say("\n== indexing and broadcasting")
    g = torch.arange(12).view(3, 4)
    say(f"g[1] = {g[1].tolist()}; g[:, 1] = {g[:, 1].tolist()}; g[g > 8] = {g[g > 8].tolist()}")
    col, row = torch.tensor([[0], [10], [20]]), torch.tensor([1, 2, 3])
    b = col + row
    say(
        f"(3, 1) + (3,) broadcasts to {tuple(b.shape)}: {b.tolist()}  (align right; size-1 dims"
        " stretch)"
    )
    facts["broadcast_shape"] = tuple(b.shape)

    say("\n== torch.cat joins along an existing dim; torch.stack makes a new one")
    a, b, c = torch.zeros(2, 4), torch.ones(2, 4), torch.full((2, 4), 2.0)
    facts["cat_shapes"] = {d: tuple(torch.cat([a, b, c], dim=d).shape) for d in (0, 1)}
    facts["stack_shapes"] = {d: tuple(torch.stack([a, b, c], dim=d).shape) for d in (0, 1, 2)}
    say(
        f"a, b, c: (2, 4) each. cat dim 0 -> {facts['cat_shapes'][0]}, dim 1 ->"
        f" {facts['cat_shapes'][1]}  (sizes add up along that dim)"
    )
    say(
        f"stack dim 0 -> {facts['stack_shapes'][0]}, dim 1 -> {facts['stack_shapes'][1]}, dim 2 ->"
        f" {facts['stack_shapes'][2]}  (a new dim of size 3, one slot per tensor, where you"
        " name it)"
    )
    short = torch.zeros(1, 4)
    say(
        "cat takes unequal sizes along its dim: cat([(2, 4), (1, 4)]) ->"
        f" {tuple(torch.cat([a, short]).shape)}"
    )
    try:
        torch.stack([a, short])
        facts["stack_unequal_fails"] = False
    except RuntimeError as exc:
        facts["stack_unequal_fails"] = True
        say(f"  stack does not: {exc}")
    say(
        "  stack is how single samples become a batch (a DataLoader does it); cat joins batches"
        " (e.g. predictions)"
    )

    say("\n== reductions along a dim: the dim you name is the one that disappears")
    r = torch.tensor([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]])  # (2, 3)
    say(f"r = {r.tolist()}  shape (2, 3); r.sum() = {r.sum().item()}")
    facts["sum_dims"] = {d: r.sum(dim=d).tolist() for d in (0, 1)}
    say(
        f"r.sum(dim=0)  = {facts['sum_dims'][0]}  shape (3,): down each column, the 2 rows collapse"
    )
    say(
        f"r.sum(dim=1)  = {facts['sum_dims'][1]}  shape (2,): along each row, the 3 columns"
        " collapse"
    )
    say(f"r.mean(dim=0) = {r.mean(dim=0).tolist()};  r.mean(dim=1) = {r.mean(dim=1).tolist()}")
    best = r.max(
        dim=1
    )  # a (values, indices) pair: indices is argmax, how predictions come out of logits
    facts["max_dim1"] = (best.values.tolist(), best.indices.tolist())
    say(
        f"r.max(dim=1)  -> values {best.values.tolist()}, indices {best.indices.tolist()}  (argmax"
        f" per row); r.max(dim=0).values = {r.max(dim=0).values.tolist()}"
    )
    kept = r.sum(dim=1, keepdim=True)
    facts["keepdim_shape"] = tuple(kept.shape)
    say(
        "keepdim=True leaves a size-1 dim: r.sum(dim=1, keepdim=True) has shape"
        f" {facts['keepdim_shape']}, so it broadcasts back: rows of r / that sum to"
        f" {(r / kept).sum(dim=1).tolist()}"
    )
    try:
        r / r.sum(dim=1)
    except RuntimeError as exc:
        say(f"  without keepdim, (2, 3) / (2,) aligns the 2 with the 3 and fails: {exc}")

    say("\n== devices: .to(device) is a copy when it moves, and nothing at all when it does not")
    device = (
        "cuda"
        if torch.cuda.is_available()
        else ("mps" if torch.backends.mps.is_available() else "cpu")
    )
    facts["device"] = device
    x = torch.randn(1024, 1024)  # 4 MiB of float32
    facts["same_device_is_same"] = x.to("cpu") is x and x.to(torch.float32) is x
    say(
        f"best device here: {device}. x.to('cpu') is x: {x.to('cpu') is x}; x.to(torch.float32) is"
        f" x: {x.to(torch.float32) is x}  (already there: the same tensor back, no copy)"
    )
    if device != "cpu":
        sync = torch.cuda.synchronize if device == "cuda" else torch.mps.synchronize
        x.to(
            device
        )  # the first transfer also pays for starting the device; leave it out of the timing
        sync()
        seconds, moved = _best_time(lambda: x.to(device), sync)
        facts["copy_seconds"] = seconds
        say(
            f"CPU -> {device} copy of {x.nbytes / 2**20:.0f} MiB: {seconds * 1e3:.2f} ms"
            f" ({x.nbytes / seconds / 1e9:.1f} GB/s); moved.to('{device}') is moved:"
            f" {moved.to(device) is moved}"
        )
        if device == "cuda":  # page-locked memory lets the copy engine read the buffer directly
            pinned = x.pin_memory()
            fast, _ = _best_time(lambda: pinned.to(device, non_blocking=True), sync)
            say(
                "  from pinned memory (x.pin_memory(), DataLoader(pin_memory=True)):"
                f" {fast * 1e3:.2f} ms ({x.nbytes / fast / 1e9:.1f} GB/s)"
            )
        say(
            "  every .to(device) inside a training step pays this; move the model once, and each"
            " batch once"
        )
    else:
        seconds, wide = _best_time(lambda: x.to(torch.float64))
        facts["copy_seconds"] = seconds
        facts["copy_is_new"] = (
            wide is not x and wide.dtype == torch.float64 and torch.equal(wide.float(), x)
        )
        say(
            "no accelerator here. On one, x.to('cuda') allocates device memory and copies every"
            " byte across the bus (PCIe: roughly 10-25 GB/s), and ops need all their operands on"
            " one device."
        )
        say(
            "a dtype change costs the same kind of thing: x.to(torch.float64) allocates"
            f" {wide.nbytes / 2**20:.0f} MiB and converts 1M values in {seconds * 1e3:.2f} ms; the"
            f" result is a new tensor: {wide is not x}"
        )
    return facts


def _best_time(
    fn: Callable[[], torch.Tensor], sync: Callable[[], None] = lambda: None, repeats: int = 5
):
    """The fastest of a few runs of ``fn`` (the least disturbed by other work), and its last
    result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        sync()  # device work runs asynchronously: wait for it before reading the clock
        best = min(best, time.perf_counter() - start)
    return best, out


def autograd(say: Callable[[str], None] = print) -> dict:
    say("== y = (3x^2 + 2x).sum(); y.backward()")
    x = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    y = (3 * x**2 + 2 * x).sum()
    y.backward()
    by_hand = 6 * x.detach() + 2
    say(
        f"x = {x.tolist()}\nx.grad     = {x.grad.tolist()}\n6x + 2     = {by_hand.tolist()}  (the"
        " hand derivative)"
    )
    facts = {"grad_matches": torch.allclose(x.grad, by_hand)}

    say("\n== the recorded graph (walking grad_fn back from y)")
    x2 = torch.tensor([1.0, 2.0], requires_grad=True)
    y2 = (3 * x2**2 + 2 * x2).sum()
    names = []

    def walk(fn, depth=0):
        if fn is None:
            return
        names.append(type(fn).__name__)
        say("  " * depth + type(fn).__name__)
        for nxt, _ in fn.next_functions:
            walk(nxt, depth + 1)

    walk(y2.grad_fn)
    facts["graph"] = names

    say("\n== gradients accumulate until zeroed")
    w = torch.tensor(2.0, requires_grad=True)
    (w * 3).backward()
    first = w.grad.item()
    (w * 3).backward()
    second = w.grad.item()
    w.grad = None  # what optimizer.zero_grad(set_to_none=True) does
    (w * 3).backward()
    third = w.grad.item()
    say(f"backward once: {first}; again without zeroing: {second} (summed); after zeroing: {third}")
    facts["accumulate"] = (first, second, third)
    return facts


def linreg(
    say: Callable[[str], None] = print,
    steps: int = 500,
    lr: float = 0.5,
    seed: int = 0,
    adam_lr: float = 0.05,
) -> dict:
    """Fit y = w x + b to a noisy line twice: by hand (tensors and autograd only), then with nn and
    optim."""
    g = torch.Generator().manual_seed(seed)
    true_w, true_b = 2.5, -1.3
    x = torch.rand(2000, generator=g) * 2 - 1
    y = true_w * x + true_b + 0.1 * torch.randn(2000, generator=g)
    say("== by hand: two tensors, autograd for the gradient, the update written out")
    w = torch.zeros((), requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    say(f"data: y = {true_w} x + ({true_b}) + noise(0.1), 2000 points; gradient descent, lr {lr}")
    for step in range(steps + 1):
        loss = ((w * x + b - y) ** 2).mean()
        if step % 100 == 0:
            say(f"step {step:>4}  loss {loss.item():.5f}  w {w.item():+.4f}  b {b.item():+.4f}")
        if step == steps:
            break
        loss.backward()
        with torch.no_grad():  # the update itself must not be recorded in the graph
            w -= lr * w.grad
            b -= lr * b.grad
        w.grad = None
        b.grad = None
    say(f"recovered w = {w.item():.4f} (true {true_w}), b = {b.item():.4f} (true {true_b})")
    facts = {"w": w.item(), "b": b.item(), "true_w": true_w, "true_b": true_b, "loss": loss.item()}

    say(
        f"\n== the same fit with nn.Linear and optim.Adam (lr {adam_lr}), same start (zeros), same"
        " steps"
    )
    model = nn.Linear(1, 1)  # weight (1, 1) and bias (1,), registered as parameters
    with torch.no_grad():  # start where the hand fit started, so only the update rule differs
        model.weight.zero_()
        model.bias.zero_()
    opt = torch.optim.Adam(model.parameters(), lr=adam_lr)
    xs, ys = x.unsqueeze(1), y.unsqueeze(1)  # nn layers take (batch, features): (2000, 1)
    for step in range(steps + 1):
        loss = F.mse_loss(model(xs), ys)  # the same mean of squared errors as above
        if step % 100 == 0:
            say(
                f"step {step:>4}  loss {loss.item():.5f}  w {model.weight.item():+.4f}  b"
                f" {model.bias.item():+.4f}"
            )
        if step == steps:
            break
        opt.zero_grad()  # was: w.grad = None (set_to_none is the default)
        loss.backward()  # unchanged: autograd fills .grad of every parameter
        # was: w -= lr * w.grad; Adam scales each step by running averages of the gradient
        opt.step()
    facts["nn"] = {"w": model.weight.item(), "b": model.bias.item(), "loss": loss.item()}

    # The exact least-squares answer for this noisy sample: what both loops should reach.
    design = torch.stack(
        [x, torch.ones_like(x)], dim=1
    )  # (2000, 2): a column of x and a column of ones
    exact = torch.linalg.lstsq(design, y.unsqueeze(1)).solution.flatten()
    exact_loss = ((design @ exact - y) ** 2).mean().item()
    facts["lstsq"] = {"w": exact[0].item(), "b": exact[1].item(), "loss": exact_loss}
    say(f"\n{'fit':<22} {'w':>8} {'b':>8} {'loss':>9}")
    fits = (
        ("by hand (descent)", facts),
        ("nn.Linear + Adam", facts["nn"]),
        ("least squares (exact)", facts["lstsq"]),
    )
    for name, f in fits:
        say(f"{name:<22} {f['w']:>8.4f} {f['b']:>8.4f} {f['loss']:>9.6f}")
    say(
        f"{'true line':<22} {true_w:>8.4f} {true_b:>8.4f}   (the noise keeps even the exact fit a"
        " little off)"
    )
    return facts


class ImageTensors(Dataset):
    """Images already in memory: uint8 ``(N, C, H, W)`` and labels ``(N,)``. Item i: (float image in
    [0, 1], label)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i].float() / 255, int(self.labels[i])


class PngFolder(Dataset):
    """``root/<class name>/*.png``: classes are the sorted folder names; each image is read when
    asked for."""

    def __init__(self, root: str | Path):
        root = Path(root)
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        self.samples = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((root / name).glob("*.png"))
        ]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[i]
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("L"), dtype=np.uint8)  # (H, W), one grey channel
        return torch.from_numpy(pixels.copy()).unsqueeze(0).float() / 255, label  # (1, H, W)


def _first_batches(loader: DataLoader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(itertools.islice(loader, n))


def data(
    say: Callable[[str], None] = print, data_dir: str | Path = "data", batch_size: int = 64
) -> dict:
    """Dataset and DataLoader: real MNIST from ``data_dir/mnist`` when its files are there (never
    downloaded), else the digits bundled with labs-core; then a Dataset of your own over a folder of
    PNGs."""
    from labs_core import LabError
    from labs_core.data import load_dataset
    from labs_core.data.mnist import FILES, find_file

    facts: dict = {}
    say("== a Dataset: a length and an item at each index")
    folder = Path(data_dir) / "mnist"
    missing = [stem for stem in FILES.values() if find_file(folder, stem) is None]
    source = None
    if not missing:
        try:
            source = load_dataset("mnist", data_dir, download=False)
        except LabError as exc:  # a damaged file: say so and carry on with the bundled digits
            say(f"cannot use {folder}: {exc}; using the bundled digits instead")
    else:
        say(
            f"no MNIST in {folder} (missing {len(missing)} of 4 IDX files; this lesson never"
            " downloads, `lab0-mlp --dataset mnist` does): using the 1,797 8x8 digits bundled with"
            " labs-core"
        )
    if source is None:
        source = load_dataset("digits")
    facts["source"] = source.name
    images, labels = source.train
    ds = ImageTensors(images, labels)
    x0, y0 = ds[0]
    facts["len"] = len(ds)
    say(
        f"{source.name} train split: images {tuple(images.shape)} {images.dtype};"
        f" ImageTensors(images, labels) has len {len(ds):,}; ds[0] -> image {tuple(x0.shape)}"
        f" {x0.dtype}, label {y0}"
    )

    say(f"\n== a DataLoader: batches of {batch_size}")
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True)
    xb, yb = next(iter(loader))
    facts["batch_shape"], facts["label_batch"] = tuple(xb.shape), (tuple(yb.shape), yb.dtype)
    last = len(ds) % batch_size or batch_size
    say(
        f"first batch: images {tuple(xb.shape)} {xb.dtype}, labels {tuple(yb.shape)} {yb.dtype}  "
        "(the default collate stacks the items; int labels become one int64 tensor)"
    )
    say(
        f"len(loader) = ceil({len(ds):,} / {batch_size}) = {len(loader)} batches; the last holds"
        f" {last} (drop_last=True would leave it out)"
    )

    say("\n== shuffling: a new order every epoch; a seeded generator repeats the whole sequence")
    orders = [next(iter(loader))[1] for _ in range(2)]
    facts["epochs_differ"] = not torch.equal(*orders)
    say(
        f"epoch 1 first labels {orders[0][:12].tolist()}\nepoch 2 first labels"
        f" {orders[1][:12].tolist()}  (each pass draws a fresh permutation)"
    )
    seeded = [
        DataLoader(
            ds, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)
        )
        for _ in range(2)
    ]
    runs = [
        [next(iter(dl))[1] for _ in range(2)] for dl in seeded
    ]  # two "programs", two epochs each
    facts["seeded_repeat"] = all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
    facts["seeded_epochs_differ"] = not torch.equal(*runs[0])
    say(
        "two loaders with generator=torch.Generator().manual_seed(0): epoch 1"
        f" {runs[0][0][:12].tolist()} in both, epoch 2 the same in both too:"
        f" {facts['seeded_repeat']}"
    )
    say(
        "  and within one loader, epoch 2 still differs from epoch 1:"
        f" {facts['seeded_epochs_differ']} (the generator moves on); a rerun of the program repeats"
        " them all"
    )

    say("\n== num_workers: who loads the items, never which items")
    common = dict(batch_size=batch_size, shuffle=True)
    one = _first_batches(
        DataLoader(ds, **common, generator=torch.Generator().manual_seed(1), num_workers=0), 3
    )
    two = _first_batches(
        DataLoader(ds, **common, generator=torch.Generator().manual_seed(1), num_workers=2), 3
    )
    facts["workers_same"] = all(
        torch.equal(xa, xb) and torch.equal(ya, yb)
        for (xa, ya), (xb, yb) in zip(one, two, strict=True)
    )
    say(
        "first 3 batches with num_workers=0 and num_workers=2 (same seed) are equal:"
        f" {facts['workers_same']}"
    )
    say(
        "  the order comes from the sampler in the main process; 2 worker processes each build"
        " whole batches,\n  handed back in order. Worth it when items are expensive (decoding"
        " files, augmenting); images already\n  in memory need none: the labs' fast loader indexes"
        " whole batches on the device instead"
    )

    say("\n== your own Dataset over a folder of images")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tiny"
        written = {}
        for digit in (0, 1, 2):  # five real images of each of three digits, as PNG files
            (root / str(digit)).mkdir(parents=True)
            picks = torch.nonzero(labels == digit).flatten()[:5]
            for k, i in enumerate(picks.tolist()):
                path = root / str(digit) / f"{k}.png"
                _save_png(images[i, 0].numpy(), path)
                written[path] = images[i, 0]
        folder_ds = PngFolder(root)
        facts["custom_len"], facts["custom_classes"] = len(folder_ds), folder_ds.classes
        say(
            f"wrote {len(written)} PNGs under {root.name}/0, /1, /2; PngFolder finds classes"
            f" {folder_ds.classes}, len {len(folder_ds)}"
        )
        path, label = folder_ds.samples[7]
        facts["roundtrip"] = torch.equal(
            (folder_ds[7][0][0] * 255).round().to(torch.uint8), written[path]
        )
        say(
            f"item 7 is {path.parent.name}/{path.name}, label {label}; its pixels equal the ones"
            f" written: {facts['roundtrip']} (PNG is lossless)"
        )
        batches = [tuple(xb.shape) for xb, _ in DataLoader(folder_ds, batch_size=6, shuffle=True)]
        facts["custom_batches"] = batches
        say(f"DataLoader(PngFolder, batch_size=6) batch shapes: {batches}")
        say(
            "  __getitem__ opens one file per item, so the folder may be far larger than memory;\n "
            " torchvision.datasets.ImageFolder is this class with transforms and more image formats"
        )
    return facts


def _save_png(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(path)  # 2-D uint8: mode "L"


LESSONS = {"tensors": tensors, "autograd": autograd, "linreg": linreg, "data": data}
