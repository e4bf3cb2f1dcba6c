"""finetune: a trained backbone, a new head, then gradual unfreezing with discriminative rates.

    checkpoint-project finetune --from runs/.../best.pt | torchvision:resnet18 [--weights FILE]
                                --dataset imagefolder --data-dir DIR

Phase 0 trains only the new head (the backbone frozen). Each later phase unfreezes one more stage
from the top, and gives each trainable stage its own learning rate: lr * lr_decay^depth, depth
counted from the head, so the general early features move least.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from labs_core import LabError, RunConfig, arg
from labs_core.callbacks import Checkpointing, RunLogger
from labs_core.cli import write_json
from labs_core.data import build_loaders, load_dataset
from labs_core.experiment import describe, start_session, write_summary
from labs_core.trainer import Callback, ClassificationLoss, Trainer

from .inference import PROJECT, load_trained
from .models import TorchvisionResNet18, replace_head


@dataclass
class FinetuneConfig(RunConfig):
    lab = PROJECT

    source: str = arg("", "backbone: one of our checkpoints, or torchvision:resnet18 (published weights)", flag="--from")
    weights: str = arg("", "a local weights file for a torchvision:... backbone (no download)")
    dataset: str = arg("imagefolder", "the new dataset (usually imagefolder with --data-dir)")
    head_epochs: int = arg(3, "epochs of phase 0: the new head only, backbone frozen")
    stage_epochs: int = arg(2, "epochs of each later phase (one more stage unfrozen each time)")
    unfreeze: int = arg(2, "how many stages to unfreeze, from the top, one per phase")
    lr_decay: float = arg(0.3, "learning-rate factor per stage of depth below the head (discriminative rates)")
    lr: float = arg(3e-3, "learning rate of the head (stages get lr * lr_decay^depth)")

    def validate(self) -> None:
        super().validate()
        if not self.source:
            raise LabError("--from is required: a checkpoint path or torchvision:resnet18")
        if self.resume:
            raise LabError("finetune does not resume; start it again, --from the checkpoint it wrote")
        if self.head_epochs < 1 or self.stage_epochs < 1 or self.unfreeze < 0 or not 0 < self.lr_decay <= 1:
            raise LabError("--head-epochs and --stage-epochs must be >= 1, --unfreeze >= 0, --lr-decay in (0, 1]")


def load_backbone(cfg: FinetuneConfig, num_classes: int, in_shape) -> tuple[nn.Module, str, int]:
    """(model with a fresh head, model name for checkpoints, width)."""
    if cfg.source.startswith("torchvision:"):
        if cfg.source != "torchvision:resnet18":
            raise LabError(f"unsupported backbone {cfg.source!r}; supported: torchvision:resnet18")
        from torchvision.models import ResNet18_Weights, resnet18

        net = resnet18(weights=None)
        if cfg.weights:
            state = _load_weights_file(Path(cfg.weights))
        else:
            url = ResNet18_Weights.DEFAULT.url
            hub = Path(torch.hub.get_dir()) / "checkpoints"
            try:
                state = torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True, weights_only=True)
            except Exception as exc:  # offline, proxy, truncated download
                raise LabError(f"could not download the published resnet18 weights ({type(exc).__name__}: "
                               f"{str(exc)[:120]}); put {url.rsplit('/', 1)[-1]} in {hub}/ or pass --weights FILE") from None
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise LabError(f"{cfg.weights or 'the downloaded file'} is not a resnet18 state dict ({str(exc)[:150]})") from None
        return TorchvisionResNet18(num_classes, net), "torchvision:resnet18", 0
    model, ckpt = load_trained(cfg.source)
    if ckpt["input_shape"][0] != in_shape[0]:
        raise LabError(f"{cfg.source} expects {ckpt['input_shape'][0]}-channel images; the new dataset has {in_shape[0]}")
    replace_head(model, num_classes)
    return model, ckpt["config"]["model"], ckpt["config"].get("width", 0)


def _load_weights_file(path: Path) -> dict:
    if not path.is_file():
        raise LabError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LabError(f"{path} is not a readable weights file ({str(exc).splitlines()[0][:150]})") from None
    return state.get("model", state) if isinstance(state, dict) else state


def trainable_summary(model: nn.Module) -> str:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    groups = sorted({".".join(n.split(".")[:2]) for n in names})
    return f"{count:,} of {total:,} parameters train ({', '.join(groups)})"


class PhaseTag(Callback):
    """Numbers epochs across phases and tags each epoch's logs with its phase."""

    def __init__(self, phase: int, offset: int):
        self.phase, self.offset = phase, offset

    def on_validation_end(self, trainer, logs):
        logs["epoch"] += self.offset
        logs["phase"] = self.phase


