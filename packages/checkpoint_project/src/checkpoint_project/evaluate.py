"""evaluate: test accuracy of each checkpoint and, for several, of their ensemble."""

from __future__ import annotations

from labs_core import LabError, pick_device
from labs_core.data import FastLoader, load_dataset, split_data

from .inference import load_trained, predict_probs


def test_loader(
    ckpt: dict, dataset: str | None, data_dir: str | None, device, batch_size: int = 500
):
    """The test split of the checkpoint's dataset (or of the one given), normalised as in
    training."""
    cfg = ckpt["config"]
    data = load_dataset(
        dataset or cfg["dataset"],
        data_dir or cfg["data_dir"],
        image_size=cfg.get("image_size", 0),
        label_column=cfg.get("label_column", "label"),
    )
    data = split_data(
        data,
        seed=cfg.get("seed", 0),
        val_fraction=cfg.get("val_fraction", 0.1),
        stratify=cfg.get("stratify", True),
        test_fraction=cfg.get("test_fraction") if data.test is None else None,
    )
    if data.test is None:
        raise LabError(
            f"{data.name}: the run held out no test split (--test-fraction 0); nothing to"
            " evaluate on"
        )
    if data.classes != ckpt["classes"]:
        raise LabError(
            f"the dataset's classes {data.classes[:5]}... differ from the checkpoint's"
            f" {ckpt['classes'][:5]}..."
        )
    if list(data.input_shape) != list(ckpt["input_shape"]):
        raise LabError(
            f"the dataset's images are {tuple(data.input_shape)}, the model expects"
            f" {tuple(ckpt['input_shape'])}"
        )
    x, y = data.test
    return (
        FastLoader(
            x, y, batch_size, device=device, shuffle=False, mean=ckpt["mean"], std=ckpt["std"]
        ),
        data,
    )


def evaluate(
    paths: list[str],
    tta: bool = False,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    say=print,
) -> dict:
    dev = pick_device(device)
    results, probs_sum, targets, first = {}, None, None, None
    for path in paths:
        if str(path).lower().endswith(".onnx"):
            raise LabError(
                f"{path} is an ONNX model; evaluate needs the .pt checkpoint (its config names the "
                "test split to measure on; predict takes .onnx)"
            )
        model, ckpt = load_trained(path, dev)
        if first is None:
            first = ckpt
            loader, _ = test_loader(ckpt, dataset, data_dir, dev)
        elif ckpt["classes"] != first["classes"] or ckpt["input_shape"] != first["input_shape"]:
            raise LabError(
                f"{path} was trained on other classes or image shapes than {paths[0]}; cannot"
                " ensemble them"
            )
        probs, targets = predict_probs(model, loader, dev, tta=tta)
        acc = (probs.argmax(1) == targets).float().mean().item()
        results[str(path)] = acc
        say(f"{path}: test accuracy {acc:.4f}{' (flip TTA)' if tta else ''}")
        probs_sum = probs if probs_sum is None else probs_sum + probs
    out = {"checkpoints": results, "tta": tta, "test_images": len(targets)}
    if len(paths) > 1:
        out["ensemble"] = (probs_sum.argmax(1) == targets).float().mean().item()
        say(
            f"ensemble of {len(paths)} (averaged probabilities): test accuracy"
            f" {out['ensemble']:.4f}"
        )
    return out
