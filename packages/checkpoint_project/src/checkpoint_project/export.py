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

from .evaluate import test_loader
from .inference import load_trained

FORMATS = ("onnx",)
TOLERANCE = 1e-4


def export(checkpoint: str, fmt: str = "onnx", out: str | None = None, say=print) -> Path:
    if fmt not in FORMATS:
        raise LabError(f"unknown export format {fmt!r}; supported: {', '.join(FORMATS)}")
    import onnx
    import onnxruntime as ort

    model, ckpt = load_trained(checkpoint)
    target = Path(out) if out else Path(checkpoint).with_suffix(".onnx")
    loader, _ = test_loader(ckpt, None, None, "cpu", batch_size=64)
    batch = next(iter(loader))[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=target.parent, prefix=f".{target.stem}.")
    os.close(fd)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates its passes
            torch.onnx.export(model, (batch[:2],), tmp, input_names=["images"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},), dynamo=True)
        proto = onnx.load(tmp)
        meta = {"classes": json.dumps(ckpt["classes"]), "mean": json.dumps(ckpt["mean"]), "std": json.dumps(ckpt["std"]),
                "input_shape": json.dumps(ckpt["input_shape"]), "model": ckpt["config"]["model"],
                "source_checkpoint": str(checkpoint)}
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        got = session.run(None, {"images": batch.numpy()})[0]
        with torch.no_grad():
            want = model(batch).numpy()
        diff = float(np.abs(got - want).max())
        if diff > TOLERANCE:
            raise LabError(f"ONNX export of {checkpoint}: onnxruntime differs from PyTorch by {diff:.2e} (> {TOLERANCE})")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    say(f"exported {target}: onnx.checker passed; onnxruntime matches PyTorch on a real batch of {len(batch)} "
        f"(max abs difference {diff:.1e}); dynamic batch axis; class names and normalisation in the metadata")
    return target
