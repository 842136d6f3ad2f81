"""Held-out examples of a user's own data as an evaluation task: the model answers each test prompt and
its answer is compared with the reference (the final assistant turn of a conversation, or the response).

    eval_task: {_target_: dftlab.evaluation.reference_task.ReferenceTask, path: test.jsonl, match: exact}

Any format of `dftlab.data.formats` is read (a document, with no answer to compare, is refused). A
conversation's prompt is every message before its final assistant turn, rendered by the chat template
with the generation prompt, as in training. `match`: `exact` (equal after trimming and collapsing
whitespace, case kept), `contains` (the reference appears in the answer).
"""

from __future__ import annotations

from functools import cached_property

from dftlab.data.records import read
from dftlab.data.sources import Source
from dftlab.errors import ConfigError
from dftlab.tasks import EvalTask

MATCHES = ("exact", "contains")


def _norm(text: str) -> str:
    return " ".join(text.split())


class ReferenceTask(EvalTask):
    name = "reference"
    chat_template = True

    def __init__(self, path: str, format: str = "auto", columns: dict[str, str] | None = None, split: str = "test",
                 match: str = "exact", max_new_tokens: int = 64, max_problems: int | None = None,
                 chat_template: bool = True):
        if match not in MATCHES:
            raise ConfigError(f"eval_task.match={match!r}: choose one of {', '.join(MATCHES)}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ConfigError(f"eval_task.max_new_tokens={max_new_tokens!r} must be a positive integer")
        self.path, self.format, self.columns, self.split = str(path), format, dict(columns or {}), split
        self.match, self._max_new_tokens, self.max_problems = match, max_new_tokens, max_problems
        self.chat_template = chat_template

    @cached_property
    def test_splits(self) -> dict[str, list[dict]]:
        source = Source(self.path, split=self.split)
        records = read(self.path, source.rows(), self.format, self.columns, source.columns(), self.max_problems)
        records.check(1.0, "eval_task")
        rows = []
        for i, example in enumerate(records.rows):
            if "text" in example:
                raise ConfigError(f"eval_task.path={self.path}: documents (text) have no reference answer to compare")
            if "messages" in example:
                messages = example["messages"]
                last = max(j for j, m in enumerate(messages) if m["role"] == "assistant")
                prompt, answer = messages[:last], messages[last].get("content") or ""
            else:
                prompt, answer = example["prompt"], example["response"]
            rows.append({"id": example.get("id", i), "prompt": prompt, "answer": answer})
        return {self.split: rows}

    def max_new_tokens(self) -> int:
        return self._max_new_tokens

    def score(self, row: dict, completion: str) -> dict[str, bool]:
        """`correct`: the answer matches the reference; `well_formed`: the answer is not empty."""
        answer, reference = _norm(completion), _norm(row["answer"])
        correct = answer == reference if self.match == "exact" else reference in answer
        return {"correct": correct, "well_formed": bool(answer)}
