"""Lessons that run: each prints what it shows.

    lab1-conv lesson debugging

``debugging`` runs four sections, each a function that takes ``say`` and returns the facts the
tests check: ``errors`` (shape, device and dtype errors: raised, read, fixed), ``gradients``
(gradcheck on lab1's convolution, and on a wrong backward), ``anomaly`` (detect_anomaly naming
the op that made a NaN) and ``summaries`` (torchinfo beside lab1's own shape table).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import gradcheck

from . import ops
from .model import CNN

Say = Callable[[str], None]


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0]


def errors(say: Say = print) -> dict:
    """The three errors every PyTorch program meets first, each raised, read and fixed."""
    torch.manual_seed(0)
    images = torch.rand(64, 1, 28, 28)  # a batch as a loader gives it: (N, C, H, W)
    labels = torch.randint(0, 10, (64,))
    on_gpu = torch.cuda.is_available()
    best = "cuda" if on_gpu else "cpu"
    linear, conv = nn.Linear(784, 10), nn.Conv2d(3, 16, 3)
    mlp_on_gpu = nn.Linear(784, 10).to(best)
    cases = [
        (
            "shape: a Linear layer fed an image batch",
            lambda: linear(images),
            (
                "Linear multiplies the LAST dim by its weight: (64, 1, 28, 28) is read as 64*1*28 ="
                " 1792 rows of 28 numbers (mat1 1792x28), but the weight wants 784 per row (mat2"
                " 784x10)"
            ),
            "flatten all but the batch dim, (64, 784): linear(images.flatten(1))",
            lambda: linear(images.flatten(1)),
        ),
        (
            "shape: a conv layer built for RGB fed greyscale",
            lambda: conv(images),
            (
                "the weight [16, 3, 3, 3] expects 3 input channels; input[64, 1, 28, 28] has 1 (dim"
                " 1 is channels)"
            ),
            "make in_channels match the data: nn.Conv2d(1, 16, 3)",
            lambda: nn.Conv2d(1, 16, 3)(images),
        ),
        (
            (
                "device: the model on cuda, the batch on cpu"
                if on_gpu
                else "device: code that hard-codes 'cuda'"
            ),
            (
                (lambda: mlp_on_gpu(images.flatten(1)))
                if on_gpu
                else (lambda: nn.Linear(784, 10).to("cuda"))
            ),
            (
                "one op got operands on two devices, and PyTorch never moves data by itself"
                if on_gpu
                else (
                    "this machine has no CUDA device. (With one, the next error of this family is a"
                    " model on the GPU fed a batch on the CPU: 'Expected all tensors to be on the"
                    " same device, but found at least two devices')"
                )
            ),
            (
                "move the batch to where the model is: x.to(next(model.parameters()).device)"
                if on_gpu
                else (
                    "pick the device once: device = 'cuda' if torch.cuda.is_available() else 'cpu';"
                    " model.to(device), and each batch .to(device)"
                )
            ),
            (
                (lambda: mlp_on_gpu(images.flatten(1).to(next(mlp_on_gpu.parameters()).device)))
                if on_gpu
                else (lambda: nn.Linear(784, 10).to(best)(images.flatten(1).to(best)))
            ),
        ),
        (
            "dtype: float64 from NumPy into a float32 layer",
            lambda: linear(torch.from_numpy(images.flatten(1).double().numpy())),
            (
                "NumPy's default float is float64 (Double), parameters are float32 (Float): matmul"
                " needs one dtype"
            ),
            "convert the input: x.float() (or torch.from_numpy(a).float())",
            lambda: linear(torch.from_numpy(images.flatten(1).double().numpy()).float()),
        ),
        (
            "dtype: raw uint8 pixels into a conv",
            lambda: nn.Conv2d(1, 16, 3)((images * 255).to(torch.uint8)),
            "images decode as uint8 (unsigned char); the conv's weight and bias are float",
            "scale to floats in [0, 1]: x.float() / 255",
            lambda: nn.Conv2d(1, 16, 3)((images * 255).to(torch.uint8).float() / 255),
        ),
        (
            "dtype: int32 class labels into cross_entropy",
            lambda: F.cross_entropy(linear(images.flatten(1)), labels.int()),
            (
                "class indices must be int64 (Long); int32 labels (common from NumPy on some"
                " systems) are refused"
            ),
            "labels.long()",
            lambda: F.cross_entropy(linear(images.flatten(1)), labels.int().long()),
        ),
    ]
    messages = []
    for title, broken, reading, fix, fixed in cases:
        say(f"== {title}")
        try:
            broken()
            raise LookupError(f"{title}: expected an error")
        except (RuntimeError, AssertionError) as exc:  # a CPU-only build of torch asserts on 'cuda'
            messages.append(_first_line(exc))
            say(f"  error: {messages[-1]}\n  read:  {reading}")
        out = fixed()
        say(
            f"  fix:   {fix} -> {tuple(out.shape) or f'loss {out.item():.3f}'} on {out.device},"
            f" {out.dtype}\n"
        )
    return {"messages": messages, "fixed": len(cases)}


class Im2ColOverwrite(ops.Im2Col):
    """lab1's im2col with a classic col2im bug: '=' where overlapping windows need '+='."""

    @staticmethod
    def backward(ctx, grad_cols: Tensor):
        (n, c, h, w), padded_shape, (ph, pw), taps, h_out, w_out = ctx.meta
        grad_cols = grad_cols.reshape(c, len(taps), n, h_out, w_out)
        grad_xp = grad_cols.new_zeros(padded_shape)  # (C, N, H+2p, W+2p)
        for t, (r, q) in enumerate(taps):
            grad_xp[:, :, r, q] = grad_cols[
                :, t
            ]  # BUG: each tap overwrites what earlier taps sent to a pixel
        return grad_xp[:, :, ph : ph + h, pw : pw + w].transpose(0, 1), None, None, None, None


