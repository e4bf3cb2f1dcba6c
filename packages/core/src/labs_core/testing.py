"""For the labs' tests: launch a lab under torchrun, as a user would, with two CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def torchrun(module: str, *args: str, nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N -m MODULE ARGS`` (gloo on CPU), one thread each."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", module, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def check_torchrun_run(result: subprocess.CompletedProcess, out: Path, nproc: int = 2) -> dict:
    """The launch succeeded, rank 0 wrote the run directory once, and it says how many processes."""
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == nproc
    assert (out / "config.json").is_file() and (out / "checkpoints" / "last.pt").is_file()
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1  # one writer: rank 0's
    return summary


def fields_read(train, configs) -> set[str]:
    """The config fields that ``train(cfg)`` reads, over all of ``configs`` (already parsed).

    Reads made while writing the config out (``to_dict``: config.json, checkpoints) do not count:
    a flag counts as used only when the run looks at its value. A lab's test asserts every flag
    it offers is read by some run, so no flag silently does nothing."""
    import dataclasses

    seen: set[str] = set()
    for cfg in configs:
        cls = type(cfg)
        names = {f.name for f in dataclasses.fields(cls)}

        class Tracked(cls):
            def __getattribute__(self, name, names=names):
                if name in names and not object.__getattribute__(self, "_writing_out"):
                    seen.add(name)
                return object.__getattribute__(self, name)

            def to_dict(self) -> dict:
                object.__setattr__(self, "_writing_out", True)
                try:
                    return dataclasses.asdict(self)
                finally:
                    object.__setattr__(self, "_writing_out", False)

        object.__setattr__(cfg, "_writing_out", False)
        cfg.__class__ = Tracked
        try:
            train(cfg)
        finally:
            cfg.__class__ = cls
    return seen
