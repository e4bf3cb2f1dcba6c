"""checkpoint-project explain: one PNG of attribution maps per image, from files or folders, the bad
ones named at the end; and the Grad-CAM layer found on every model of the project."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from checkpoint_project.cli import main
from checkpoint_project.models import build_model
from labs_core.explain import grad_cam, last_feature_layer


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    argv = [
        "train",
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--max-steps",
        "3",
        "--width",
        "4",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    return out


def photo(path: Path, seed: int = 0, size=(20, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random((*size, 3)) * 255).astype("uint8")).save(
        path
    )
    return path


def test_explain_writes_one_png_per_image_beside_the_run(trained, tmp_path, capsys):
    best = trained / "checkpoints" / "best.pt"
    single = photo(tmp_path / "single.jpg", 0)
    for i, name in enumerate(("cat/1.png", "dog/1.png", "dog/2.png")):  # a folder of class folders
        photo(tmp_path / "folder" / name, i + 1, size=(40, 30))
    (tmp_path / "folder" / "readme.txt").write_text(
        "not an image: a folder's other files are left alone"
    )
    assert (
        main(
            [
                "explain",
                "--checkpoint",
                str(best),
                str(single),
                str(tmp_path / "folder"),
                "--top-k",
                "2",
            ]
        )
        == 0
    )
    out = trained / "explain"
    assert sorted(p.name for p in out.iterdir()) == [
        "cat_1.explain.png",
        "dog_1.explain.png",
        "dog_2.explain.png",
        "single.explain.png",
    ]
    printed = capsys.readouterr().out.splitlines()
    assert (
        len(printed) == 4
        and printed[0].startswith(f"{single}: ")
        and printed[0].endswith("single.explain.png")
    )
    assert printed[0].split(": ")[1].count(",") == 1  # top-2
    with Image.open(out / "single.explain.png") as im:  # one row of five panels
        assert im.width > 3 * im.height and im.width > 500


def test_explain_names_the_bad_files_after_doing_the_others(trained, tmp_path, capsys):
    good = [photo(tmp_path / "a.png", 1), photo(tmp_path / "c.png", 2)]
    (tmp_path / "b.png").write_bytes(b"not a png at all")
    (tmp_path / "notes.txt").write_text("epoch,loss\n")
    (tmp_path / "empty").mkdir()
    images = [
        good[0],
        tmp_path / "b.png",
        tmp_path / "notes.txt",
        tmp_path / "missing.png",
        tmp_path / "empty",
        good[1],
    ]
    out = tmp_path / "maps"
    argv = [
        "explain",
        "--checkpoint",
        str(trained / "checkpoints" / "best.pt"),
        *map(str, images),
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    printed, err = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["a.explain.png", "c.explain.png"]
    assert [line.split(":")[0] for line in printed.splitlines()] == [str(p) for p in good]
    assert err.count("\n") == 1 and "4 of 6 image(s) could not be read" in err
    for name in ("b.png", "notes.txt", "missing.png", "empty: no images"):
        assert name in err


def test_the_same_name_twice_gets_two_files(trained, tmp_path, capsys):
    a, b = photo(tmp_path / "x" / "im.png", 1), photo(tmp_path / "y" / "im.png", 2)
    assert (
        main(
            [
                "explain",
                "--checkpoint",
                str(trained / "checkpoints" / "last.pt"),
                str(a),
                str(b),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "im-2.explain.png",
        "im.explain.png",
    ]


@pytest.mark.parametrize(
    "name, side, stage",
    [
        ("compact", 32, -1),
        ("cnn", 32, -1),
        ("resnet", 32, -1),
        ("fast", 32, -1),
        ("torchvision:resnet18", 64, -1),
        ("torchvision:resnet18", 32, -2),
    ],
)  # layer4 is 1 x 1 there
def test_grad_cam_looks_at_the_last_conv_stage_of_each_model(name, side, stage):
    torch.manual_seed(0)
    model = build_model(
        name, (3, side, side), 10, 4 if name != "torchvision:resnet18" else 0
    ).eval()
    x = torch.randn(2, 3, side, side)
    layer = last_feature_layer(model, x)
    stages = (
        model.stages
        if hasattr(model, "stages")
        else [model.net.get_submodule(names[-1]) for names in model.stage_names]
    )
    assert layer is stages[stage]
    cam = grad_cam(model, layer, x, 3)
    assert cam.shape[:2] == (2, 1) and cam.shape[2] * cam.shape[3] > 1 and cam.abs().sum() > 0
