"""Evaluate a model on a task's test splits: generate, score, summarise."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from dftlab.errors import ConfigError
from dftlab.evaluation.generate import generate
from dftlab.evaluation.stats import average_at_k, pass_at_k, wilson


@dataclass
class SplitResult:
    split: str
    n: int
    accuracy: float  # Average@k (greedy: plain accuracy)
    ci: tuple[float, float]  # 95% Wilson interval over all samples
    well_formed: float
    pass_at_k: float | None = None
    records: list[dict] = field(default_factory=list, repr=False)


def select(task, splits: list[str] | None, max_problems: int | None, key: str = "eval.splits") -> dict[str, list[dict]]:
    """The problems evaluated: the first `max_problems` of each chosen test split (all when null)."""
    available = task.test_splits
    if splits is not None and (unknown := [s for s in splits if s not in available]):
        raise ConfigError(f"{key}: {unknown} are not test splits of {task.name}; it has {', '.join(available)}")
    return {name: rows[:max_problems] for name, rows in available.items() if splits is None or name in splits}


def _key(prompt) -> str:
    """A prompt as a dict key: a string, or a conversation's messages (`ReferenceTask`) as JSON."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def generate_and_score(
    lm,
    tokenizer,
    task,
    problems: dict[str, list[dict]],
    *,
    n_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 256,
    seed: int = 0,
    synced_gpus: bool = False,
    journal=None,
    interruptible: bool = True,
) -> dict[str, list[dict]]:
    """Per split, one record per problem: its id and gold answer (when the task has them), prompt,
    completions and their scores. Every split goes into one `generate` call, so that one batch can
    hold problems of several splits; a prompt that several splits share is completed once (HumanEval
    and HumanEval+ grade the same completions). A task's `stop` strings (optional) end completions.
    `journal`, `interruptible`: see `generate`."""
    rows = [row for split_rows in problems.values() for row in split_rows]
    prompts = {_key(r["prompt"]): r["prompt"] for r in rows}  # each prompt once, in order
    unique = generate(
        lm,
        tokenizer,
        list(prompts.values()),
        chat_template=task.chat_template,
        max_new_tokens=task.max_new_tokens(),
        temperature=temperature,
        top_p=top_p,
        n=n_samples,
        batch_size=batch_size,
        seed=seed,
        stop=list(task.stop) or None,
        synced_gpus=synced_gpus,
        journal=journal,
        interruptible=interruptible,
    )
    by_prompt = dict(zip(prompts, unique, strict=True))
    completions = [by_prompt[_key(r["prompt"])] for r in rows]
    flat_rows = [row for row, outs in zip(rows, completions) for _ in outs]
    flat = [c for outs in completions for c in outs]
    scores = task.score_many(flat_rows, flat)
    records = [
        {
            **{k: row[k] for k in ("id", "answer") if k in row},
            "prompt": row["prompt"],
            "completions": outs,
            "scores": scores[i * n_samples : (i + 1) * n_samples],
        }
        for i, (row, outs) in enumerate(zip(rows, completions))
    ]
    out, start = {}, 0
    for name, split_rows in problems.items():
        out[name], start = records[start : start + len(split_rows)], start + len(split_rows)
    return out


def summarise(split: str, correct: list[list[bool]], well_formed: list[list[bool]], records=()) -> SplitResult:
    """Average@k (with its Wilson interval over all samples) and pass@k from per-sample verdicts."""
    total = sum(map(len, correct))
    hits = sum(map(sum, correct))
    k = len(correct[0]) if correct else 1
    return SplitResult(
        split=split,
        n=len(correct),
        accuracy=average_at_k(correct),
        ci=wilson(hits, total),
        well_formed=sum(map(sum, well_formed)) / max(total, 1),
        pass_at_k=pass_at_k(correct) if k > 1 else None,
        records=list(records),
    )


def verdicts(records: list[dict]) -> tuple[list[list[bool]], list[list[bool]]]:
    """(correct, well_formed) per problem and sample."""
    return (
        [[s["correct"] for s in r["scores"]] for r in records],
        [[s["well_formed"] for s in r["scores"]] for r in records],
    )


def evaluate(
    lm,
    tokenizer,
    task,
    splits: list[str] | None = None,
    *,
    n_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 256,
    seed: int = 0,
    max_problems: int | None = None,
    journal=None,
) -> dict[str, SplitResult]:
    problems = select(task, splits, max_problems)
    records = generate_and_score(
        lm, tokenizer, task, problems, n_samples=n_samples, temperature=temperature, top_p=top_p,
        batch_size=batch_size, seed=seed, journal=journal,
    )
    return {name: summarise(name, *verdicts(recs), recs) for name, recs in records.items()}
