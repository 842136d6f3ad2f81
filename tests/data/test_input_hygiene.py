"""Input read exactly as written or refused in one line naming the file and row: byte-order marks,
JSON that Python cannot hold, lone surrogates, a column missing from the first row, bad elements
of a JSON array, corrupt Parquet, rows cut away by max_length, and control characters in names."""

import json

import pytest

from dftlab.data.datamodule import DataModule
from dftlab.data.text_task import TextTask
from dftlab.data.tokenizer import char_tokenizer
from dftlab.errors import ConfigError, printable, safe_name

COLUMNS = {"prompt": "q", "response": "a"}


def _rows(n: int, **extra) -> list[dict]:
    return [{"q": "1+1=", "a": "2", "id": i, **extra} for i in range(n)]


def _jsonl(path, lines: list[str | bytes]):
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return path


def test_a_byte_order_mark_does_not_cost_the_first_row(tmp_path):
    lines = [json.dumps(r) for r in _rows(20)]
    path = _jsonl(tmp_path / "bom.jsonl", [b"\xef\xbb\xbf" + lines[0].encode(), *lines[1:]])
    task = TextTask(str(path), columns=COLUMNS, val_size=2)
    assert task.skipped() == {} and len(task.train()) + len(task.val()) == 20
    as_json = tmp_path / "bom.json"
    as_json.write_bytes(b"\xef\xbb\xbf" + json.dumps(_rows(20)).encode())
    assert len(TextTask(str(as_json), columns=COLUMNS, val_size=2).records.rows) == 20


@pytest.mark.parametrize("bad, reason", [
    ('{"q": ' * 100_000 + "1" + "}" * 100_000, "malformed_json"),  # deeper than Python's recursion limit
    ('{"q": "1+1=", "a": ' + "9" * 5000 + "}", "malformed_json"),  # longer than Python's int limit
    ('{"q": "1+1=", "a": "\\ud800"}', "undecodable"),  # a lone surrogate: no tokenizer takes it
])
def test_json_that_python_cannot_take_is_a_counted_bad_row(tmp_path, bad, reason):
    lines = [json.dumps(r) for r in _rows(40)]
    path = _jsonl(tmp_path / "t.jsonl", [*lines[:3], bad, *lines[3:]])
    task = TextTask(str(path), columns=COLUMNS, val_size=2, max_bad_fraction=0.1)
    assert task.skipped() == {reason: 1}
    assert task.records.first_bad[reason] == f"{path}:4"


def test_a_first_row_without_a_column_is_a_missing_field_not_an_unknown_column(tmp_path):
    lines = [json.dumps({"q": "1+1="}), *(json.dumps(r) for r in _rows(40))]
    path = _jsonl(tmp_path / "t.jsonl", lines)
    task = TextTask(str(path), columns=COLUMNS, val_size=2, max_bad_fraction=0.1)
    assert task.skipped() == {"missing_field": 1} and task.records.first_bad["missing_field"] == f"{path}:1"
    with pytest.raises(ConfigError, match=r"data.task.columns.response='answer' is not a column of .*: a, id, q"):
        TextTask(str(path), columns={"prompt": "q", "response": "answer"}).train()


def test_bad_elements_of_a_json_array_are_counted_with_their_index(tmp_path):
    rows = _rows(40)
    rows[5], rows[9] = "oops", [1, 2]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(rows))
    task = TextTask(str(path), columns=COLUMNS, val_size=2, max_bad_fraction=0.1)
    assert task.skipped() == {"malformed_json": 2} and task.records.first_bad["malformed_json"] == f"{path}[5]"
    path.write_text(json.dumps({"rows": rows}))
    with pytest.raises(ConfigError, match=r"t.json: a JSON dict, not an array of rows"):
        TextTask(str(path), columns=COLUMNS).train()


def test_a_corrupt_parquet_file_is_named(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 64)
    with pytest.raises(ConfigError, match=r"data.task.path='.*t.parquet': not readable as a dataset \(Arrow"):
        TextTask(str(path), columns=COLUMNS).train()


def _datamodule(task, tmp_path, **kwargs):
    dm = DataModule(task, batch_size=4, cache_dir=str(tmp_path / "cache"),
                    tokenizer=char_tokenizer("0123456789+=-*/ abcdefghijklmnopqrstuvwxyz"), **kwargs)
    dm.setup()
    return dm


def test_rows_cut_away_by_max_length_count_toward_the_bad_row_limit(tmp_path):
    """70 of 100 prompts longer than max_length: refused, where before 30% of the data trained silently."""
    rows = [{"q": "9" * 40, "a": "1"}] * 70 + [{"q": "1+1=", "a": "2"}] * 30
    path = _jsonl(tmp_path / "t.jsonl", [json.dumps(r) for r in rows])
    task = TextTask(str(path), columns=COLUMNS, val_size=2, chat_template=False)
    with pytest.raises(ConfigError, match=r"70 of 100 rows are dropped for data.max_length=20 \(truncation=keep: cut "
                                          r"away\): more than 1% of the data; raise data.max_length or "
                                          r"data.task.max_bad_fraction=0.01"):
        _datamodule(task, tmp_path, max_length=20)
    loose = TextTask(str(path), columns=COLUMNS, val_size=2, chat_template=False, max_bad_fraction=0.8)
    dm = _datamodule(loose, tmp_path, max_length=20)  # under the limit it trains, counted
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 30
    assert dm.skipped["train"]["truncated_away"] + dm.skipped["val"].get("truncated_away", 0) == 70


def test_a_first_batch_cut_away_whole_still_tokenises_the_rest(tmp_path):
    """The first 256 rows of a split (one `datasets.map` batch) all cut away: their empty columns do not
    fix the types."""
    rows = [{"q": "9" * 40, "a": "1"}] * 300 + [{"q": "1+1=", "a": "2"}] * 44
    path = _jsonl(tmp_path / "t.jsonl", [json.dumps(r) for r in rows])
    task = TextTask(str(path), columns=COLUMNS, val_size=4, chat_template=False, max_bad_fraction=0.9)
    dm = _datamodule(task, tmp_path, max_length=20)
    tok = char_tokenizer("0123456789+=-*/ abcdefghijklmnopqrstuvwxyz")
    kept = [e for s in ("train", "val") for e in dm.datasets[s].rows]
    assert len(kept) == 44
    assert all(tok.decode(e.input_ids, skip_special_tokens=True).replace(" ", "").startswith("1+1=2") for e in kept)


def test_control_characters_are_escaped_in_messages(tmp_path):
    assert printable("a\x1b[31mred\r\u202ex\ty") == "a\\x1b[31mred\\r\\u202ex\\ty"
    assert printable("two\nlines", keep_newlines=True) == "two\nlines"
    path = _jsonl(tmp_path / "t.jsonl", [json.dumps({"q\x1b[2J": "1+1=", "a": "2"})] * 5)
    with pytest.raises(ConfigError) as err:
        TextTask(str(path), columns=COLUMNS).train()
    assert "\x1b" not in str(err.value) and "q\\x1b[2J" in str(err.value)


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "", "a b", "x\x1b"])
def test_unsafe_run_ids_are_refused(name):
    with pytest.raises(ConfigError, match="run_id=.* is not allowed: a run directory's name"):
        safe_name(name)
    assert safe_name("2026-01-01_12-00-00_dft.v2") == "2026-01-01_12-00-00_dft.v2"
