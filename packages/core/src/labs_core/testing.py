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