def _gradcheck(fn, inputs) -> tuple[bool, str]:
    """gradcheck's verdict and the first line of its complaint (nothing when it passes)."""
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # the float32 case warns before it fails; the failure is the lesson
        try:
            return gradcheck(fn, inputs), ""
        except RuntimeError as exc:  # torch.autograd.gradcheck.GradcheckError
            return False, _first_line(exc)


@contextmanager
def _one_thread():
    """gradcheck runs a few hundred tiny float64 ops; on a busy machine, waking a second thread for
    each costs far more than it saves (measured 7 s against 0.2 s on 2 shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def gradients(say: Say = print) -> dict:
    """gradcheck: the analytic gradient (backward) against finite differences of the forward."""
    with _one_thread():
        return _gradients(say)


def _gradients(say: Say) -> dict:
    g = torch.Generator().manual_seed(0)
    # Small on purpose: gradcheck costs one backward per output entry and two forwards per input
    # entry.
    x, w, b = (
        torch.randn(*s, generator=g, dtype=torch.float64)
        for s in ((1, 2, 4, 4), (2, 2, 3, 3), (2,))
    )
    for t in (x, w, b):
        t.requires_grad_(True)
    say(
        "== gradcheck on lab1's convolution (unfold with a hand-written col2im backward, then"
        " matmul)"
    )
    say(
        "gradcheck nudges every input entry by +-1e-6, measures how the output moves, and compares"
        " that\nnumerical Jacobian with the one backward computes. It needs float64: in float32,"
        " rounding in the\nfinite differences alone is larger than its tolerance."
    )
    conv = lambda x, w, b: ops.conv2d(x, w, b, stride=1, padding=1)  # noqa: E731
    facts = {"conv64": _gradcheck(conv, (x, w, b))[0]}
    say(f"ops.conv2d, float64, stride 1, padding 1: {facts['conv64']}")
    facts["conv32"], why = _gradcheck(
        conv, tuple(t.detach().float().requires_grad_(True) for t in (x, w, b))
    )
    say(f"the same, correct code in float32: {facts['conv32']}  ({why})")
    facts["pool64"] = _gradcheck(lambda x: ops.max_pool2d(x, 2), (x,))[0]
    say(
        f"ops.max_pool2d, float64: {facts['pool64']}  (random inputs have no ties, where max has no"
        " derivative)"
    )

    say("\n== gradcheck catching a wrong backward")
    wrong = lambda x, stride: Im2ColOverwrite.apply(x, (3, 3), (stride, stride), (0, 0), (1, 1))  # noqa: E731
    right = lambda x, stride: ops.im2col(x, (3, 3), (stride, stride))  # noqa: E731
    image = torch.randn(1, 1, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    facts["right_overlap"] = _gradcheck(lambda x: right(x, 1), (image,))[0]
    facts["wrong_overlap"], why = _gradcheck(lambda x: wrong(x, 1), (image,))
    facts["wrong_message"] = why
    facts["wrong_no_overlap"] = _gradcheck(lambda x: wrong(x, 3), (image,))[0]
    say(
        "im2col of a 6x6 image, 3x3, stride 1 (windows overlap): correct col2im"
        f" {facts['right_overlap']}; col2im with '=' for '+=' {facts['wrong_overlap']}"
    )
    say(
        f"  gradcheck says: {why}\n  read: the analytic gradient of the output w.r.t. input 0 (x)"
        " disagrees with the numerical one:\n  a pixel shared by several windows got only the last"
        " window's gradient"
    )
    say(
        f"the same wrong backward with stride 3 (no overlap): {facts['wrong_no_overlap']}  (the bug"
        " hides: gradcheck proves only the cases you give it; include the ones where the bug would"
        " show)\n"
    )
    return facts


def _entropy(p: Tensor) -> Tensor:
    return -(p * p.log()).sum()  # H(p) = -sum p log p; at p = 0 this is 0 * log 0 = 0 * -inf = nan


def _norm(v: Tensor) -> Tensor:
    return torch.sqrt(
        (v**2).sum()
    )  # |v|: fine forward at v = 0, but d sqrt(s)/ds = 1/(2 sqrt(0)) = inf


def _hunt(loss_fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[str, list[str]]:
    """Backward under detect_anomaly: the error it raises and the forward traceback lines it
    reports."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.autograd.detect_anomaly():
                loss_fn(x).backward()
            return "no NaN", []
        except RuntimeError as exc:
            message = _first_line(exc)
    torch_dir = str(Path(torch.__file__).parent) + os.sep
    for w in caught:
        text = str(w.message)
        if "Traceback of forward call" in text:
            lines = [
                ln.strip()
                for ln in text.splitlines()[1:]
                if ln.strip() and "Triggered internally" not in ln
            ]
            frames = [
                i for i, ln in enumerate(lines) if ln.startswith("File ") and torch_dir not in ln
            ]
            if frames:  # the innermost frame outside torch itself: your line, and its code
                return message, lines[frames[-1] : frames[-1] + 2]
    return message, []


