import json

import pytest
import torch

from lab3_transformer.cli import Lab3Config, main, train
from lab3_transformer.model import TinyTransformer, TransformerConfig
from lab3_transformer.tasks import PLUS, SEP, VOCAB, lengths, make_examples, split_examples
from labs_core.testing import check_one_line_error


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
@pytest.mark.parametrize("attention", ["scratch", "torch"])
def test_causal_model_cannot_see_the_future(positions, attention):
    torch.manual_seed(0)
    model = TinyTransformer(
        TransformerConfig(
            VOCAB, 12, dim=32, heads=4, layers=2, positions=positions, attention=attention
        )
    ).eval()
    x = torch.randint(0, 10, (3, 12))
    y = x.clone()
    y[:, 7:] = (y[:, 7:] + 1) % 10  # change every token from position 7 on
    a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :7], b[:, :7])  # earlier outputs unchanged
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_scratch_and_torch_attention_give_the_same_model():
    torch.manual_seed(0)
    a = TinyTransformer(TransformerConfig(VOCAB, 10, dim=32, heads=4, attention="scratch"))
    b = TinyTransformer(TransformerConfig(VOCAB, 10, dim=32, heads=4, attention="torch"))
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, VOCAB, (4, 10))
    torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)


def test_attention_shapes_at_every_layer():
    model = TinyTransformer(TransformerConfig(VOCAB, 9, dim=24, heads=3, layers=3))
    model(torch.randint(0, VOCAB, (5, 9)))
    maps = model.attention_maps()
    assert len(maps) == 3 and all(m.shape == (5, 3, 9, 9) for m in maps)


@pytest.mark.parametrize("task", ["reverse", "sort", "add"])
def test_tasks_are_generated_deterministically_and_correctly(task):
    x, y = make_examples(task, 50, 6, seed=3)
    x2, _ = make_examples(task, 50, 6, seed=3)
    assert torch.equal(x, x2)
    s, t = lengths(task, 6)
    assert (
        x.shape == (50, s + 1 + t) and torch.all(x[:, s] == SEP) and torch.equal(x[:, s + 1 :], y)
    )
    src = x[:, :s]
    if task == "reverse":
        assert torch.equal(y, src.flip(1))
    elif task == "sort":
        assert torch.equal(y, src.sort(1).values) and not torch.equal(y, src)
    else:
        number = lambda digits: sum(d * 10**i for i, d in enumerate(digits))  # noqa: E731
        for i in range(50):
            a, b = number(src[i, :6].tolist()), number(src[i, 7:].tolist())
            assert number(y[i].tolist()) == (a + b) % 10**6 and src[i, 6] == PLUS


def test_held_out_sources_never_appear_in_training():
    (tx, _), (vx, _) = split_examples("reverse", 3000, 300, 4, seed=0)  # only 10^4 distinct sources
    train_set = {tuple(r) for r in tx[:, :4].tolist()}
    assert not any(tuple(r) in train_set for r in vx[:, :4].tolist())


def small(**kw):
    base = dict(
        task="reverse",
        length=5,
        num_train=4000,
        num_test=200,
        epochs=8,
        dim=32,
        heads=2,
        layers=2,
        batch_size=64,
        lr=3e-3,
        quiet=True,
    )
    base.update(kw)
    return Lab3Config(**base)


def test_a_short_run_writes_a_checkpoint_that_rebuilds_the_model(tmp_path):
    summary = train(small(out=str(tmp_path / "rev"), epochs=1, max_steps=5))
    assert summary["steps"] == 5 and 0 <= summary["metrics"]["val_greedy_seq_acc"] <= 1
    ckpt = torch.load(tmp_path / "rev" / "checkpoints" / "last.pt", weights_only=True)
    model = TinyTransformer(TransformerConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    assert (tmp_path / "rev" / "loss_curve.png").is_file()


def test_cli_smoke_with_attention_maps(tmp_path, capsys):
    """A smoke run (what an overfit or full run reaches is measured by
    benchmarks/lab_targets.py)."""
    out = tmp_path / "run"
    argv = [
        "--task",
        "sort",
        "--length",
        "4",
        "--overfit",
        "32",
        "--dim",
        "32",
        "--heads",
        "2",
        "--epochs",
        "3",
        "--lr",
        "3e-3",
        "--out",
        str(out),
        "--show-attention",
    ]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 3 and summary["best"]["metric"] == "val_greedy_seq_acc"
    printed = capsys.readouterr().out
    assert "layer 0 head 0" in printed and "layer 1 head 1" in printed
    assert summary["peak_memory"]["cpu_peak_rss_mib"] > 0  # the run skeleton's, for every lab
    assert (
        "peak memory: process" in printed.splitlines()[0] and f"| run directory: {out}" in printed
    )
    assert len(list(out.glob("attention_layer*_head*.png"))) == 4
    assert (out / "loss_curve.png").is_file() and (out / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "translate"], "invalid choice"),
        (["--dim", "30", "--heads", "4"], "divisible by --heads"),
        (["--dataset", "mnist"], "invalid choice: 'mnist'"),  # text corpora only (--task chars)
        (["--augment"], "unrecognized arguments: --augment"),
        (["--heads", "0"], "must be at least 1"),
        (["--monitor", "val_map_50"], "not a metric of this run; it logs train_loss"),
        (["--attention", "torch", "--show-attention"], "needs --attention scratch"),
    ],
)
def test_bad_input(argv, message, capsys):
    check_one_line_error(main, argv, message, capsys)


