"""Reference log-probabilities given with the data (`ref_logp`, for `engine.reference=dataset`):
one per target token, cut with the response, at their targets' positions in padded and packed
batches, kept by the tokenisation cache; a wrong length names the file and line."""

import json

import pytest
import torch

from dftlab.data.collate import collate
from dftlab.data.datamodule import DataModule
from dftlab.data.encode import encode
from dftlab.data.text_task import TextTask
from dftlab.data.tokenizer import char_tokenizer
from dftlab.errors import ConfigError
from dftlab.losses import IGNORE_INDEX

TOK = char_tokenizer()
EXAMPLES = [("J=8,Q=9,K=10|A,7,K,3|24:", "10*3=30;7-1=6;30-6=24"), ("A|24:", "1"), ("J=1|2,2|24:", "2*2=4"),
            ("Q|1:", "3-2=1;1*1=1")]


def _values(k, n):
    """Distinct values that say which example (k) and which of its targets (j) they belong to."""
    return [-(100.0 * k + j) for j in range(n)]


def _items(max_length=64):
    return [(k, encode(TOK, p, r, max_length, ref_logp=_values(k, len(r) + 1)), 0)
            for k, (p, r) in enumerate(EXAMPLES)]


@pytest.mark.parametrize("pack_length", [None, 64])
@pytest.mark.parametrize("max_length", [64, 30])  # 30 cuts the first response
def test_each_value_sits_at_its_target(pack_length, max_length):
    items = _items(max_length)
    assert items[0][1].truncated == (max_length == 30)
    batch = collate(items, TOK.pad_token_id, pack_length=pack_length)
    labels, ref = batch["labels"], batch["ref_logp"]
    positions = batch.get("position_ids", torch.arange(labels.shape[1]).expand_as(labels))
    seen = 0
    for b, t in (labels != IGNORE_INDEX).nonzero().tolist():
        k = int(batch["seq_ids"][b, t])
        prompt, response = EXAMPLES[k]
        j = int(positions[b, t]) - (len(prompt) - 1)  # the j-th target: response token j (or EOS)
        assert ref[b, t].item() == -(100.0 * k + j)
        expected = TOK(response, add_special_tokens=False)["input_ids"] + [TOK.eos_token_id]
        assert labels[b, t].item() == expected[j]
        seen += 1
    assert seen == sum(e.n_targets for _, e, _ in items)


def test_truncation_cuts_the_values_with_the_response():
    e = encode(TOK, "A|24:", "1+2=3", max_length=8, ref_logp=[-1.0, -2.0, -3.0, -4.0, -5.0, -6.0])
    assert e.truncated and e.n_targets == 3 and e.ref_logp == [-1.0, -2.0, -3.0]


def test_a_wrong_length_or_type_is_refused():
    with pytest.raises(ValueError, match="ref_logp has 5 values for 6 target tokens"):
        encode(TOK, "A|24:", "1+2=3", 64, ref_logp=[-1.0] * 5)
    for bad in ("-1", [-1.0, None, -1.0, -1.0, -1.0, -1.0], [float("nan")] * 6, [True] * 6):
        with pytest.raises(ValueError, match="a list of finite numbers"):
            encode(TOK, "A|24:", "1+2=3", 64, ref_logp=bad)


def _file(tmp_path, rows):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _rows(n=12):
    return [{"q": f"{i}+1=", "a": str(i + 1), "ref_logp": [-0.5] * (len(str(i + 1)) + 1)} for i in range(n)]


def _datamodule(path, tmp_path):
    task = TextTask(str(path), columns={"prompt": "q", "response": "a"}, val_size=2, chat_template=False)
    dm = DataModule(task, batch_size=4, max_length=32, cache_dir=str(tmp_path / "cache"),
                    tokenizer=char_tokenizer("0123456789+="))
    dm.setup()
    return dm


def test_the_datamodule_names_the_line_of_a_wrong_length(tmp_path):
    rows = _rows()
    rows[4]["ref_logp"] = [-0.5]
    with pytest.raises(ConfigError, match=r"t.jsonl:5: ref_logp has 1 values for 2 target tokens"):
        _datamodule(_file(tmp_path, rows), tmp_path)


def test_some_rows_without_values_are_refused(tmp_path):
    rows = _rows()
    del rows[7]["ref_logp"]
    with pytest.raises(ConfigError, match=r"t.jsonl:8: no ref_logp field, while other rows have one"):
        _datamodule(_file(tmp_path, rows), tmp_path)


def test_the_cache_keeps_the_values(tmp_path, monkeypatch):
    path = _file(tmp_path, _rows())
    first = _datamodule(path, tmp_path)
    monkeypatch.setattr("dftlab.data.tokenized.encode_example", lambda *a, **k: pytest.fail("re-tokenised"))
    second = _datamodule(path, tmp_path)
    assert [e.ref_logp for e in second.datasets["train"].rows] == [e.ref_logp for e in first.datasets["train"].rows]
    assert all(e.ref_logp == [-0.5] * e.n_targets for e in second.datasets["train"].rows)


def test_in_a_conversation_the_values_follow_each_assistant_turn():
    """Rendered by the chat template: one value per token of each assistant turn and its end-of-turn token."""
    from dftlab.data.encode import EncodeSettings, encode_example

    tok = char_tokenizer("0123456789+=:\n abcdefghijklmnopqrstuvwxyz")
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}</s>\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant: {% endif %}")
    messages = [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"},
                {"role": "user", "content": "+3"}, {"role": "assistant", "content": "55"}]
    values = [-1.0, -2.0, -3.0, -4.0, -5.0]  # "2", "</s>", "5", "5", "</s>"
    e = encode_example(tok, {"messages": messages, "ref_logp": values}, EncodeSettings(256, True))
    batch = collate([(0, e, 0)], tok.pad_token_id)
    targets = batch["labels"][0] != IGNORE_INDEX
    assert tok.decode(batch["labels"][0][targets]) == "2</s>55</s>"
    assert batch["ref_logp"][0][targets].tolist() == values and e.ref_logp == values
    keep = e.target_spans()[-1][0] + 1  # the last turn's first token
    cut = encode_example(tok, {"messages": messages, "ref_logp": values}, EncodeSettings(keep, True))
    assert cut.truncated and cut.n_targets == 3 and cut.ref_logp == values[:3]  # "2", "</s>", "5"
    with pytest.raises(ValueError, match="ref_logp has 4 values for 5 target tokens"):
        encode_example(tok, {"messages": messages, "ref_logp": values[:4]}, EncodeSettings(256, True))


def test_rows_without_values_beside_rows_with_them_are_nan_in_a_batch():
    with_values, without = _items()[0], (1, encode(TOK, *EXAMPLES[1], 64), 0)
    batch = collate([with_values, without], TOK.pad_token_id)
    targets = batch["labels"] != IGNORE_INDEX
    assert batch["ref_logp"][0][targets[0]].tolist() == _values(0, len(EXAMPLES[0][1]) + 1)
    assert batch["ref_logp"][1][targets[1]].isnan().all() and targets[1].sum() == len(EXAMPLES[1][1]) + 1
