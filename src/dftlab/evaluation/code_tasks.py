"""HumanEval and HumanEval+ (the DFT paper's Table 3) as an evaluation task: one test split per set.

The prompt is the problem's signature and docstring. Plain completion (`chat: false`): the model
continues the prompt, cut at the next top-level statement (`STOP`), and the program is prompt +
completion. Chat (`chat: true`): the prompt goes in the user turn with an instruction, the code is
taken from the answer's fenced block (the one that defines the entry point), and the program is
the prompt (for its imports and helpers) followed by that code.

A completion passes HumanEval when `program + test + check(entry_point)` runs to its end in the
sandbox (`sandbox.py`); it passes HumanEval+ when, in the same process, it also returns the
canonical solution's output on every `base_input` and `plus_input` the contract allows (compared
as `code_checks` describes). The canonical outputs are computed once, in the sandbox, and cached
under `cache_dir`, keyed by the content of the file and of `code_checks`. The wall-clock limit of a
HumanEval+ program is `timeout` plus `time_factor` times the canonical solution's time on the
same inputs.

Each set is `<data_dir>/humaneval/HumanEval.jsonl.gz` or `<data_dir>/humanevalplus/HumanEvalPlus.
jsonl.gz` (data_dir: by default `$DFTLAB_BENCHMARKS_DIR`), or a hub dataset (`hub`) with the same
fields. These are test sets: never train on them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from functools import cached_property
from pathlib import Path

from dftlab.errors import ConfigError
from dftlab.evaluation import code_checks, sandbox
from dftlab.evaluation.math_tasks import benchmark_file, hub_rows, jsonl_rows
from dftlab.tasks import EvalTask

log = logging.getLogger(__name__)

SETS = {  # name: (file under data_dir, the fields a row needs)
    "humaneval": ("humaneval/HumanEval.jsonl.gz", ("task_id", "prompt", "entry_point", "test")),
    "humaneval_plus": (
        "humanevalplus/HumanEvalPlus.jsonl.gz",
        (
            "task_id",
            "prompt",
            "entry_point",
            "test",
            "canonical_solution",
            "base_input",
            "plus_input",
            "atol",
            "contract",
        ),
    ),
}
ROWS = 164
# a plain completion ends where the next top-level statement starts
STOP = ("\ndef ", "\nclass ", "\nif ", "\nprint(", "\nassert ", "\n#", "\n@", "\n```")
INSTRUCTION = "Complete the following Python function. Answer with the complete function in one Python code block."
CHECKS_SOURCE = Path(code_checks.__file__).read_text()
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(answer: str, entry_point: str) -> str | None:
    """The code of a chat answer: the first fenced block that defines `entry_point` (else the first
    block; an unclosed last block counts); None when the answer has no fenced block."""
    blocks = _FENCE.findall(answer)
    if not blocks:
        return None
    defines = re.compile(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
    return next((b for b in blocks if defines.search(b)), blocks[0])


def _checks_call(expression: str) -> str:
    """Source that runs `code_checks` in a namespace of its own and evaluates `expression` in it."""
    return f"\n\n_dftlab_checks = {{}}\nexec({CHECKS_SOURCE!r}, _dftlab_checks)\n{expression}\n"


class CodeTask(EvalTask):
    """Evaluation on HumanEval / HumanEval+; `test_splits` maps each set's name to its rows.

    sets: `humaneval`, `humaneval_plus` (either or both).
    data_dir, hub: where the sets are read from (see the module's docstring); a hub dataset is its
        name or the keyword arguments of `datasets.load_dataset` (the split defaults to `test`).
    max_problems: the first n problems of each set (all when null).
    chat: the prompt in the chat template, the code from the answer's code block.
    timeout: wall-clock seconds per program (HumanEval+: plus `time_factor` x the canonical time).
    workers: programs run at once (null: one per CPU core).
    memory_mb: address-space limit per program.
    cache_dir: where the canonical outputs of HumanEval+ are kept (null: $DFTLAB_CACHE or logs/cache).
    """

    name = "code"

    def __init__(
        self,
        sets: list[str] | tuple[str, ...] = ("humaneval",),
        data_dir: str | None = None,
        hub: Mapping[str, str | Mapping] | None = None,
        max_problems: int | None = None,
        max_new_tokens: int = 512,
        chat: bool = False,
        instruction: str = INSTRUCTION,
        timeout: float = 5.0,
        time_factor: float = 4.0,
        workers: int | None = None,
        memory_mb: int = 4096,
        cache_dir: str | None = None,
    ):
        self.sets = list(sets)
        if not self.sets or [s for s in self.sets if s not in SETS]:
            raise ConfigError(f"data.task.sets={self.sets}: choose from {', '.join(SETS)}")
        self.hub = dict(hub or {})
        if extra := [s for s in self.hub if s not in SETS]:
            raise ConfigError(f"data.task.hub names unknown sets {extra}: choose from {', '.join(SETS)}")
        checks = {
            "max_problems": (max_problems, max_problems is None or max_problems >= 1, "null (all) or >= 1"),
            "max_new_tokens": (max_new_tokens, max_new_tokens >= 1, ">= 1"),
            "timeout": (timeout, timeout > 0, "seconds per program, > 0"),
            "time_factor": (time_factor, time_factor >= 0, ">= 0"),
            "memory_mb": (memory_mb, memory_mb >= 256, ">= 256"),
            "workers": (workers, workers is None or workers >= 1, "null (one per CPU core) or >= 1"),
        }
        for key, (value, ok, allowed) in checks.items():
            if not ok:
                raise ConfigError(f"data.task.{key}={value!r} is not allowed: {allowed}")
        self.max_problems, self.new_tokens, self.chat, self.instruction = (
            max_problems,
            max_new_tokens,
            chat,
            instruction,
        )
        self.limits = sandbox.Limits(timeout_s=timeout, memory_mb=memory_mb)
        self.time_factor, self.workers = time_factor, workers
        self.cache_dir = Path(cache_dir or os.environ.get("DFTLAB_CACHE") or "logs/cache").expanduser()
        # a missing file fails now, before any training, not when the evaluation starts
        self.files = {
            s: benchmark_file(s, SETS[s][0], data_dir, "code benchmark set") for s in self.sets if s not in self.hub
        }

    # --- the problems ----------------------------------------------------------------------

    @property
    def chat_template(self) -> bool:
        return self.chat

    @property
    def stop(self) -> tuple[str, ...]:
        return () if self.chat else STOP

    def max_new_tokens(self) -> int:
        return self.new_tokens

    def _problems(self, name: str) -> list[dict]:
        raw = hub_rows(name, self.hub[name]) if name in self.hub else jsonl_rows(self.files[name])
        if len(raw) != ROWS:
            log.warning("%s has %d problems, the published set %d: results will not compare", name, len(raw), ROWS)
        for where, row in raw:
            if missing := [f for f in SETS[name][1] if f not in row]:
                raise ConfigError(f"{where}: not a {name} row, no {missing}")
        return [row for _, row in raw]

    def _prompt(self, problem: dict) -> str:
        if not self.chat:
            return problem["prompt"]
        return f"{self.instruction}\n\n```python\n{problem['prompt'].strip()}\n```"

    @cached_property
    def test_splits(self) -> dict[str, list[dict]]:
        out = {}
        for name in self.sets:
            problems = self._problems(name)[: self.max_problems]
            out[name] = [{"prompt": self._prompt(p), "id": p["task_id"], "set": name, "problem": p} for p in problems]
        return out

    # --- the programs ----------------------------------------------------------------------

    def program(self, problem: dict, completion: str) -> str | None:
        """The candidate's code (None: a chat answer without a code block), without the tests."""
        if not self.chat:
            return problem["prompt"] + completion
        code = extract_code(completion, problem["entry_point"])
        return None if code is None else f"{problem['prompt']}\n\n{code}"

    def check_program(self, row: dict, code: str, reference: dict | None) -> str:
        """`code`, then the problem's test, then (HumanEval+) the comparison with the reference."""
        p = row["problem"]
        out = f"{code}\n\n{p['test']}\n\ncheck({p['entry_point']})\n"
        if reference is not None:
            data = json.dumps({"inputs": p["base_input"] + p["plus_input"], **reference})
            out += _checks_call(
                f"_dftlab_checks['check_outputs']({p['entry_point']}, {data!r}, {float(p['atol'])!r}, "
                f"{p['entry_point']!r})"
            )
        return out

    def _limits(self, reference: dict | None) -> sandbox.Limits:
        if reference is None:
            return self.limits
        return replace(self.limits, timeout_s=self.limits.timeout_s + self.time_factor * reference["seconds"])

    # --- the reference outputs of HumanEval+ -------------------------------------------------

    def _cache_file(self, problems: list[dict]) -> Path:
        digest = hashlib.sha256(json.dumps(problems, sort_keys=True).encode() + CHECKS_SOURCE.encode())
        return self.cache_dir / "humaneval_plus" / f"reference-{digest.hexdigest()[:16]}.json"

    @cached_property
    def references(self) -> dict[str, dict]:
        """Per HumanEval+ task id (of the problems evaluated): {"valid", "outputs" (tagged),
        "seconds"} of the canonical solution on base_input + plus_input, computed in the sandbox
        once and cached."""
        if "humaneval_plus" not in self.sets:
            return {}
        problems = [row["problem"] for row in self.test_splits["humaneval_plus"]]
        cache = self._cache_file(problems)
        if cache.is_file():
            return json.loads(cache.read_text())
        log.info("computing the canonical outputs of HumanEval+ (once; cached in %s)", cache)
        programs = [self.reference_program(p) for p in problems]
        limits = replace(self.limits, timeout_s=600.0, output_kb=1 << 20, keep_bytes=None)
        results = sandbox.run_many(programs, limits, self.workers)
        out = {}
        for p, r in zip(problems, results):
            if not r.passed:
                raise RuntimeError(f"HumanEval+ {p['task_id']}: the canonical solution failed ({r.status}: {r.error})")
            out[p["task_id"]] = json.loads(r.stdout)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(out))
        tmp.replace(cache)
        return out

    @staticmethod
    def reference_program(p: dict) -> str:
        """A program that prints the canonical solution's outputs (`code_checks.reference_outputs`)."""
        contract = f"{p['prompt']}{p['contract']}    pass\n"
        solution = p["prompt"] + p["canonical_solution"]
        inputs = json.dumps(p["base_input"] + p["plus_input"])
        ep = p["entry_point"]
        return _checks_call(
            f"import json\n_contract, _solution = {{}}, {{}}\nexec({contract!r}, _contract)\n"
            f"exec({solution!r}, _solution)\nprint(json.dumps(_dftlab_checks['reference_outputs']"
            f"(_contract[{ep!r}], _solution[{ep!r}], json.loads({inputs!r}), {float(p['atol'])!r}, {ep!r})))"
        )

    # --- grading ---------------------------------------------------------------------------

    def score(self, row: dict, completion: str) -> dict:
        return self.score_many([row], [completion])[0]

    def score_many(self, rows: list[dict], completions: list[str]) -> list[dict]:
        """Each completion's program run in the sandbox, many at once. `correct`: it passed;
        `well_formed`: it had code that compiles; `status`, `error`: what happened."""
        jobs, out = [], []
        for i, (row, completion) in enumerate(zip(rows, completions, strict=True)):
            code = self.program(row["problem"], completion)
            if code is None:
                out.append({"correct": False, "well_formed": False, "status": "no_code", "error": "no code block"})
                continue
            reference = self.references[row["id"]] if row["set"] == "humaneval_plus" else None
            jobs.append((i, self.check_program(row, code, reference), self._limits(reference)))
            out.append(None)
        results = sandbox.run_many([j[1] for j in jobs], [j[2] for j in jobs], self.workers)
        for (i, _, _), r in zip(jobs, results):
            out[i] = {
                "correct": r.passed,
                "well_formed": r.status != "syntax_error",
                "status": r.status,
                "error": r.error[:200],
            }
        return out
