import pytest
import torch
from sklearn import metrics as skm

from labs_core.metrics import (
    accuracy,
    confusion_matrix,
    format_confusion_matrix,
    plot_confusion_matrix,
    precision_recall_f1,
    topk_accuracy,
)


def random_case(seed, n=200, c=7):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g)
    targets = torch.randint(0, c, (n,), generator=g)
    # make it better than chance and leave one class never predicted
    logits[torch.arange(n), targets] += 1.0
    logits[:, c - 1] -= 100
    return logits, targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_and_topk_match_sklearn(seed):
    logits, targets = random_case(seed)
    assert accuracy(logits, targets) == pytest.approx(skm.accuracy_score(targets, logits.argmax(1)))
    for k in (1, 3, 5):
        expected = skm.top_k_accuracy_score(targets, logits.numpy(), k=k, labels=list(range(7)))
        assert topk_accuracy(logits, targets, k=k) == pytest.approx(expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_and_per_class_scores_match_sklearn(seed):
    logits, targets = random_case(seed)
    preds = logits.argmax(1)
    cm = confusion_matrix(preds, targets, 7)
    assert cm.tolist() == skm.confusion_matrix(targets, preds, labels=list(range(7))).tolist()
    p, r, f, _ = skm.precision_recall_fscore_support(
        targets, preds, labels=list(range(7)), zero_division=0
    )
    scores = precision_recall_f1(cm)
    torch.testing.assert_close(scores["precision"], torch.tensor(p, dtype=torch.float64))
    torch.testing.assert_close(scores["recall"], torch.tensor(r, dtype=torch.float64))
    torch.testing.assert_close(scores["f1"], torch.tensor(f, dtype=torch.float64))


def test_confusion_text_and_png(tmp_path):
    cm = torch.tensor([[5, 1], [0, 4]])
    text = format_confusion_matrix(cm, ["cat", "dog"])
    assert "cat" in text and "dog" in text and text.splitlines()[1].split() == ["cat", "5", "1"]
    plot_confusion_matrix(cm, ["cat", "dog"], tmp_path / "cm.png", title="t")
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
