import os

import pytest
import torch

from labs_core import LabError, load_checkpoint, load_model_state, save_checkpoint
from labs_core.checkpoint import atomic_write_bytes, strip_prefix

from core_testutils import tiny_mlp


def test_round_trip_with_weights_only(tmp_path):
    model = tiny_mlp()
    path = tmp_path / "c.pt"
    save_checkpoint(
        path, {"model": model.state_dict(), "epoch": 3, "config": {"lr": 0.1, "hidden": [1, 2]}}
    )
    raw = torch.load(path, weights_only=True)  # must be loadable without running code
    assert raw["epoch"] == 3 and raw["config"]["hidden"] == [1, 2]
    assert raw["versions"]["torch"] == str(torch.__version__)
    other = tiny_mlp()
    load_model_state(other, load_checkpoint(path)["model"])
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_crash_while_saving_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}})
    before = path.read_bytes()

    def crash(f):
        f.write(b"partial garbage")
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        atomic_write_bytes(path, crash)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]  # no temp file left behind


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_is_one_clear_error(tmp_path, damage):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": tiny_mlp().state_dict()})
    data = path.read_bytes()
    path.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"not a zip" * 50, "empty": b""}[damage]
    )
    with pytest.raises(LabError, match=r"c\.pt is corrupt"):
        load_checkpoint(path)


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(LabError, match="not a checkpoint of this project") as err:
        load_checkpoint(path)
    assert "weights_only" not in str(
        err.value
    )  # torch's advice to load it unsafely is never passed on
    assert not (tmp_path / "pwned").exists()


def test_missing_file_and_non_checkpoint(tmp_path):
    with pytest.raises(LabError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "x.pt")
    with pytest.raises(LabError, match="no 'model' entry"):
        load_checkpoint(tmp_path / "x.pt")


def test_wrong_architecture_names_keys_and_shapes():
    small, wide = tiny_mlp(in_features=16), tiny_mlp(in_features=20)
    with pytest.raises(
        LabError, match=r"shape mismatches \[1\.weight \(32, 20\) vs model \(32, 16\)\]"
    ):
        load_model_state(small, wide.state_dict())
    with pytest.raises(LabError, match=r"missing keys \[2\.weight, 2\.bias, 2\.running_mean"):
        load_model_state(tiny_mlp(bn=True), small.state_dict())


def test_wrapper_prefixes_are_stripped():
    model = tiny_mlp()
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}
    assert list(strip_prefix(wrapped)) == list(model.state_dict())
    load_model_state(tiny_mlp(), wrapped)
