"""HumanEval and HumanEval+ on the real files: the canonical solutions pass, broken ones fail, and
a known-wrong set of our own grades as expected. Skipped without DFTLAB_BENCHMARKS_DIR."""

import pytest

from dftlab.evaluation.code_tasks import CodeTask

SETS = ("humaneval", "humaneval_plus")


def last_line_removed(p: dict) -> str:
    return "\n".join(p["canonical_solution"].rstrip().splitlines()[:-1]) + "\n"


def memorises_the_base_tests(p: dict, base_inputs: list) -> str:
    """The canonical solution behind a wrapper that answers None to every input HumanEval's own
    tests do not use: it passes HumanEval and cannot pass HumanEval+."""
    seen = {repr(list(args)) for args in base_inputs}
    ep = p["entry_point"]
    return (
        f"{p['canonical_solution']}\n\n_known = {ep}\n_seen = {seen!r}\n\n"
        f"def {ep}(*args):\n    return _known(*args) if repr(list(args)) in _seen else None\n"
    )


KINDS = {  # known-wrong completions that no problem may pass
    "exits_before_the_tests": lambda p: p["canonical_solution"] + "\nimport sys\nsys.exit(0)\n",
    "syntax_error": lambda p: p["canonical_solution"] + "    return (\n",
    "raises": lambda p: "    raise NotImplementedError\n",
}


@pytest.fixture(scope="module")
def task(benchmarks_dir, tmp_path_factory):
    if not (benchmarks_dir / "humanevalplus" / "HumanEvalPlus.jsonl.gz").is_file():
        pytest.skip("the HumanEval files are not in DFTLAB_BENCHMARKS_DIR")
    return CodeTask(sets=list(SETS), data_dir=str(benchmarks_dir), cache_dir=str(tmp_path_factory.mktemp("cache")))


def _grade(task, name: str, make) -> list[dict]:
    rows = task.test_splits[name]
    return task.score_many(rows, [make(r["problem"]) for r in rows])


def _passed(scores: list[dict]) -> int:
    return sum(s["correct"] for s in scores)


def test_the_first_canonical_solutions_pass(benchmarks_dir, tmp_path):
    if not (benchmarks_dir / "humanevalplus" / "HumanEvalPlus.jsonl.gz").is_file():
        pytest.skip("the HumanEval files are not in DFTLAB_BENCHMARKS_DIR")
    task = CodeTask(sets=list(SETS), data_dir=str(benchmarks_dir), max_problems=6, cache_dir=str(tmp_path))
    for name in SETS:
        scores = _grade(task, name, lambda p: p["canonical_solution"])
        assert [s["status"] for s in scores] == ["passed"] * 6, scores


@pytest.mark.slow
def test_every_canonical_solution_passes(task):
    assert {len(v) for v in task.test_splits.values()} == {164}
    assert sum(not ok for ref in task.references.values() for ok in ref["valid"]) == 63  # refused by the contracts
    for name in SETS:
        scores = _grade(task, name, lambda p: p["canonical_solution"])
        assert _passed(scores) == 164, [(s["status"], s["error"]) for s in scores if not s["correct"]]


@pytest.mark.slow
def test_broken_canonical_solutions_fail_on_nearly_all(task):
    for name in SETS:
        counts = {
            kind: _passed(_grade(task, name, make))
            for kind, make in (("last_line_removed", last_line_removed), ("return_0", lambda p: "    return 0\n"))
        }
        print(name, counts)
        assert all(n <= 8 for n in counts.values()), (name, counts)  # 5% at most


@pytest.mark.slow
def test_a_known_wrong_set_grades_as_expected(task):
    plus_rows = {r["id"]: r["problem"] for r in task.test_splits["humaneval_plus"]}
    base_inputs = {tid: p["base_input"] for tid, p in plus_rows.items()}
    memorised = {
        name: _grade(task, name, lambda p: memorises_the_base_tests(p, base_inputs[p["task_id"]])) for name in SETS
    }
    print("memorises_the_base_tests", {name: _passed(s) for name, s in memorised.items()})
    assert _passed(memorised["humaneval"]) >= 150  # HumanEval's own tests cannot tell (155 measured)
    assert _passed(memorised["humaneval_plus"]) == 0  # HumanEval+'s inputs can
    for kind, make in KINDS.items():
        got = {name: _grade(task, name, make) for name in SETS}
        print(kind, {name: _passed(s) for name, s in got.items()})
        assert _passed(got["humaneval"]) == _passed(got["humaneval_plus"]) == 0
        if kind == "syntax_error":
            assert not any(s["well_formed"] for scores in got.values() for s in scores)
