"""PyTorch Labs core: data, seeding, the trainer, mixed precision, checkpoints, metrics, logging.

The pieces, one idea per module:

- ``seed``        seed_everything, deterministic mode, RNG state for checkpoints
- ``device``      pick_device, Precision (fp32 / bf16 / fp16 + grad scaler)
- ``trainer``     Trainer (fit -> train_one_epoch / evaluate) and the Callback events
- ``callbacks``   Checkpointing, EarlyStopping, RunLogger (TensorBoard, metrics.jsonl), ProgressBar
- ``checkpoint``  atomic save, safe load (weights_only=True), clear architecture mismatches; every
                  writer's temp-file-and-rename (atomic_write_bytes / _text / _file)
- ``faults``      what the machine can do to a run (a full disk, SIGTERM, out of memory), one line
                  each
- ``fits``        whether one training step fits in memory, asked before anything is written
- ``files``       FIFOs and devices refused as data files (a read that would never end)
- ``metrics``     accuracy, top-k, confusion matrix, precision / recall / F1, confusion PNG
- ``summary``     per-layer shapes and parameter counts via forward hooks
- ``explain``     saliency, SmoothGrad, integrated gradients, Grad-CAM (each equal to Captum's)
- ``config``      config parts (run, optimisation, data pipeline, ...) -> generated command line
- ``data``        datasets by name, cache, fast on-device loader, standard DataLoader path
- ``run``         the run skeleton every lab trains through: Run, Plan, execute
- ``experiment``  classification on the skeleton: run_classifier / classifier_main
- ``loop``        the training loop written out by hand (``--loop manual``)
- ``tuning``      the finders a run can start with: ``lr_finder`` (--lr-find), ``batch_finder``
                  (--find-batch-size), and the snapshot that puts everything back after them
- ``memory``      peak memory (CUDA allocator, process resident) for summary.json; sizes on the
                  command line
- ``recompute``   activation checkpointing that keeps batch-norm statistics (``--grad-checkpoint``)
- ``testing``     for the labs' tests: a torchrun launch, the flags a run reads
"""

from .callbacks import Checkpointing, EarlyStopping, ProgressBar, RunLogger
from .checkpoint import load_checkpoint, load_model_state, save_checkpoint
from .config import RunConfig, arg, parse_config
from .device import Precision, pick_device
from .errors import LabError, NonFiniteLossError
from .seed import seed_everything
from .trainer import Callback, ClassificationLoss, Trainer

__all__ = [
    "Callback",
    "Checkpointing",
    "ClassificationLoss",
    "EarlyStopping",
    "LabError",
    "NonFiniteLossError",
    "Precision",
    "ProgressBar",
    "RunConfig",
    "RunLogger",
    "Trainer",
    "arg",
    "load_checkpoint",
    "load_model_state",
    "parse_config",
    "pick_device",
    "save_checkpoint",
    "seed_everything",
]
