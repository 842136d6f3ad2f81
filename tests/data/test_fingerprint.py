"""The tokenisation cache and a resume's data check are keyed on content: a file edited in place with
its size and modification time kept, or a tokenizer whose ids moved, is not the same data."""

import hashlib
import json
import os

from dftlab.data.datamodule import DataModule
from dftlab.data.fingerprint import content_digest, rows_digest, tokenizer_digest
from dftlab.data.text_task import TextTask
from dftlab.data.tokenizer import GAME_CHARS, char_tokenizer

CHARS = "0123456789+=-*/ abcdefghijklmnopqrstuvwxyz"


def _rows(path, answer: str):
    path.write_text("".join(json.dumps({"q": f"{i}+{i}=", "a": answer}) + "\n" for i in range(30)))


def _datamodule(path, cache):
    task = TextTask(str(path), columns={"prompt": "q", "response": "a"}, val_size=4, chat_template=False)
    dm = DataModule(task, batch_size=4, max_length=64, cache_dir=str(cache), tokenizer=char_tokenizer(CHARS))
    dm.setup()
    return dm


def test_a_file_edited_in_place_with_the_same_size_and_time_is_tokenised_again(tmp_path):
    path = tmp_path / "train.jsonl"
    _rows(path, "ab")
    first = _datamodule(path, tmp_path / "cache")
    stat = path.stat()
    _rows(path, "cd")  # the same length
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    second = _datamodule(path, tmp_path / "cache")
    tok = char_tokenizer(CHARS)
    assert tok.decode(second.datasets["train"].rows[0].input_ids).endswith("cd</s>")
    assert tok.decode(first.datasets["train"].rows[0].input_ids).endswith("ab</s>")
    assert len(list((tmp_path / "cache" / "tokenized").glob("*/meta.json"))) == 2  # two cache entries
    assert first.identity()["source"] != second.identity()["source"]
    assert first.identity()["rows"] != second.identity()["rows"]


def test_content_digest_of_a_file_and_of_a_folder(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.parquet").write_bytes(b"one")
    (tmp_path / "d" / "sub" / "b.parquet").write_bytes(b"two")
    assert content_digest(tmp_path / "d" / "a.parquet") == hashlib.sha256(b"one").hexdigest()
    before = content_digest(tmp_path / "d")
    (tmp_path / "d" / "sub" / "b.parquet").rename(tmp_path / "d" / "sub" / "c.parquet")  # same bytes, other name
    assert content_digest(tmp_path / "d") != before


def test_tokenizer_digest_sees_moved_ids_not_a_reload(tmp_path):
    tok = char_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    from transformers import AutoTokenizer

    assert tokenizer_digest(AutoTokenizer.from_pretrained(tmp_path / "tok")) == tokenizer_digest(tok)
    moved = char_tokenizer(GAME_CHARS[1] + GAME_CHARS[0] + GAME_CHARS[2:])  # '0' and '1' swap ids
    assert len(moved) == len(tok) and tokenizer_digest(moved) != tokenizer_digest(tok)


def test_rows_digest_is_order_and_split_sensitive():
    from dftlab.data.encode import Encoded

    a, b = Encoded([1, 2, 3], 1), Encoded([1, 2, 4], 1)
    assert rows_digest({"train": [a, b]}) != rows_digest({"train": [b, a]})
    assert rows_digest({"train": [a], "val": [b]}) != rows_digest({"train": [b], "val": [a]})
    assert rows_digest({"train": [a]}) != rows_digest({"train": [Encoded([1, 2, 3], 2)]})
