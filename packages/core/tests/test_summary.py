import torch
from torch import nn

from labs_core.summary import format_summary, model_summary


def test_shapes_and_parameter_counts_of_a_cnn():
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 10)),
    )
    rows = model_summary(model, torch.zeros(2, 1, 8, 8))
    assert [r.name for r in rows] == ["0", "1", "2", "3.0", "3.1"]
    assert rows[0].output_shape == (2, 8, 8, 8) and rows[0].params == 8 * 9 + 8
    assert rows[2].output_shape == (2, 8, 4, 4)
    assert rows[4].input_shape == (2, 128) and rows[4].params == 1290
    assert sum(r.params for r in rows) == sum(p.numel() for p in model.parameters())
    text = format_summary(rows, model, extra={"2": "formula: 4x4"})
    assert "formula: 4x4" in text and "total parameters: 1,370" in text


def test_summary_restores_mode_and_removes_hooks():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    model.train()
    model_summary(model, torch.zeros(1, 3))
    assert model.training
    assert not model[0]._forward_hooks
