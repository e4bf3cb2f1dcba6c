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


def launch(
    target: list[str], nproc: int = 2, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N TARGET...`` (gloo on CPU, one thread per process).
    The result also holds ``rank_output``: {local rank: its own stdout + stderr}, read from the
    per-rank log files before they are deleted."""
    logs = Path(tempfile.mkdtemp(prefix="torchrun-logs-"))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "--log-dir",
        str(logs),
        "--tee",
        "3",
        *target,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:  # past its time: ended whole, its workers too
            proc.send_signal(
                signal.SIGTERM
            )  # the launcher stops its workers (each in its own session)
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
            result.rank_output = _rank_output(logs)
            raise AssertionError(
                f"torchrun did not finish within {timeout:.0f} s (ended)\n" + failure_report(result)
            ) from None
        result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        result.rank_output = _rank_output(logs)
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    return result


def torchrun(
    module: str, *args: str, nproc: int = 2, timeout: float = 600
) -> subprocess.CompletedProcess:
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
        parts.append(
            f"=== {head} {rank}'s own output"
            + (f" (last {limit} characters)" if len(text) > limit else "")
            + f":\n{text[-limit:]}"
        )
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

    configs = [
        parse_config(cfg_cls, [*argv, "--out", str(out / str(i))], prog)
        for i, argv in enumerate(argvs)
    ]
    unread = {f.name for f in dataclasses.fields(cfg_cls)} - fields_read(run, configs)
    assert not unread, f"flags that no run read: {sorted(unread)}"


def check_torchrun_lab(module: str, args: list[str], out: Path, nproc: int = 2) -> dict:
    """The lab ``module`` under torchrun with ``nproc`` CPU processes, writing ``out`` once."""
    return check_torchrun_run(torchrun(module, *args, "--out", str(out), nproc=nproc), out, nproc)


# docs/architecture.md's road from a lab's ``main`` to the function that calls optimizer.step()
ROAD = ["cli.run_lab", "run.execute", "trainer.fit", "trainer.train_one_epoch", "trainer.step"]


def check_road(main, argv: list[str]) -> None:
    """A run of ``main(argv)`` reaches ``optimizer.step()`` along ``ROAD``: six frames."""
    road = road_to_optimizer_step(main, argv)
    assert road == [f"{main.__module__.rsplit('.', 1)[-1]}.main", *ROAD], road


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
        start = max(
            i
            for i, name in enumerate(names)
            if name.endswith(".main") and main.__module__.rsplit(".", 1)[-1] == name.split(".")[0]
        )
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
    uncovered = {
        ((a, va), (b, vb))
        for a, b in itertools.combinations(names, 2)
        for va in factors[a]
        for vb in factors[b]
    }

    def pairs(case: dict) -> set:
        return {((a, case[a]), (b, case[b])) for a, b in itertools.combinations(names, 2)}

    cases = [dict(c) for c in seed_cases]
    for case in cases:
        uncovered -= pairs(case)
    while uncovered:
        best = max(
            (
                dict(zip(names, values, strict=True))
                for values in itertools.product(*factors.values())
            ),
            key=lambda c: len(pairs(c) & uncovered),
        )
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


# --- Hostile inputs, generated from the declarations (issue 24) ---------------------------------
#
# A lab's test asks ``hostile_cases(ConfigClass)`` for every flag at every value a user could
# type that is not an ordinary one (0, -1, each bound and one past it, NaN, inf, the largest int,
# the empty string), runs each through the lab's whole ``main`` in-process, and asserts the
# outcome with ``check_outcome``: a finished run, or one line on stderr with exit code 2. A field
# a lab adds is covered without anyone writing a case for it.

HUGE_FLOAT = 1e300


def numeric_values(kind: type, low=None, high=None) -> list:
    """The hostile values for one numeric field of type ``kind``: 0, -1, its bounds and one step
    past each, NaN, inf and -inf (floats), the largest int and beyond torch's range (ints)."""
    from .config import MAX_INT

    if kind is int:
        values = [0, -1, MAX_INT, MAX_INT + 1, 2**70]
        for bound in (low, high):
            if bound is not None:
                values += [int(bound), int(bound) - 1, int(bound) + 1]
        return sorted(set(values))
    values = [0.0, -1.0, HUGE_FLOAT, -HUGE_FLOAT, float("nan"), float("inf"), float("-inf"), 1e-300]
    for bound in (low, high):
        if bound is not None:
            values += [
                float(bound),
                float(bound) - max(1e-9, abs(bound) * 1e-6),
                float(bound) + max(1e-9, abs(bound) * 1e-6),
            ]
    return list({repr(v): v for v in values}.values())


def hostile_cases(
    cls,
    bases: dict[str, list[str]],
    prog: str = "lab",
    skip: tuple[str, ...] = (),
    command: tuple[str, ...] = (),
) -> list[tuple[str, list[str], bool]]:
    """``(case id, argv, runs)`` for every init field of config class ``cls``: each number at
    ``numeric_values``, each free-text field empty, on the first of ``bases`` (named argv lists)
    under which the field applies (its ``applies`` rules hold), so a flag of one dataset or task
    is tried where it does something. ``runs``: whether the config accepts the value (then the
    test trains on it); the values accepted are thinned to the smallest and the largest of each
    field, the values between them taking the same path. Fields in ``skip`` are left out (the
    test says why: a flag that names a path has its own table of files). ``command``: words put
    before the flags in each argv (a subcommand: ``("sample",)``), not part of what ``cls`` parses.
    """
    import contextlib
    import dataclasses
    import io
    import typing

    from .config import _base_type, _flag, parse_config
    from .errors import LabError
    from .validate import rules

    parsed = {name: _parse_or_none(cls, argv, prog) for name, argv in bases.items()}
    hints = typing.get_type_hints(cls)
    cases = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        tp, _, item = _base_type(hints[f.name])
        kind = item if tp is list else tp
        flag = f.metadata.get("flag") or f"--{_flag(f.name)}"
        if kind in (int, float):
            values = numeric_values(kind, f.metadata.get("low"), f.metadata.get("high"))
        elif tp is str and not f.metadata.get("choices"):
            values = [""]
        else:
            continue
        base_name = next(
            (
                name
                for name, cfg in parsed.items()
                if cfg is not None
                and all(not hasattr(cfg, r.field) or r.holds(cfg) for r in rules(cls, f.name))
            ),
            next(iter(bases)),
        )
        default = f.default if f.default is not dataclasses.MISSING else None
        accepted, refused = [], []
        for value in values:
            argv = [
                *bases[base_name],
                f"{flag}={value!r}" if kind is not str else f"{flag}={value}",
            ]
            try:
                with contextlib.redirect_stderr(
                    io.StringIO()
                ):  # argparse's refusals: the test sees them
                    parse_config(cls, argv, prog)
                accepted.append((value, argv))
            except (LabError, SystemExit):
                refused.append((value, argv))
            except Exception:  # a bug the test is to show: run it, and its traceback fails the test
                accepted.append((value, argv))
        accepted = sorted(
            ((v, a) for v, a in accepted if v != default or kind is str), key=lambda va: va[0]
        )
        if (
            len(accepted) > 1
        ):  # the largest; the smallest too where it is of another order (1 and 2**32 - 1)
            low_end, high_end = accepted[0], accepted[-1]
            accepted = [low_end, high_end] if low_end[0] * 4 < high_end[0] else [high_end]
        for value, argv in refused + accepted:
            cases.append(
                (f"{base_name} {flag}={value!r}", [*command, *argv], (value, argv) in accepted)
            )
    return cases


def _parse_or_none(cls, argv, prog):
    import contextlib
    import io

    from .config import parse_config

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return parse_config(cls, argv, prog)
    except (Exception, SystemExit):  # a base that does not parse is never chosen
        return None


def check_outcome(code: int, err: str) -> None:
    """What the README promises for any input: the run finished (0), or it stopped in one line on
    stderr with exit code 2 (a value refused) or 1 (an allocation the machine could not make:
    out of memory); never a traceback."""
    assert "Traceback" not in err, err[-3000:]
    assert code in (0, 2) or (code == 1 and "error: out of memory" in err), (code, err[-3000:])
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines and ": error: " in lines[-1], err[-3000:]
        assert err.count("error:") == 1, err[-3000:]


# Every way a file a command reads can be wrong: each file-reading test of every package walks
# this one list, so a new kind of damage reaches every reader at once.
FILE_DAMAGES = (
    "missing",
    "empty",
    "truncated",
    "a folder",
    "text",
    "gzip of nothing",
    "another lab's checkpoint",
    "a pickle of code",
)


def damage_file(path: Path, how: str) -> None:
    """Damage the existing file ``path`` in the way ``how`` (one of ``FILE_DAMAGES``) names."""
    import gzip
    import pickle

    import torch

    data = path.read_bytes()
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "a folder":
        path.unlink()
        path.mkdir()
    elif how == "text":
        path.write_text("epoch,loss\n1,0.5\n")
    elif how == "gzip of nothing":
        path.write_bytes(gzip.compress(b""))
    elif how == "another lab's checkpoint":
        torch.save({"model": {"w": torch.zeros(2)}, "lab": "lab3-transformer"}, path)
    elif how == "a pickle of code":
        path.write_bytes(pickle.dumps(ValueError("x")))
    else:
        raise ValueError(f"unknown damage {how!r}; one of {FILE_DAMAGES}")


def write_dataset(name: str, root: Path, n: int = 24, classes: int = 3) -> list[str]:
    """Tiny data of dataset ``name`` in its real file format under ``root``, and the flags that
    point a classifier at it (``--dataset NAME [--data-dir ...]``)."""
    import pickle

    import numpy as np
    from PIL import Image

    from .data.idx import write_idx

    rng = np.random.default_rng(0)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if name in ("digits", "synthetic"):
        return ["--dataset", name]
    if name in ("mnist", "fashion-mnist"):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for split, count in (("train", n), ("t10k", n // 2)):
            write_idx(
                folder / f"{split}-images-idx3-ubyte",
                rng.integers(0, 256, (count, 28, 28), dtype=np.uint8),
            )
            write_idx(
                folder / f"{split}-labels-idx1-ubyte", (np.arange(count) % classes).astype(np.uint8)
            )
        return ["--dataset", name, "--data-dir", str(root)]
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for batch in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
            count = max(2, n // 5)
            data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
            with open(folder / batch, "wb") as f:
                pickle.dump({b"data": data, b"labels": [i % classes for i in range(count)]}, f)
        return ["--dataset", "cifar10", "--data-dir", str(root)]
    if name == "imagefolder":
        for c in range(classes):
            (root / "images" / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in range(n // classes):
                pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "images" / f"c{c}" / f"{i}.png")
        return ["--dataset", "imagefolder", "--data-dir", str(root / "images")]
    if name == "csv":
        rows = ["a,b,label"] + [
            f"{rng.random():.3f},{rng.random():.3f},k{i % classes}" for i in range(n)
        ]
        (root / "table.csv").write_text("\n".join(rows) + "\n")
        return ["--dataset", "csv", "--data-dir", str(root / "table.csv")]
    raise ValueError(f"no writer for dataset {name!r}")


def write_text(root: Path, chars: int = 600) -> list[str]:
    """A small UTF-8 text file, and the lab3 flags that train a character model on it."""
    import numpy as np

    words = ["to be", "or not", "that is", "the question", "whether", "tis nobler"]
    rng = np.random.default_rng(0)
    text = " ".join(words[i] for i in rng.integers(0, len(words), chars))[:chars] + "\n"
    path = Path(root) / "corpus.txt"
    path.write_text(text)
    return ["--task", "chars", "--dataset", "text", "--data-dir", str(path)]


def run_main(main, argv: list[str], capsys) -> tuple[int, str]:
    """``main(argv)`` in-process, as the console script would run it: (exit code, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # a main that exits instead of returning
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def hostile_ids(cases) -> list[str]:
    return [case[0] for case in cases]


def hostile_params(cases) -> list:
    """``cases`` as pytest parameters named by their ids. A case that trains (``runs``) is marked
    ``slow``: the per-package CI pass, which checks each package's imports alone, leaves the
    hundreds of tiny runs to the whole-workspace pass and still walks every refusal."""
    import pytest

    return [
        pytest.param(*case, id=case[0], marks=pytest.mark.slow if case[2] else ()) for case in cases
    ]


def fast_figures(monkeypatch) -> None:
    """Figures are built as in a real run but not rasterised (``savefig`` writes a 1x1 PNG carrying
    the project's tag, so ``--overwrite`` still knows it as ours): the hostile-value tables run
    hundreds of tiny runs, and drawing is half of each one's time."""
    import io

    import matplotlib.backends.backend_agg as agg
    import matplotlib.figure
    from PIL import Image, PngImagePlugin

    from .plots import TAG

    info = PngImagePlugin.PngInfo()
    for key, value in TAG.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG", pnginfo=info)
    tiny = buffer.getvalue()

    def savefig(self, fname, *args, **kwargs):
        if hasattr(fname, "write"):  # plots.save_figure renders into memory, then writes atomically
            fname.write(tiny)
        else:
            Path(fname).write_bytes(tiny)

    def draw(self):  # what TensorBoard's add_figure reads back: a blank canvas of the right size
        self.renderer = self.get_renderer()

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    monkeypatch.setattr(agg.FigureCanvasAgg, "draw", draw)


def run_hostile_case(
    main,
    argv: list[str],
    runs: bool,
    data: Path,
    tmp_path: Path,
    monkeypatch,
    capsys,
    out: str | None = "run",
) -> int:
    """One row of a hostile-value table: ``{data}`` in ``argv`` becomes ``data``, the run goes into
    ``tmp_path / out`` (``--out ''`` too: the working directory is ``tmp_path``; ``out=None`` for a
    command with no ``--out``), and the outcome must be a finished run or one line and exit code
    2; a value the config refuses never trains, and one it accepts reaches the command (an
    unknown flag would mean the table itself is wrong)."""
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in the tests")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.chdir(tmp_path)
    fast_figures(monkeypatch)
    argv = [a.replace("{data}", str(data)) for a in argv]
    if out is not None and not any(a.startswith("--out") for a in argv):
        argv += ["--out", str(tmp_path / out)]
    code, err = run_main(main, argv, capsys)
    check_outcome(code, err)
    assert runs or code == 2, f"a value the config refuses must not train: {argv}"
    assert not runs or "unrecognized arguments" not in err, err
    return code
