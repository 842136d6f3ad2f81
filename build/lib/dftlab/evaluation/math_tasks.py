"""The math benchmarks of the DFT paper as an evaluation task: one test split per benchmark set.

Each set is a `<set>/test.jsonl` under a local folder (`data_dir`, or the environment variable
`DFTLAB_BENCHMARKS_DIR`), or a Hugging Face hub dataset for users with network access (`hub`).
The prompt is the paper's chain-of-thought prompt, put in the user turn of the chat template; a
completion is correct when its final answer (`math_answers.extract_answer`) is equivalent to the
gold one (`math_answers.is_equivalent`).

This task only evaluates: the benchmark sets are test data and must never be trained on.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from dftlab.errors import ConfigError
from dftlab.evaluation.math_answers import extract_answer, extract_boxed, grade_many
from dftlab.tasks import EvalTask

log = logging.getLogger(__name__)

ENV_DIR = "DFTLAB_BENCHMARKS_DIR"
PROMPT_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."


def _amc_answer(row: dict) -> str:
    value = row["answer"]  # stored as a float: 27.0
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


@dataclass(frozen=True)
class BenchmarkSet:
    question: str  # the field holding the problem statement
    gold: Callable[[dict], str | None]  # the gold answer of a row
    rows: int  # the size of the published test set: another count is worth a warning


SETS: dict[str, BenchmarkSet] = {
    "math_oai": BenchmarkSet("problem", lambda r: r["answer"], 500),  # MATH-500
    "minerva_math": BenchmarkSet("problem", lambda r: extract_boxed(r["solution"]), 272),
    "olympiadbench": BenchmarkSet("question", lambda r: r["final_answer"][0], 675),
    "aime24": BenchmarkSet("problem", lambda r: r["answer"], 30),
    "amc23": BenchmarkSet("problem", _amc_answer, 40),
    "gsm8k": BenchmarkSet("question", lambda r: r["answer"].split("####")[-1].replace(",", "").strip(), 1319),
}
DFT_SETS = ("math_oai", "minerva_math", "olympiadbench", "aime24", "amc23")  # Table 1 of the paper
_ID_FIELDS = ("unique_id", "id", "idx")


class MathTask(EvalTask):
    """Evaluation on math benchmark sets; `test_splits` maps each set's name to its rows
    (`prompt`, `answer`, `id`).

    sets: names from `SETS`, by default the five of the paper (`DFT_SETS`).
    data_dir: the folder holding `<set>/test.jsonl`; by default `$DFTLAB_BENCHMARKS_DIR`.
    hub: per set, a Hugging Face dataset to load instead: its name, or the keyword arguments of
        `datasets.load_dataset` (`path`, `name`, `split`, ...); the split defaults to `test`. Its
        rows need the fields of the local files.
    max_problems: the first n problems of each set (all when null).
    prompt_suffix: the line appended to each question (the paper's chain-of-thought prompt).
    timeout: seconds for each answer check; one that runs out counts as wrong.
    lenient: the Qwen2.5-Math grader's leniencies on numbers (see `math_answers.is_equivalent`).
    """

    name = "math"
    chat_template = True

    def __init__(
        self,
        sets: list[str] | tuple[str, ...] = DFT_SETS,
        data_dir: str | None = None,
        hub: Mapping[str, str | Mapping] | None = None,
        max_problems: int | None = None,
        max_new_tokens: int = 4096,
        prompt_suffix: str = PROMPT_SUFFIX,
        timeout: float = 5.0,
        lenient: bool = False,
    ):
        self.sets = list(sets)
        unknown = [s for s in self.sets if s not in SETS]
        if unknown or not self.sets:
            raise ConfigError(f"data.task.sets={self.sets}: choose from {', '.join(SETS)}")
        self.hub = dict(hub or {})
        if extra := [s for s in self.hub if s not in SETS]:
            raise ConfigError(f"data.task.hub names unknown sets {extra}: choose from {', '.join(SETS)}")
        if max_problems is not None and max_problems < 1:
            raise ConfigError(f"data.task.max_problems={max_problems}: give a positive count or null (all)")
        if max_new_tokens < 1:
            raise ConfigError(f"data.task.max_new_tokens={max_new_tokens}: must be >= 1")
        if timeout <= 0:
            raise ConfigError(f"data.task.timeout={timeout}: seconds per answer check, must be > 0")
        self.max_problems, self.new_tokens = max_problems, max_new_tokens
        self.prompt_suffix, self.timeout, self.lenient = prompt_suffix, timeout, lenient
        # a missing file fails now, before any training, not when the evaluation starts
        self.files = {s: self._local_file(s, data_dir) for s in self.sets if s not in self.hub}

    @staticmethod
    def _local_file(name: str, data_dir: str | None) -> Path:
        setting = "data.task.data_dir" if data_dir else f"the environment variable {ENV_DIR}"
        folder = data_dir or os.environ.get(ENV_DIR)
        if not folder:
            raise ConfigError(
                f"the math benchmark set {name!r} is read from <folder>/{name}/test.jsonl: set data.task.data_dir "
                f"or {ENV_DIR} to that folder, or name a hub dataset in data.task.hub.{name}"
            )
        path = Path(folder).expanduser() / name / "test.jsonl"
        if not path.is_file():
            raise ConfigError(f"{setting}={folder}: {path} does not exist")
        return path

    def _read(self, name: str) -> list[tuple[str, dict]]:
        """(where, row) pairs, `where` naming the file and line (or hub dataset and index)."""
        if name in self.hub:
            from datasets import load_dataset

            spec = self.hub[name]
            args = {"path": spec, "split": "test"} if isinstance(spec, str) else {"split": "test", **spec}
            if not args.get("path"):
                raise ConfigError(f"data.task.hub.{name}={spec!r}: give a dataset name, or a mapping with `path`")
            where = f"data.task.hub.{name} ({args['path']}) row"
            return [(f"{where} {i}", dict(r)) for i, r in enumerate(load_dataset(**args))]
        path, rows = self.files[name], []
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append((f"{path}:{line_no}", json.loads(line)))
                except json.JSONDecodeError as err:
                    raise ConfigError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
        return rows

    def _rows(self, name: str) -> list[dict[str, str]]:
        spec, out, raw = SETS[name], [], self._read(name)
        if len(raw) != spec.rows:
            log.warning("%s has %d problems, the published set %d: results will not compare", name, len(raw), spec.rows)
        for index, (where, row) in enumerate(raw[: self.max_problems]):
            try:
                question, gold = row[spec.question], spec.gold(row)
            except (KeyError, IndexError, TypeError, AttributeError) as err:
                raise ConfigError(f"{where}: not a {name} row, no {err} (see the field table of {name})") from None
            if gold is None or not str(gold).strip():
                raise ConfigError(f"{where}: no gold answer")
            row_id = next((row[k] for k in _ID_FIELDS if row.get(k) is not None), index)
            prompt = f"{question}\n{self.prompt_suffix}" if self.prompt_suffix else question
            out.append({"prompt": prompt, "answer": str(gold).strip(), "id": str(row_id)})
        return out

    @cached_property
    def test_splits(self) -> dict[str, list[dict[str, str]]]:
        return {name: self._rows(name) for name in self.sets}

    def score(self, row: dict, completion: str) -> dict[str, bool]:
        """`correct`: the final answer equals the gold one; `well_formed`: it is in a `\\boxed{}`."""
        return self.score_many([row], [completion])[0]

    def score_many(self, rows: list[dict], completions: list[str]) -> list[dict[str, bool]]:
        """`score` for many completions at once, the slow checks in parallel."""
        correct = grade_many(
            [(extract_answer(c), r["answer"]) for r, c in zip(rows, completions, strict=True)],
            self.timeout,
            lenient=self.lenient,
        )
        return [{"correct": ok, "well_formed": extract_boxed(c) is not None} for ok, c in zip(correct, completions)]

    def max_new_tokens(self) -> int:
        return self.new_tokens
