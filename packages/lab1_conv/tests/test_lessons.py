"""The debugging lesson: errors raised, read and fixed; gradcheck; detect_anomaly; summaries that
agree."""

from lab1_conv import lessons
from lab1_conv.model import CNN


def test_errors_are_raised_printed_and_fixed():
    out = []
    facts = lessons.errors(out.append)
    text = "\n".join(out)
    assert facts["fixed"] == 6 and text.count("  error: ") == 6 and text.count("  fix:   ") == 6
    messages = "\n".join(facts["messages"])
    for expected in (
        "mat1 and mat2 shapes cannot be multiplied (1792x28 and 784x10)",  # shape
        "expected input[64, 1, 28, 28] to have 3 channels, but got 1",  # shape
        "must have the same dtype, but got Double and Float",  # dtype
        "Input type (unsigned char) and bias type (float) should be the same",  # dtype
        "expected target dtype to be Long",
    ):  # dtype
        assert expected in messages
    assert (
        "== device: " in text and facts["messages"][2]
    )  # the device error, whichever this machine raises


def test_gradcheck_passes_the_scratch_conv_and_catches_a_wrong_backward():
    out = []
    facts = lessons.gradients(out.append)
    assert facts["conv64"] and facts["pool64"] and facts["right_overlap"]
    assert not facts["conv32"]  # correct code, but float32 is too coarse for finite differences
    assert not facts["wrong_overlap"] and "Jacobian mismatch" in facts["wrong_message"]
    assert facts["wrong_no_overlap"]  # the bug is invisible when no windows overlap
    assert "gradcheck says: Jacobian mismatch" in "\n".join(out)


def test_detect_anomaly_names_the_op_and_the_forward_line():
    out = []
    facts = lessons.anomaly(out.append)
    message, where = facts["entropy"]
    assert "LogBackward0" in message and "returned nan values" in message
    assert "lessons.py" in where[0] and "_entropy" in where[0] and "p.log()" in where[1]
    message, where = facts["norm"]
    assert "PowBackward0" in message and "_norm" in where[0] and "v**2" in where[1]
    assert facts["fixed_finite"]
    assert "nan" in "\n".join(out)


def test_torchinfo_and_shape_table_agree_layer_by_layer(capsys):
    facts = lessons.summaries(print)
    printed = capsys.readouterr().out
    assert facts["shapes_agree"] and facts["params_agree"] and facts["layers"] == (16, 16)
    assert (
        facts["totals"][0]
        == facts["totals"][1]
        == sum(p.numel() for p in CNN((1, 28, 28), 10).parameters())
    )
    assert (
        "Total params: 94,186" in printed and "total parameters: 94,186" in printed
    )  # both tables shown
    assert "output shapes agree layer by layer: True" in printed
    # another shape of CNN (RGB, torch conv, flatten head): still the same layers, shapes and counts
    model = CNN((3, 8, 8), 5, widths=(4, 8), conv="torch", head="flatten")
    facts = lessons.summaries(lambda s: None, model, (3, 8, 8))
    assert (
        facts["shapes_agree"] and facts["params_agree"] and facts["totals"][0] == facts["totals"][1]
    )
    leaves, total, _ = lessons.torchinfo_layers(model, (3, 8, 8))
    assert leaves[-1] == ((1, 5), 8 * 2 * 2 * 5 + 5) and total == facts["totals"][0]


def test_the_debugging_lesson_runs_every_section(capsys):
    assert {"debugging": lessons.debugging} == lessons.LESSONS
    facts = lessons.debugging()
    assert list(facts) == ["errors", "gradients", "anomaly", "summaries"]
    assert facts["errors"]["fixed"] == len(facts["errors"]["messages"]) > 0
    assert facts["summaries"]["shapes_agree"] and facts["summaries"]["params_agree"]
    printed = capsys.readouterr().out
    for heading in (
        "== shape:",
        "== device:",
        "== dtype:",
        "== gradcheck on lab1's convolution",
        "== torch.autograd.detect_anomaly()",
        "== torchinfo.summary",
        "== lab1's shape_table",
    ):
        assert heading in printed
