"""checkpoint-project: the whole system behind one command.

checkpoint-project train      [flags]                          (also installed as plain `train`)
checkpoint-project evaluate   --checkpoint PATH [PATH ...] [--tta]
checkpoint-project export     --checkpoint PATH --format onnx [--out FILE] [--overwrite]
checkpoint-project predict    --checkpoint PATH(.pt|.onnx) IMAGE [IMAGE ...] [--top-k K]
checkpoint-project explain    --checkpoint PATH IMAGE|FOLDER [...] [--out DIR] [--top-k K]
                              [--overwrite]
checkpoint-project finetune   --from CHECKPOINT|torchvision:NAME --dataset imagefolder
                              --data-dir DIR
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from labs_core.cli import run_command, run_lab
from labs_core.config import ConfigPart, arg

PROG = "checkpoint-project"
COMMANDS = ("train", "evaluate", "export", "predict", "explain", "finetune")


@dataclass
class EvaluateConfig(ConfigPart):
    """checkpoint-project evaluate: test accuracy of each checkpoint, and of their ensemble."""

    checkpoint: list[str] = arg(
        help="checkpoints to evaluate (several: also their ensemble)",
        default_factory=list,
        required=True,
        metavar="PATH",
    )
    tta: bool = arg(False, "average with horizontally flipped images")
    dataset: str = arg(
        "", "evaluate on another dataset with the same classes (default: the checkpoint's)"
    )
    data_dir: str = arg("", "where that dataset lives (default: the checkpoint's)")
    device: str = arg("auto", "auto, cpu, cuda, cuda:N or mps")


@dataclass
class ExportConfig(ConfigPart):
    """checkpoint-project export: a checkpoint as ONNX (dynamic batch axis, verified with
    onnxruntime)."""

    checkpoint: str = arg("", "the .pt checkpoint to export", required=True, metavar="PATH")
    format: str = arg("onnx", "the export format (onnx)")
    out: str = arg("", "output file (default: the checkpoint's path with .onnx)")
    overwrite: bool = arg(False, "replace an earlier export at --out (never any other file)")


@dataclass
class PredictConfig(ConfigPart):
    """checkpoint-project predict: top-k classes for image files (any size or mode)."""

    checkpoint: str = arg(
        "", "a .pt checkpoint or an exported .onnx model", required=True, metavar="PATH"
    )
    images: list[str] = arg(
        help="image files", default_factory=list, positional=True, metavar="IMAGE"
    )
    top_k: int = arg(3, "classes to show per image", low=1)


@dataclass
class ExplainConfig(ConfigPart):
    """checkpoint-project explain: why the model predicts what it does (saliency, SmoothGrad,
    integrated gradients and Grad-CAM over each image, one PNG per image)."""

    checkpoint: str = arg("", "a .pt checkpoint of this project", required=True, metavar="PATH")
    images: list[str] = arg(
        help="image files, or folders of them",
        default_factory=list,
        positional=True,
        metavar="IMAGE",
    )
    out: str = arg(
        "", "folder for the PNGs (default: explain/ in the checkpoint's run)", metavar="DIR"
    )
    top_k: int = arg(3, "classes named in each title", low=1)
    overwrite: bool = arg(False, "replace PNGs an earlier explain wrote there")


def evaluate_command(cfg: EvaluateConfig) -> None:
    from .evaluate import evaluate

    evaluate(cfg.checkpoint, cfg.tta, cfg.dataset or None, cfg.data_dir or None, cfg.device)


def export_command(cfg: ExportConfig) -> None:
    from .export import export

    export(cfg.checkpoint, cfg.format, cfg.out or None, overwrite=cfg.overwrite)


def predict_command(cfg: PredictConfig) -> None:
    from .predict import predict

    predict(cfg.checkpoint, cfg.images, cfg.top_k)


def explain_command(cfg: ExplainConfig) -> None:
    from .explain import explain_images

    explain_images(cfg.checkpoint, cfg.images, cfg.out or None, cfg.top_k, overwrite=cfg.overwrite)


# name -> (its config, what it does); train and finetune are training runs (``run_lab``)
ACTIONS = {
    "evaluate": (EvaluateConfig, evaluate_command),
    "export": (ExportConfig, export_command),
    "predict": (PredictConfig, predict_command),
    "explain": (ExplainConfig, explain_command),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    prog = f"{PROG} {command}"
    if command == "train":  # the same command as the plain ``train`` entry point
        from .train import main as train_main

        return train_main(rest)
    if command == "finetune":
        from .finetune import FinetuneConfig, build_plan

        return run_lab(
            prog,
            FinetuneConfig,
            build_plan,
            rest,
            "fine-tune a trained backbone on a new dataset, phase by phase",
        )
    if command not in ACTIONS:
        print(
            f"{PROG}: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    cfg_cls, action = ACTIONS[command]
    return run_command(prog, cfg_cls, action, rest, cfg_cls.__doc__.split(": ", 1)[1])


if __name__ == "__main__":
    sys.exit(main())