@pytest.mark.slow
def test_runs_under_torchrun_with_two_processes(tmp_path):
    from labs_core.testing import check_torchrun_lab

    out = tmp_path / "ddp"
    check_torchrun_lab(
        "lab3_transformer.cli",
        [
            "--task",
            "reverse",
            "--length",
            "4",
            "--num-train",
            "512",
            "--num-test",
            "64",
            "--epochs",
            "1",
            "--dim",
            "16",
            "--heads",
            "2",
            "--quiet",
        ],
        out,
    )
    assert (out / "loss_curve.png").is_file()


def test_every_flag_is_read_by_the_run(tmp_path):
    from labs_core.testing import check_every_flag_is_read

    sgd = [
        "--optimizer",
        "sgd",
        "--momentum",
        "0.8",
        "--scheduler",
        "cosine",
        "--warmup-epochs",
        "0.5",
    ]
    common = [
        "--num-train",
        "256",
        "--num-test",
        "32",
        "--epochs",
        "1",
        "--dim",
        "16",
        "--heads",
        "2",
        "--quiet",
        "--show-attention",
    ]
    text = tmp_path / "words.txt"
    text.write_text("the king shall love thee, my lord\n" * 40)
    chars = [
        "--task",
        "chars",
        "--dataset",
        "text",
        "--data-dir",
        str(text),
        "--block-size",
        "8",
        "--eval-every",
        "2",
        "--max-steps",
        "2",
        "--val-windows",
        "4",
        "--sample-tokens",
        "5",
        "--dim",
        "16",
        "--heads",
        "2",
        "--quiet",
    ]
    check_every_flag_is_read(
        Lab3Config, train, [common, [*common, *sgd], chars], tmp_path, "lab3-transformer"
    )


@pytest.mark.slow
def test_under_torchrun_a_locked_run_directory_stops_every_process(tmp_path):
    """Rank 0 cannot take the lock of a folder a live run holds: every process stops, in one line
    each, with nothing written, and none waits for the others until the timeout."""
    import os

    from labs_core.rundir import LOCK_NAME
    from labs_core.testing import torchrun

    out = tmp_path / "locked"
    out.mkdir()
    (out / LOCK_NAME).write_text(
        f"{os.getpid()} {os.uname().nodename}\n"
    )  # this test process: alive
    r = torchrun(
        "lab3_transformer.cli",
        "--task",
        "reverse",
        "--length",
        "4",
        "--num-train",
        "64",
        "--num-test",
        "8",
        "--epochs",
        "1",
        "--dim",
        "16",
        "--heads",
        "2",
        "--quiet",
        "--dist-timeout",
        "60",
        "--out",
        str(out),
        timeout=120,
    )
    assert (
        r.returncode != 0
    )  # torchrun's launcher then prints its own ChildFailedError; our processes print one line
    assert (
        "labs_core/" not in r.stderr and "lab3_transformer/" not in r.stderr
    )  # no traceback through our code
    assert r.stderr.count("lab3-transformer: error: ") == 2
    assert "in use by another run" in r.stderr and "rank 0 stopped" in r.stderr
    assert [p.name for p in out.iterdir()] == [LOCK_NAME]


def test_a_newcomer_follows_the_command_to_the_optimizer_step_in_six_frames(tmp_path):
    """docs/architecture.md's road: main -> run_lab -> execute -> fit -> train_one_epoch -> step."""
    from labs_core.testing import check_road

    check_road(
        main,
        [
            *[
                "--epochs",
                "1",
                "--max-steps",
                "1",
                "--num-train",
                "64",
                "--num-test",
                "8",
                "--dim",
                "16",
                "--heads",
                "2",
            ],
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ],
    )
