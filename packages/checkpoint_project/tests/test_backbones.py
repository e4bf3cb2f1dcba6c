"""finetune --from torchvision:NAME: any torchvision classifier, its head replaced, its own stages
unfrozen. Random weights (``weights=None``) and small inputs: no download, seconds."""

import json
import urllib.error
from types import SimpleNamespace

import pytest
import torch
from test_system import write_folder
from torch import nn

from checkpoint_project.backbones import TorchvisionNet, check_input, classification_models
from checkpoint_project.cli import main
from checkpoint_project.finetune import Phases
from checkpoint_project.inference import _resnet18_v1_keys
from labs_core import LabError, load_model_state, seed_everything

# (name, head, stages input to output) for one model of each family the rule has to serve
FAMILIES = [
    ("resnet18", "fc", [["conv1"], ["bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]),
    (
        "mobilenet_v3_small",
        "classifier.3",
        [[f"features.{i}"] for i in range(13)] + [["classifier.0"]],
    ),
    ("efficientnet_b0", "classifier.1", [[f"features.{i}"] for i in range(9)]),
    ("squeezenet1_0", "classifier.1", [[f"features.{i}"] for i in (0, 3, 4, 5, 7, 8, 9, 10, 12)]),
    ("regnet_y_400mf", "fc", [["stem"]] + [[f"trunk_output.block{i}"] for i in range(1, 5)]),
    (
        "vgg11",
        "classifier.6",
        [[f"features.{i}"] for i in (0, 3, 6, 8, 11, 13, 16, 18)]
        + [["classifier.0"], ["classifier.3"]],
    ),
]


@pytest.mark.parametrize("name, head, stages", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_head_replaced_and_stages_found_in_order(name, head, stages):
    seed_everything(0)
    model = TorchvisionNet(name, 4)
    assert model.head_name == head and model.stage_names == stages
    new = model.head
    assert (new.out_features if isinstance(new, nn.Linear) else new.out_channels) == 4
    # stages and head hold every parameter once: nothing is left out of unfreezing, nothing twice
    ids = [id(p) for stage in model.stage_parameters() for p in stage] + [
        id(p) for p in model.head_parameters()
    ]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    if name != "vgg11":  # VGG (133M parameters) is checked for its structure only
        model.eval()
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 4)
        assert model(torch.rand(2, 1, 32, 32)).shape == (2, 4)  # grayscale through an RGB network


def test_vit_parameters_outside_every_module_join_the_first_stage():
    model = TorchvisionNet("vit_b_16", 3)
    assert model.head_name == "heads.head"
    assert model.stage_names[0] == ["class_token", "encoder.pos_embedding", "conv_proj"]
    assert model.stage_names[1:] == [[f"encoder.layers.encoder_layer_{i}"] for i in range(12)] + [
        ["encoder.ln"]
    ]


def test_auxiliary_classifiers_are_dropped_so_training_returns_logits():
    model = TorchvisionNet("googlenet", 3).train()
    assert model.net.aux1 is None and model(torch.rand(2, 3, 64, 64)).shape == (2, 3)


def test_every_phase_trains_the_head_and_the_top_stages_only():
    seed_everything(0)
    model = TorchvisionNet("mobilenet_v3_small", 3)
    cfg = SimpleNamespace(
        unfreeze=3, head_epochs=1, stage_epochs=1, lr=1e-2, lr_decay=0.5, weight_decay=0.0
    )
    phases = Phases(cfg, model, say=lambda *a: None)
    stages = model.stage_parameters()
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    for phase in range(4):
        before = [p.detach().clone() for p in model.parameters()]
        opt = phases.optimizer(phase)
        assert [g["lr"] for g in opt.param_groups] == [1e-2 * 0.5**d for d in range(phase + 1)]
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        model.zero_grad()
        moved = {
            id(p) for p, b in zip(model.parameters(), before, strict=True) if not torch.equal(p, b)
        }
        trained = {id(p) for p in model.head_parameters()} | {
            id(p) for s in stages[len(stages) - phase :] for p in s
        }
        assert moved <= trained and {id(p) for p in model.head_parameters()} <= moved
        assert phase == 0 or moved & {
            id(p) for p in stages[-phase]
        }  # the stage unfrozen last moved too


def test_an_input_too_small_for_the_model_is_one_line():
    model = TorchvisionNet("squeezenet1_0", 3)
    with pytest.raises(LabError, match="cannot take 16x16 images .*use a larger --image-size"):
        check_input(model.net, "squeezenet1_0", (3, 16, 16))
    check_input(model.net, "squeezenet1_0", (3, 32, 32))


def test_fine_tuned_resnet18_checkpoints_of_the_earlier_layout_still_load():
    new = TorchvisionNet("resnet18", 3).state_dict()
    old_names = {
        "net.conv1.": "stages.0.0.",
        "net.bn1.": "stages.0.1.",
        "net.fc.": "head.2.",
        **{f"net.layer{k}.": f"stages.{k}." for k in range(1, 5)},
    }
    old = {}
    for key, value in new.items():
        prefix = next(p for p in old_names if key.startswith(p))
        old[old_names[prefix] + key[len(prefix) :]] = value
    model = TorchvisionNet("resnet18", 3)
    load_model_state(model, _resnet18_v1_keys(old))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in new.items())


def test_unknown_torchvision_name_says_how_to_list_them(tmp_path, capsys):
    write_folder(tmp_path / "imgs", seed=5, classes=2, n=20)
    assert (
        "resnet18" in classification_models()
        and "fasterrcnn_resnet50_fpn" not in classification_models()
    )
    argv = [
        "finetune",
        "--from",
        "torchvision:resnet19",
        "--data-dir",
        str(tmp_path / "imgs"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown torchvision classification model 'resnet19'" in err
    assert "list_models(module=m)" in err and not (tmp_path / "o").exists()


def test_offline_without_cached_weights_names_the_file_for_any_model(tmp_path, monkeypatch, capsys):
    write_folder(tmp_path / "imgs", seed=5, classes=2, n=20)

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    argv = [
        "finetune",
        "--from",
        "torchvision:mobilenet_v3_small",
        "--data-dir",
        str(tmp_path / "imgs"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "mobilenet_v3_small-047dcff4.pth" in err
        and "--weights FILE" in err
    )


def test_finetune_a_mobilenet_end_to_end_then_evaluate_and_predict(tmp_path, capsys):
    from torchvision.models import mobilenet_v3_small

    write_folder(tmp_path / "imgs", seed=5, classes=3, n=48)
    weights = tmp_path / "mnv3.pth"
    torch.save(mobilenet_v3_small(weights=None).state_dict(), weights)
    out = tmp_path / "o"
    argv = [
        "finetune",
        "--from",
        "torchvision:mobilenet_v3_small",
        "--weights",
        str(weights),
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "imgs"),
        "--image-size",
        "32",
        "--head-epochs",
        "1",
        "--stage-epochs",
        "1",
        "--unfreeze",
        "2",
        "--val-fraction",
        "0.25",
        "--batch-size",
        "16",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "phase 2 (head + top 2 stage(s))" in printed
    assert [p["phase"] for p in json.loads((out / "phases.json").read_text())] == [0, 1, 2]
    best = out / "checkpoints" / "best.pt"
    assert main(["evaluate", "--checkpoint", str(best)]) == 0
    image = next((tmp_path / "imgs").rglob("*.png"))
    assert main(["predict", "--checkpoint", str(best), str(image)]) == 0
    assert "kind" in capsys.readouterr().out


def test_ema_is_refused_with_fsdp(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(
        "WORLD_SIZE", "2"
    )  # as under torchrun; refused at parse time, before any process group
    assert (
        main(
            [
                "train",
                "--dataset",
                "synthetic",
                "--ema",
                "0.9",
                "--fsdp",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "--ema with --fsdp is not supported" in err
        and not (tmp_path / "o").exists()
    )
