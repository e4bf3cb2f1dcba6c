"""Every flag of the checkpoint project's commands at every hostile value (train, finetune,
evaluate, export, predict and explain, each table generated from the command's config
declaration), every file each command reads damaged every way, every --dataset value, and ONNX
models that disagree with their own metadata: a run, or one line on stderr and exit code 2,
never a traceback."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from checkpoint_project.cli import (
    EvaluateConfig,
    ExplainConfig,
    ExportConfig,
    PredictConfig,
    main,
)
from checkpoint_project.finetune import FinetuneConfig
from checkpoint_project.train import TrainConfig
from labs_core.data.datasets import DATASETS
from labs_core.testing import (
    FILE_DAMAGES,
    check_outcome,
    damage_file,
    hostile_cases,
    hostile_params,
    run_hostile_case,
    run_main,
    write_dataset,
)

TINY = ["--width", "4", "--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--quiet"]
# the image folder first: --image-size 512 of 2,500 synthetic images takes minutes on 2 cores
BASES = {
    "files": [
        *TINY,
        "--dataset",
        "imagefolder",
        "--data-dir",
        "{data}/imagefolder/images",
        "--loader",
        "standard",
        "--optimizer",
        "sgd",
        "--scheduler",
        "cosine",
    ],
    "synthetic": [*TINY, "--dataset", "synthetic"],
}
TRAIN = hostile_cases(TrainConfig, BASES, "train", command=("train",))
FINETUNE = hostile_cases(
    FinetuneConfig,
    {
        "finetune": [
            "--from",
            "{data}/run/checkpoints/best.pt",
            "--data-dir",
            "{data}/imagefolder/images",
            "--head-epochs",
            "1",
            "--stage-epochs",
            "1",
            "--unfreeze",
            "0",
            "--max-steps",
            "1",
            "--batch-size",
            "8",
            "--quiet",
        ]
    },
    "checkpoint-project finetune",
    skip=("source", "weights"),
    command=("finetune",),
)
BEST = "{data}/run/checkpoints/best.pt"
IMAGE = "{data}/imagefolder/images/c0/0.png"
# the commands that read a model, each flag from its declaration, on the model the fixture trains;
# the name after each command is where its output goes (None: it writes nothing)
READING = {
    "evaluate": (EvaluateConfig, ["--checkpoint", BEST], None),
    "export": (ExportConfig, ["--checkpoint", BEST], "model.onnx"),
    "predict": (PredictConfig, ["--checkpoint", BEST, IMAGE], None),
    "explain": (ExplainConfig, ["--checkpoint", BEST, IMAGE], "maps"),
}
READING_CASES = [
    (*case, READING[command][2])
    for command, (cls, base, _) in READING.items()
    for case in hostile_cases(
        cls, {command: base}, f"checkpoint-project {command}", command=(command,)
    )
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for name in DATASETS:
        write_dataset(name, root / name)
    assert (
        main(
            [
                "train",
                *TINY,
                "--dataset",
                "synthetic",
                "--image-size",
                "12",
                "--out",
                str(root / "run"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(root / "run" / "checkpoints" / "best.pt"),
                "--out",
                str(root / "model.onnx"),
            ]
        )
        == 0
    )
    return root


@pytest.mark.parametrize("case, argv, runs", hostile_params(TRAIN))
def test_every_train_flag_at_every_hostile_value(
    case, argv, runs, data, tmp_path, monkeypatch, capsys
):
    run_hostile_case(main, argv, runs, data, tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize("case, argv, runs", hostile_params(FINETUNE))
def test_every_finetune_flag_at_every_hostile_value(
    case, argv, runs, data, tmp_path, monkeypatch, capsys
):
    run_hostile_case(main, argv, runs, data, tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize("case, argv, runs, out", hostile_params(READING_CASES))
def test_every_flag_of_the_reading_commands_at_every_hostile_value(
    case, argv, runs, out, data, tmp_path, monkeypatch, capsys
):
    # the model copied, so that what a command writes beside it (export --out '') stays here
    own = tmp_path / "data"
    shutil.copytree(data / "run", own / "run")
    (own / "imagefolder").symlink_to(data / "imagefolder")
    run_hostile_case(main, argv, runs, own, tmp_path, monkeypatch, capsys, out=out)


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset(name, data, tmp_path, monkeypatch, capsys):
    """train on every --dataset value: images train, a CSV's rows are refused in one line."""
    flags = [
        a.replace(str(data / name), "{data}/" + name) for a in write_dataset(name, data / name)
    ]
    code = run_hostile_case(
        main, ["train", *TINY, *flags], True, data, tmp_path, monkeypatch, capsys
    )
    assert code == (2 if name == "csv" else 0)


@pytest.mark.parametrize("name", ["csv", "mnist"])
def test_evaluate_on_another_dataset_is_one_line(name, data, tmp_path, monkeypatch, capsys):
    """The synthetic model on rows of numbers, or on 10 classes of digits: refused in one line."""
    flags = write_dataset(name, data / name)
    code, err = run_main(
        main,
        ["evaluate", "--checkpoint", str(data / "run" / "checkpoints" / "best.pt"), *flags],
        capsys,
    )
    check_outcome(code, err)
    assert code == 2


