"""The visual math benchmarks of the DFT paper's Table 4 (MathVerse, MathVision, WeMath) as an evaluation
task: one test split, each problem an image and its question in the user turn.

Graded as the benchmarks grade: a multiple-choice problem by the letter of the final answer (`\\boxed{B}`,
`(B)`, `B. 5`, or the text of an option), a free-form one by the math grader (`evaluation.math_answers`).
Rows of a benchmark come from `paths.<name>` (a local `.jsonl` / `.json` / `.parquet` file or folder, or a hub
dataset; null: the benchmark's hub dataset), with the benchmark's own fields (`BENCHMARKS`); images are paths (read from
`image_dir`, null: the file's folder) or images stored in the rows (written once to `image_cache`).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from dftlab.data.sources import Source, looks_local
from dftlab.errors import ConfigError
from dftlab.evaluation.math_answers import extract_answer, extract_boxed, grade_many
from dftlab.evaluation.math_tasks import PROMPT_SUFFIX
from dftlab.tasks import EvalTask
from dftlab.vision.task import _image


@dataclass(frozen=True)
class Benchmark:
    hub: str  # the published dataset
    split: str
    subset: str | None
    question: str
    images: tuple[str, ...]  # the image field, first present wins
    options: str | None  # a list of choices, or a "A. x; B. y" string


BENCHMARKS = {
    "mathverse": Benchmark("AI4Math/MathVerse", "testmini", "testmini", "question", ("image",), None),
    "mathvision": Benchmark("MathLLMs/MathVision", "test", None, "question", ("decoded_image", "image"), "options"),
    "wemath": Benchmark("We-Math/We-Math", "testmini", None, "question", ("image_path", "image"), "option"),
}
LETTERS = string.ascii_uppercase[:8]
_LETTER = re.compile(r"^\(?([A-H])\)?(?:[.:)\s]|$)")
_OPTION = re.compile(r"(?:^|[;\n]\s*)([A-H])[.:]\s*")


def options_of(value) -> dict[str, str]:
    """Choices by letter, from a list (`["3", "4"]`) or a string (`"A. 3; B. 4"`)."""
    if isinstance(value, list):
        return {LETTERS[i]: str(v).strip() for i, v in enumerate(value)}
    if not isinstance(value, str) or not value.strip():
        return {}
    marks = list(_OPTION.finditer(value))
    return {m.group(1): value[m.end(): marks[k + 1].start() if k + 1 < len(marks) else len(value)].strip(" ;\n")
            for k, m in enumerate(marks)}


def choice_letter(completion: str, options: dict[str, str]) -> str | None:
    """The letter a completion chooses: its final answer's leading letter, or the option whose text it is."""
    answer = (extract_answer(completion) or "").strip()
    if m := _LETTER.match(answer):
        return m.group(1)
    by_text = {text.lower(): letter for letter, text in options.items()}
    return by_text.get(answer.lower().rstrip("."))


class VisionMathTask(EvalTask):
    """Benchmarks of `BENCHMARKS` (`sets`), each read from `paths[name]` or else its hub dataset;
    `test_splits` maps each name to rows (`prompt` with the image, `answer`, `options`, `id`)."""

    chat_template = True

    name = "vision_math"

    def __init__(self, sets: list[str] | tuple[str, ...] = tuple(BENCHMARKS), paths: dict | None = None,
                 split: str | None = None, image_dir: str | None = None, image_cache: str | None = None,
                 max_problems: int | None = None, max_new_tokens: int = 2048, prompt_suffix: str = PROMPT_SUFFIX,
                 timeout: float = 5.0):
        self.sets, self.paths = list(sets), dict(paths or {})
        unknown = [b for b in [*self.sets, *self.paths] if b not in BENCHMARKS]
        if unknown or not self.sets:
            raise ConfigError(f"eval_task.sets={self.sets}, paths={list(self.paths)}: choose from "
                              f"{', '.join(BENCHMARKS)}")
        self.split, self.image_dir, self.image_cache = split, image_dir, image_cache
        self.max_problems, self.new_tokens, self.prompt_suffix, self.timeout = (max_problems, max_new_tokens,
                                                                                prompt_suffix, timeout)

    def _row(self, name: str, where: str, row: dict, index: int, base, cache) -> dict:
        spec = BENCHMARKS[name]
        field = next((f for f in spec.images if row.get(f) is not None), None)
        if field is None or not isinstance(row.get(spec.question), str) or row.get("answer") in (None, ""):
            raise ConfigError(f"{where}: not a {name} row (it needs {spec.question!r}, 'answer' and an image "
                              f"field of {spec.images})")
        options = options_of(row.get(spec.options)) if spec.options else {}
        question = row[spec.question]
        if options and spec.options == "options":  # MathVision lists its choices apart from the question
            question += "\n" + "\n".join(f"({k}) {v}" for k, v in options.items())
        answer = str(row["answer"]).strip()
        multiple_choice = bool(options) or row.get("question_type") == "multi-choice"
        text = f"{question}\n{self.prompt_suffix}" if self.prompt_suffix else question
        image = _image(row[field], base, cache)
        return {
            "prompt": [{"role": "user", "content": [{"type": "image", "image": image},
                                                    {"type": "text", "text": text}]}],
            "answer": answer, "options": options if multiple_choice else None,
            "id": str(next((row[k] for k in ("sample_index", "id", "ID") if row.get(k) is not None), index)),
        }

    def _rows(self, name: str) -> list[dict]:
        spec, path = BENCHMARKS[name], self.paths.get(name)
        source = Source(path or spec.hub, self.split or spec.split, None if path else spec.subset)
        base = Path(self.image_dir).expanduser() if self.image_dir else (
            Path(path).expanduser().parent if path and looks_local(path) else None)
        cache = Path(self.image_cache).expanduser() if self.image_cache else None
        rows = []
        for where, row in source.rows():
            if self.max_problems is not None and len(rows) >= self.max_problems:
                break
            if isinstance(row, str):
                raise ConfigError(f"{where}: {row}")
            rows.append(self._row(name, where, row, len(rows), base, cache))
        return rows

    @cached_property
    def test_splits(self) -> dict[str, list[dict]]:
        return {name: self._rows(name) for name in self.sets}

    def score_many(self, rows: list[dict], completions: list[str]) -> list[dict[str, bool]]:
        """Letters for multiple choice, the math grader for free-form answers; `well_formed`: a final answer
        was found (boxed, or a letter)."""
        free = [(i, (extract_answer(c), r["answer"])) for i, (r, c) in enumerate(zip(rows, completions, strict=True))
                if r.get("options") is None]
        graded = dict(zip((i for i, _ in free), grade_many([pair for _, pair in free], self.timeout)))
        out = []
        for i, (row, completion) in enumerate(zip(rows, completions, strict=True)):
            if row.get("options") is None:
                out.append({"correct": graded[i], "well_formed": extract_boxed(completion) is not None})
            else:
                letter = choice_letter(completion, row["options"])
                out.append({"correct": letter is not None and letter == row["answer"].strip("()").upper(),
                            "well_formed": letter is not None})
        return out

    def score(self, row: dict, completion: str) -> dict[str, bool]:
        return self.score_many([row], [completion])[0]

    def max_new_tokens(self) -> int:
        return self.new_tokens
