"""predict: top-k classes for image files, with a PyTorch checkpoint or an exported ONNX model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from labs_core import LabError
from labs_core.data.imagefolder import open_rgb
from labs_core.files import refuse_special

from .inference import load_trained


def preprocess(path: Path, shape: list[int], mean, std) -> np.ndarray:
    """Any image file -> (C, H, W) float32, normalised as in training."""
    c, h, _ = shape
    im = open_rgb(path, h)  # RGB, shorter side resized, centre-cropped; LabError if unreadable
    if c == 1:
        im = im.convert("L")
    x = np.asarray(im, dtype=np.float32) / 255.0
    x = x[None] if c == 1 else x.transpose(2, 0, 1)
    return (x - np.asarray(mean, dtype=np.float32)[:, None, None]) / np.asarray(
        std, dtype=np.float32
    )[:, None, None]


def predict(model_path: str, images: list[str], top_k: int = 3, say=print) -> list[dict]:
    path = Path(model_path)
    refuse_special(path, "a model")
    if not path.is_file():
        raise LabError(f"model not found: {path}")
    if path.suffix.lower() == ".onnx":
        from .onnx_model import open_onnx

        run, meta = open_onnx(path)
        classes, mean, std, shape = (meta[k] for k in ("classes", "mean", "std", "input_shape"))
    else:
        model, ckpt = load_trained(path)
        classes, mean, std, shape = ckpt["classes"], ckpt["mean"], ckpt["std"], ckpt["input_shape"]

        def run(x):
            with torch.no_grad():
                return model(torch.from_numpy(x)).numpy()

    results, bad = [], []
    for (
        image
    ) in images:  # every readable image gets its prediction; the bad ones are listed at the end
        try:
            refuse_special(image, "an image")
            if not Path(image).is_file():
                raise LabError(
                    f"{image} is a directory"
                    if Path(image).is_dir()
                    else f"image not found: {image}"
                )
            x = preprocess(Path(image), shape, mean, std)[None]
        except LabError as exc:
            bad.append(str(exc))
            continue
        logits = run(x)[0]
        probs = torch.from_numpy(logits).float().softmax(0)
        values, idx = probs.topk(min(top_k, len(classes)))
        top = [(classes[i], float(v)) for v, i in zip(values.tolist(), idx.tolist(), strict=True)]
        results.append({"image": str(image), "top": top})
        say(f"{image}: " + ", ".join(f"{name} {p:.3f}" for name, p in top))
    if bad:
        raise LabError(f"{len(bad)} of {len(images)} image(s) could not be read: " + "; ".join(bad))
    return results
