"""The paper's recipes compose, and run a few steps with the model and data swapped for tiny local
stand-ins (the same code path: a local model directory with a chat template, a local data file)."""

import json
import os

import pytest

from dftlab.config import CONFIG_DIR, compose_config
from dftlab.run import run
from tests.conftest import tiny_lm

RECIPES = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*numina*.yaml"))
BENCHMARKS = os.environ.get("DFTLAB_BENCHMARKS_DIR")


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    from dftlab.data.tokenizer import char_tokenizer

    root = tmp_path_factory.mktemp("stand_ins")
    chars = "0123456789+-*/=()., abcdefghijklmnopqrstuvwxyz\\{}^$?\n"
    tok = char_tokenizer(chars)
    # roles and an end-of-turn token, as real templates have: the assistant turns are located in its rendering
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}</s>\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant: {% endif %}")
    lm = tiny_lm("qwen2", vocab=len(tok), tie=True)
    lm.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    rows = [{"problem": f"what is {a}+{b}?", "solution": f"{a}+{b}={a + b}, so \\boxed{{{a + b}}}"}
            for a in range(8) for b in range(8)]
    (root / "numina.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def _overrides(recipe, stand_ins, run_dir):
    eval_task = [f"data.task.eval_task.data_dir={BENCHMARKS}", "data.task.eval_task.max_problems=2",
                 "data.task.eval_task.max_new_tokens=8"] if BENCHMARKS else ["data.task.eval_task=null"]
    return [
        f"experiment={recipe}", "debug=recipe", f"model.name_or_path={stand_ins / 'model'}",
        f"data.task.path={stand_ins / 'numina.jsonl'}", "eval.samples.n=2", f"paths.output_dir={run_dir}", *eval_task,
    ]


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes_as_the_paper_says(recipe):
    cfg = compose_config([f"experiment={recipe}"])
    assert cfg.data.batch_size == 256 and cfg.data.max_length == 2048
    assert cfg.optim.lr == (2e-5 if "llama" in recipe else 5e-5)
    assert list(cfg.optim.betas) == [0.9, 0.95] and cfg.optim.weight_decay == 0.01
    assert cfg.optim.warmup_ratio == 0.1 and cfg.optim.grad_clip == 1.0 and cfg.trainer.max_epochs == 1
    assert cfg.trainer.strategy._target_.endswith("FSDP2Strategy") and cfg.trainer.strategy.param_dtype == "bfloat16"
    assert cfg.data.task.path == "AI-MO/NuminaMath-CoT" and cfg.data.task.max_rows == 100_000
    assert list(cfg.data.task.eval_task.sets) == ["math_oai", "minerva_math", "olympiadbench", "aime24", "amc23"]
    assert cfg.eval.samples.n == 16 and cfg.eval.samples.temperature == 1.0
    assert cfg.model.lora.r == (8 if "lora" in recipe else 0)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_with_stand_ins(recipe, stand_ins, tmp_path, monkeypatch):
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    summary = run(compose_config(_overrides(recipe, stand_ins, tmp_path / "run")))
    assert summary["steps"] == 2
    if BENCHMARKS:
        assert set(summary["eval"]["finetuned"]) == {"math_oai", "minerva_math", "olympiadbench", "aime24", "amc23"}