def anomaly(say: Say = print) -> dict:
    """detect_anomaly: which backward op made the NaN, and the forward line that recorded it."""
    facts = {}
    say("== a NaN with no address")
    p = torch.tensor(
        [0.5, 0.5, 0.0], requires_grad=True
    )  # a distribution with an impossible outcome
    h = _entropy(p)
    h.backward()
    say(
        f"entropy of {p.tolist()}: -(p * p.log()).sum() = {h.item()}; "
        f"p.grad = {[round(v, 3) for v in p.grad.tolist()]}"
    )
    say(
        "  a NaN loss or gradient says nothing about where it started; after one optimizer step"
        " every weight is NaN"
    )

    say("\n== torch.autograd.detect_anomaly(): each backward op checks its output for NaN")
    facts["entropy"] = _hunt(_entropy, torch.tensor([0.5, 0.5, 0.0], requires_grad=True))
    facts["norm"] = _hunt(_norm, torch.zeros(3, requires_grad=True))
    for name, forward, (message, where) in (
        ("entropy at p = [0.5, 0.5, 0]", "log(0) = -inf, then 0 * -inf", facts["entropy"]),
        (
            "norm of the zero vector",
            "a finite loss (0.0)! sqrt's backward 1/(2*0) = inf, then inf * 0",
            facts["norm"],
        ),
    ):
        say(f"{name} ({forward}):\n  error: {message}")
        say("  forward call that made it: " + " | ".join(where))
    say(
        "  read: '<Op>Backward0 returned nan values in its 0th output' names the op; the warning's"
        " traceback\n  (printed to stderr in your own runs) is the forward line that recorded it"
    )
    fixed = torch.tensor([0.5, 0.5, 0.0], requires_grad=True)
    h = -(
        fixed * fixed.clamp_min(1e-12).log()
    ).sum()  # 0 * log(1e-12) = 0: the limit the formula means
    h.backward()
    facts["fixed_finite"] = bool(torch.isfinite(h) and torch.isfinite(fixed.grad).all())
    grad = [round(v, 3) for v in fixed.grad.tolist()]
    say(
        f"fix: p * p.clamp_min(1e-12).log() -> entropy {h.item():.4f}, p.grad {grad}\n  (for a"
        " norm: torch.linalg.vector_norm, whose backward returns 0 at 0; or sqrt(s + eps))"
    )
    say(
        "  anomaly mode records a traceback for every op and checks every gradient: slow; turn it"
        " on to hunt,\n  then off. It checks backward only: for a NaN made in the forward, assert"
        " torch.isfinite(x).all()\n"
    )
    return facts


