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


def check_one_line_error(main, argv: list[str], message: str, capsys) -> str:
    """``main(argv)`` refuses in one line on stderr that holds ``message``, with exit code 2."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"exit code {code}, stderr: {err[-2000:]}"
    assert err.count("\n") == 1 and message in err, err[-2000:]
    return err


def check_every_flag_is_read(cfg_cls, run, argvs: list[list[str]], out: Path, prog: str) -> None:
    """No flag silently does nothing: over the runs of ``argvs`` (each into its own folder under
    ``out``), ``run(cfg)`` reads every field ``cfg_cls`` offers."""
    import dataclasses

    from .config import parse_config

    configs = [parse_config(cfg_cls, [*argv, "--out", str(out / str(i))], prog)
               for i, argv in enumerate(argvs)]
    unread = {f.name for f in dataclasses.fields(cfg_cls)} - fields_read(run, configs)
    assert not unread, f"flags that no run read: {sorted(unread)}"


def check_torchrun_lab(module: str, args: list[str], out: Path, nproc: int = 2) -> dict:
    """The lab ``module`` under torchrun with ``nproc`` CPU processes, writing ``out`` once."""
    return check_torchrun_run(torchrun(module, *args, "--out", str(out), nproc=nproc), out, nproc)


def road_to_optimizer_step(main, argv: list[str]) -> list[str]:
    """The functions on the stack from ``main`` down to the one that calls ``optimizer.step()``,
    the first time a run of ``main(argv)`` steps (read by a global optimizer-step hook)."""
    import inspect

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    road: list[str] = []

    def hook(optimizer, args, kwargs):
        if road:
            return
        frames = [f for f in inspect.stack()[1:] if "torch" not in Path(f.filename).parts]
        names = [f"{Path(f.filename).stem}.{f.function}" for f in reversed(frames)]
        start = max(i for i, name in enumerate(names) if name.endswith(".main")
                    and main.__module__.rsplit(".", 1)[-1] == name.split(".")[0])
        road.extend(names[start:])

    handle = register_optimizer_step_pre_hook(hook)
    try:
        main(argv)
    finally:
        handle.remove()
    assert road, f"{argv}: no optimizer step ran"
    return road
