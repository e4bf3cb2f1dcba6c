"""train: train a classifier on CIFAR-10 (or any core dataset) and report on its test split.

    uv run --package checkpoint-project train [--model cnn|resnet|fast] [flags]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from labs_core import Callback, LabError, RunConfig, arg
from labs_core.checkpoint import save_checkpoint
from labs_core.cli import run_lab
from labs_core.config import TuningOptions
from labs_core.experiment import classifier_plan
from labs_core.run import build_optimizer, execute

from .inference import PROJECT, predict_probs
from .models import GRAD_CHECKPOINT_MODELS, MODELS, build_model, enable_grad_checkpoint

PROG = "train"


# A recipe is a model with the flags it trains best with; a flag given on the command line wins.
RECIPES: dict[str, dict] = {
    # A 2-core CPU: >= 85% on CIFAR-10 in under 10 minutes (benchmarks/cifar10_accuracy.py).
    "cpu": dict(model="compact", epochs=12, batch_size=512, optimizer="sgd", lr=0.75, momentum=0.85,
                weight_decay=1.33e-3, norm_bias_lr=64.0, label_smoothing=0.2, scheduler="cosine",
                warmup_epochs=2.0, tta=True, channels_last=True, precision="bf16"),
    # The CIFAR-10 speed-record style, for a GPU.
    "fast": dict(model="fast", epochs=10, batch_size=512, optimizer="sgd", lr=0.2, momentum=0.9,
                 weight_decay=5e-4, label_smoothing=0.2, scheduler="cosine", warmup_epochs=1.0, tta=True,
                 channels_last=True, precision="bf16"),
    # The curriculum's custom CNN and the small ResNet, with AdamW and a one-cycle schedule.
    "cnn": dict(model="cnn", epochs=30, batch_size=128, optimizer="adamw", lr=2e-3, weight_decay=5e-4,
                scheduler="onecycle"),
    "resnet": dict(model="resnet", epochs=30, batch_size=128, optimizer="adamw", lr=2e-3, weight_decay=5e-4,
                   scheduler="onecycle"),
}
MODEL_RECIPE = {"compact": "cpu", "fast": "fast", "cnn": "cnn", "resnet": "resnet"}


def bf16_runs_fast(device: str) -> bool:
    """Whether bf16 autocast pays here: CUDA, or a CPU with native bf16 instructions (elsewhere
    oneDNN emulates bf16 and it is slower than fp32)."""
    if device == "auto" and torch.cuda.is_available() or device.startswith("cuda"):
        return True
    return device in ("auto", "cpu") and torch.backends.mkldnn.is_available() and bool(
        torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass
class TrainConfig(TuningOptions, RunConfig):
    lab = PROJECT
    data_kinds = ("image",)  # every model here is a convolutional net

    dataset: str = arg("cifar10", "dataset name: cifar10 (default), synthetic, digits, imagefolder, mnist, ...")
    recipe: str = arg("auto", "a model with its training flags: cpu (the compact net, ~10 min to 85%% on a 2-core "
                      "CPU), fast (speed-record style, for a GPU), cnn, resnet; auto: the --model's recipe, else fast "
                      "on a GPU and cpu elsewhere. Flags you give override the recipe's",
                      choices=("auto", *RECIPES))
    model: str = arg("compact", "compact (the CPU recipe's net), cnn (custom CNN), resnet (small ResNet) or fast "
                     "(speed-record style net); default: the recipe's", choices=MODELS)
    width: int = arg(0, "base channel width (0: the model's default)")
    epochs: int = arg(12, "number of training epochs (default: the recipe's)")
    batch_size: int = arg(512, "batch size (default: the recipe's)")
    lr: float = arg(0.2, "peak learning rate (default: the recipe's)")
    weight_decay: float = arg(5e-4, "weight decay")
    scheduler: str = arg("cosine", "learning-rate schedule (default: the recipe's)",
                         choices=("none", "cosine", "onecycle", "step"))
    norm_bias_lr: float = arg(1.0, "learning-rate multiplier for batch-norm biases, their weight decay divided by "
                              "it (the cpu recipe: 64, as the CIFAR-10 speed records)", low=1e-6)
    ema: float = arg(0.0, "keep an exponential moving average of the weights with this decay, e.g. 0.999 (0: off)")
    tta: bool = arg(False, "flip test-time augmentation in the final test report (on in the cpu and fast recipes)")
    profile: int = arg(0, "profile N training steps with torch.profiler (trace + table of costliest ops)")
    monitor: str = arg("val_acc", "metric that decides the best checkpoint and early stopping")
    grad_checkpoint: bool = arg(False, "activation checkpointing (resnet, fast): keep only each block's input in "
                                "the forward pass and recompute the rest in the backward pass (less memory, "
                                "one more forward pass of time)")

    def resolve(self, explicit: set[str]) -> None:
        if self.recipe == "auto":
            if "model" in explicit:
                self.recipe = MODEL_RECIPE[self.model]
            else:
                gpu = self.device.startswith("cuda") or self.device == "auto" and torch.cuda.is_available()
                self.recipe = "fast" if gpu else "cpu"
        recipe = dict(RECIPES[self.recipe])
        if recipe.get("precision") == "bf16" and not bf16_runs_fast(self.device):
            recipe["precision"] = "fp32"
        if "overfit" in explicit:  # the first check a model learns at all: no augmentation, no smoothing
            recipe.pop("label_smoothing", None)
        for key, value in recipe.items():
            if key not in explicit:
                setattr(self, key, value)
        super().resolve(explicit)

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.ema < 1:
            raise LabError(f"--ema must be in [0, 1) (got {self.ema})")
        if self.profile < 0 or self.width < 0:
            raise LabError("--profile and --width must not be negative")
        if self.ema and self.fsdp:  # its shadow copy would be the very whole-model copy FSDP avoids
            raise LabError("--ema with --fsdp is not supported (the average is kept on one process); drop one")
        if self.grad_checkpoint and self.model not in GRAD_CHECKPOINT_MODELS:
            raise LabError(f"--grad-checkpoint applies to --model {' or '.join(GRAD_CHECKPOINT_MODELS)} "
                           f"(not {self.model})")


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

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self.prof = profile(activities=activities, schedule=schedule(wait=0, warmup=1, active=self.steps, repeat=1),
                            on_trace_ready=self.write, record_shapes=True)
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
        prof.export_chrome_trace(str(self.folder / "trace.json"))
        key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        (self.folder / "top_ops.txt").write_text(prof.key_averages().table(sort_by=key, row_limit=20) + "\n")
        self.say(f"profile of {self.steps} steps: {self.folder / 'trace.json'} (open in ui.perfetto.dev), "
                 f"{self.folder / 'top_ops.txt'}")


def _decoded(file: Path, size: int) -> torch.Tensor | None:
    from labs_core.data.imagefolder import decode_all

    try:
        return decode_all([file], [0], size, skip_bad=False)[0][0]
    except LabError:
        return None


def gallery(images: torch.Tensor | list[Path], probs: torch.Tensor, targets: torch.Tensor, classes: list[str],
            path: Path, count: int = 16, image_size: int = 32) -> int:
    """The most confidently wrong test images, with their true and predicted classes; ``images``
    may be the files of a streamed split (``--loader standard``), decoded here at ``image_size``."""
    from labs_core.plots import pyplot

    plt = pyplot()

    conf, pred = probs.max(1)
    wrong = (pred != targets).nonzero().flatten()
    worst = wrong[conf[wrong].argsort(descending=True)][:count]
    cols = 4
    rows = max(1, -(-len(worst) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 2.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, worst.tolist(), strict=False):
        img = _decoded(images[i], image_size) if isinstance(images, list) else images[i]
        if img is None:  # a file that no longer decodes: its panel stays empty
            continue
        ax.imshow(img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy(), cmap="gray")
        ax.set_title(f"true {classes[targets[i]]}\npred {classes[pred[i]]} {conf[i]:.0%}", fontsize=7)
    fig.suptitle("most confidently wrong test images")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(worst)


def train(cfg: TrainConfig) -> dict:
    callbacks: list[Callback] = []
    ema = WeightEMA(cfg.ema) if cfg.ema else None
    if ema:
        callbacks.append(ema)

    def model_fn(data):
        model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.width)
        whiten = getattr(model, "whiten", None)
        if whiten is not None:  # the stem's filters come from the training images, as training sees them
            whiten.fit(whitening_sample(data))
        if cfg.grad_checkpoint:
            enable_grad_checkpoint(model, cfg.model)
        return model

    def report(run, trainer, loaders, test):
        """From the one test pass: per-class accuracy, the flip-TTA accuracy, the gallery."""
        run_dir, data, metrics = run.run_dir, loaders.data, {}
        if ema:
            save_checkpoint(run_dir / "checkpoints" / "ema.pt", {
                **trainer.state_dict(gather=False), "config": cfg.to_dict(), "lab": cfg.lab, "classes": data.classes,
                "input_shape": list(data.input_shape), "mean": list(data.mean), "std": list(data.std)})
        if test is None:
            return metrics
        probs, targets = test.probs, test.targets
        if cfg.tta:  # the mirror images' pass; the plain pass is the one already made
            flipped, _ = predict_probs(trainer.module, loaders.test, trainer.device, flip_only=True,
                                       autocast=trainer.precision.autocast)
            probs = (probs + flipped) / 2
            metrics["test_acc_tta"] = (probs.argmax(1) == targets).float().mean().item()
            run.say(f"test accuracy with flip TTA {metrics['test_acc_tta']:.4f}")
        pred = probs.argmax(1)
        per_class = [(pred[targets == c] == c).float().mean().item() if (targets == c).any() else 0.0
                     for c in range(data.num_classes)]
        lines = [f"{name:<12} {acc:.4f}" for name, acc in zip(data.classes, per_class, strict=True)]
        (run_dir / "per_class_accuracy.txt").write_text("\n".join(lines) + "\n")
        metrics["per_class_acc"] = dict(zip(data.classes, per_class, strict=True))
        n = gallery(data.test[0], probs, targets, data.classes, run_dir / "confidently_wrong.png",
                    image_size=data.image_size or 32)
        run.say("per-class test accuracy:\n  " + "\n  ".join(lines))
        run.say(f"confusion matrix:\n{(run_dir / 'confusion_matrix.txt').read_text().rstrip()}")
        run.say(f"gallery of the {n} most confidently wrong test images: {run_dir / 'confidently_wrong.png'}")
        return metrics

    def plan(run):
        extra = list(callbacks)
        if cfg.profile and run.is_main:
            extra.append(Profile(cfg.profile, run.run_dir / "profile", run.say))
        return classifier_plan(cfg, run, model_fn, callbacks=extra, extend_report=report,
                               make_optimizer=lambda cfg, model: build_optimizer(cfg, model,
                                                                                 norm_bias_lr=cfg.norm_bias_lr),
                               note=f"recipe {cfg.recipe}: --model {cfg.model}, {cfg.epochs} epochs, "
                                    f"--precision {cfg.precision}")

    return execute(cfg, plan).summary


def main(argv: list[str] | None = None) -> int:
    return run_lab(PROG, TrainConfig, train, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
