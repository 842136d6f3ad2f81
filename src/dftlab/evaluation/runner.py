"""Evaluate a model on a task's test splits: generate, score, summarise."""

from __future__ import annotations

from dataclasses import dataclass, field

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
) -> dict[str, SplitResult]:
    results = {}
    for name, rows in task.test_splits.items():
        if splits is not None and name not in splits:
            continue
        rows = rows[:max_problems]
        prompts = [r["prompt"] for r in rows]
        completions = generate(
            lm,
            tokenizer,
            prompts,
            chat_template=task.chat_template,
            max_new_tokens=task.max_new_tokens(),
            temperature=temperature,
            top_p=top_p,
            n=n_samples,
            batch_size=batch_size,
            seed=seed,
        )
        flat_rows = [row for row, outs in zip(rows, completions) for _ in outs]
        flat = [c for outs in completions for c in outs]
        if hasattr(task, "score_many"):  # checks some answers in parallel
            flat_scores = task.score_many(flat_rows, flat)
        else:
            flat_scores = [task.score(row, c) for row, c in zip(flat_rows, flat)]
        records, correct, formed = [], [], 0
        for i, (prompt, outs) in enumerate(zip(prompts, completions)):
            scores = flat_scores[i * n_samples : (i + 1) * n_samples]
            correct.append([s["correct"] for s in scores])
            formed += sum(s["well_formed"] for s in scores)
            records.append({"prompt": prompt, "completions": outs, "scores": scores})
        total = len(rows) * n_samples
        hits = sum(map(sum, correct))
        results[name] = SplitResult(
            split=name,
            n=len(rows),
            accuracy=average_at_k(correct),
            ci=wilson(hits, total),
            well_formed=formed / max(total, 1),
            pass_at_k=pass_at_k(correct) if n_samples > 1 else None,
            records=records,
        )
    return results
