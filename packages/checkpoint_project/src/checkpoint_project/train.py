"""train: train a classifier on CIFAR-10 (or any core dataset) and report on its test split.

uv run --package checkpoint-project train [--model cnn|resnet|fast] [flags]
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from labs_core import Callback, LabError, RunConfig, arg
from labs_core.checkpoint import atomic_write_file, atomic_write_text, save_checkpoint
from labs_core.cli import run_lab
from labs_core.config import TuningOptions, apply_recipe
from labs_core.experiment import classifier_plan
from labs_core.optim import build_optimizer
from labs_core.run import Plan, execute

from .inference import PROJECT, predict_probs
from .models import GRAD_CHECKPOINT_MODELS, MODELS, build_model, enable_grad_checkpoint

PROG = "train"


# A recipe is a model with the flags it trains best with; a flag given on the command line wins.
RECIPES: dict[str, dict] = {
    # A 2-core CPU: >= 85% on CIFAR-10 in under 10 minutes (benchmarks/cifar10_accuracy.py).
    "cpu": dict(
        model="compact",
        epochs=12,
        batch_size=512,
        optimizer="sgd",
        lr=0.75,
        momentum=0.85,
        weight_decay=1.33e-3,
        norm_bias_lr=64.0,
        label_smoothing=0.2,
        scheduler="cosine",
        warmup_epochs=2.0,
        tta=True,
        channels_last=True,
        precision="bf16",
    ),
    # The CIFAR-10 speed-record style, for a GPU.
    "fast": dict(
        model="fast",
        epochs=10,
        batch_size=512,
        optimizer="sgd",
        lr=0.2,
        momentum=0.9,
        weight_decay=5e-4,
        label_smoothing=0.2,
        scheduler="cosine",
        warmup_epochs=1.0,
        tta=True,
        channels_last=True,
        precision="bf16",
    ),
    # The curriculum's custom CNN and the small ResNet, with AdamW and a one-cycle schedule.
    "cnn": dict(
        model="cnn",
        epochs=30,
        batch_size=128,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=5e-4,
        scheduler="onecycle",
    ),
    "resnet": dict(
        model="resnet",
        epochs=30,
        batch_size=128,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=5e-4,
        scheduler="onecycle",
    ),
}
MODEL_RECIPE = {"compact": "cpu", "fast": "fast", "cnn": "cnn", "resnet": "resnet"}


def bf16_runs_fast(device: str) -> bool:
    """Whether bf16 autocast pays here: CUDA, or a CPU with native bf16 instructions (elsewhere
    oneDNN emulates bf16 and it is slower than fp32)."""
    if device == "auto" and torch.cuda.is_available() or device.startswith("cuda"):
        return True
    return (
        device in ("auto", "cpu")
        and torch.backends.mkldnn.is_available()
        and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    )


@dataclass
class TrainConfig(TuningOptions, RunConfig):
    lab = PROJECT
    data_kinds = ("image",)  # every model here is a convolutional net

    dataset: str = arg(
        "cifar10", "dataset name: cifar10 (default), synthetic, digits, imagefolder, mnist, ..."
    )
    recipe: str = arg(
        "auto",
        "a model with its training flags: cpu (the compact net, ~10 min to 85%% on a 2-core CPU),"
        " fast (speed-record style, for a GPU), cnn, resnet; auto: the --model's recipe, else fast"
        " on a GPU and cpu elsewhere. Flags you give override the recipe's",
        choices=("auto", *RECIPES),
    )
    model: str = arg(
        "compact",
        "compact (the CPU recipe's net), cnn (custom CNN), resnet (small ResNet) or fast "
        "(speed-record style net); default: the recipe's",
        choices=MODELS,
    )
    width: int = arg(0, "base channel width (0: the model's default)")
    epochs: int = arg(12, "number of training epochs (default: the recipe's)")
    batch_size: int = arg(512, "batch size (default: the recipe's)")
    lr: float = arg(0.2, "peak learning rate (default: the recipe's)")
    weight_decay: float = arg(5e-4, "weight decay")
    scheduler: str = arg(
        "cosine",
        "learning-rate schedule (default: the recipe's)",
        choices=("none", "cosine", "onecycle", "step"),
    )
    norm_bias_lr: float = arg(
        1.0,
        "learning-rate multiplier for batch-norm biases, their weight decay divided by "
        "it (the cpu recipe: 64, as the CIFAR-10 speed records)",
        low=1e-6,
    )
    ema: float = arg(
        0.0,
        "keep an exponential moving average of the weights with this decay, e.g. 0.999 (0: off)",
        low=0,
        below=1,
    )
    tta: bool = arg(
        False,
        "flip test-time augmentation in the final test report (on in the cpu and fast recipes)",
    )
    profile: int = arg(
        0, "profile N training steps with torch.profiler (trace + table of costliest ops)"
    )
    monitor: str = arg("val_acc", "metric that decides the best checkpoint and early stopping")
    grad_checkpoint: bool = arg(
        False,
        "activation checkpointing (resnet, fast): keep only each block's input in "
        "the forward pass and recompute the rest in the backward pass (less memory, "
        "one more forward pass of time)",
    )

    def resolve(self, explicit: set[str]) -> None:
        if self.recipe == "auto":
            if "model" in explicit:
                self.recipe = MODEL_RECIPE[self.model]
            else:
                gpu = (
                    self.device.startswith("cuda")
                    or self.device == "auto"
                    and torch.cuda.is_available()
                )
                self.recipe = "fast" if gpu else "cpu"
        recipe = dict(RECIPES[self.recipe])
        if recipe.get("precision") == "bf16" and not bf16_runs_fast(self.device):
            recipe["precision"] = "fp32"
        if (
            "overfit" in explicit
        ):  # the first check a model learns at all: no augmentation, no smoothing
            recipe.pop("label_smoothing", None)
        apply_recipe(self, recipe, explicit)
        super().resolve(explicit)

    def validate(self) -> None:
        super().validate()
        if self.profile < 0 or self.width < 0:
            raise LabError("--profile and --width must not be negative")
        if self.ema and self.fsdp:  # its shadow copy would be the very whole-model copy FSDP avoids
            raise LabError(
                "--ema with --fsdp is not supported (the average is kept on one process); drop one"
            )
        if self.grad_checkpoint and self.model not in GRAD_CHECKPOINT_MODELS:
            raise LabError(
                f"--grad-checkpoint applies to --model {' or '.join(GRAD_CHECKPOINT_MODELS)} "
                f"(not {self.model})"
            )


def whitening_sample(data, count: int = 10_000) -> torch.Tensor:
    """Up to ``count`` training images, normalised as the loaders do, evenly spread over the split
    (decoded from disk when the split streams: at most 2,000 of them)."""
    x = data.train[0]
    if isinstance(x, list):  # --loader standard: image files
        from labs_core.data.imagefolder import decode_all

        files = x[:: max(1, len(x) // 2000)]
        x = decode_all(files, [0] * len(files), data.image_size, skip_bad=True)[0]
    x = x[:: max(1, len(x) // count)][:count].float() / 255
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    return (x - mean) / std


class WeightEMA(Callback):
    """Shadow weights w_ema <- d * w_ema + (1 - d) * w after every step; at the end the model takes
    the averaged weights (usually a little better and smoother than the last ones). The decay
    warms up, d = min(decay, (1 + t) / (10 + t)), so a short run is not dominated by its start."""

    def __init__(self, decay: float):
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {}
        self.updates = 0

    @torch.no_grad()
    def on_step_end(self, trainer, loss) -> None:
        state = trainer.module.state_dict()
        if not self.shadow:
            self.shadow = {k: v.detach().clone() for k, v in state.items()}
            return
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in state.items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v, 1 - d)
            else:
                self.shadow[k].copy_(v)

    def on_fit_end(self, trainer) -> None:
        if self.shadow:
            trainer.module.load_state_dict(self.shadow)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.shadow, self.updates = dict(state["shadow"]), state["updates"]


class Profile(Callback):
    """Profile ``steps`` optimizer steps (after one warm-up step): a Chrome/Perfetto trace and a
    table of the costliest operators, in ``<run>/profile/``."""

    def __init__(self, steps: int, folder: Path, say):
        self.steps, self.folder, self.say, self.prof, self.done = steps, folder, say, None, False

    def on_fit_start(self, trainer) -> None:
        from torch.profiler import ProfilerActivity, profile, schedule

        activities = [ProfilerActivity.CPU] + (
            [ProfilerActivity.CUDA] if torch.cuda.is_available() else []
        )
        self.prof = profile(
            activities=activities,
            schedule=schedule(wait=0, warmup=1, active=self.steps, repeat=1),
            on_trace_ready=self.write,
            record_shapes=True,
        )
        self.prof.__enter__()

    def on_step_end(self, trainer, loss) -> None:
        if self.prof is not None and not self.done:
            self.prof.step()

    def on_fit_end(self, trainer) -> None:
        if self.prof is not None:
            self.prof.__exit__(None, None, None)  # writes the trace if the run ended mid-window
            self.prof = None

    def write(self, prof) -> None:
        """Called by the profiler when its window closes: trace, and the costliest operators."""
        self.done = True
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_file(self.folder / "trace.json", prof.export_chrome_trace)
        key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        atomic_write_text(
            self.folder / "top_ops.txt", prof.key_averages().table(sort_by=key, row_limit=20) + "\n"
        )
        self.say(
            f"profile of {self.steps} steps: {self.folder / 'trace.json'} (open in"
            f" ui.perfetto.dev), {self.folder / 'top_ops.txt'}"
        )


def gallery_image(images: torch.Tensor | list[Path], i: int, size: int) -> torch.Tensor | None:
    """Test image ``i`` as uint8 (C, H, W): a row of the decoded split, or (``--loader standard``
    streams from files) decoded from its file as the loader reads it; None if it no longer decodes.
    """
    if not isinstance(images, list):
        return images[i]
    import numpy as np

    from labs_core.data.imagefolder import open_rgb

    try:
        return torch.from_numpy(
            np.asarray(open_rgb(images[i], size), dtype=np.uint8).copy()
        ).permute(2, 0, 1)
    except LabError:
        return None


def gallery(
    images: torch.Tensor | list[Path],
    probs: torch.Tensor,
    targets: torch.Tensor,
    classes: list[str],
    path: Path,
    count: int = 16,
    image_size: int = 32,
) -> int:
    """The most confidently wrong test images, with their true and predicted classes. ``images``
    is the test split as the loader holds it: a uint8 tensor, or the image files it streams."""
    from labs_core.plots import pyplot, save_figure

    plt = pyplot()

    conf, pred = probs.max(1)
    wrong = (pred != targets).nonzero().flatten()
    ranked = wrong[conf[wrong].argsort(descending=True)].tolist()
    shown = [
        (i, img)
        for i, img in ((i, gallery_image(images, i, image_size)) for i in ranked[: 2 * count])
        if img is not None
    ][:count]
    cols = 4
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 2.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (i, img) in zip(axes.flat, shown, strict=False):
        ax.imshow(
            img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy(), cmap="gray"
        )
        ax.set_title(
            f"true {classes[targets[i]]}\npred {classes[pred[i]]} {conf[i]:.0%}", fontsize=7
        )
    fig.suptitle("most confidently wrong test images")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return len(shown)


def build_train_model(cfg: TrainConfig, data) -> torch.nn.Module:
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.width)
    whiten = getattr(model, "whiten", None)
    if (
        whiten is not None
    ):  # the stem's filters come from the training images, as training sees them
        whiten.fit(whitening_sample(data))
    if cfg.grad_checkpoint:
        enable_grad_checkpoint(model, cfg.model)
    return model


def norm_bias_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The core optimizer, batch-norm biases at ``--norm-bias-lr`` times the rate."""
    return build_optimizer(cfg, model, norm_bias_lr=cfg.norm_bias_lr)


