"""finetune: a trained backbone, a new head, then gradual unfreezing with discriminative rates.

    checkpoint-project finetune --from runs/.../best.pt | torchvision:NAME [--weights FILE]
                                --dataset imagefolder --data-dir DIR

``torchvision:NAME`` is any torchvision classification model (resnet50, vgg16, mobilenet_v3_small,
efficientnet_b0, convnext_tiny, vit_b_16, ...): its published weights (downloaded once into torch's
hub cache, or ``--weights FILE``), its classifier replaced for the new classes, its own stages
unfrozen (``backbones``). Phase 0 trains only the new head (the backbone frozen). Each later phase
unfreezes one more stage from the top, and gives each trainable stage its own learning rate:
lr * lr_decay^depth, depth counted from the head, so the general early features move least.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from labs_core import LabError, RunConfig, arg, load_model_state
from labs_core.experiment import classifier_plan
from labs_core.files import refuse_special
from labs_core.run import Plan, execute
from labs_core.rundir import write_json
from labs_core.trainer import Callback

from .backbones import TorchvisionNet, build_torchvision, check_input, weights_url
from .inference import PROJECT, load_trained
from .models import replace_head


@dataclass
class FinetuneConfig(RunConfig):
    lab = PROJECT
    data_kinds = ("image",)  # the backbones are convolutional nets

    source: str = arg(
        "",
        "backbone: one of our checkpoints, or torchvision:NAME, any torchvision classification"
        " model (resnet18, vgg16, mobilenet_v3_small, efficientnet_b0, ...) with its published"
        " weights",
        flag="--from",
    )
    weights: str = arg("", "a local weights file for a torchvision:... backbone (no download)")
    dataset: str = arg("imagefolder", "the new dataset (usually imagefolder with --data-dir)")
    head_epochs: int = arg(3, "epochs of phase 0: the new head only, backbone frozen", high=100_000)
    stage_epochs: int = arg(
        2, "epochs of each later phase (one more stage unfrozen each time)", high=100_000
    )
    unfreeze: int = arg(2, "how many stages to unfreeze, from the top, one per phase", high=1000)
    lr_decay: float = arg(
        0.3, "learning-rate factor per stage of depth below the head (discriminative rates)"
    )
    lr: float = arg(3e-3, "learning rate of the head (stages get lr * lr_decay^depth)")
    monitor: str = arg("val_acc", "metric that decides the best checkpoint and early stopping")

    def resolve(self, explicit: set[str]) -> None:
        super().resolve(explicit)
        fixed = sorted({"epochs", "optimizer", "scheduler"} & explicit)
        if fixed:
            raise LabError(
                f"finetune sets --{fixed[0]} itself (phases of --head-epochs and --stage-epochs,"
                " AdamW with per-stage rates); leave it out"
            )
        self.epochs = self.head_epochs + self.stage_epochs * self.unfreeze

    def validate(self) -> None:
        super().validate()
        if not self.source:
            raise LabError(
                "--from is required: a checkpoint path or torchvision:NAME (e.g."
                " torchvision:resnet18)"
            )
        if self.resume:
            raise LabError(
                "finetune does not resume; start it again, --from the checkpoint it wrote"
            )
        if self.val_fraction <= 0:
            raise LabError("fine-tuning needs a validation split (--val-fraction > 0)")
        if (
            self.head_epochs < 1
            or self.stage_epochs < 1
            or self.unfreeze < 0
            or not 0 < self.lr_decay <= 1
        ):
            raise LabError(
                "--head-epochs and --stage-epochs must be >= 1, --unfreeze >= 0, --lr-decay in"
                " (0, 1]"
            )


def load_backbone(cfg: FinetuneConfig, num_classes: int, in_shape) -> tuple[nn.Module, str, int]:
    """(model with a fresh head, model name for checkpoints, width)."""
    if cfg.source.startswith("torchvision:"):
        name = cfg.source.split(":", 1)[1]
        net = build_torchvision(name)  # an unknown name stops here, before any download
        if cfg.weights:
            state = _load_weights_file(Path(cfg.weights))
        else:
            url = weights_url(name)
            hub = Path(torch.hub.get_dir()) / "checkpoints"
            try:
                state = torch.hub.load_state_dict_from_url(
                    url, progress=False, check_hash=True, weights_only=True
                )
            except Exception as exc:  # offline, proxy, truncated download
                raise LabError(
                    f"could not download the published {name} weights ({type(exc).__name__}:"
                    f" {str(exc)[:120]}); put {url.rsplit('/', 1)[-1]} in {hub}/ or pass --weights"
                    " FILE"
                ) from None
        load_model_state(net, state, f"{cfg.weights or 'the downloaded file'} (as {name} weights)")
        model = TorchvisionNet(name, num_classes, net)
        check_input(model.net, name, in_shape)
        return model, cfg.source, 0
    model, ckpt = load_trained(cfg.source)
    if ckpt["input_shape"][0] != in_shape[0]:
        raise LabError(
            f"{cfg.source} expects {ckpt['input_shape'][0]}-channel images; the new dataset has"
            f" {in_shape[0]}"
        )
    replace_head(model, num_classes)
    return model, ckpt["config"]["model"], ckpt["config"].get("width", 0)


def _load_weights_file(path: Path) -> dict:
    """A state dict (name -> tensor) from ``path``: a bare one, or the ``model`` entry of a
    checkpoint."""
    if path.is_dir():
        raise LabError(f"--weights {path} is a directory, not a weights file")
    refuse_special(path, "--weights")
    if not path.is_file():
        raise LabError(f"weights file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        Exception
    ):  # torch's message advises turning weights-only loading off: never pass that on
        raise LabError(
            f"--weights {path} is not a weights file (not a state dict that torch.save wrote, "
            "or it holds Python objects; it was not opened)"
        ) from None
    state = state.get("model", state) if isinstance(state, dict) else state
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise LabError(
            f"--weights {path} holds a {type(state).__name__}, not a state dict (names -> tensors)"
        )
    return state


class Phases(Callback):
    """Gradual unfreezing as one run: at the start of each phase, a new optimizer whose groups are
    the head and the top ``phase`` stages (each with its own rate); every epoch's logs carry the
    phase, and the validation accuracy each phase gained is recorded.

    Frozen stages keep ``requires_grad`` (so DDP sees the same parameters in every phase) but are
    in no optimizer group, so they do not move."""

    def __init__(self, cfg: FinetuneConfig, model: nn.Module, say):
        self.cfg, self.model, self.say = cfg, model, say
        stages = model.stage_parameters()
        self.count = min(cfg.unfreeze, len(stages)) + 1
        self.starts = [0] + [cfg.head_epochs + k * cfg.stage_epochs for k in range(self.count - 1)]
        self.phase, self.before, self.phases = -1, None, []

    def groups(self, phase: int) -> list[dict]:
        """Asked for afresh each time: the model's current parameters (sharded ones under
        --fsdp)."""
        stages = self.model.stage_parameters()
        groups = [{"params": self.model.head_parameters(), "lr": self.cfg.lr}]
        for depth, stage in enumerate(reversed(stages[len(stages) - phase :]), start=1):
            groups.append({"params": stage, "lr": self.cfg.lr * self.cfg.lr_decay**depth})
        return groups

    def optimizer(self, phase: int) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.groups(phase), weight_decay=self.cfg.weight_decay)

    def first_optimizer(self, cfg, model) -> torch.optim.Optimizer:
        """The run's optimizer (``Plan.make_optimizer``): phase 0's, on this callback's model
        (sharded in place under --fsdp by then)."""
        return self.optimizer(0)

    def on_fit_start(self, trainer) -> None:
        self.before = trainer.evaluate(trainer.val_loader)["val_acc"]  # collective: every process

    def on_epoch_start(self, trainer) -> None:
        phase = max(p for p, start in enumerate(self.starts) if trainer.epoch >= start)
        if phase == self.phase:
            return
        self.phase = phase
        if phase > 0:
            trainer.optimizer = self.optimizer(phase)
        what = "head only, backbone frozen" if phase == 0 else f"head + top {phase} stage(s)"
        trained = sum(p.numel() for g in self.groups(phase) for p in g["params"])
        self.say(
            f"\nphase {phase} ({what}): {trained:,} of"
            f" {sum(p.numel() for p in self.model.parameters()):,} parameters train; learning"
            " rates " + ", ".join(f"{g['lr']:.1e}" for g in self.groups(phase))
        )

    def on_validation_end(self, trainer, logs) -> None:
        logs["phase"] = self.phase
        if (
            trainer.epoch in self.starts[1:] or trainer.epoch == trainer.epochs
        ):  # the phase's last epoch
            after = logs["val_acc"]
            what = (
                "head only, backbone frozen"
                if self.phase == 0
                else f"head + top {self.phase} stage(s)"
            )
            self.phases.append(
                {
                    "phase": self.phase,
                    "trains": what,
                    "val_acc_before": self.before,
                    "val_acc_after": after,
                    "gain": after - self.before,
                }
            )
            self.say(
                f"phase {self.phase} gained {after - self.before:+.4f} validation accuracy "
                f"({self.before:.4f} -> {after:.4f})"
            )
            self.before = after


def finetune_model(cfg: FinetuneConfig, data) -> nn.Module:
    """The backbone ``--from`` names with a head for ``data``'s classes; ``recorded_config`` is
    what predict and evaluate rebuild it from (the backbone's name and width)."""
    model, name, width = load_backbone(cfg, data.num_classes, data.input_shape)
    model.recorded_config = {"model": name, "width": width}
    return model


def build_plan(run) -> Plan:
    """The core's classifier plan on the backbone ``--from`` names, trained in phases (``Phases``
    builds each phase's optimizer); the report writes phases.json."""
    cfg = run.cfg
    plan = classifier_plan(
        run,
        functools.partial(finetune_model, cfg),
        extend_report=phases_report,
        note=f"fine-tuning {cfg.source}",
    )
    phases = Phases(cfg, plan.model, run.say)
    plan.callbacks.append(phases)
    plan.make_optimizer = phases.first_optimizer
    record = plan.model.recorded_config
    plan.checkpoint["config"] = {**cfg.to_dict(), **record}
    plan.resolved.update(record)
    return plan


def phases_report(run, trainer, loaders, test) -> dict:
    phases = next(cb for cb in trainer.callbacks if isinstance(cb, Phases)).phases
    write_json(run.run_dir / "phases.json", phases)
    return {"phases": phases}


def finetune(cfg: FinetuneConfig) -> dict:
    """One fine-tuning run as ``cfg`` says; returns its summary."""
    return execute(cfg, build_plan).summary
