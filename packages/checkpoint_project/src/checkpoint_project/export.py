"""export: the trained model as ONNX with a dynamic batch axis, verified on the spot."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from labs_core import LabError
from labs_core.errors import one_line
from labs_core.files import refuse_special
from labs_core.rundir import WRITER, check_replace, check_writable

from .evaluate import test_loader
from .inference import load_trained

FORMATS = ("onnx",)
TOLERANCE = 1e-4


OUR_KEYS = {
    "classes",
    "mean",
    "std",
    "input_shape",
    "source_checkpoint",
}  # what every export's metadata holds


def onnx_is_ours(path: Path) -> bool:
    """An ONNX model this project exported: it parses, and its metadata is the one export writes
    (``written_by``, or, in exports older than that tag, the class names, normalisation, input
    shape and source checkpoint)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 -- random bytes, a truncated file, another format: not ours
        return False
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    return meta.get("written_by") == WRITER or meta.keys() >= OUR_KEYS


def check_target(source: Path, target: Path, overwrite: bool = False) -> None:
    """Refuse, before anything is loaded or written, an output that would damage what is there: the
    checkpoint being exported, a name without ``.onnx``, a folder, and any existing file but an ONNX
    model this project exported, which is replaced only with ``--overwrite``."""
    if target.exists() and source.exists() and target.samefile(source):
        raise LabError(
            f"--out {target} is the checkpoint being exported; it is never written over "
            "(give another --out)"
        )
    if target.suffix.lower() != ".onnx":
        raise LabError(f"--out {target}: an ONNX model's file name ends in .onnx (nothing written)")
    if target.is_dir():
        raise LabError(f"--out {target} is a directory; give a file name ending in .onnx")
    refuse_special(target, "--out")  # a FIFO would block the read below, a device swallow the model
    check_replace(target, overwrite=overwrite, ours=onnx_is_ours)
    check_writable(target, target.parents)


def export(
    checkpoint: str, fmt: str = "onnx", out: str | None = None, say=print, overwrite: bool = False
) -> Path:
    """Export ``checkpoint`` to ONNX in a private temporary folder beside ``out`` (the exporter's
    external-data file stays in there; the weights are saved inline), verify it with onnxruntime,
    then move it into place: the output appears whole or not at all, and nothing else is left. An
    existing file is replaced only when it is an earlier export and ``overwrite`` says to."""
    if fmt not in FORMATS:
        raise LabError(f"unknown export format {fmt!r}; supported: {', '.join(FORMATS)}")
    source = Path(checkpoint)
    target = Path(out) if out else source.with_suffix(".onnx")
    check_target(source, target, overwrite)
    model, ckpt = load_trained(checkpoint)
    loader, _ = test_loader(ckpt, None, None, "cpu", batch_size=64)
    batch = next(iter(loader))[0]
    try:
        diff = _export_verified(model, ckpt, checkpoint, batch, target)
    except OSError as exc:
        raise LabError(
            f"--out {target}: cannot write there ({exc.strerror or one_line(exc)})"
        ) from None
    say(
        f"exported {target}: onnx.checker passed; onnxruntime matches PyTorch on a real batch of"
        f" {len(batch)} (max abs difference {diff:.1e}); dynamic batch axis; class names and"
        " normalisation in the metadata"
    )
    return target


def _export_verified(
    model, ckpt: dict, checkpoint: str, batch: torch.Tensor, target: Path
) -> float:
    import onnx
    import onnxruntime as ort

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as work:
        raw, final = Path(work) / "exported.onnx", Path(work) / "model.onnx"
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates its passes
            torch.onnx.export(
                model,
                (batch[:2],),
                str(raw),
                input_names=["images"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                dynamo=True,
            )
        proto = onnx.load(str(raw))  # with its external data, if the exporter wrote any
        meta = {
            "classes": json.dumps(ckpt["classes"]),
            "mean": json.dumps(ckpt["mean"]),
            "std": json.dumps(ckpt["std"]),
            "input_shape": json.dumps(ckpt["input_shape"]),
            "model": ckpt["config"]["model"],
            "source_checkpoint": str(checkpoint),
            "written_by": WRITER,
        }
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, str(final), save_as_external_data=False)  # one self-contained file
        session = ort.InferenceSession(str(final), providers=["CPUExecutionProvider"])
        got = session.run(None, {"images": batch.numpy()})[0]
        with torch.no_grad():
            want = model(batch).numpy()
        diff = float(np.abs(got - want).max())
        if diff > TOLERANCE:
            raise LabError(
                f"ONNX export of {checkpoint}: onnxruntime differs from PyTorch by {diff:.2e} (>"
                f" {TOLERANCE})"
            )
        os.replace(final, target)
    return diff
