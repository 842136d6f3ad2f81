"""HumanEval / HumanEval+ grading on problems of our own in the real files' format: what passes, what
fails and why, the HumanEval+ comparison rules (contract, tolerance, find_zero, types, large
outputs), the chat variant, the cached reference, the stop strings, bad input."""

import gzip
import json

import pytest

from dftlab.config import compose_config, instantiate
from dftlab.errors import ConfigError
from dftlab.evaluation import code_checks, runner, sandbox
from dftlab.evaluation.code_tasks import STOP, CodeTask, extract_code

ADD = {
    "task_id": "T/0",
    "entry_point": "add",
    "prompt": 'def add(a: int, b: int) -> int:\n    """The sum of a and b."""\n',
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(0, 0) == 0\n",
    "base_input": [[1, 2], [0, 0]],
    "plus_input": [[10**6, 1], [-5, 5], ["x", "y"]],
    "atol": 0,
    "contract": '    assert isinstance(a, int) and isinstance(b, int), "invalid inputs"\n',
}
HALVE = {
    "task_id": "T/1",
    "entry_point": "halve",
    "prompt": 'def halve(x: float) -> float:\n    """Half of x."""\n',
    "canonical_solution": "    return x / 2\n",
    "test": "def check(candidate):\n    assert abs(candidate(1.0) - 0.5) < 1e-3\n",
    "base_input": [[1.0]],
    "plus_input": [[3.0], [1e3]],
    "atol": 0,
    "contract": "",
}
FIND_ZERO = {
    "task_id": "T/2",
    "entry_point": "find_zero",
    "prompt": (
        "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\n\n\n"
        'def find_zero(xs: list) -> float:\n    """A zero of the polynomial with coefficients xs."""\n'
    ),
    "canonical_solution": (
        "    lo, hi = 0.0, 10.0\n    for _ in range(100):\n        mid = (lo + hi) / 2\n"
        "        if poly(xs, lo) * poly(xs, mid) <= 0:\n            hi = mid\n"
        "        else:\n            lo = mid\n    return lo\n"
    ),
    "test": "def check(candidate):\n    assert abs(poly([-1, 0, 1], candidate([-1, 0, 1]))) < 1e-4\n",
    "base_input": [[[-1, 0, 1]]],
    "plus_input": [[[-4, 0, 1]]],
    "atol": 1e-4,
    "contract": "",
}
PAIR = {
    "task_id": "T/3",
    "entry_point": "pair",
    "prompt": 'def pair(a, b):\n    """The tuple (a, b)."""\n',
    "canonical_solution": "    return (a, b)\n",
    "test": "def check(candidate):\n    assert candidate(1, 2) == (1, 2)\n",
    "base_input": [[1, 2]],
    "plus_input": [[[1], {"k": 2}]],
    "atol": 0,
    "contract": "",
}
COUNT = {
    "task_id": "T/4",
    "entry_point": "count",
    "prompt": 'def count(n: int) -> list:\n    """[0, 1, ..., n - 1]."""\n',
    "canonical_solution": "    return list(range(n))\n",
    "test": "def check(candidate):\n    assert candidate(3) == [0, 1, 2]\n",
    "base_input": [[3]],
    "plus_input": [[5000]],
    "atol": 0,
    "contract": "",  # 5000 numbers: kept as a digest
}
PROBLEMS = [ADD, HALVE, FIND_ZERO, PAIR, COUNT]
PLUS_ONLY = ("base_input", "plus_input", "atol", "contract")

# (problem, completion, passes HumanEval, passes HumanEval+)
CASES = [
    (ADD, "    return a + b\n", True, True),
    (ADD, "    return a - b\n", False, False),
    (ADD, "    return 3 if a == 1 else 0\n", True, False),  # the base tests only
    (ADD, "    return a + b if isinstance(a, int) else None\n", True, True),  # differs only where the contract says no
    (HALVE, "    return x / 2 + 1e-9\n", True, True),  # within the float tolerance
    (HALVE, "    return x / 2 + 1e-4\n", True, False),
    (FIND_ZERO, "    return -(-xs[0]) ** 0.5\n", True, True),  # another zero than the canonical one
    (FIND_ZERO, "    return 1.0\n", True, False),
    (PAIR, "    return [a, b]\n", False, False),  # a list is not a tuple
    (COUNT, "    return [float(i) for i in range(n)]\n", True, True),  # Python calls them equal
    (COUNT, "    return list(range(n)) if n < 10 else list(range(n - 1))\n", True, False),
    (ADD, "    return a +\n", False, False),
    (ADD, "    import sys\n    sys.exit(0)\n", False, False),
]


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("code_sets")
    _write(
        root / "humaneval" / "HumanEval.jsonl.gz",
        [{k: v for k, v in p.items() if k not in PLUS_ONLY} for p in PROBLEMS],
    )
    _write(root / "humanevalplus" / "HumanEvalPlus.jsonl.gz", PROBLEMS)
    return root


@pytest.fixture(scope="module")
def task(data_dir, tmp_path_factory):
    return CodeTask(
        sets=["humaneval", "humaneval_plus"],
        data_dir=str(data_dir),
        timeout=10,
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )


def test_the_splits_and_prompts(task):
    assert {k: [r["id"] for r in v] for k, v in task.test_splits.items()} == {
        "humaneval": [p["task_id"] for p in PROBLEMS],
        "humaneval_plus": [p["task_id"] for p in PROBLEMS],
    }
    assert task.test_splits["humaneval"][0]["prompt"] == ADD["prompt"]
    assert not task.chat_template and task.stop == STOP and task.max_new_tokens() == 512


