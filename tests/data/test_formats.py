"""Every common dataset format, detected from its columns or named, from every kind of file, with bad rows counted."""

import csv
import gzip
import json

import pytest

from dftlab.data.text_task import TextTask
from dftlab.errors import ConfigError

CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
ROWS = {
    "messages": {"messages": CHAT},
    "sharegpt": {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
                 "system": "Be brief."},
    "prompt_completion": {"prompt": "Hi", "completion": "Hello"},
    "prompt_response": {"prompt": "Hi", "response": "Hello"},
    "alpaca": {"instruction": "Greet", "input": "Bob", "output": "Hello Bob"},
    "text": {"text": "Once upon a time."},
}
EXPECTED = {
    "messages": {"messages": CHAT, "prompt_turns": 0},
    "sharegpt": {"messages": [{"role": "system", "content": "Be brief."}, *CHAT], "prompt_turns": 0},
    "prompt_completion": {"prompt": "Hi", "response": "Hello"},
    "prompt_response": {"prompt": "Hi", "response": "Hello"},
    "alpaca": {"prompt": "Greet\nBob", "response": "Hello Bob"},
    "text": {"text": "Once upon a time."},
}


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _examples(task):
    return [{k: v for k, v in r.items() if k != "where"} for r in task.train() + task.val()]


@pytest.mark.parametrize("name", sorted(ROWS))
def test_each_format_is_detected_from_its_columns(tmp_path, name):
    task = TextTask(str(_jsonl(tmp_path / "d.jsonl", [ROWS[name]] * 5)), val_size=1)
    assert _examples(task) == [EXPECTED[name]] * 5
    assert task.records.format == name


def test_conversational_prompt_completion_trains_on_the_completion(tmp_path):
    row = {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}],
           "completion": [{"role": "assistant", "content": "Hello"}]}
    (example, *_) = _examples(TextTask(str(_jsonl(tmp_path / "d.jsonl", [row] * 3)), val_size=1))
    assert example == {"messages": row["prompt"] + row["completion"], "prompt_turns": 2}


def test_alpaca_history_and_tools_column(tmp_path):
    row = {"instruction": "And 3?", "output": "9", "system": "Square numbers.", "history": [["2?", "4"]]}
    (example, *_) = _examples(TextTask(str(_jsonl(tmp_path / "a.jsonl", [row] * 3)), val_size=1))
    assert [m["content"] for m in example["messages"]] == ["Square numbers.", "2?", "4", "And 3?", "9"]
    tools = [{"type": "function", "function": {"name": "f"}}]
    rows = [{"messages": CHAT, "tools": json.dumps(tools)}] * 3  # LLaMA-Factory keeps tools as a JSON string
    (example, *_) = _examples(TextTask(str(_jsonl(tmp_path / "t.jsonl", rows)), val_size=1))
    assert example["tools"] == tools


def test_columns_rename_and_format_can_be_named(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"dialog": CHAT, "body": "x"}] * 3)
    task = TextTask(str(path), columns={"messages": "dialog"}, val_size=1)
    assert _examples(task)[0]["messages"] == CHAT
    task = TextTask(str(path), format="text", columns={"text": "body"}, val_size=1)
    assert _examples(task)[0] == {"text": "x"}
    with pytest.raises(ConfigError, match=r"data.task.columns.text='text' is not a column of .*: body, dialog"):
        TextTask(str(path), format="text", val_size=1).train()
    with pytest.raises(ConfigError, match=r"data.task.format=auto: cannot tell the format .*\(body, dialog\)"):
        TextTask(str(path), val_size=1).train()
    with pytest.raises(ConfigError, match=r"data.task.format='chatml': choose auto or one of messages"):
        TextTask(str(path), format="chatml", val_size=1).train()


BAD_CONVERSATIONS = {
    "bad_message": {"messages": ["not a message"]},
    "unknown_role": {"messages": [{"role": "narrator", "content": "x"}, CHAT[1]]},
    "no_assistant_turn": {"messages": CHAT[:1]},
    "empty_response": {"messages": [CHAT[0], {"role": "assistant", "content": " "}]},
    "not_text": {"messages": [CHAT[0], {"role": "assistant", "content": 3}]},
}


