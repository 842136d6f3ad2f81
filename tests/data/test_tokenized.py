"""Tokenisation at scale: datasets.map with worker processes, a cache keyed on content, shared safely."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dftlab.data import tokenized
from dftlab.data.encode import EncodeSettings
from dftlab.data.text_task import TextTask
from dftlab.data.tokenizer import char_tokenizer
from dftlab.errors import ConfigError

CHARS = "0123456789+=-*/ abcdefghijklmnopqrstuvwxyz"


def _file(tmp_path, n=200, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps({"prompt": f"{i}+{i}=", "response": str(2 * i)}) + "\n" for i in range(n)))
    return path


def _build(path, cache=None, **kwargs):
    task = TextTask(str(path), val_size=10, chat_template=False)
    return tokenized.build(task, char_tokenizer(CHARS), EncodeSettings(32), cache_dir=cache, **kwargs)


def _ids(rows):
    return [e.input_ids for e in rows["train"]] + [e.input_ids for e in rows["val"]]


def test_worker_processes_give_the_same_rows(tmp_path):
    path = _file(tmp_path)
    one, _ = _build(path)
    two, _ = _build(path, num_proc=2)
    assert _ids(one) == _ids(two) and len(one["train"]) == 190
    tok = char_tokenizer(CHARS)
    e = one["train"][0]
    assert tok.decode(e.input_ids[e.prompt_len:]) == tok.decode(tok(str(2 * int(tok.decode(
        e.input_ids[: e.prompt_len]).split("+")[0]))).input_ids) + tok.eos_token


def test_a_racing_second_build_keeps_the_first_entry(tmp_path, monkeypatch):
    path = _file(tmp_path)
    theirs, _ = _build(path, str(tmp_path / "other"))  # what a competing process wrote
    (their_entry,) = (tmp_path / "other" / "tokenized").iterdir()
    original = os.replace

    def replace(src, dst):  # the other process renamed its entry into place a moment before this one
        shutil.copytree(their_entry, dst)
        (Path(dst) / "theirs").write_text("")
        return original(src, dst)

    monkeypatch.setattr(tokenized.os, "replace", replace)
    mine, _ = _build(path, str(tmp_path / "cache"))
    (entry,) = (tmp_path / "cache" / "tokenized").iterdir()  # no temporary folder left behind
    assert (entry / "theirs").exists() and _ids(mine) == _ids(theirs)


WORKER = textwrap.dedent("""
    import sys
    from dftlab.data import tokenized
    from dftlab.data.encode import EncodeSettings
    from dftlab.data.text_task import TextTask
    from dftlab.data.tokenizer import char_tokenizer
    task = TextTask(sys.argv[1], val_size=10, chat_template=False)
    rows, _ = tokenized.build(task, char_tokenizer(sys.argv[3]), EncodeSettings(32), cache_dir=sys.argv[2])
    print(sum(sum(e.input_ids) for e in rows["train"]))
""")


def test_two_processes_building_the_same_entry_at_once(tmp_path):
    path, cache = _file(tmp_path, n=3000), tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(cache), CHARS], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    expected, _ = _build(path)
    total = str(sum(sum(e.input_ids) for e in expected["train"]))
    assert [out.strip() for out, _ in outs] == [total, total]
    entries = list((cache / "tokenized").iterdir())
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()  # one whole entry, no temporary folders
    cached, _ = _build(path, str(cache))
    assert _ids(cached) == _ids(expected)


def test_a_tokenizer_that_cannot_encode_the_data_is_refused(tmp_path):
    path = tmp_path / "words.jsonl"
    path.write_text("".join(json.dumps({"prompt": "Translate: bonjour", "response": "Hello!"}) + "\n"
                            for _ in range(20)))
    task = TextTask(str(path), val_size=2, chat_template=False)
    # 18 + 6 characters, none of them a digit, and EOS: 24 of 25 tokens unknown
    with pytest.raises(ConfigError, match=r"model.name_or_path=tiny encodes 96.0% of the data's tokens as '<unk>' "
                                          r"\(more than data.task.max_unk_fraction=0.01\)"):
        tokenized.build(task, char_tokenizer("0123456789"), EncodeSettings(64), model="tiny")
    loose = TextTask(str(path), val_size=2, chat_template=False, max_unk_fraction=1.0)
    rows, _ = tokenized.build(loose, char_tokenizer("0123456789"), EncodeSettings(64), model="tiny")
    assert len(rows["train"]) == 18
