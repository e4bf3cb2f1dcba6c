"""An exported ONNX model, opened and checked against its own metadata before it sees an image.

``export`` writes the class names, normalisation and input shape into the model's metadata;
a model from elsewhere, or one edited since, may lack them or disagree with its own graph (an
input of another shape, an output of another width than its class list). Each such file ends
in one line naming what does not fit, never in onnxruntime's traceback halfway through.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from labs_core import LabError

META_KEYS = ("classes", "mean", "std", "input_shape")


def open_onnx(path: Path) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """``(run, meta)``: ``run(x)`` maps a float32 batch (N, C, H, W) to logits (N, classes);
    ``meta`` holds ``classes``, ``mean``, ``std`` and ``input_shape`` as export wrote them."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise LabError(
            f"{path} is not a readable ONNX model ({str(exc).splitlines()[0][:150]})"
        ) from None
    meta = read_metadata(path, session.get_modelmeta().custom_metadata_map)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or not outputs:
        raise LabError(
            f"{path} takes {len(inputs)} inputs and gives {len(outputs)} outputs; an exported "
            "classifier takes one batch of images and gives logits"
        )
    want = [None, *meta["input_shape"]]
    got = list(inputs[0].shape)
    if len(got) != len(want) or any(
        isinstance(g, int) and w is not None and g != w for g, w in zip(got, want, strict=True)
    ):
        raise LabError(
            f"{path}: its input is {_shape(got)} but its metadata says images of"
            f" {_shape(meta['input_shape'])}; the file was not written by this export (or was"
            " edited)"
        )
    width = outputs[0].shape[-1] if outputs[0].shape else None
    if isinstance(width, int) and width != len(meta["classes"]):
        raise LabError(
            f"{path}: it gives {width} logits per image but its metadata names "
            f"{len(meta['classes'])} classes"
        )
    name = inputs[0].name

    def run(x: np.ndarray) -> np.ndarray:
        try:
            return session.run(None, {name: x})[0]
        except Exception as exc:  # a graph that fails on its own declared input
            raise LabError(
                f"{path}: onnxruntime could not run the model ({str(exc).splitlines()[0][:150]})"
            ) from None

    return run, meta


def read_metadata(path: Path, raw: dict) -> dict:
    """The four entries export writes, parsed and checked for kind and length."""
    missing = [k for k in META_KEYS if k not in raw]
    if missing:
        raise LabError(
            f"{path} has no {', '.join(missing)} in its metadata (export it with "
            "checkpoint-project export)"
        )
    try:
        meta = {k: json.loads(raw[k]) for k in META_KEYS}
    except json.JSONDecodeError as exc:
        raise LabError(f"{path}: its metadata is not the JSON export writes ({exc})") from None
    shape, classes = meta["input_shape"], meta["classes"]
    ok = (
        isinstance(classes, list)
        and len(classes) >= 1
        and all(isinstance(c, str) for c in classes)
        and isinstance(shape, list)
        and len(shape) == 3
        and all(isinstance(d, int) and d > 0 for d in shape)
        and all(
            isinstance(meta[k], list)
            and len(meta[k]) == shape[0]
            and all(isinstance(v, (int, float)) for v in meta[k])
            for k in ("mean", "std")
        )
    )
    if not ok or not all(v > 0 for v in meta["std"]):
        raise LabError(
            f"{path}: its metadata does not describe an image classifier (classes {classes!r:.60}, "
            f"input_shape {shape!r:.40}, one positive mean and std per channel)"
        )
    return meta


def _shape(dims) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) else "N" for d in dims) + ")"