def torchinfo_layers(
    model: nn.Module, in_shape: tuple[int, ...]
) -> tuple[list[tuple[tuple[int, ...], int]], int, str]:
    """torchinfo's leaf layers as (output shape, parameters), in call order; its total; its printed
    table."""
    import torchinfo

    stats = torchinfo.summary(
        model,
        input_size=(1, *in_shape),
        verbose=0,
        depth=8,
        col_names=("input_size", "output_size", "num_params"),
    )
    leaves = [
        (tuple(layer.output_size), layer.num_params)
        for layer in stats.summary_list
        if layer.is_leaf_layer
    ]
    return leaves, stats.total_params, str(stats)


def summaries(
    say: Say = print, model: nn.Module | None = None, in_shape: tuple[int, ...] = (1, 28, 28)
) -> dict:
    """torchinfo.summary and lab1's shape_table on the same CNN, and a check that they agree."""
    from labs_core.summary import model_summary

    from .figures import shape_table

    model = model if model is not None else CNN(in_shape, 10)  # lab1's CNN with the scratch conv
    say(f"== torchinfo.summary(model, input_size=(1, {', '.join(map(str, in_shape))}))")
    theirs, their_total, table = torchinfo_layers(model, in_shape)
    say(table)
    say(
        "\n== lab1's shape_table (labs_core.summary.model_summary, forward hooks), with the size"
        " formula"
    )
    say(shape_table(model, in_shape))
    rows = model_summary(model, torch.zeros(1, *in_shape))
    ours = [(r.output_shape, r.params) for r in rows]
    our_total = sum(p.numel() for p in model.parameters())
    facts = {
        "layers": (len(ours), len(theirs)),
        "shapes_agree": [s for s, _ in ours] == [s for s, _ in theirs],
        "params_agree": [n for _, n in ours] == [n for _, n in theirs],
        "totals": (our_total, their_total),
    }
    say(
        f"\nleaf layers: {len(ours)} here, {len(theirs)} in torchinfo; output shapes agree layer by"
        f" layer: {facts['shapes_agree']}; parameters per layer agree: {facts['params_agree']};"
        f" totals {our_total:,} and {their_total:,}"
    )
    say(
        "  torchinfo lists lab1's scratch ops.Conv2d as 'Conv2d' like nn.Conv2d: it sees a module"
        " and its\n  parameters, not the code inside. Both run one forward pass with hooks;"
        " torchinfo adds mult-adds\n  and memory, the shape table adds the output-size formula"
        " beside each conv and pool"
    )
    return facts


def debugging() -> dict:
    """Shape, device and dtype errors; gradient checking; NaN hunting; layer-by-layer summaries.
    Returns each section's facts, by section."""
    return {
        "errors": errors(print),
        "gradients": gradients(print),
        "anomaly": anomaly(print),
        "summaries": summaries(print),
    }


LESSONS = {"debugging": debugging}
