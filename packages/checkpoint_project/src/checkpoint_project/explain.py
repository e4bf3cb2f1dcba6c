"""explain: why a trained model predicts what it does for image files. Each image gets one PNG: the
image, then its saliency, SmoothGrad, integrated-gradients and Grad-CAM maps over it (the methods of
``labs_core.explain``), titled with the predicted and top-k classes. Images are read and normalised
exactly as ``predict`` reads them; an unreadable one is named at the end, after the others are done.
"""

from __future__ import annotations

from pathlib import Path

import torch

from labs_core import LabError
from labs_core.data.imagefolder import EXTENSIONS
from labs_core.explain import last_feature_layer, write_explanations
from labs_core.files import special_kind
from labs_core.rundir import check_replace, check_writable, png_is_ours

from .inference import load_trained
from .predict import preprocess


def default_out(checkpoint: Path) -> Path:
    """``explain/`` in the checkpoint's run (``RUN/checkpoints/best.pt`` -> ``RUN/explain``), or
    beside a checkpoint kept elsewhere."""
    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return run / "explain"


def check_out(out: Path) -> None:
    """Refuse, before anything is loaded or written, an --out that is (or lies under) a file or
    cannot be written."""
    check_writable(out, (out, *out.parents))


def image_files(args: list[str], bad: list[str]) -> list[tuple[Path, str]]:
    """(file, name for its PNG) for every IMAGE argument: a file as given (any name: a file that is
    not an image is reported when read), a folder's image files (by extension, sorted, sub-folders
    included) named by their path inside it (``cat/1.png`` -> ``cat_1``). A missing path or a
    folder without images goes to ``bad``."""
    found = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS
            )
            if not files:
                bad.append(f"{path}: no images ({', '.join(sorted(EXTENSIONS))}) in this folder")
            found += [(f, "_".join(f.relative_to(path).with_suffix("").parts)) for f in files]
        elif path.is_file():
            found.append((path, path.stem))
        elif special_kind(path):
            bad.append(f"{path} is {special_kind(path)}, not an image file")
        else:
            bad.append(f"image not found: {path}")
    return found


def png_names(files: list[tuple[Path, str]], folder: Path) -> list[Path]:
    """Each image's PNG in ``folder``: ``<name>.explain.png``, ``<name>-2.explain.png`` for the
    second image of that name (two folders' cat/1.png and dog/1.png must not overwrite each other).
    """
    names, out = set(), []
    for _, name in files:
        stem, n = name, 1
        while stem in names:
            n += 1
            stem = f"{name}-{n}"
        names.add(stem)
        out.append(folder / f"{stem}.explain.png")
    return out


def explain_images(
    checkpoint: str,
    images: list[str],
    out: str | None = None,
    top_k: int = 3,
    say=print,
    overwrite: bool = False,
) -> list[Path]:
    """One PNG per readable image in ``out`` (default: ``default_out``); returns their paths. The
    folder is created with the first PNG, so a command that reads no image writes nothing. A PNG
    already there is replaced only when an earlier explain wrote it and ``overwrite`` says to."""
    path = Path(checkpoint)
    if path.suffix.lower() == ".onnx":
        raise LabError(
            f"{path} is an ONNX model; explain needs the .pt checkpoint (the maps are gradients, "
            "which onnxruntime does not compute)"
        )
    folder = Path(out) if out else default_out(path)
    check_out(folder)
    model, ckpt = load_trained(path)
    classes, shape, mean, std = ckpt["classes"], ckpt["input_shape"], ckpt["mean"], ckpt["std"]
    bad: list[str] = []
    files = image_files(images, bad)
    total = len(files) + len(bad)
    dests = png_names(files, folder)
    for dest in dests:  # before anything is written: never a file of the user's, ours only if told
        check_replace(dest, overwrite=overwrite, ours=png_is_ours)
    written, layer = [], None
    for (file, _), dest in zip(files, dests, strict=True):
        try:
            x = torch.from_numpy(preprocess(file, shape, mean, std))[None]
        except LabError as exc:
            bad.append(str(exc))
            continue
        if layer is None:  # the last conv stage: the same for every image
            layer = last_feature_layer(model, x)
        folder.mkdir(parents=True, exist_ok=True)
        probs = write_explanations(model, x, mean, std, classes, dest, top_k, layer=layer)[0]
        values, idx = probs.topk(min(top_k, len(classes)))
        say(
            f"{file}: "
            + ", ".join(
                f"{classes[i]} {v:.3f}" for v, i in zip(values.tolist(), idx.tolist(), strict=True)
            )
            + f" -> {dest}"
        )
        written.append(dest)
    if bad:
        raise LabError(f"{len(bad)} of {total} image(s) could not be read: " + "; ".join(bad))
    return written
