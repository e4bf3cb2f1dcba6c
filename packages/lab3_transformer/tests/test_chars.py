"""--task chars: the language model, KV-cached sampling, the run and `sample`, bad inputs."""

import json
import random

import pytest
import torch

from lab3_transformer.cli import main
from lab3_transformer.lm import generate, lm_loss, sample_text
from lab3_transformer.model import TinyTransformer, TransformerConfig
from labs_core.data.text import CharTokenizer

WORDS = ["the", "king", "queen", "shall", "love", "thee", "my", "lord", "and", "not", "to", "be"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(6)) for _ in range(300)]
    path = tmp_path_factory.mktemp("text") / "words.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_model(max_len=12, vocab=20, attention="torch", seed=0):
    torch.manual_seed(seed)
    cfg = TransformerConfig(
        vocab,
        max_len,
        dim=32,
        heads=4,
        layers=2,
        positions="learned",
        attention=attention,
        tie_weights=True,
    )
    return TinyTransformer(cfg).eval()


def test_weight_tying_shares_one_matrix():
    model = tiny_model()
    assert model.head.weight is model.embed.weight
    names = [n for n, _ in model.named_parameters()]
    assert "head.weight" not in names  # one parameter, counted once


@pytest.mark.parametrize("attention", ["scratch", "torch"])
def test_language_model_cannot_see_the_future(attention):
    model = tiny_model(attention=attention)
    x = torch.randint(0, 20, (2, 12))
    y = x.clone()
    y[:, 5] = (y[:, 5] + 3) % 20  # perturb one later token
    a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("attention", ["scratch", "torch"])
def test_kv_cache_gives_the_logits_of_a_full_forward(attention):
    model = tiny_model(attention=attention)
    x = torch.randint(0, 20, (3, 12))
    full = model(x)
    caches = model.new_caches()
    parts = (
        [model(x[:, :5], caches)]
        + [model(x[:, t : t + 1], caches) for t in range(5, 9)]
        + [model(x[:, 9:], caches)]
    )
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)
    assert all(len(c) == 12 for c in caches)


def count_tokens_read(model):
    counts = []
    model.embed.register_forward_hook(lambda m, i, o: counts.append(i[0].shape[1]))
    return counts


def test_cached_and_uncached_generation_give_the_same_tokens_and_cached_reads_each_once():
    model = tiny_model(max_len=12)
    prompt = torch.tensor([1, 2, 3])
    counts = count_tokens_read(model)
    fast = generate(
        model, prompt, 40, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(5)
    )
    cached_reads = list(counts)
    counts.clear()
    slow = generate(
        model,
        prompt,
        40,
        temperature=1.0,
        top_k=10,
        generator=torch.Generator().manual_seed(5),
        cache=False,
    )
    assert torch.equal(fast, slow) and len(fast) == 43 and torch.equal(fast[:3], prompt)
    # one forward step per token; whole windows only at the start and after each jump of the window
    assert len(cached_reads) == len(counts) == 40
    assert sum(cached_reads) < 100 < sum(counts)
    assert sum(r == 1 for r in cached_reads) >= 33


def test_sampling_respects_temperature_zero_and_top_k():
    model = tiny_model()
    prompt = torch.tensor([4])
    greedy = [generate(model, prompt, 10, temperature=0) for _ in range(2)]
    assert torch.equal(greedy[0], greedy[1])
    logits = model(prompt[None])[0, -1]
    allowed = set(torch.topk(logits, 1).indices.tolist())
    picked = generate(
        model, prompt, 1, temperature=5.0, top_k=1, generator=torch.Generator().manual_seed(0)
    )
    assert picked[-1].item() in allowed


def test_loss_is_reported_in_nats_and_bits():
    logits = torch.zeros(2, 3, 8)  # uniform over 8 symbols: ln 8 nats = 3 bits
    out = lm_loss(logits, (None, torch.zeros(2, 3, dtype=torch.long)))
    assert out["loss"].item() == pytest.approx(torch.log(torch.tensor(8.0)).item())
    assert out["bpc"].item() == pytest.approx(3.0)


