"""Graders of completions of *training* prompts, for rejection sampling and online rewards.

The game's task grades a training row as it grades a test row (its prompt says everything). A
math training row (NuminaMath-CoT) carries its gold answer in its reference solution: `BoxedAnswer`
takes the last `\\boxed{}` of the row's response and grades as the math benchmarks do.

A grader has `score_many(rows, completions)` (per completion: `correct`, `well_formed`, and
optionally a float `reward`), `max_new_tokens()`, `stop`, and optionally `usable(row)` (False: the
row cannot be graded and is skipped, counted as `ungradable`).
"""

from __future__ import annotations

from dftlab.errors import ConfigError
from dftlab.evaluation.math_answers import extract_boxed
from dftlab.evaluation.math_tasks import score_answers


class BoxedAnswer:
    """`correct`: the completion's final answer equals the last `\\boxed{}` of the row's response."""

    name = "boxed_answer"
    stop: tuple[str, ...] = ()

    def __init__(self, max_new_tokens: int = 4096, timeout: float = 5.0, lenient: bool = False,
                 response_key: str = "response"):
        if max_new_tokens < 1 or timeout <= 0:
            raise ConfigError(f"grader: max_new_tokens={max_new_tokens} must be >= 1, timeout={timeout} > 0")
        self.new_tokens, self.timeout, self.lenient, self.response_key = max_new_tokens, timeout, lenient, response_key

    def gold(self, row: dict) -> str | None:
        return row.get("answer") or extract_boxed(row.get(self.response_key) or "")

    def usable(self, row: dict) -> bool:
        return bool(self.gold(row))

    def score_many(self, rows: list[dict], completions: list[str]) -> list[dict[str, bool]]:
        return score_answers([self.gold(r) for r in rows], completions, self.timeout, self.lenient)

    def max_new_tokens(self) -> int:
        return self.new_tokens


def grader_of(task, grader=None):
    """The grader: the one configured, else the training task's evaluation task."""
    grader = grader if grader is not None else getattr(task, "eval_task", None)
    if grader is None or not hasattr(grader, "score_many"):
        raise ConfigError(f"data.task ({type(task).__name__}) has no verifier to grade samples with: set grader "
                          f"(e.g. grader={{_target_: dftlab.rl.grading.BoxedAnswer}} for math training rows)")
    return grader


def reward(score: dict) -> float:
    """A completion's reward: the grader's `reward` when it gives one, else 1 for correct and 0 for wrong."""
    return float(score["reward"]) if "reward" in score else float(bool(score["correct"]))


def usable(grader, row: dict) -> bool:
    check = getattr(grader, "usable", None)
    return True if check is None else bool(check(row))
