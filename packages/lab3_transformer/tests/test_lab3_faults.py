"""lab3's faults: `sample` streams its characters and bounds --tokens; a full disk during a
--task chars run is one line and leaves no lock; a context too long for memory is refused."""

import errno
import io
from dataclasses import asdict

import pytest
import torch
from test_chars import corpus, run_args  # noqa: F401 - the corpus fixture

from lab3_transformer.cli import main
from lab3_transformer.lm import MAX_SAMPLE_TOKENS, sample_text, stream_text
from lab3_transformer.model import TinyTransformer, TransformerConfig
from labs_core import fits
from labs_core.checkpoint import save_checkpoint
from labs_core.data.text import CharTokenizer


@pytest.fixture
def checkpoint(tmp_path):
    tok = CharTokenizer("abcdefghij ")
    torch.manual_seed(0)
    cfg = TransformerConfig(len(tok), 16, dim=16, heads=2, layers=1)
    path = tmp_path / "chars.pt"
    save_checkpoint(
        path,
        {
            "model": TinyTransformer(cfg).state_dict(),
            "model_config": asdict(cfg),
            "tokenizer": tok.state_dict(),
        },
    )
    return path


class Recorder(io.StringIO):
    """stdout that remembers how much had been written at each flush."""

    def __init__(self):
        super().__init__()
        self.flushed = []

    def flush(self):
        self.flushed.append(len(self.getvalue()))


def test_sample_prints_each_character_as_it_comes(checkpoint, monkeypatch):
    out = Recorder()
    monkeypatch.setattr("sys.stdout", out)
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(checkpoint),
                "--prompt",
                "abc",
                "--tokens",
                "40",
                "--seed",
                "2",
            ]
        )
        == 0
    )
    text = out.getvalue()
    assert len(text) == 3 + 40 + 1 and text.startswith("abc")
    assert out.flushed[:3] == [4, 5, 6]  # the prompt, then one flush per sampled character
    model_text = text.rstrip("\n")
    tok = CharTokenizer("abcdefghij ")
    state = torch.load(checkpoint, weights_only=True)
    model = TinyTransformer(TransformerConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    assert (
        sample_text(model, tok, "abc", 40, temperature=0.8, top_k=40, seed=2) == model_text
    )  # the same text
    assert (
        "".join(stream_text(model, tok, "abc", 40, temperature=0.8, top_k=40, seed=2))
        == model_text[3:]
    )


def test_sample_tokens_has_a_documented_maximum(checkpoint, capsys):
    assert (
        main(["sample", "--checkpoint", str(checkpoint), "--tokens", str(MAX_SAMPLE_TOKENS + 1)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(MAX_SAMPLE_TOKENS) in err.replace(",", "")
    assert main(["sample", "--help"]) == 0
    assert f"at most {MAX_SAMPLE_TOKENS:,}" in capsys.readouterr().out.replace("\n", " ").replace(
        "  ", " "
    )
    assert main(["--task", "chars", "--sample-tokens", str(MAX_SAMPLE_TOKENS + 1)]) == 2


def test_a_full_disk_during_a_chars_run_is_one_line_and_leaves_no_lock(
    corpus,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,  # noqa: F811
):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "run"
    assert (
        main(run_args(corpus, out, "--max-steps", "4", "--eval-every", "2", "--sample-tokens", "0"))
        == 0
    )
    monkeypatch.setattr("labs_core.checkpoint.os.fsync", full)
    assert (
        main(
            run_args(
                corpus,
                out,
                "--max-steps",
                "8",
                "--eval-every",
                "2",
                "--sample-tokens",
                "0",
                "--resume",
            )
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on device" in err and "Traceback" not in err
    assert not (out / ".lock").exists() and not [p for p in out.rglob("*.tmp")]
    monkeypatch.undo()
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["global_step"] == 4


def test_a_context_too_long_for_memory_is_refused_before_the_run_directory(
    corpus,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,  # noqa: F811
):
    monkeypatch.setattr(fits, "headroom", lambda device: (100 << 20, "of the machine's memory"))
    out = tmp_path / "run"
    assert (
        main(run_args(corpus, out, "--block-size", "512", "--batch-size", "64", "--max-steps", "1"))
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "one training step needs about" in err and "100.0 MiB left" in err
    )
    assert not out.exists()
