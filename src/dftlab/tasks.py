"""What a task states it provides. A training task gives examples; an evaluation task gives test
splits and a verifier. A task class subclasses the protocols it implements (the defaults below
are the behaviour of a task that does not override them), so that a new task, its type checker
and the code that runs it agree on one list."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class EvalTask(Protocol):
    """Test splits and how a completion is graded.

    `test_splits`: split name -> rows with `prompt` (and `id`, `answer` where the task has them).
    `chat_template`: the prompt goes in the user turn of the tokenizer's chat template.
    `stop`: strings that end a completion besides the end-of-sequence tokens.
    """

    name: str
    chat_template: bool = False
    stop: tuple[str, ...] = ()

    @property
    def test_splits(self) -> dict[str, list[dict]]: ...

    def max_new_tokens(self) -> int: ...

    def score(self, row: dict, completion: str) -> dict[str, bool]:
        """`correct` and `well_formed` of one completion."""
        ...

    def score_many(self, rows: list[dict], completions: list[str]) -> list[dict[str, bool]]:
        """`score` of many completions (a task may check them in parallel)."""
        return [self.score(row, c) for row, c in zip(rows, completions, strict=True)]


@runtime_checkable
class TrainTask(Protocol):
    """Training and validation examples, and the evaluation task the end of a run measures (None:
    validation cross-entropy only).

    An example is a pair (`prompt`, `response`), a conversation (`messages`, optional `tools` and
    `prompt_turns`) or a document (`text`), with optional `id` and per-target-token `ref_logp`
    (`dftlab.data.formats`). `chat_template`: render with the tokenizer's chat template; `train_on`:
    which assistant turns are targets (`assistant`, `last`, `all`); `max_unk_fraction`: the share of
    unknown tokens above which the tokenizer is refused.
    """

    chat_template: bool = False
    train_on: str = "assistant"
    max_unk_fraction: float = 0.01
    eval_task: EvalTask | None = None

    def train(self) -> list[dict]: ...

    def val(self) -> list[dict]: ...

    def fingerprint(self) -> str | None:
        """What the tokenised examples depend on, for the tokenisation cache (None: not cached)."""
        return None

    def skipped(self) -> dict[str, int]:
        """Rows of the source skipped as bad, per reason."""
        return {}
