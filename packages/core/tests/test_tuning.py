"""The finders (--lr-find, --find-batch-size) and the peak-memory figures every run reports."""

import itertools
import json
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from labs_core import LabError, RunConfig, Trainer, arg, batch_finder, lr_finder, memory, tuning
from labs_core.config import TuningOptions
from labs_core.data.loader import FastLoader
from labs_core.experiment import classifier_main


@dataclass
class TuneDemoConfig(TuningOptions, RunConfig):
    lab = "demo"
    dataset: str = arg("synthetic", "dataset")
    image_size: int = arg(8, "image side")
    epochs: int = arg(1, "epochs")


def build(data):
    c, h, w = data.input_shape
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(32, data.num_classes),
    )


def main(argv):
    return classifier_main(TuneDemoConfig, build, "demo", argv)


# ------------------------------------------------------------------ the range test
def isotropic_regression(n=512, d=8, s=1.0, seed=0):
    """Least squares with X^T X / n = s I: the loss's Hessian is 2 s I, so L = 2 s, and plain
    gradient descent converges exactly for lr < 2 / L."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, d, generator=g))
    x = q * (n * s) ** 0.5
    y = x @ torch.randn(d, generator=g) + 0.1 * torch.randn(n, generator=g)
    return x, y, 2 * s


@pytest.mark.parametrize("s", [0.25, 1.0, 4.0])
def test_suggestion_lands_in_the_known_good_range_of_a_quadratic(s):
    x, y, L = isotropic_regression(s=s)
    model = nn.Linear(x.shape[1], 1, bias=False)
    nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)

    def step(batch):
        xb, yb = batch
        loss = ((model(xb).squeeze(1) - yb) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    result = lr_finder.range_test(
        opt, itertools.repeat((x, y)), step, start=1e-4 / s, end=10 / s, steps=100
    )
    # Good: below 2/L gradient descent converges; at or above lr_low it cuts the excess loss 100x
    # within the test's 100 steps, (1 - lr L)^200 <= 0.01.
    high = 2 / L
    low = (1 - 0.01 ** (1 / 200)) / L
    assert low <= result.valley < high, (low, result.valley, high)
    assert low <= result.steepest < high, (low, result.steepest, high)
    assert "diverged" in result.stop_reason  # it found the edge and stopped there
    assert result.lrs[-1] > high


def test_valley_and_steepest_read_the_curve_as_fastai_does():
    lrs = [10 ** (i / 10) for i in range(25)]
    drops = [
        0.1,
        0.2,
        0.3,
        0.3,
        0.3,
        0.6,
        0.2,
        0.1,
        0.1,
        0.1,
    ]  # the steepest fall: from index 14 to 15
    losses = (
        [5.0] * 10 + [5.0 - sum(drops[: i + 1]) for i in range(10)] + [9.0] * 5
    )  # flat, falls, blows up
    # fastai: the longest decreasing subsequence ends at 19 and is 11 long, so start = 19 - 11 = 8;
    # the suggestion is start + int(11 / 3) + int(11 / 3 / 2) = 8 + 3 + 1
    assert lr_finder.valley(lrs, losses) == lrs[12]
    assert lr_finder.steepest(lrs, losses) == lrs[14]


def test_a_range_that_diverges_at_once_is_refused():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    losses = iter([1.0, 1.0, float("nan")])
    with pytest.raises(LabError, match="too few points"):
        lr_finder.range_test(opt, itertools.repeat(None), lambda b: next(losses), steps=50)


# ------------------------------------------------------------------ nothing changed afterwards
def small_trainer(optimizer="adam", precision=None):
    torch.manual_seed(0)
    x = torch.randint(0, 255, (96, 1, 8, 8), dtype=torch.uint8)
    y = torch.arange(96) % 3
    loader = FastLoader(x, y, 16, augment=True, pad=1, seed=3)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(16, 3),
    )
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(
        model.parameters(), lr=1e-3
    )
    return Trainer(model, opt, loader, epochs=1, max_steps=3, precision=precision)


def states_equal(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(states_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(states_equal(u, v) for u, v in zip(a, b, strict=True))
    return a == b


def fake_run(tmp_path, **flags):
    cfg = TuneDemoConfig(
        **{"lr_find_steps": 30, "lr_find_start": 1e-5, "lr_find_end": 10.0, **flags}
    )
    return SimpleNamespace(cfg=cfg, run_dir=tmp_path, say=lambda msg: None)


@pytest.mark.parametrize("kind", ["lr", "batch_size"])
def test_a_finder_leaves_weights_optimizer_rng_and_data_order_as_it_found_them(kind, tmp_path):
    trainer = small_trainer()
    trainer.fit()  # three steps: Adam has state, batch norm has statistics, the loader has moved on
    trainer.train_loader.set_epoch(1)
    before = (
        trainer.module.state_dict(),
        trainer.optimizer.state_dict(),
        trainer.train_loader.state_dict(),
    )
    before = tuning._host_copy(before)
    rng = torch.get_rng_state()
    run = fake_run(tmp_path, memory_budget="100G" if kind == "batch_size" else "")
    found = tuning.probe(run, trainer, kind)
    after = (
        trainer.module.state_dict(),
        trainer.optimizer.state_dict(),
        trainer.train_loader.state_dict(),
    )
    assert states_equal(before, after)
    assert torch.equal(torch.get_rng_state(), rng)
    assert trainer.module.training
    if kind == "lr":  # the finder did train: rates rose to the edge and beyond
        assert found["steps_run"] >= 10 and found["suggested_lr"] == found["valley_lr"]
        assert (tmp_path / "lr_find.png").stat().st_size > 5000
        saved = json.loads((tmp_path / "lr_find.json").read_text())
        assert len(saved["curve"]) == found["steps_run"] and saved["rule"] == "valley (fastai)"
    else:
        assert (
            found["suggested_batch_size"] == 96
        )  # the whole (tiny) training split fits in 100 GiB
        assert (
            json.loads((tmp_path / "batch_size.json").read_text())["probes"][0]["batch_size"] == 2
        )


# ------------------------------------------------------------------ through a lab's command line
def test_lr_find_writes_its_report_and_stops_leaving_no_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["--lr-find", "--lr-find-steps", "40", "--lr-find-start", "1e-5", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "suggested --lr" in printed and "valley rule" in printed and "steepest descent" in printed
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "lr_find.json",
        "lr_find.png",
    ]  # not a run: no config.json
    assert (
        main(["--epochs", "1", "--quiet", "--out", str(out)]) == 0
    )  # so training into it is not refused
    assert (out / "summary.json").is_file() and (out / "lr_find.png").is_file()


def test_lr_find_then_train_is_the_run_with_the_suggested_rate(tmp_path):
    found, plain = tmp_path / "found", tmp_path / "plain"
    assert (
        main(
            [
                "--lr-find-then-train",
                "--lr-find-steps",
                "30",
                "--lr-find-start",
                "1e-5",
                "--quiet",
                "--out",
                str(found),
            ]
        )
        == 0
    )
    lr = json.loads((found / "lr_find.json").read_text())["suggested_lr"]
    config = json.loads((found / "config.json").read_text())
    assert config["lr"] == lr and config["resolved"]["lr_find"]["suggested_lr"] == lr
    assert main(["--lr", repr(lr), "--quiet", "--out", str(plain)]) == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (found, plain))
    (
        a["metrics"].pop("elapsed_s"),
        b["metrics"].pop("elapsed_s"),
    )  # wall time, the one thing that differs
    assert (
        a["metrics"] == b["metrics"]
    )  # same weights, same RNG, same data order: the same training


def test_find_batch_size_prints_a_table_and_writes_its_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["--find-batch-size", "--memory-budget", "64G", "--overfit", "40", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "images/s" in printed and "suggested --batch-size 40" in printed
    report = json.loads((out / "batch_size.json").read_text())
    assert [p["batch_size"] for p in report["probes"]] == [
        2,
        4,
        8,
        16,
        32,
        40,
    ]  # doubling, then the split's size
    assert all(p["fits"] and p["images_per_s"] > 0 and p["peak_mib"] > 0 for p in report["probes"])
    assert sorted(p.name for p in out.iterdir()) == ["batch_size.json"]


def test_find_batch_size_under_a_budget_below_the_process_says_so(tmp_path, capsys):
    assert main(["--find-batch-size", "--memory-budget", "1M", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "even a batch of 2 does not fit" in err and "budget 1 MiB" in err
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr-find", "--resume"], "does not combine with --resume"),
        (["--lr-find", "--lr-find-steps", "0"], "--lr-find-steps must be at least 10"),
        (
            ["--lr-find", "--lr-find-start", "1", "--lr-find-end", "0.1"],
            "--lr-find-start must be positive and below",
        ),
        (["--lr-find", "--lr-find-start", "0"], "--lr-find-start must be positive"),
        (["--lr-find-steps", "50"], "does nothing without --lr-find"),
        (["--memory-budget", "1G"], "does nothing without --find-batch-size"),
        (["--find-batch-size", "--memory-budget", "lots"], "give a size such as 800M"),
        (["--find-batch-size", "--memory-budget", "0G"], "--memory-budget must be positive"),
        (["--lr-find", "--find-batch-size"], "one finder at a time"),
        (["--lr-find", "--lr", "0.1"], "leave --lr out"),
        (
            ["--lr-find-then-train", "--lr", "0.1"],
            "trains with the one it suggests; leave --lr out",
        ),
        (
            ["--lr-find", "--epochs", "3"],
            "--epochs would change nothing (--lr-find-then-train trains after the test)",
        ),
        (["--find-batch-size", "--batch-size", "32"], "leave --batch-size out"),
    ],
)
def test_bad_finder_flags_are_one_line_exit_2_and_write_nothing(
    argv, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert not any(tmp_path.iterdir())


def test_finders_are_refused_under_torchrun(capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for flag in ("--lr-find", "--find-batch-size"):
        assert main([flag]) == 2
        err = capsys.readouterr().err
        assert (
            err.count("\n") == 1 and f"{flag} runs in one process; run it without torchrun" in err
        )


# ------------------------------------------------------------------ the batch-size search
def fake_probe(fits_up_to, tried):
    def probe(size):
        tried.append(size)
        return batch_finder.Probe(size, size <= fits_up_to, 1000.0 + size, 100.0 + size)

    return probe


@pytest.mark.parametrize(
    "limit, cap, expected",
    [
        (
            100,
            10_000,
            [2, 4, 8, 16, 32, 64, 128, 96, 112, 104],
        ),  # doubling, then bisect in multiples of 8
        (5, 10_000, [2, 4, 8, 6, 5]),  # below 8: to the exact size
        (10_000, 300, [2, 4, 8, 16, 32, 64, 128, 256, 300]),  # the training split is the ceiling
    ],
)
def test_search_doubles_then_bisects(limit, cap, expected):
    tried = []
    probes = batch_finder.search(fake_probe(limit, tried), cap)
    assert tried == expected
    largest, fastest = batch_finder.suggestion(probes)
    assert largest == max(s for s in expected if s <= limit) and fastest == largest


def test_search_refuses_when_nothing_fits():
    with pytest.raises(LabError, match="even a batch of 2 does not fit"):
        batch_finder.search(fake_probe(1, []), 1000)


def test_cuda_out_of_memory_is_caught_and_bisected():
    """The CUDA path without a GPU: a step that raises torch.cuda.OutOfMemoryError above 100
    samples."""
    calls = []

    def step(batch):
        calls.append(len(batch))
        if len(batch) > 100:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    device = torch.device("cpu")
    probes = batch_finder.search(
        lambda n: batch_finder.measure(n, torch.zeros, step, device, None), 1000
    )
    assert [p.batch_size for p in probes] == [2, 4, 8, 16, 32, 64, 128, 96, 112, 104]
    assert [p.note for p in probes if not p.fits] == ["out of memory"] * 3
    assert batch_finder.suggestion(probes)[0] == 96
    assert "no: out of memory" in batch_finder.format_table(probes, "CUDA peak reserved")


def test_other_runtime_errors_are_not_taken_for_out_of_memory():
    def step(batch):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        batch_finder.measure(4, torch.zeros, step, torch.device("cpu"), None)


# ------------------------------------------------------------------ peak memory
def test_every_run_reports_its_peak_memory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--epochs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    peak = json.loads((out / "summary.json").read_text())["peak_memory"]
    assert set(peak) == {"cpu_peak_rss_mib"} and 10 < peak["cpu_peak_rss_mib"] < 1e6
    assert "peak memory: process" in printed[0]  # the start-up line
    assert printed[-1] == f"{memory.describe_peak(peak)} | run directory: {out}"


def test_peak_rss_units_without_proc(monkeypatch):
    """Without /proc, ru_maxrss: KiB on Linux, bytes on macOS."""
    monkeypatch.setattr(memory, "rss_mib", lambda field="VmRSS": None)
    monkeypatch.setattr(
        memory.resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=512 * 1024)
    )
    monkeypatch.setattr(memory.sys, "platform", "linux")
    assert memory.peak_rss_mib() == 512
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.peak_rss_mib() == 0.5


def test_peak_is_reset_per_run():
    memory.release_freed()
    if not memory.reset_peak(torch.device("cpu")):
        pytest.skip("this kernel does not let a process reset its peak resident memory")
    low = memory.peak_rss_mib()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    high = memory.peak_rss_mib()
    del block
    assert high - low > 50
    memory.release_freed()
    memory.reset_peak(torch.device("cpu"))
    assert memory.peak_rss_mib() < high - 50


@pytest.mark.parametrize(
    "text, mib",
    [
        ("512", 512),
        ("512M", 512),
        ("512MiB", 512),
        ("1.5G", 1536),
        ("2GiB", 2048),
        ("1t", 2**20),
        ("2048k", 2),
    ],
)
def test_sizes_parse_to_mib(text, mib):
    assert memory.parse_size(text) == mib
