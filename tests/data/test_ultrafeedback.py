"""UltraFeedback's best-rated responses, from a local file in the dataset's own schema."""

import json

import pytest

from dftlab.data.ultrafeedback import UltraFeedbackTask, best_responses, mean_rating
from dftlab.errors import ConfigError


def completion(response: str, ratings: dict[str, str], model: str = "gpt-4") -> dict:
    """One completion as UltraFeedback stores it (ratings are strings, "N/A" where not rated)."""
    annotations = {}
    for aspect, rating in ratings.items():
        note = {"Rating": rating, "Rationale": f"why {aspect} is {rating}"}
        if aspect in ("truthfulness", "helpfulness"):
            note = {"Type": ["1", "2"], **note, "Rationale For Rating": "because"}
        annotations[aspect] = note
    numeric = [float(r) for r in ratings.values() if r != "N/A"]
    return {
        "model": model,
        "principle": "helpfulness",
        "custom_system_prompt": "Be helpful.",
        "response": response,
        "annotations": annotations,
        "critique": "fine",
        "overall_score": 7.0,
        "fine-grained_score": sum(numeric) / max(1, len(numeric)),
    }


def row(instruction: str, completions: list[dict], source: str = "evol_instruct") -> dict:
    return {
        "source": source,
        "instruction": instruction,
        "models": [c["model"] for c in completions],
        "completions": completions,
        "correct_answers": ["None"],
        "incorrect_answers": ["None"],
    }


ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")


def rated(response: str, *ratings: str) -> dict:
    return completion(response, dict(zip(ASPECTS, ratings)))


def ultrafeedback_rows(n: int = 40) -> list[dict]:
    """`n` prompts whose best response is known: `best <i>` (mean 4.5) among worse ones."""
    return [
        row(
            f"write a function number {i}",
            [
                rated(f"worse {i}", "3", "4", "3", "4"),
                rated(f"best {i}", "5", "4", "5", "4"),
                rated(f"worst {i}", "1", "2", "1", "1"),
            ],
        )
        for i in range(n)
    ]


def write_jsonl(path, rows, extra_lines=()):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(extra_lines))
    return path


def test_mean_rating_ignores_what_is_not_rated():
    assert mean_rating(rated("r", "5", "N/A", "3", "4")) == 4.0
    assert mean_rating(rated("r", "N/A", "N/A", "N/A", "N/A")) is None
    assert mean_rating({"response": "r"}) is None


def test_the_best_mean_is_chosen_and_bad_rows_are_counted():
    rows = [
        row("q1", [rated("a", "4", "4", "4", "4"), rated("b", "5", "5", "5", "N/A"), rated("c", "5", "5", "5", "1")]),
        row("q2", [rated("first", "4", "4", "4", "4"), rated("tie", "4", "4", "4", "4")]),
        row("q3", [rated("x", "N/A", "N/A", "N/A", "N/A")]),
        {"completions": [rated("y", "5", "5", "5", "5")]},
        row("q5", [rated("  ", "5", "5", "5", "5"), rated("z", "1", "1", "1", "1")]),
        row(" ", [rated("w", "5", "5", "5", "5")]),
        None,
    ]
    records = best_responses(((f"f:{i + 1}", r) for i, r in enumerate(rows)), "f")
    assert records.rows == [{"prompt": "q1", "response": "b", "where": "f:1"},
                            {"prompt": "q2", "response": "first", "where": "f:2"}]
    assert dict(records.skipped) == {
        "no_rating": 1,
        "missing_field": 1,
        "empty_response": 1,
        "empty_prompt": 1,
        "malformed_json": 1,
    }
    assert records.first_bad["no_rating"] == "f:3" and records.first_bad["malformed_json"] == "f:7"


def test_the_task_samples_prompts_with_their_best_responses(tmp_path):
    path = write_jsonl(tmp_path / "uf.jsonl", ultrafeedback_rows(40))
    task = UltraFeedbackTask(str(path), max_rows=20, val_size=5, seed=0)
    train, val = task.train(), task.val()
    assert len(train) == 20 and len(val) == 5
    for r in train + val:
        assert r["response"] == "best " + r["prompt"].rsplit(" ", 1)[1]
    numbers = [int(r["prompt"].rsplit(" ", 1)[1]) for r in train]
    assert numbers != sorted(numbers)  # sampled from the whole file, not its first rows
    again = UltraFeedbackTask(str(path), max_rows=20, val_size=5, seed=0).train()
    other = UltraFeedbackTask(str(path), max_rows=20, val_size=5, seed=1).train()
    assert again == train and other != train
    assert task.fingerprint() != UltraFeedbackTask(str(path), max_rows=10, val_size=5).fingerprint()


def test_the_bad_fraction_is_that_of_the_whole_file(tmp_path):
    # 2 bad rows of 102: 2%, over the 1% limit, whatever the size of the sample
    path = write_jsonl(tmp_path / "uf.jsonl", ultrafeedback_rows(100), ["{not json\n", json.dumps(row("q", [])) + "\n"])
    with pytest.raises(ConfigError, match=r"2 of 102 rows are bad .*data.task.max_bad_fraction"):
        UltraFeedbackTask(str(path), max_rows=10, val_size=2).train()
    assert len(UltraFeedbackTask(str(path), max_rows=10, val_size=2, max_bad_fraction=0.05).train()) == 10


def test_too_few_prompts_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "uf.jsonl", ultrafeedback_rows(3))
    with pytest.raises(ConfigError, match="3 usable prompts, not more than data.task.val_size=5"):
        UltraFeedbackTask(str(path), val_size=5).train()
