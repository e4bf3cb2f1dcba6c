"""``--compile``: the trainer steps a ``torch.compile``-d model, and nothing else changes — the
losses match eager training, checkpoints hold the plain model (no ``_orig_mod.`` prefixes), a
compiled run resumes eagerly. Without a C++ compiler the flag is refused in one line."""

import json

import pytest
import torch
from test_cli import main

from labs_core import Trainer, load_checkpoint, seed_everything
from labs_core.device import compile_unavailable

from core_testutils import blob_data, fast_loader, tiny_mlp

NO_COMPILE = compile_unavailable()
needs_compile = pytest.mark.skipif(NO_COMPILE is not None, reason=NO_COMPILE or "")


def losses(out):
    return [
        json.loads(line)["train_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
    ]


@needs_compile
def test_compiled_training_matches_eager_and_checkpoints_the_plain_model(tmp_path):
    # Inductor draws dropout masks from its own generator; with fallback_random it uses torch's, so
    # the two runs see the same masks and their losses can be compared closely.
    import torch._inductor.config as inductor

    argv = ["--epochs", "3", "--max-steps", "6", "--batch-size", "16", "--quiet", "--lr", "0.01"]
    assert main([*argv, "--out", str(tmp_path / "eager")]) == 0
    with inductor.patch(fallback_random=True):
        assert main([*argv, "--out", str(tmp_path / "compiled"), "--compile"]) == 0
    eager, compiled = (
        load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")
        for name in ("eager", "compiled")
    )
    assert list(compiled["model"]) == list(eager["model"])  # no _orig_mod. (nor module.) prefixes
    torch.testing.assert_close(
        losses(tmp_path / "compiled"), losses(tmp_path / "eager"), rtol=1e-4, atol=1e-5
    )
    for key, value in eager["model"].items():
        torch.testing.assert_close(compiled["model"][key], value, rtol=1e-4, atol=1e-5)
    assert compiled["config"]["compile"] is True
    # a compiled run's checkpoint continues without --compile (and evaluates the plain model)
    out = tmp_path / "compiled"
    assert main([*argv, "--epochs", "4", "--max-steps", "8", "--out", str(out), "--resume"]) == 0
    assert load_checkpoint(out / "checkpoints" / "last.pt")["global_step"] == 8


@needs_compile
def test_the_trainer_steps_the_compiled_model_and_keeps_the_plain_one():
    seed_everything(0)
    x, y = blob_data(n=32)
    model = tiny_mlp(dropout=0.0)
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), fast_loader(x, y), compile=True
    )
    assert trainer.module is model and trainer.wrapped is not model
    assert isinstance(trainer.wrapped, torch._dynamo.eval_frame.OptimizedModule)
    assert list(trainer.state_dict()["model"]) == list(model.state_dict())


@pytest.mark.parametrize("cxx", [None, "no-such-compiler++"])
def test_compile_without_a_cpp_compiler_is_refused_in_one_line(cxx, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no g++, c++ or clang++ to be found
    if cxx:
        monkeypatch.setenv("CXX", cxx)
    else:
        monkeypatch.delenv("CXX", raising=False)
    out = tmp_path / "run"
    assert main(["--compile", "--epochs", "1", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--compile needs a C++ compiler" in err and (cxx is None or cxx in err)
    assert not out.exists()
