"""Sample completions of prompts and grade them: what rejection sampling and the online rollout share.

Generation is the evaluation's (`dftlab.evaluation.generate.generate_completions`: the same prompt
encoding, end tokens, decoding and seeding, Hugging Face or vLLM); grading is the task's verifier
(`dftlab.rl.grading`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dftlab.evaluation.generate import generate_completions
from dftlab.rl.grading import reward


@dataclass
class Sample:
    text: str
    ids: list[int]  # the sampled token ids, through the end token when it ended
    finished: bool  # False: cut by max_new_tokens
    reward: float
    correct: bool
    well_formed: bool


def sample_and_grade(
    lm,
    tokenizer,
    grader,
    rows: list[dict],
    *,
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    chat_template: bool,
    synced_gpus: bool = False,
) -> list[list[Sample]]:
    """`n` graded samples of each row's prompt."""
    completions = generate_completions(
        lm, tokenizer, [r["prompt"] for r in rows], chat_template=chat_template, max_new_tokens=max_new_tokens,
        temperature=temperature, top_p=top_p, n=n, batch_size=batch_size, seed=seed,
        stop=list(getattr(grader, "stop", ()) or ()), synced_gpus=synced_gpus,
    )
    flat_rows = [row for row, outs in zip(rows, completions) for _ in outs]
    flat = [c for outs in completions for c in outs]
    scores = grader.score_many(flat_rows, [c.text for c in flat]) if flat else []
    samples = [Sample(c.text, c.ids, c.finished, reward(s), bool(s["correct"]), bool(s.get("well_formed", True)))
               for c, s in zip(flat, scores)]
    return [samples[i * n : (i + 1) * n] for i in range(len(rows))]
