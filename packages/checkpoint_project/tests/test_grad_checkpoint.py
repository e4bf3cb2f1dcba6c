"""``--grad-checkpoint`` on the models that offer it: one training step of a checkpointed model
equals the plain model's (outputs, gradients, batch-norm statistics, updated weights), and a whole
run with the flag ends where the run without it does."""

import copy

import pytest
import torch

from checkpoint_project.cli import main
from checkpoint_project.models import build_model, enable_grad_checkpoint
from labs_core import LabError, load_checkpoint
from labs_core.device import compile_unavailable


@pytest.mark.parametrize("name", ["resnet", "fast"])
def test_a_checkpointed_training_step_equals_the_plain_one(name):
    torch.manual_seed(0)
    plain = build_model(name, (3, 16, 16), 10, 4)
    ckpt = copy.deepcopy(plain)
    enable_grad_checkpoint(ckpt, name)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    for model in (plain, ckpt):
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model.out = model(x)
        torch.nn.functional.cross_entropy(model.out, y).backward()
        model.grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
    torch.testing.assert_close(ckpt.out, plain.out, rtol=0, atol=0)
    for n, g in plain.grads.items():
        torch.testing.assert_close(ckpt.grads[n], g, rtol=1e-5, atol=1e-7, msg=n)
    plain_state = plain.state_dict()
    for (
        n,
        v,
    ) in ckpt.state_dict().items():  # weights after the step, and BN running mean / var / count
        torch.testing.assert_close(v, plain_state[n], rtol=1e-6, atol=1e-7, msg=n)


def test_cnn_and_torchvision_models_refuse_it():
    for name in ("cnn", "torchvision:resnet18"):
        with pytest.raises(LabError, match="--grad-checkpoint applies to --model resnet or fast"):
            enable_grad_checkpoint(build_model(name, (3, 32, 32), 10, 4), name)


def test_a_run_with_grad_checkpoint_ends_where_the_plain_run_does(tmp_path):
    base = [
        "train",
        "--dataset",
        "synthetic",
        "--model",
        "resnet",
        "--width",
        "4",
        "--epochs",
        "1",
        "--max-steps",
        "3",
        "--batch-size",
        "32",
        "--quiet",
    ]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--out", str(tmp_path / "ckpt"), "--grad-checkpoint"]) == 0
    plain, ckpt = (
        load_checkpoint(tmp_path / n / "checkpoints" / "last.pt")["model"]
        for n in ("plain", "ckpt")
    )
    assert list(ckpt) == list(plain)  # the same state dict: checkpoints load either way
    for n, v in plain.items():
        torch.testing.assert_close(ckpt[n], v, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.skipif(compile_unavailable() is not None, reason=compile_unavailable() or "")
def test_compiled_and_checkpointed_run_ends_where_the_plain_run_does(tmp_path):
    """Under torch.compile the recomputation is part of the compiled backward graph: the batch-norm
    statistics must still be updated once per step."""
    base = [
        "train",
        "--dataset",
        "synthetic",
        "--model",
        "resnet",
        "--width",
        "4",
        "--epochs",
        "1",
        "--max-steps",
        "3",
        "--batch-size",
        "32",
        "--quiet",
    ]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--out", str(tmp_path / "both"), "--grad-checkpoint", "--compile"]) == 0
    plain, both = (
        load_checkpoint(tmp_path / n / "checkpoints" / "last.pt")["model"]
        for n in ("plain", "both")
    )
    for n, v in plain.items():
        torch.testing.assert_close(both[n], v, rtol=1e-3, atol=1e-5, msg=n)


@pytest.mark.slow
@pytest.mark.skipif(compile_unavailable() is not None, reason=compile_unavailable() or "")
def test_compile_and_grad_checkpoint_under_torchrun(tmp_path):
    from labs_core.testing import check_torchrun_run, torchrun

    out = tmp_path / "ddp"
    r = torchrun(
        "checkpoint_project.train",
        "--dataset",
        "synthetic",
        "--model",
        "resnet",
        "--width",
        "4",
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--batch-size",
        "32",
        "--compile",
        "--grad-checkpoint",
        "--quiet",
        "--out",
        str(out),
        timeout=600,
    )
    check_torchrun_run(r, out)
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["global_step"] == 2 and not any(
        k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"]
    )
