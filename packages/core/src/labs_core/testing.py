"""For the labs' tests: launch a lab under torchrun, as a user would, with two CPU processes.

Every launch keeps each rank's own output in its own files as well (torchrun's ``--log-dir`` with
``--tee 3``: the console is unchanged but for a ``[defaultN]:`` prefix on a rank's lines), so a
failed launch is reported by the rank that failed first, its whole error, and not by the last few
thousand characters of the interleaved console, which torchrun's failure summary fills.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path


def launch(target: list[str], nproc: int = 2, timeout: float = 600, env: dict | None = None
           ) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N TARGET...`` (gloo on CPU, one thread per process).
    The result also holds ``rank_output``: {local rank: its own stdout + stderr}, read from the
    per-rank log files before they are deleted."""
    logs = Path(tempfile.mkdtemp(prefix="torchrun-logs-"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "--log-dir", str(logs), "--tee", "3", *target]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:  # past its time: ended whole, its workers too
            proc.send_signal(signal.SIGTERM)  # the launcher stops its workers (each in its own session)
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
            result.rank_output = _rank_output(logs)
            raise AssertionError(f"torchrun did not finish within {timeout:.0f} s (ended)\n"
                                 + failure_report(result)) from None
        result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        result.rank_output = _rank_output(logs)
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    return result


def torchrun(module: str, *args: str, nproc: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N -m MODULE ARGS`` (see ``launch``)."""
    return launch(["-m", module, *args], nproc=nproc, timeout=timeout)


def _rank_output(logs: Path) -> dict[int, str]:
    """Each local rank's stdout and stderr (and its error.json, when it wrote one), from torchrun's
    ``<log-dir>/<run id>/attempt_<k>/<local rank>/`` files (the last attempt's)."""
    attempts = sorted(logs.glob("*/attempt_*"), key=lambda p: int(p.name.split("_")[1]))
    out: dict[int, str] = {}
    if not attempts:
        return out
    for folder in sorted(p for p in attempts[-1].iterdir() if p.is_dir() and p.name.isdigit()):
        parts = []
        for name in ("stdout.log", "stderr.log", "error.json"):
            f = folder / name
            if f.is_file() and f.stat().st_size:
                parts.append(f"--- {name}:\n{f.read_text(errors='replace')}")
        out[int(folder.name)] = "\n".join(parts) or "(no output)"
    return out


def failure_report(result: subprocess.CompletedProcess, limit: int = 8000) -> str:
    """Why a launch failed, for an assertion message: torchrun's root cause (the rank that failed
    first, its exit code or signal), then that rank's own output, then the other ranks'."""
    err = result.stderr or ""
    root = re.search(r"Root Cause \(first observed failure\):\n(.*?)\n=+", err, re.S)
    first = re.search(r"local_rank: (\d+)\)", root.group(1)) if root else None
    ranks = dict(getattr(result, "rank_output", {}))
    order = sorted(ranks, key=lambda r: (first is None or r != int(first.group(1)), r))
    parts = [f"torchrun exited {result.returncode}"]
    if root:
        parts.append("root cause (first observed failure):\n" + root.group(1).strip())
    for rank in order:
        text = ranks[rank]
        head = "first failing rank" if first and rank == int(first.group(1)) else "rank"
        parts.append(f"=== {head} {rank}'s own output" + (f" (last {limit} characters)" if len(text) > limit else "")
                     + f":\n{text[-limit:]}")
    if not ranks:
        parts.append(f"console stderr (last {limit} characters):\n{err[-limit:]}")
    return "\n".join(parts)


def check_launch(result: subprocess.CompletedProcess) -> None:
    """The launch succeeded; if not, the assertion says why in the failing rank's own words."""
    assert result.returncode == 0 and "Traceback" not in result.stderr, failure_report(result)


def check_torchrun_run(result: subprocess.CompletedProcess, out: Path, nproc: int = 2) -> dict:
    """The launch succeeded, rank 0 wrote the run directory once, and it says how many processes."""
    check_launch(result)
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


def pairwise(factors: dict[str, tuple], seed_cases: tuple[dict, ...] = ()) -> list[dict]:
    """A small set of cases in which every pair of values of every two factors appears at least
    once (all-pairs, greedy: each new case covers as many uncovered pairs as it can; ties go to the
    earliest values, so the set is the same on every run). ``seed_cases`` are taken first."""
    import itertools

    names = list(factors)
    uncovered = {((a, va), (b, vb)) for a, b in itertools.combinations(names, 2)
                 for va in factors[a] for vb in factors[b]}

    def pairs(case: dict) -> set:
        return {((a, case[a]), (b, case[b])) for a, b in itertools.combinations(names, 2)}

    cases = [dict(c) for c in seed_cases]
    for case in cases:
        uncovered -= pairs(case)
    while uncovered:
        best = max((dict(zip(names, values, strict=True)) for values in itertools.product(*factors.values())),
                   key=lambda c: len(pairs(c) & uncovered))
        cases.append(best)
        uncovered -= pairs(best)
    return cases


def flags_for(case: dict) -> list[str]:
    """A pairwise case as command-line flags: ``{"loader": "fast", "channels_last": True}`` ->
    ``--loader fast --channels-last``; False gives ``--no-NAME``, None leaves the flag out."""
    argv: list[str] = []
    for key, value in case.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{key.replace('_', '-')}")
        else:
            argv += [flag, str(value)]
    return argv


def check_combination(main, argv: list[str], case: dict, out: Path, capsys) -> dict | None:
    """Run ``main(argv)`` in process for a combination of flags: it either runs to its report
    (exit 0, ``summary.json`` written; returned) or is refused at start-up in one line that names
    one of the combination's flags, with nothing written (None returned)."""
    code = main(argv)
    err = capsys.readouterr().err
    if code == 0:
        assert "Traceback" not in err, err
        return json.loads((out / "summary.json").read_text())
    lines = [line for line in err.splitlines() if line.strip()]
    named = {f"--{k.replace('_', '-')}" for k in case}
    assert code == 2 and len(lines) == 1 and any(flag in lines[0] for flag in named), err
    assert not out.exists() or not any(out.iterdir()), f"a refused combination wrote into {out}"
    return None