def finetune(cfg: FinetuneConfig) -> dict:
    session = start_session(cfg)
    if session.dist.enabled:
        raise LabError("finetune runs in one process; launch it without torchrun")
    say = session.say
    data = load_dataset(cfg.dataset, cfg.data_dir, image_size=cfg.image_size, skip_bad_files=cfg.skip_bad_files,
                        label_column=cfg.label_column)
    loaders = build_loaders(data, batch_size=cfg.batch_size, device=session.device, seed=cfg.seed,
                            val_fraction=cfg.val_fraction, stratify=cfg.stratify, augment=cfg.augment, overfit=cfg.overfit)
    data = loaders.data
    if loaders.val is None:
        raise LabError("fine-tuning needs a validation split (--val-fraction > 0 or a val/ folder)")
    model, name, width = load_backbone(cfg, data.num_classes, data.input_shape)
    model = model.to(session.device)
    from labs_core.cli import make_run_dir
    run_dir = session.run_dir = make_run_dir(cfg.lab, cfg.out)
    info = {"classes": data.classes, "input_shape": list(data.input_shape), "mean": list(data.mean), "std": list(data.std)}
    config = {**cfg.to_dict(), "model": name, "width": width}
    write_json(run_dir / "config.json", {**config, "lab": cfg.lab, "resolved": {"dataset": describe(data), **info}})
    say(f"finetune {cfg.source} -> {describe(data)} | {session.device}")
    logger = RunLogger(run_dir, quiet=cfg.quiet, stream=session.stream)
    checkpointing = Checkpointing(run_dir / "checkpoints", extra={"config": config, "lab": cfg.lab, **info})
    stages = list(model.stages)
    loss_fn = ClassificationLoss(cfg.label_smoothing, loaders.class_weights)

    probe = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), loaders.train, device=session.device)
    before = probe.evaluate(loaders.val)["val_acc"]
    phases, epoch_offset, trainer = [], 0, None
    for phase in range(min(cfg.unfreeze, len(stages)) + 1):
        for p in model.parameters():
            p.requires_grad = False
        groups = [{"params": list(model.head.parameters()), "lr": cfg.lr}]
        for depth, stage in enumerate(reversed(stages[len(stages) - phase:]), start=1):
            groups.append({"params": list(stage.parameters()), "lr": cfg.lr * cfg.lr_decay**depth})
        for g in groups:
            for p in g["params"]:
                p.requires_grad = True
        what = "head only, backbone frozen" if phase == 0 else f"head + top {phase} stage(s)"
        say(f"\nphase {phase} ({what}): {trainable_summary(model)}; learning rates "
            + ", ".join(f"{g['lr']:.1e}" for g in groups))
        epochs = cfg.head_epochs if phase == 0 else cfg.stage_epochs
        trainer = Trainer(model, torch.optim.AdamW(groups, weight_decay=cfg.weight_decay), loaders.train, loaders.val,
                          loss_fn=loss_fn, device=session.device, epochs=epochs, monitor="val_acc", mode="max",
                          callbacks=[PhaseTag(phase, epoch_offset), logger, checkpointing])
        trainer.fit()
        epoch_offset += epochs
        after = trainer.history[-1]["val_acc"]
        phases.append({"phase": phase, "trains": what, "val_acc_before": before, "val_acc_after": after,
                       "gain": after - before, "trainable": trainable_summary(model)})
        say(f"phase {phase} gained {after - before:+.4f} validation accuracy ({before:.4f} -> {after:.4f})")
        before = after
    logger.close()
    metrics = {"phases": phases}
    if loaders.test is not None:
        metrics["test_acc"] = trainer.evaluate(loaders.test, prefix="test")["test_acc"]
        say(f"test accuracy {metrics['test_acc']:.4f}")
    write_json(run_dir / "phases.json", phases)
    summary = write_summary(session, trainer, metrics)
    say(f"run directory: {run_dir}")
    return summary
