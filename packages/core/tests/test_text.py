"""Text data for character-level language models: tokenizer, split, windows, download, bad files."""

import pytest
import torch
from test_data_formats import file_server  # noqa: F401  (the local HTTP server fixture)

from labs_core import LabError
from labs_core.data import text as text_mod
from labs_core.data.download import md5_of
from labs_core.data.text import (
    CharData,
    CharTokenizer,
    RandomWindows,
    ValidationWindows,
    load_text_dataset,
    read_text,
)

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 20


def test_tokenizer_round_trip_and_saved_state():
    tok = CharTokenizer.from_text(TEXT)
    assert tok.chars == "".join(sorted(set(TEXT))) and len(tok) == len(set(TEXT))
    ids = tok.encode("hear me speak.")
    assert ids.dtype == torch.long and tok.decode(ids) == "hear me speak."
    again = CharTokenizer.from_state_dict(tok.state_dict())
    assert torch.equal(again.encode(TEXT), tok.encode(TEXT))


def test_unknown_characters_are_named_in_one_line():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(
        LabError, match=r"2 character\(s\) the model never saw in training: 'x', 'z'"
    ) as info:
        tok.encode("abxz")
    assert "\n" not in str(info.value)


def test_split_is_first_90_percent_train_last_10_validation():
    text = "".join(chr(97 + i % 26) for i in range(1000))
    data = CharData.from_text(text, block_size=8)
    assert len(data.train) == 900 and len(data.val) == 100
    assert (
        data.tokenizer.decode(data.train) == text[:900]
        and data.tokenizer.decode(data.val) == text[900:]
    )


def test_vocabulary_comes_from_the_training_split():
    text = "ab" * 450 + "abz" * 34  # 'z' only in the last 10%
    data = CharData.from_text(text, block_size=4)
    assert "z" not in data.tokenizer.chars
    assert len(data.val) == len(text) - int(len(text) * 0.9) - 34  # the unseen characters left out
    assert data.notes and "never seen in training" in data.notes[0]


@pytest.mark.parametrize("length, block, split", [(50, 64, "training"), (300, 64, "validation")])
def test_a_text_shorter_than_one_window_is_refused(length, block, split):
    with pytest.raises(
        LabError, match=f"its {split} split holds .* fewer than one window of --block-size {block}"
    ):
        CharData.from_text("ab" * (length // 2), block_size=block)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"  \n\n ", "is empty"),
        (b"PK\x03\x04\x00\x00binary", "looks like a binary file"),
        (b"caf\xe9 latin-1", "is not UTF-8 text"),
    ],
)
def test_bad_text_files_are_one_line(tmp_path, content, message):
    path = tmp_path / "input.txt"
    path.write_bytes(content)
    with pytest.raises(LabError, match=message) as info:
        read_text(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_file_and_folder_are_explained(tmp_path):
    with pytest.raises(LabError, match="no such file"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(LabError, match="is a folder"):
        read_text(tmp_path)


def test_random_windows_predict_the_next_character_and_replay_by_epoch():
    ids = torch.arange(1000)
    loader = RandomWindows(ids, block_size=16, batch_size=8, steps=5, seed=3)
    batches = list(loader)
    assert len(batches) == len(loader) == 5
    for x, y in batches:
        assert x.shape == y.shape == (8, 16)
        assert torch.equal(y, x + 1)  # y is x shifted by one: consecutive ids
        assert torch.all(x[:, 1:] - x[:, :-1] == 1) and y.max() < 1000
    again = list(RandomWindows(ids, 16, 8, 5, seed=3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    resumed = list(loader.iter_from(2))  # a resume at batch 2 sees the rest of the same epoch
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches[2:], resumed, strict=True))
    loader.set_epoch(1)
    assert not torch.equal(next(iter(loader))[0], batches[0][0])


def test_random_windows_share_one_draw_across_processes():
    ids = torch.arange(5000)
    ranks = [list(RandomWindows(ids, 8, 4, 3, seed=0, rank=r, world=2)) for r in range(2)]
    for step in range(3):
        a, b = ranks[0][step][0], ranks[1][step][0]
        assert a.shape == b.shape == (4, 8) and not torch.equal(a, b)


def test_validation_windows_are_consecutive_fixed_and_spread_when_limited():
    ids = torch.arange(1001)
    val = ValidationWindows(ids, block_size=10, batch_size=32)
    xs = torch.cat([x for x, _ in val])
    assert (
        xs.shape == (100, 10)
        and torch.equal(xs.flatten(), torch.arange(1000))
        and val.tokens == 1000
    )
    assert all(torch.equal(y, x + 1) for x, y in val)
    few = ValidationWindows(ids, block_size=10, limit=5)
    assert [int(x[0]) for x in torch.cat([x for x, _ in few])] == [0, 250, 500, 740, 990]
    shards = [
        torch.cat([x for x, _ in ValidationWindows(ids, 10, rank=r, world=2)]) for r in range(2)
    ]
    assert len(shards[0]) + len(shards[1]) == 100


def test_tinyshakespeare_downloads_with_checksum_and_reads_offline_after(
    tmp_path,
    file_server,  # noqa: F811
    monkeypatch,
):
    served, url = file_server
    (served / "input.txt").write_text(TEXT)
    spec = {
        **text_mod.TINYSHAKESPEARE,
        "urls": ["http://127.0.0.1:1/input.txt", url + "input.txt"],
        "md5": md5_of(served / "input.txt"),
    }
    monkeypatch.setattr(text_mod, "TINYSHAKESPEARE", spec)
    assert load_text_dataset("tinyshakespeare", tmp_path / "data") == TEXT
    assert (tmp_path / "data" / "tinyshakespeare" / "input.txt").read_text() == TEXT
    (served / "input.txt").unlink()  # offline from now on: the copy is read
    assert load_text_dataset("tinyshakespeare", tmp_path / "data") == TEXT


def test_tinyshakespeare_checksum_mismatch_leaves_nothing(tmp_path, file_server, monkeypatch):  # noqa: F811
    served, url = file_server
    (served / "input.txt").write_text(TEXT)
    monkeypatch.setattr(
        text_mod, "TINYSHAKESPEARE", {**text_mod.TINYSHAKESPEARE, "urls": [url + "input.txt"]}
    )
    with pytest.raises(LabError, match="checksum mismatch"):
        load_text_dataset("tinyshakespeare", tmp_path / "data")
    folder = tmp_path / "data" / "tinyshakespeare"
    assert not folder.exists() or not list(folder.iterdir())


def test_tinyshakespeare_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(
        text_mod, "TINYSHAKESPEARE", {**text_mod.TINYSHAKESPEARE, "urls": ["http://127.0.0.1:1/x"]}
    )
    with pytest.raises(LabError) as info:
        load_text_dataset("tinyshakespeare", tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "tinyshakespeare") in msg and "input.txt" in msg and "\n" not in msg
    assert "--dataset text --data-dir FILE" in msg and "imagefolder" not in msg