def test_bad_conversations_are_counted_per_reason_with_their_line(tmp_path):
    rows = [ROWS["messages"]] * 10 + list(BAD_CONVERSATIONS.values())
    task = TextTask(str(_jsonl(tmp_path / "c.jsonl", rows)), val_size=2, max_bad_fraction=0.5)
    assert task.skipped() == {reason: 1 for reason in BAD_CONVERSATIONS}
    assert task.records.first_bad == {reason: f"{tmp_path / 'c.jsonl'}:{11 + i}"
                                      for i, reason in enumerate(BAD_CONVERSATIONS)}


def _write_csv(path, rows, fields):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def test_csv_json_parquet_and_compressed_files_read_alike(tmp_path):
    import datasets
    import zstandard

    rows = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(6)]
    lines = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "d.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "l.json").write_bytes(lines)  # JSON lines under a .json name
    _write_csv(tmp_path / "d.csv", rows, ["prompt", "response"])
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    for name in ("d.jsonl.gz", "d.jsonl.zst", "d.json", "l.json", "d.csv", "d.parquet", "saved"):
        task = TextTask(str(tmp_path / name), val_size=1)
        assert sorted(r["prompt"] for r in task.train() + task.val()) == [f"q{i}" for i in range(6)], name
    messages = [{"messages": json.dumps(CHAT)}] * 3  # a CSV cell holds a conversation as JSON
    task = TextTask(str(_write_csv(tmp_path / "m.csv", messages, ["messages"])), val_size=1)
    assert task.train()[0]["messages"] == CHAT


def test_bad_csv_rows_name_their_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"prompt,response\nq,a\nq2,\n\xff\xfe,a\nq3,a3\n")
    task = TextTask(str(path), val_size=1, max_bad_fraction=0.9)
    assert task.skipped() == {"missing_field": 1, "undecodable": 1}
    assert task.records.first_bad == {"missing_field": f"{path}:3", "undecodable": f"{path}:4"}


def test_a_glob_reads_every_matching_file(tmp_path):
    for k in range(2):
        _jsonl(tmp_path / f"part{k}.jsonl", [{"text": f"doc {k} {i}"} for i in range(3)])
    task = TextTask(str(tmp_path / "part*.jsonl"), val_size=1)
    assert len(task.train()) + len(task.val()) == 6
    with pytest.raises(ConfigError, match="no file matches"):
        TextTask(str(tmp_path / "none*.jsonl")).train()


def test_streaming_reads_once_with_the_first_rows_as_validation(tmp_path):
    rows = [{"text": f"doc {i}"} for i in range(10)] + [{"text": 5}]
    task = TextTask(str(_jsonl(tmp_path / "s.jsonl", rows)), val_size=3, streaming=True, max_bad_fraction=0.2)
    assert [r["text"] for r in task.val()] == ["doc 0", "doc 1", "doc 2"]
    train = task.train()
    assert not isinstance(train, list)  # a generator: nothing is held in memory
    assert [r["text"] for r in train] == [f"doc {i}" for i in range(3, 10)]
    assert task.skipped() == {"not_text": 1}
    strict = TextTask(str(_jsonl(tmp_path / "s.jsonl", rows)), val_size=3, streaming=True, max_bad_fraction=0.01)
    with pytest.raises(ConfigError, match="1 of 11 rows are bad"):
        list(strict.train())


def test_the_fingerprint_follows_the_content_not_the_name_or_time(tmp_path):
    import os

    path = _jsonl(tmp_path / "d.jsonl", [{"text": "aaaa"}] * 3)
    before = TextTask(str(path), val_size=1).fingerprint()
    stat = path.stat()
    path.write_text(path.read_text().replace("aaaa", "bbbb"))  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same modification time
    assert TextTask(str(path), val_size=1).fingerprint() != before