def train_report(run, trainer, loaders, test) -> dict:
    """From the one test pass: per-class accuracy, the flip-TTA accuracy, the gallery; with
    ``--ema``, the averaged weights as ``ema.pt``."""
    cfg, run_dir, data, metrics = run.cfg, run.run_dir, loaders.data, {}
    if cfg.ema:
        save_checkpoint(
            run_dir / "checkpoints" / "ema.pt",
            {
                **trainer.state_dict(gather=False),
                "config": cfg.to_dict(),
                "lab": cfg.lab,
                "classes": data.classes,
                "input_shape": list(data.input_shape),
                "mean": list(data.mean),
                "std": list(data.std),
            },
        )
    if test is None:
        return metrics
    probs, targets = test.probs, test.targets
    if cfg.tta:  # the mirror images' pass; the plain pass is the one already made
        flipped, _ = predict_probs(
            trainer.module,
            loaders.test,
            trainer.device,
            flip_only=True,
            autocast=trainer.precision.autocast,
        )
        probs = (probs + flipped) / 2
        metrics["test_acc_tta"] = (probs.argmax(1) == targets).float().mean().item()
        run.say(f"test accuracy with flip TTA {metrics['test_acc_tta']:.4f}")
    pred = probs.argmax(1)
    per_class = [
        (pred[targets == c] == c).float().mean().item() if (targets == c).any() else 0.0
        for c in range(data.num_classes)
    ]
    lines = [f"{name:<12} {acc:.4f}" for name, acc in zip(data.classes, per_class, strict=True)]
    atomic_write_text(run_dir / "per_class_accuracy.txt", "\n".join(lines) + "\n")
    metrics["per_class_acc"] = dict(zip(data.classes, per_class, strict=True))
    n = gallery(
        data.test[0],
        probs,
        targets,
        data.classes,
        run_dir / "confidently_wrong.png",
        image_size=data.image_size or data.input_shape[-1],
    )
    run.say("per-class test accuracy:\n  " + "\n  ".join(lines))
    run.say(f"confusion matrix:\n{(run_dir / 'confusion_matrix.txt').read_text().rstrip()}")
    run.say(
        f"gallery of the {n} most confidently wrong test images: "
        f"{run_dir / 'confidently_wrong.png'}"
    )
    return metrics


def build_plan(run) -> Plan:
    """The core's classifier plan with the recipe's model and optimizer, EMA and profiling
    callbacks, and the project's report."""
    cfg = run.cfg
    callbacks: list[Callback] = [WeightEMA(cfg.ema)] if cfg.ema else []
    if cfg.profile and run.is_main:
        callbacks.append(Profile(cfg.profile, run.run_dir / "profile", run.say))
    return classifier_plan(
        run,
        functools.partial(build_train_model, cfg),
        callbacks=callbacks,
        extend_report=train_report,
        make_optimizer=norm_bias_optimizer,
        note=(
            f"recipe {cfg.recipe}: --model {cfg.model}, {cfg.epochs} epochs, "
            f"--precision {cfg.precision}"
        ),
    )


def train(cfg: TrainConfig) -> dict:
    """One run as ``cfg`` says (what ``train`` does); returns its summary."""
    return execute(cfg, build_plan).summary


def main(argv: list[str] | None = None) -> int:
    return run_lab(PROG, TrainConfig, build_plan, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
