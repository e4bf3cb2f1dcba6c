"""The rules a parsed config is checked against beyond each field's own range: a flag that would
change nothing for the run at hand is refused, by one rule for every lab and dataset.

A field declares when it applies: ``arg(..., applies=When("optimizer", "sgd"))`` (or a tuple of
``When``, all of which must hold). A flag given on the command line whose conditions do not hold
ends in one line, ``--momentum applies to --optimizer sgd only (this run uses adam)``. Declarations
are collected from every class of a config's composition that declares the field, so a lab that
redeclares a field (to change its default) keeps the core's rule and may add its own.
``UNDER_TORCHRUN`` is the one condition on the launch rather than on a field (``--sync-bn``,
``--dist-timeout``: they matter only with several processes).

A classifier declares the kinds of data its models take (``data_kinds``: image, tabular); a
``--dataset`` of another kind is refused in one line before anything is loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import LabError

# What each dataset the core loads is: images (any of them can be augmented, resized where the
# source is decoded by us) or rows of numbers.
DATASET_KINDS = {
    "digits": "image",
    "mnist": "image",
    "fashion-mnist": "image",
    "cifar10": "image",
    "imagefolder": "image",
    "synthetic": "image",
    "csv": "tabular",
}
IMAGE_DATASETS = tuple(name for name, kind in DATASET_KINDS.items() if kind == "image")
BUILT_IN_DATASETS = ("digits", "synthetic")  # shipped or generated: no files, no --data-dir
FLOAT32_MAX = (
    3.4028234663852886e38  # the largest float a float32 tensor holds; beyond it torch overflows
)


@dataclass(frozen=True)
class When:
    """A flag changes the run only when field ``field`` holds one of ``values``; ``text`` is how the
    condition reads in the refusal (default: ``--field v1 or v2``, or ``--field`` for a bool)."""

    field: str
    values: tuple
    text: str = ""

    def __init__(self, field: str, *values, text: str = ""):
        object.__setattr__(self, "field", field)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "text", text)

    def holds(self, cfg) -> bool:
        return getattr(cfg, self.field) in self.values

    def describe(self) -> str:
        if self.text:
            return self.text
        if self.values == (True,):
            return f"--{_flag(self.field)}"
        return f"--{_flag(self.field)} " + " or ".join(map(str, self.values))

    def actual(self, cfg) -> str:
        value = getattr(cfg, self.field)
        if isinstance(value, bool):
            return f"--{'' if value else 'no-'}{_flag(self.field)}"
        return f"--{_flag(self.field)} {value}"


@dataclass(frozen=True)
class Launched:
    """A flag that matters only when torchrun started several processes (``WORLD_SIZE`` > 1): a
    condition on the launch, not on a field, read the way every ``When`` reads."""

    field: str = ""  # no field: every config meets this condition's subject

    def holds(self, cfg) -> bool:
        import os

        return int(os.environ.get("WORLD_SIZE", "1")) > 1

    def describe(self) -> str:
        return "runs launched by torchrun with 2 or more processes"

    def actual(self, cfg) -> str:
        return "one process"


UNDER_TORCHRUN = Launched()
IMAGE_DATA = When(
    "dataset", *IMAGE_DATASETS, text="image data (--dataset " + ", ".join(IMAGE_DATASETS) + ")"
)
DATA_FILES = When(
    "dataset",
    *(n for n in DATASET_KINDS if n not in BUILT_IN_DATASETS),
    text="a dataset read from files (not --dataset digits or synthetic)",
)


def rules(cls: type, name: str) -> list[When]:
    """Every ``applies`` declaration of field ``name`` across ``cls``'s composition (a lab that
    redeclares a field keeps the core's rule)."""
    found: list[When] = []
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is None or name not in klass.__dict__.get("__annotations__", {}):
            continue
        declared = f.metadata.get("applies")
        for rule in declared if isinstance(declared, tuple) else (declared,) if declared else ():
            if rule not in found:
                found.append(rule)
    return found


def check_applies(cfg, explicit: set[str]) -> None:
    """Refuse, in one line, the first flag given whose ``applies`` conditions do not hold for
    ``cfg`` (a condition on a field this config lacks does not apply to it), and a ``--dataset``
    whose kind the lab's models cannot take."""
    names = {f.name for f in dataclasses.fields(cfg)}
    check_data_kind(cfg)
    for f in dataclasses.fields(cfg):
        if f.name not in explicit:
            continue
        for rule in rules(type(cfg), f.name):
            if (not rule.field or rule.field in names) and not rule.holds(cfg):
                flag = f.metadata.get("flag") or f"--{_flag(f.name)}"
                raise LabError(
                    f"{flag} applies to {rule.describe()} only (this run uses {rule.actual(cfg)}), "
                    "so it would change nothing"
                )


def check_data_kind(cfg) -> None:
    kinds = getattr(type(cfg), "data_kinds", None)
    dataset = getattr(cfg, "dataset", None)
    if kinds is None or DATASET_KINDS.get(dataset, kinds[0]) in kinds:
        return
    lab = getattr(type(cfg), "lab", "this lab")
    takes = ", ".join(n for n, k in DATASET_KINDS.items() if k in kinds)
    raise LabError(
        f"--dataset {dataset} is {DATASET_KINDS[dataset]} data; {lab}'s models take "
        f"{' or '.join(kinds)} data only ({takes})"
    )


def check_float_range(flag: str, value: float) -> None:
    """A float flag a tensor op will use must fit a float32 (1e300 overflows inside torch)."""
    if abs(value) > FLOAT32_MAX:
        raise LabError(
            f"{flag} must lie within float32's range, +-{FLOAT32_MAX:.3g} (got {value:g})"
        )


def _flag(name: str) -> str:
    return name.replace("_", "-")


BYTES_PER_PARAMETER = 16  # training: the fp32 weight, its gradient and Adam's two moments


def check_model_fits(parameters: int, flags: str) -> None:
    """A model whose training state could not fit this machine's memory is refused before it is
    built: building it would not fail cleanly (the system kills the process once pages run out)."""
    from .memory import available_mib

    free = available_mib()
    need = parameters * BYTES_PER_PARAMETER / 2**20
    if free is not None and need > free:
        raise LabError(
            f"{flags}: a model of {parameters:,} parameters needs about {need / 1024:,.1f} GiB to"
            f" train, more than the {free / 1024:,.1f} GiB of memory free here; a smaller model"
            " would fit"
        )
