"""UltraFeedback (`openbmb/UltraFeedback`) as prompt/response data, as the DFT paper's Table 3 uses it:
for each prompt the response whose ratings have the highest mean, 10,000 prompts.

A row of the dataset: `instruction` and `completions`, each completion a `response` and its
`annotations`, one per aspect (helpfulness, honesty, instruction following, truthfulness), each
with a `Rating` ("1".."5", or "N/A"). A completion's score is the mean of its numeric ratings (an
aspect rated "N/A" does not count); the best completion is the one with the highest score (the
first one on a tie). A row without an instruction or completions is `missing_field`, one whose
completions have no numeric rating `no_rating`: counted and skipped like any bad row.

The prompts are sampled (seeded) from the whole set, not taken from its start: the file is ordered
by source (Evol-Instruct first), and its first 10,000 rows would be one source only.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable
from functools import cached_property

from dftlab.data.records import Records
from dftlab.data.text_task import TextTask
from dftlab.errors import ConfigError


def mean_rating(completion: dict) -> float | None:
    """The mean of a completion's numeric aspect ratings (None: it has none)."""
    ratings = []
    for aspect in (completion.get("annotations") or {}).values():
        try:
            value = float(aspect.get("Rating")) if isinstance(aspect, dict) else math.nan
        except (TypeError, ValueError):  # "N/A"
            continue
        if math.isfinite(value):
            ratings.append(value)
    return sum(ratings) / len(ratings) if ratings else None


def best_responses(rows: Iterable[tuple[str, dict | str | None]], source: str) -> Records:
    """Per (where, row): the prompt and its best-rated response; a row that is None (unreadable), the
    reason it could not be read (`sources.py`), or bad is counted by reason, with the first place of each."""
    records = Records(source)
    for where, row in rows:
        if row is None or isinstance(row, str):
            records.skip(row or "malformed_json", where)
            continue
        instruction, completions = row.get("instruction"), row.get("completions")
        if not isinstance(instruction, str) or not isinstance(completions, list) or not completions:
            records.skip("missing_field", where)
            continue
        scored = [(s, c) for c in completions if isinstance(c, dict) and (s := mean_rating(c)) is not None]
        if not scored:
            records.skip("no_rating", where)
            continue
        best = max(scored, key=lambda sc: sc[0])[1]  # max keeps the first of equals
        response = best.get("response")
        if not instruction.strip():
            records.skip("empty_prompt", where)
        elif not isinstance(response, str) or not response.strip():
            records.skip("empty_response", where)
        else:
            records.rows.append({"prompt": instruction, "response": response, "where": where})
            records.n_good += 1
    return records


class UltraFeedbackTask(TextTask):
    """`TextTask` reading UltraFeedback's own schema: `path` is the hub dataset (default) or a local
    copy (.jsonl, .json, .parquet, or a saved dataset folder); `max_rows` prompts for training (the
    paper: 10,000) and `val_size` more for validation, sampled with `seed` after the selection."""

    name = "ultrafeedback"

    def __init__(self, path: str = "openbmb/UltraFeedback", **kwargs):
        kwargs.setdefault("columns", {"prompt": "instruction", "response": "completions"})
        super().__init__(path, **kwargs)

    @cached_property
    def records(self) -> Records:
        records = best_responses(self.source.rows(), self.path)
        # the bad fraction is that of the whole set, before the sample is drawn
        records.check(self.max_bad_fraction, "data.task.max_bad_fraction")
        random.Random(f"ultrafeedback:{self.seed}").shuffle(records.rows)
        if self.max_rows is not None:
            del records.rows[self.max_rows + self.val_size :]
        if len(records.rows) <= self.val_size:
            raise ConfigError(
                f"{self.path}: {len(records.rows)} usable prompts, not more than data.task.val_size={self.val_size}"
            )
        return records

    def head(self, n: int) -> list[dict]:
        return self.records.rows[:n]

    def fingerprint(self) -> str:
        return hashlib.sha1(f"{super().fingerprint()}:best-mean-rating".encode()).hexdigest()[:16]
