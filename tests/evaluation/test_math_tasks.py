"""The math benchmark task: loading the sets (local files or the hub), prompts, gold answers,
scoring, and the errors a user sees for a wrong folder or a broken file."""

import json

import pytest

from dftlab.errors import ConfigError
from dftlab.evaluation.math_tasks import DFT_SETS, ENV_DIR, PROMPT_SUFFIX, SETS, MathTask

SIZES = {"math_oai": 500, "minerva_math": 272, "olympiadbench": 675, "aime24": 30, "amc23": 40, "gsm8k": 1319}


def _write(folder, name: str, rows: list, raw_lines: tuple[str, ...] = ()) -> None:
    (folder / name).mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in rows] + list(raw_lines)
    (folder / name / "test.jsonl").write_text("\n".join(lines) + "\n")


def test_every_set_loads_with_its_size_and_gold_answers(benchmarks_dir):
    task = MathTask(sets=list(SIZES), data_dir=str(benchmarks_dir))
    splits = task.test_splits
    assert {name: len(rows) for name, rows in splits.items()} == SIZES
    for name, rows in splits.items():
        assert SETS[name].rows == SIZES[name]
        for row in rows:
            assert set(row) == {"prompt", "answer", "id"}
            assert row["answer"].strip(), (name, row["id"])
            assert row["prompt"].endswith("\n" + PROMPT_SUFFIX)
        assert len({row["id"] for row in rows}) == len(rows), name
    assert PROMPT_SUFFIX == "Please reason step by step, and put your final answer within \\boxed{}."
    assert splits["amc23"][0]["answer"] == "27"
    assert splits["gsm8k"][0]["answer"] == "18"
    assert splits["math_oai"][0]["id"] == "test/precalculus/807.json"


def test_defaults_are_the_five_sets_of_the_paper_from_the_environment(benchmarks_dir, monkeypatch):
    monkeypatch.setenv(ENV_DIR, str(benchmarks_dir))
    task = MathTask(max_problems=3)
    assert tuple(task.test_splits) == DFT_SETS == ("math_oai", "minerva_math", "olympiadbench", "aime24", "amc23")
    assert all(len(rows) == 3 for rows in task.test_splits.values())
    assert task.chat_template is True
    assert task.max_new_tokens() == 4096


def test_reference_solutions_score_correct_and_boxed(benchmarks_dir):
    task = MathTask(sets=["math_oai", "minerva_math"], data_dir=str(benchmarks_dir), max_problems=40)
    raw = {
        name: [json.loads(line) for line in (benchmarks_dir / name / "test.jsonl").open()][:40]
        for name in ("math_oai", "minerva_math")
    }
    for name, rows in task.test_splits.items():
        scores = task.score_many(rows, [r["solution"] for r in raw[name]])
        assert all(s == {"correct": True, "well_formed": True} for s in scores), name


def _tiny(tmp_path):
    _write(tmp_path, "aime24", [{"id": 7, "problem": "What is 6*7?", "answer": "042"}])
    return MathTask(sets=["aime24"], data_dir=str(tmp_path))


def test_score(tmp_path):
    task = _tiny(tmp_path)
    (row,) = task.test_splits["aime24"]
    assert row == {"prompt": "What is 6*7?\n" + PROMPT_SUFFIX, "answer": "042", "id": "7"}
    assert task.score(row, "6*7 = 42, so $\\boxed{42}$.") == {"correct": True, "well_formed": True}
    assert task.score(row, "The answer is 42.") == {"correct": True, "well_formed": False}
    assert task.score(row, "\\boxed{41}") == {"correct": False, "well_formed": True}
    assert task.score(row, "I do not know") == {"correct": False, "well_formed": False}
    assert task.score_many([row, row], ["\\boxed{42}", "\\boxed{43}"]) == [
        {"correct": True, "well_formed": True},
        {"correct": False, "well_formed": True},
    ]