def run_args(corpus, out, *extra):
    return [
        "--task",
        "chars",
        "--dataset",
        "text",
        "--data-dir",
        str(corpus),
        "--dim",
        "32",
        "--heads",
        "2",
        "--layers",
        "2",
        "--block-size",
        "16",
        "--batch-size",
        "16",
        "--val-windows",
        "20",
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]


def test_overfit_run_learns_saves_tokenizer_and_samples(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            run_args(
                corpus,
                out,
                "--overfit",
                "4",
                "--max-steps",
                "150",
                "--eval-every",
                "50",
                "--lr",
                "1e-2",
                "--sample-tokens",
                "40",
            )
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == 150 and len(history) == 3 and history[-1]["elapsed_s"] > 0
    assert summary["metrics"]["val_loss"] < 0.5 * history[0]["train_loss"]  # memorised 4 windows
    assert summary["metrics"]["val_bpc"] == pytest.approx(
        summary["metrics"]["val_loss"] / 0.6931471805599453
    )
    assert summary["best"]["metric"] == "val_loss" and summary["best"]["mode"] == "min"
    assert summary["metrics"]["full_val_loss"] == pytest.approx(
        summary["metrics"]["val_loss"], rel=1e-4
    )  # same text
    tok = CharTokenizer.from_state_dict(json.loads((out / "tokenizer.json").read_text()))
    assert set(tok.chars) == set(corpus.read_text())
    assert len((out / "sample.txt").read_text()) == 41
    capsys.readouterr()
    # sample from the checkpoint, and from the run directory (its best.pt); same seed, same text
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(out / "checkpoints" / "best.pt"),
                "--prompt",
                "the king",
                "--tokens",
                "30",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    first = capsys.readouterr().out
    assert first.startswith("the king") and len(first) == len("the king") + 30 + 1
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(out),
                "--prompt",
                "the king",
                "--tokens",
                "30",
                "--seed",
                "1",
                "--no-cache",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == first


def test_sample_without_checkpoint_takes_the_latest_chars_run(
    corpus, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            run_args(
                corpus,
                "runs/lab3-transformer/a",
                "--max-steps",
                "2",
                "--eval-every",
                "2",
                "--sample-tokens",
                "0",
            )
        )
        == 0
    )
    assert (
        main(
            [
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
                "--out",
                "runs/lab3-transformer/b",
            ]
        )
        == 0
    )  # newer, toy
    capsys.readouterr()
    assert main(["sample", "--prompt", "the", "--tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("the")


def test_sample_text_is_reproducible_from_the_seed():
    tok = CharTokenizer("abcdefghij ")
    model = tiny_model(vocab=len(tok))
    a = sample_text(model, tok, "abc", 20, temperature=0.8, top_k=5, seed=3)
    assert a == sample_text(
        model, tok, "abc", 20, temperature=0.8, top_k=5, seed=3
    ) and a.startswith("abc")


def test_resume_continues_exactly(corpus, tmp_path):
    common = [
        "--max-steps",
        "0",
        "--eval-every",
        "10",
        "--scheduler",
        "none",
        "--precision",
        "fp32",
        "--sample-tokens",
        "0",
    ]
    assert main(run_args(corpus, tmp_path / "whole", *common, "--epochs", "3")) == 0
    assert main(run_args(corpus, tmp_path / "cut", *common, "--epochs", "2")) == 0
    assert main(run_args(corpus, tmp_path / "cut", *common, "--epochs", "3", "--resume")) == 0
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]


def write(tmp_path, name, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    "make_argv, message",
    [
        (
            lambda t, c: [
                "--task",
                "chars",
                "--dataset",
                "text",
                "--data-dir",
                write(t, "e.txt", b""),
            ],
            "is empty",
        ),
        (
            lambda t, c: [
                "--task",
                "chars",
                "--dataset",
                "text",
                "--data-dir",
                write(t, "b.bin", b"\x00\x01\x02abc"),
            ],
            "looks like a binary file",
        ),
        (
            lambda t, c: [
                "--task",
                "chars",
                "--dataset",
                "text",
                "--data-dir",
                write(t, "s.txt", b"to be or not"),
            ],
            "too short",
        ),
        (
            lambda t, c: [
                "--task",
                "chars",
                "--dataset",
                "text",
                "--data-dir",
                str(c),
                "--block-size",
                "5000",
            ],
            "fewer than one window of --block-size 5000",
        ),
        (
            lambda t, c: [
                "--task",
                "chars",
                "--dataset",
                "text",
                "--data-dir",
                str(t / "missing.txt"),
            ],
            "no such file",
        ),
        (
            lambda t, c: ["--task", "chars", "--dataset", "text", "--data-dir", str(t)],
            "is a folder",
        ),
        (
            lambda t, c: ["--task", "chars", "--num-train", "100"],
            "--num-train applies to the toy tasks",
        ),
        (
            lambda t, c: ["--task", "reverse", "--block-size", "32"],
            "--block-size applies to --task chars only",
        ),
        (lambda t, c: ["--task", "chars", "--block-size", "0"], "--block-size must be at least 1"),
        (lambda t, c: ["sample"], "no --task chars run under runs/lab3-transformer"),
        (lambda t, c: ["sample", "--checkpoint", str(t / "none.pt")], "not found"),
        (
            lambda t, c: ["sample", "--checkpoint", str(c), "--tokens", "0"],
            "--tokens must be at least 1",
        ),
        (lambda t, c: ["sample", "--checkpoint", str(c), "--temperature", "nan"], "--temperature"),
        (lambda t, c: ["sample", "--checkpoint", str(c), "--top-k", "-1"], "--top-k must"),
        (lambda t, c: ["sample", "--checkpoint", str(c)], "not a checkpoint of this project"),
        (
            lambda t, c: ["sample", "--checkpoint", str(c), "--bogus"],
            "unrecognized arguments: --bogus",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    make_argv, message, tmp_path, corpus, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    argv = make_argv(tmp_path, corpus)
    assert main([*argv, "--out", str(tmp_path / "run")] if argv[0] != "sample" else argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_sample_refuses_a_toy_task_checkpoint_and_unknown_prompt_characters(
    corpus, tmp_path, capsys
):
    toy = tmp_path / "toy"
    assert (
        main(
            [
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
                "--out",
                str(toy),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(toy / "checkpoints" / "last.pt")]) == 2
    assert (
        "holds a --task reverse model; sample needs a --task chars checkpoint"
        in capsys.readouterr().err
    )
    out = tmp_path / "lm"
    assert (
        main(run_args(corpus, out, "--max-steps", "2", "--eval-every", "2", "--sample-tokens", "0"))
        == 0
    )
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(out), "--prompt", "QUEEN@"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "never saw in training: '@', 'E', 'N', 'Q', 'U'" in err


@pytest.mark.slow
def test_chars_runs_under_torchrun_with_two_processes(corpus, tmp_path):
    from labs_core.testing import check_torchrun_run, torchrun

    out = tmp_path / "ddp"
    r = torchrun(
        "lab3_transformer.cli",
        *run_args(corpus, out, "--max-steps", "6", "--eval-every", "3", "--sample-tokens", "20"),
    )
    check_torchrun_run(r, out)
    assert (out / "sample.txt").is_file() and (out / "tokenizer.json").is_file()


def test_chars_recipe_fills_the_defaults_and_flags_win():
    from lab3_transformer.cli import CHARS_RECIPE, Lab3Config
    from labs_core.config import parse_config

    cfg = parse_config(Lab3Config, ["--task", "chars"], "lab3-transformer")
    assert all(getattr(cfg, k) == v for k, v in CHARS_RECIPE.items())
    assert (
        cfg.epochs == 7 and cfg.warmup_epochs * cfg.eval_every == 100
    )  # 1,400 steps, 200 per evaluation
    cfg = parse_config(
        Lab3Config,
        ["--task", "chars", "--eval-every", "100", "--lr", "1e-3", "--max-steps", "250"],
        "lab3-transformer",
    )
    assert cfg.lr == 1e-3 and cfg.epochs == 3 and cfg.warmup_epochs * cfg.eval_every == 100
    toy = parse_config(Lab3Config, ["--task", "sort"], "lab3-transformer")
    assert toy.dim == 64 and toy.precision == "fp32" and toy.monitor == "val_greedy_seq_acc"
