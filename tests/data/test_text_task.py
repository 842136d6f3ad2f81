"""Prompt/response data from files: bad rows counted per reason and skipped, bad sources refused."""

import json

import pytest

from dftlab.data.datamodule import DataModule
from dftlab.data.text_task import TextTask
from dftlab.data.tokenizer import char_tokenizer
from dftlab.errors import ConfigError

GOOD = {"q": "1+1=", "a": "2"}


def _write(path, lines: list[bytes]):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _jsonl(tmp_path, bad: list[bytes], n_good=40):
    good = [json.dumps({**GOOD, "id": i}).encode() for i in range(n_good)]
    return _write(tmp_path / "train.jsonl", good[:5] + bad + good[5:])


BAD_ROWS = {
    "malformed_json": b'{"q": "1+1=", "a": ',
    "undecodable": b'{"q": "\xff\xfe", "a": "2"}',
    "missing_field": json.dumps({"q": "1+1="}).encode(),
    "not_text": json.dumps({"q": "1+1=", "a": 2}).encode(),
    "empty_response": json.dumps({"q": "1+1=", "a": "  "}).encode(),
    "empty_prompt": json.dumps({"q": "", "a": "2"}).encode(),
}


def test_bad_rows_are_counted_per_reason_with_their_line(tmp_path):
    path = _jsonl(tmp_path, list(BAD_ROWS.values()))
    task = TextTask(str(path), columns={"prompt": "q", "response": "a"}, val_size=4, max_bad_fraction=0.5)
    assert task.skipped() == {reason: 1 for reason in BAD_ROWS}
    lines = {reason: int(where.rsplit(":", 1)[1]) for reason, where in task.records.first_bad.items()}
    assert lines == {reason: 6 + i for i, reason in enumerate(BAD_ROWS)}
    assert len(task.train()) + len(task.val()) == 40 and len(task.val()) == 4
    assert not set(r["id"] for r in task.train()) & set(r["id"] for r in task.val())


def test_too_many_bad_rows_refused_before_training(tmp_path):
    path = _jsonl(tmp_path, list(BAD_ROWS.values()), n_good=40)  # 6 bad of 46
    with pytest.raises(ConfigError, match=r"train.jsonl: 6 of 46 rows are bad.*data.task.max_bad_fraction=0.1"):
        TextTask(str(path), columns={"prompt": "q", "response": "a"}, val_size=4, max_bad_fraction=0.1).train()


def test_unknown_column_is_named(tmp_path):
    path = _jsonl(tmp_path, [])
    with pytest.raises(ConfigError, match=r"data.task.columns.prompt='question' is not a column of .*: a, id, q"):
        TextTask(str(path), columns={"prompt": "question", "response": "a"}).train()


def test_empty_after_filtering_names_the_file(tmp_path):
    path = _write(tmp_path / "bad.jsonl", [BAD_ROWS["empty_response"]] * 3)
    with pytest.raises(ConfigError, match=r"bad.jsonl: no usable rows"):
        TextTask(str(path), columns={"prompt": "q", "response": "a"}).train()


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"data.task.path='.*nope.jsonl': no such file"):
        TextTask(str(tmp_path / "nope.jsonl")).train()


def test_parquet_through_datasets(tmp_path):
    import datasets

    datasets.Dataset.from_list([{**GOOD, "id": i} for i in range(30)]).to_parquet(str(tmp_path / "t.parquet"))
    task = TextTask(str(tmp_path / "t.parquet"), columns={"prompt": "q", "response": "a"}, val_size=5)
    assert len(task.train()) == 25 and task.train()[0]["prompt"] == "1+1="
    with pytest.raises(ConfigError, match="is not a column"):
        TextTask(str(tmp_path / "t.parquet"), columns={"prompt": "x", "response": "a"}).train()


def _datamodule(task, tmp_path, **kwargs):
    dm = DataModule(task, batch_size=4, max_length=kwargs.pop("max_length", 64), cache_dir=str(tmp_path / "cache"),
                    tokenizer=char_tokenizer("0123456789+=-*/ abcdefghijklmnopqrstuvwxyz"), **kwargs)
    dm.setup()
    return dm


def test_truncation_counted_and_reported(tmp_path):
    rows = [{"q": "1+1=", "a": "2"}] * 100 + [{"q": "1+1=", "a": "2" * 30}] * 3 + [{"q": "9" * 40, "a": "1"}] * 2
    path = _write(tmp_path / "t.jsonl", [json.dumps(r).encode() for r in rows])
    task = TextTask(str(path), columns={"prompt": "q", "response": "a"}, val_size=2, chat_template=False, seed=1,
                    max_bad_fraction=0.1)
    keep = _datamodule(task, tmp_path / "k", max_length=20)
    counts = {k: keep.skipped["train"].get(k, 0) + keep.skipped["val"].get(k, 0)
              for k in ("truncated_partly", "truncated_away")}
    assert counts == {"truncated_partly": 3, "truncated_away": 2}
    assert len(keep.datasets["train"]) + len(keep.datasets["val"]) == 103
    drop = _datamodule(task, tmp_path / "d", max_length=20, truncation="drop")
    assert len(drop.datasets["train"]) + len(drop.datasets["val"]) == 100


def first_entry(tmp_path):
    (entry,) = [p for p in (tmp_path / "cache" / "tokenized").iterdir() if (p / "meta.json").is_file()]
    return entry.name


def test_tokenised_data_is_cached(tmp_path, monkeypatch):
    path = _jsonl(tmp_path, [BAD_ROWS["not_text"]])
    task = TextTask(str(path), columns={"prompt": "q", "response": "a"}, val_size=4, chat_template=False,
                    max_bad_fraction=0.1)
    first = _datamodule(task, tmp_path)
    assert [p.name for p in (tmp_path / "cache" / "tokenized").iterdir()] == [first_entry(tmp_path)]
    monkeypatch.setattr("dftlab.data.tokenized.encode_example", lambda *a, **k: pytest.fail("re-tokenised"))
    second = _datamodule(TextTask(str(path), columns={"prompt": "q", "response": "a"}, val_size=4,
                                  chat_template=False, max_bad_fraction=0.1), tmp_path)
    assert [e.input_ids for e in second.datasets["train"].rows] == [e.input_ids for e in first.datasets["train"].rows]
    assert second.skipped == first.skipped and second.skipped["source"] == {"not_text": 1}


def test_skipped_rows_are_printed_and_logged(caplog):
    from types import SimpleNamespace

    from dftlab.run import _report_data

    logged = []
    lg = SimpleNamespace(log_metrics=lambda metrics, step: logged.append((metrics, step)))
    trainer = SimpleNamespace(is_global_zero=True, loggers=[lg], global_step=7)
    with caplog.at_level("WARNING"):
        _report_data(trainer, {"source": {"missing_field": 2, "empty_response": 0}, "train": {"truncated_partly": 1}})
    assert logged == [({"data/source/missing_field": 2.0, "data/train/truncated_partly": 1.0}, 7)]
    assert "source/missing_field 2, train/truncated_partly 1" in caplog.text