def test_a_set_of_another_size_is_worth_a_warning(tmp_path, caplog):
    _ = _tiny(tmp_path).test_splits
    assert "aime24 has 1 problems, the published set 30" in caplog.text


def test_prompt_suffix_can_be_changed(tmp_path):
    _write(tmp_path, "gsm8k", [{"question": "Q?", "answer": "so 1,000 + 234\n#### 1,234", "idx": 0}])
    (row,) = MathTask(sets=["gsm8k"], data_dir=str(tmp_path), prompt_suffix="").test_splits["gsm8k"]
    assert row == {"prompt": "Q?", "answer": "1234", "id": "0"}


def test_hub_datasets(tmp_path, monkeypatch):
    import datasets

    calls = []

    def load_dataset(**kwargs):
        calls.append(kwargs)
        return [{"problem": "1+1?", "answer": "2", "unique_id": "a"}]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.delenv(ENV_DIR, raising=False)
    task = MathTask(
        sets=["math_oai", "aime24"],
        hub={"math_oai": "HuggingFaceH4/MATH-500", "aime24": {"path": "x/aime", "split": "train"}},
    )
    assert task.test_splits["math_oai"] == [{"prompt": "1+1?\n" + PROMPT_SUFFIX, "answer": "2", "id": "a"}]
    assert calls == [{"path": "HuggingFaceH4/MATH-500", "split": "test"}, {"path": "x/aime", "split": "train"}]


def test_a_missing_folder_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_DIR, raising=False)
    with pytest.raises(ConfigError, match=f"data.task.data_dir or {ENV_DIR}"):
        MathTask(sets=["aime24"])
    with pytest.raises(
        ConfigError, match=rf"data.task.data_dir={tmp_path}: {tmp_path}/aime24/test.jsonl does not exist"
    ):
        MathTask(sets=["aime24"], data_dir=str(tmp_path))
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=f"{ENV_DIR}={tmp_path}/nowhere: .*aime24/test.jsonl does not exist"):
        MathTask(sets=["aime24"])


def test_a_broken_file_names_the_file_and_line(tmp_path):
    _write(tmp_path, "aime24", [{"id": 1, "problem": "p", "answer": "1"}], raw_lines=('{"id": 2, "problem": ',))
    task = MathTask(sets=["aime24"], data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"aime24/test.jsonl:2: not valid JSON"):
        _ = task.test_splits
    _write(tmp_path, "aime24", [{"id": 1, "problem": "p", "answer": "1"}, {"id": 2, "question": "p", "answer": "1"}])
    with pytest.raises(ConfigError, match=r"aime24/test.jsonl:2: not a aime24 row, no 'problem'"):
        _ = MathTask(sets=["aime24"], data_dir=str(tmp_path)).test_splits
    _write(tmp_path, "minerva_math", [{"problem": "p", "solution": "no box here", "idx": 0}])
    with pytest.raises(ConfigError, match=r"minerva_math/test.jsonl:1: no gold answer"):
        _ = MathTask(sets=["minerva_math"], data_dir=str(tmp_path)).test_splits


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sets": ["math500"]}, "data.task.sets=.*choose from math_oai"),
        ({"sets": []}, "data.task.sets"),
        ({"sets": ["aime24"], "hub": {"aime": "x"}}, "data.task.hub names unknown sets"),
        ({"sets": ["aime24"], "max_problems": 0}, "data.task.max_problems"),
        ({"sets": ["aime24"], "max_new_tokens": 0}, "data.task.max_new_tokens"),
        ({"sets": ["aime24"], "timeout": 0}, "data.task.timeout"),
        ({"sets": ["aime24"], "hub": {"aime24": {"split": "train"}}}, "data.task.hub.aime24"),
    ],
)
def test_bad_settings(tmp_path, kwargs, match):
    _write(tmp_path, "aime24", [{"id": 1, "problem": "p", "answer": "1"}])
    with pytest.raises(ConfigError, match=match):
        _ = MathTask(data_dir=str(tmp_path), **kwargs).test_splits
