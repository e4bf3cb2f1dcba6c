"""checkpoint-project: the whole system behind one command.

    checkpoint-project train      [flags]                          (also installed as plain `train`)
    checkpoint-project evaluate   --checkpoint PATH [PATH ...] [--tta]
    checkpoint-project export     --checkpoint PATH --format onnx [--out FILE] [--overwrite]
    checkpoint-project predict    --checkpoint PATH(.pt|.onnx) IMAGE [IMAGE ...] [--top-k K]
    checkpoint-project explain    --checkpoint PATH IMAGE|FOLDER [...] [--out DIR] [--top-k K] [--overwrite]
    checkpoint-project finetune   --from CHECKPOINT|torchvision:NAME --dataset imagefolder --data-dir DIR
"""

from __future__ import annotations

import argparse
import sys

from labs_core.cli import main_guard
from labs_core.config import (
    _OneLineParser,
    add_config_arguments,
    config_from_namespace,
    explicit_fields,
)

PROG = "checkpoint-project"
COMMANDS = ("train", "evaluate", "export", "predict", "explain", "finetune")


def _parser(name: str, description: str) -> argparse.ArgumentParser:
    return _OneLineParser(prog=f"{PROG} {name}", description=description)


def run_evaluate(argv: list[str]) -> int:
    from .evaluate import evaluate

    p = _parser("evaluate", "test accuracy of each checkpoint, and of their ensemble")
    p.add_argument("--checkpoint", nargs="+", required=True, metavar="PATH")
    p.add_argument("--tta", action="store_true", help="average with horizontally flipped images")
    p.add_argument("--dataset", help="evaluate on another dataset with the same classes (default: the checkpoint's)")
    p.add_argument("--data-dir", help="where that dataset lives (default: the checkpoint's)")
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    evaluate(a.checkpoint, a.tta, a.dataset, a.data_dir, a.device)
    return 0


def run_export(argv: list[str]) -> int:
    from .export import FORMATS, export

    p = _parser("export", "export a checkpoint (ONNX, dynamic batch axis, verified with onnxruntime)")
    p.add_argument("--checkpoint", required=True, metavar="PATH")
    p.add_argument("--format", default="onnx", help=f"one of: {', '.join(FORMATS)}")
    p.add_argument("--out", help="output file (default: the checkpoint's path with .onnx)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export at --out (never any other file)")
    a = p.parse_args(argv)
    export(a.checkpoint, a.format, a.out, overwrite=a.overwrite)
    return 0


def run_predict(argv: list[str]) -> int:
    from .predict import predict

    p = _parser("predict", "top-k classes for image files (any size or mode)")
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a .pt checkpoint or an exported .onnx model")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=int, default=3)
    a = p.parse_args(argv)
    if a.top_k < 1:
        p.error("--top-k must be at least 1")
    predict(a.checkpoint, a.images, a.top_k)
    return 0


def run_explain(argv: list[str]) -> int:
    from .explain import explain_images

    p = _parser("explain", "why the model predicts what it does: saliency, SmoothGrad, integrated gradients and "
                "Grad-CAM over each image, one PNG per image")
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a .pt checkpoint of this project")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders of them")
    p.add_argument("--out", metavar="DIR", help="folder for the PNGs (default: explain/ in the checkpoint's run)")
    p.add_argument("--top-k", type=int, default=3, help="classes named in each title (default: 3)")
    p.add_argument("--overwrite", action="store_true", help="replace PNGs an earlier explain wrote there")
    a = p.parse_args(argv)
    if a.top_k < 1:
        p.error("--top-k must be at least 1")
    explain_images(a.checkpoint, a.images, a.out, a.top_k, overwrite=a.overwrite)
    return 0


def run_finetune(argv: list[str]) -> int:
    from .finetune import FinetuneConfig, finetune

    p = _parser("finetune", "fine-tune a trained backbone on a new dataset, phase by phase")
    add_config_arguments(p, FinetuneConfig)
    ns = p.parse_args(argv)
    finetune(config_from_namespace(FinetuneConfig, ns, explicit_fields(p, argv)))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        from .train import main as train_main
        return train_main(rest)
    handlers = {"evaluate": run_evaluate, "export": run_export, "predict": run_predict, "explain": run_explain,
                "finetune": run_finetune}
    if command not in handlers:
        print(f"{PROG}: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2

    def run() -> int:
        try:
            return handlers[command](rest)
        except SystemExit as exc:  # --help (0) or a bad flag (2, message already printed)
            return int(exc.code or 0)

    return main_guard(f"{PROG} {command}", run)


if __name__ == "__main__":
    sys.exit(main())
