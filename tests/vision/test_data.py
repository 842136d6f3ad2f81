"""Image + text conversations: targets are the assistant's text only, checked against an independent
computation of the label mask; bad images are counted and skipped, naming the file, line and image."""

import json

import pytest
import torch
from PIL import Image

from dftlab.data.encode import EncodeSettings
from dftlab.errors import ConfigError
from dftlab.losses import IGNORE_INDEX
from dftlab.vision.collate import collate_with_images
from dftlab.vision.encode import encode_with_images
from dftlab.vision.task import ImageTextTask
from tests.vision.conftest import tiny_vision_cfg


@pytest.fixture(scope="module")
def tokenizer():
    from dftlab.models import load_tokenizer

    return load_tokenizer(tiny_vision_cfg())


def _expected_labels(tokenizer, ids: list[int]) -> list[int]:
    """Independently of the renderer's spans: the character tokenizer gives one token per character, so an
    assistant turn's targets are the tokens after each `<|im_start|>assistant\\n` up to and including the next
    `<|im_end|>`, shifted by one (position t predicts token t + 1)."""
    header = tokenizer.convert_tokens_to_ids(["<|im_start|>", *"assistant", "\n"])
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    labels = [IGNORE_INDEX] * len(ids)
    for t in range(len(ids) - len(header)):
        if ids[t : t + len(header)] == header:
            k = t + len(header)
            while True:
                labels[k - 1] = ids[k]
                if ids[k] == end:
                    break
                k += 1
    return labels


def _write(tmp_path, rows, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _image(tmp_path, name, size=(56, 56), colour=(200, 30, 30)):
    Image.new("RGB", size, colour).save(tmp_path / name)
    return name


def test_targets_are_the_assistants_text_and_never_image_tokens(tokenizer, tmp_path):
    a, b = _image(tmp_path, "a.png"), _image(tmp_path, "b.png", size=(84, 56))
    rows = [{"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "image", "image": a}, {"type": "text", "text": "what is it"}]},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": "<image>and this"}, {"role": "assistant", "content": "wide"}],
        "images": [b]}] * 3
    task = ImageTextTask(str(_write(tmp_path, rows)), val_size=1)
    examples = task.train()
    assert [p["type"] for p in examples[0]["messages"][3]["content"]] == ["image", "text"]
    assert examples[0]["image_sizes"] == [(56, 56), (84, 56)]
    image_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for train_on in ("assistant", "all"):
        settings = EncodeSettings(512, True, train_on)
        items = [(i, encode_with_images(tokenizer, e, settings), 0) for i, e in enumerate(examples)]
        batch = collate_with_images(items, tokenizer)
        ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
        assert ids.count(image_id) == 4 + 6  # 56x56 -> 2x2 tokens of 28x28 pixels, 84x56 -> 3x2
        assert image_id not in labels
        assert batch["image_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 6]] * 2
        assert torch.equal(batch["mm_token_type_ids"][0], (batch["input_ids"][0] == image_id).int())
        if train_on == "assistant":
            assert labels == _expected_labels(tokenizer, ids)
            assert tokenizer.decode([t for t in labels if t != IGNORE_INDEX]) == "red<|im_end|>wide<|im_end|>"
        else:  # every token but the images
            assert sum(t != IGNORE_INDEX for t in labels) == len(ids) - 1 - 10


def test_bad_images_are_counted_and_skipped_naming_the_file_line_and_image(tmp_path):
    good = _image(tmp_path, "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    row = {"messages": [{"role": "user", "content": "<image>colour?"}, {"role": "assistant", "content": "red"}]}
    rows = [{**row, "images": [good]}] * 6 + [{**row, "images": ["missing.png"]}, {**row, "images": ["broken.png"]},
                                              {**row, "images": [good, good]}]
    path = _write(tmp_path, rows)
    task = ImageTextTask(str(path), val_size=2, max_bad_fraction=0.5)
    assert len(task.train()) + len(task.val()) == 6
    assert task.skipped() == {"bad_image": 2, "image_count": 1}
    where = task.records.first_bad["bad_image"]
    assert where.startswith(f"{path}:7") and "missing.png" in where
    with pytest.raises(ConfigError, match=r"3 of 9 rows are bad.*data.task.max_bad_fraction"):
        ImageTextTask(str(path), val_size=2).train()


def test_a_text_model_is_refused_for_image_data(tmp_path):
    from dftlab.data.tokenizer import char_tokenizer
    from dftlab.vision.data import VisionDataModule
    from tests.vision.conftest import card_rows

    task, _ = card_rows(tmp_path)
    dm = VisionDataModule(task, batch_size=2, tokenizer=char_tokenizer())
    with pytest.raises(ConfigError, match="not a vision-language model"):
        dm.setup()
    with pytest.raises(ConfigError, match="data.packing"):
        VisionDataModule(task, packing=True)