def test_each_completion_grades_as_expected(task):
    rows = {r["id"]: r for r in task.test_splits["humaneval"]}
    plus = {r["id"]: r for r in task.test_splits["humaneval_plus"]}
    completions = [c for _, c, _, _ in CASES]
    base = task.score_many([rows[p["task_id"]] for p, *_ in CASES], completions)
    extra = task.score_many([plus[p["task_id"]] for p, *_ in CASES], completions)
    got = [(b["correct"], e["correct"]) for b, e in zip(base, extra)]
    assert got == [(he, hp) for *_, he, hp in CASES], [
        (c, b["error"], e["error"]) for c, b, e in zip(completions, base, extra)
    ]
    assert base[-2]["status"] == "syntax_error" and not base[-2]["well_formed"]
    assert base[-1]["error"].startswith("SystemExit") and base[-1]["well_formed"]
    assert "input 2" in extra[2]["error"]  # the first plus input (after the two base inputs)


def test_the_reference_skips_what_the_contract_refuses_and_is_cached(task, data_dir, monkeypatch):
    ref = task.references
    assert ref["T/0"]["valid"] == [True, True, True, True, False] and ref["T/0"]["outputs"][:4] == [3, 0, 1000001, 0]
    assert code_checks.decode(ref["T/3"]["outputs"][1]) == ([1], {"k": 2})
    assert set(ref["T/4"]["outputs"][1]) == {"h"}  # a large exact output: its digest
    monkeypatch.setattr(sandbox, "run_many", lambda *a, **k: pytest.fail("recomputed"))
    again = CodeTask(sets=["humaneval_plus"], data_dir=str(data_dir), cache_dir=str(task.cache_dir))
    assert again.references == ref


def test_values_cross_the_boundary_intact():
    value = [None, True, 1.5, float("inf"), 10**5000, (1, [2]), {3, 4}, frozenset({5}), {(1, 2): "x"}, 2j, b"\x00"]
    assert code_checks.decode(json.loads(json.dumps(code_checks.encode(value)))) == value
    assert code_checks.digest([1, 2.0, True]) == code_checks.digest([1, 2, 1])
    assert code_checks.digest({1: 2, 3: 4}) == code_checks.digest({3: 4, 1: 2})
    assert code_checks.digest((1, 2)) != code_checks.digest([1, 2]) and code_checks.digest([1]) != code_checks.digest(
        [2]
    )


def test_the_chat_variant(data_dir, tmp_path):
    task = CodeTask(sets=["humaneval"], data_dir=str(data_dir), chat=True, cache_dir=str(tmp_path))
    row = task.test_splits["humaneval"][0]
    assert task.chat_template and task.stop == () and ADD["prompt"].strip() in row["prompt"]
    answers = [
        "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\nDone.",
        # the block with the def
        "```python\nimport math\n```\n```py\ndef add(a, b):\n    return math.fsum([a, b])\n```",
        "```python\ndef add(a, b):\n    return a + b",  # cut by the token limit
        "def add(a, b):\n    return a + b",  # no code block
        "```python\ndef add(a, b):\n    return a * b\n```",
    ]
    scores = task.score_many([row] * len(answers), answers)
    assert [s["correct"] for s in scores] == [True, False, True, False, False]
    assert scores[1]["error"].startswith("NameError")  # math was imported in the other block
    assert scores[3]["status"] == "no_code" and not scores[3]["well_formed"]


def test_extract_code():
    assert extract_code("```\nx = 1\n```", "f") == "x = 1\n"
    assert extract_code("no code", "f") is None
    assert extract_code("```python\ny = 2\n```\n```python\ndef f():\n    pass\n```", "f") == "def f():\n    pass\n"


def test_the_runner_passes_stop_strings_and_completes_a_shared_prompt_once(task, monkeypatch):
    seen = {}

    def fake_generate(lm, tokenizer, prompts, **kwargs):
        seen.update(prompts=prompts, stop=kwargs["stop"])
        return [["    return a + b\n"] if "add" in p else ["    pass\n"] for p in prompts]

    monkeypatch.setattr(runner, "generate", fake_generate)
    records = runner.generate_and_score(None, None, task, runner.select(task, None, 2))
    assert tuple(seen["stop"]) == STOP and len(seen["prompts"]) == 2  # 2 problems, shared by the 2 splits
    assert [[s["correct"] for s in r["scores"]] for r in records["humaneval_plus"]] == [[True], [False]]
    assert records["humaneval"][0]["completions"] == records["humaneval_plus"][0]["completions"]


def test_the_configs_build(data_dir):
    for name, sets in (("humaneval", ["humaneval"]), ("humaneval_plus", ["humaneval_plus"])):
        cfg = compose_config([f"eval_task={name}", f"eval_task.data_dir={data_dir}"], config_name="eval")
        task = instantiate(cfg.eval_task)
        assert task.sets == sets and len(task.test_splits[sets[0]]) == len(PROBLEMS)


def test_bad_input_is_named(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="data.task.sets"):
        CodeTask(sets=["mbpp"], data_dir=str(data_dir))
    with pytest.raises(ConfigError, match="data.task.timeout=0"):
        CodeTask(data_dir=str(data_dir), timeout=0)
    with pytest.raises(ConfigError, match="HumanEval.jsonl.gz does not exist"):
        CodeTask(data_dir=str(tmp_path))
    _write(tmp_path / "humanevalplus" / "HumanEvalPlus.jsonl.gz", [{"task_id": "x", "prompt": "def f():\n"}])
    with pytest.raises(ConfigError, match=r"HumanEvalPlus.jsonl.gz:1: not a humaneval_plus row, no \['entry_point'"):
        _ = CodeTask(sets=["humaneval_plus"], data_dir=str(tmp_path)).test_splits