def _edit_onnx(src, dst, *, shape=None, meta=None, drop=None):
    import onnx

    proto = onnx.load(str(src))
    if shape is not None:
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        for dim, value in zip(dims[1:], shape, strict=True):
            dim.dim_value = value
    props = {p.key: p.value for p in proto.metadata_props}
    props.update(meta or {})
    for key in drop or ():
        props.pop(key)
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(dst))


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            dict(meta={"input_shape": json.dumps([3, 20, 20])}),
            "but its metadata says images of (3, 20, 20)",
        ),
        (
            dict(meta={"classes": json.dumps(["a", "b"])}),
            "gives 10 logits per image but its metadata names 2",
        ),
        (dict(meta={"mean": "not json"}), "not the JSON export writes"),
        (dict(meta={"std": json.dumps([1.0])}), "does not describe an image classifier"),
        (dict(drop=["input_shape"]), "has no input_shape in its metadata"),
    ],
)
def test_an_onnx_model_that_disagrees_with_its_metadata_is_one_line(
    edit, message, data, tmp_path, capsys
):
    model = tmp_path / "edited.onnx"
    _edit_onnx(data / "model.onnx", model, **edit)
    image = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((12, 12, 3)) * 255).astype("uint8")).save(
        image
    )
    code, err = run_main(main, ["predict", "--checkpoint", str(model), str(image)], capsys)
    check_outcome(code, err)
    assert code == 2 and message in err, err


@pytest.mark.parametrize("command", ["evaluate", "explain"])
def test_an_onnx_model_where_a_checkpoint_belongs_is_one_line(command, data, capsys):
    argv = [command, "--checkpoint", str(data / "model.onnx")]
    argv += [str(data / "imagefolder" / "images" / "c0" / "0.png")] if command == "explain" else []
    code, err = run_main(main, argv, capsys)
    assert code == 2 and "needs the .pt checkpoint" in err and err.count("\n") == 1, err


# --- every file a command reads (checkpoint, ONNX model, image, backbone weights), damaged every
# way: one line and exit code 2, and nothing written

READERS = {
    "evaluate": lambda model, image: ["evaluate", "--checkpoint", model],
    "export": lambda model, image: ["export", "--checkpoint", model, "--out", f"{model}.onnx"],
    "predict": lambda model, image: ["predict", "--checkpoint", model, image],
    "explain": lambda model, image: ["explain", "--checkpoint", model, image],
    "finetune": lambda model, image: [
        "finetune",
        "--from",
        model,
        "--data-dir",
        "IMAGES",
        "--quiet",
    ],
}


def _copy_and_damage(src, dst, how):
    shutil.copy(src, dst)
    damage_file(dst, how)
    return str(dst)


def _check_refused(argv, folder, capsys, names):
    """Exit code 2 with one line that names the damaged file ``names``, and nothing written."""
    before = sorted(p.name for p in folder.rglob("*"))
    code, err = run_main(main, argv, capsys)
    check_outcome(code, err)
    assert code == 2 and names in err, err
    assert sorted(p.name for p in folder.rglob("*")) == before  # nothing written beside them


@pytest.mark.parametrize("how", FILE_DAMAGES)
@pytest.mark.parametrize("command", READERS)
def test_every_command_with_its_checkpoint_damaged_in_every_way(
    command, how, data, tmp_path, capsys
):
    model = _copy_and_damage(data / "run" / "checkpoints" / "best.pt", tmp_path / "best.pt", how)
    image = str(data / "imagefolder" / "images" / "c0" / "0.png")
    argv = [
        a.replace("IMAGES", str(data / "imagefolder" / "images"))
        for a in READERS[command](model, image)
    ]
    if command == "finetune":
        argv += ["--out", str(tmp_path / "run")]
    _check_refused(argv, tmp_path, capsys, names="best.pt")


@pytest.mark.parametrize("how", FILE_DAMAGES)
def test_predict_with_its_onnx_model_damaged_in_every_way(how, data, tmp_path, capsys):
    model = _copy_and_damage(data / "model.onnx", tmp_path / "model.onnx", how)
    image = str(data / "imagefolder" / "images" / "c0" / "0.png")
    _check_refused(["predict", "--checkpoint", model, image], tmp_path, capsys, names="model.onnx")


@pytest.mark.parametrize("how", FILE_DAMAGES)
@pytest.mark.parametrize("command", ["predict", "explain"])
def test_the_image_given_damaged_in_every_way(command, how, data, tmp_path, capsys):
    image = _copy_and_damage(
        data / "imagefolder" / "images" / "c0" / "0.png", tmp_path / "x.png", how
    )
    model = str(data / "run" / "checkpoints" / "best.pt")
    argv = [command, "--checkpoint", model, image]
    _check_refused(
        argv + (["--out", str(tmp_path / "maps")] if command == "explain" else []),
        tmp_path,
        capsys,
        names="x.png",
    )


@pytest.mark.parametrize("how", FILE_DAMAGES)
def test_backbone_weights_damaged_in_every_way(how, data, tmp_path, capsys):
    import torch
    import torchvision

    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    damage_file(weights, how)
    argv = [
        "finetune",
        "--from",
        "torchvision:resnet18",
        "--weights",
        str(weights),
        "--data-dir",
        str(data / "imagefolder" / "images"),
        "--quiet",
        "--out",
        str(tmp_path / "run"),
    ]
    _check_refused(argv, tmp_path, capsys, names="resnet18.pt")
