"""The paper's code recipes (Table 3) compose with its hyper-parameters, and run a few steps with the
model, UltraFeedback and the code sets swapped for tiny local stand-ins: a local model directory
with a chat template, a local UltraFeedback file in its own schema, HumanEval-format files of our
own problems (the same code path as the real ones)."""

import string

import pytest

from dftlab.config import CONFIG_DIR, compose_config
from dftlab.run import run
from tests.conftest import tiny_lm
from tests.data.test_ultrafeedback import ultrafeedback_rows, write_jsonl
from tests.evaluation.test_code_tasks import PLUS_ONLY, PROBLEMS, _write

RECIPES = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*_ultrafeedback.yaml"))
MODELS = {
    "qwen2.5-coder-3b_ultrafeedback": "Qwen/Qwen2.5-Coder-3B",
    "qwen2.5-coder-7b_ultrafeedback": "Qwen/Qwen2.5-Coder-7B",
    "qwen2.5-3b_ultrafeedback": "Qwen/Qwen2.5-3B",
}


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    from dftlab.data.tokenizer import char_tokenizer

    root = tmp_path_factory.mktemp("code_stand_ins")
    tok = char_tokenizer(string.printable)
    # roles and an end-of-turn token, as real templates have: the assistant turns are located in its rendering
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    lm = tiny_lm("qwen2", vocab=len(tok), tie=True)
    lm.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    write_jsonl(root / "ultrafeedback.jsonl", ultrafeedback_rows(40))
    _write(
        root / "code" / "humaneval" / "HumanEval.jsonl.gz",
        [{k: v for k, v in p.items() if k not in PLUS_ONLY} for p in PROBLEMS],
    )
    _write(root / "code" / "humanevalplus" / "HumanEvalPlus.jsonl.gz", PROBLEMS)
    return root


def test_the_recipes_are_all_here():
    assert RECIPES == sorted(MODELS)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes_as_the_paper_says(recipe):
    cfg = compose_config([f"experiment={recipe}"])
    assert cfg.model.name_or_path == MODELS[recipe]
    assert cfg.data.batch_size == 16 and cfg.trainer.max_epochs == 1
    assert cfg.optim.lr == 5e-5 and cfg.optim.warmup_ratio == 0.05
    assert cfg.data.task.path == "openbmb/UltraFeedback" and cfg.data.task.max_rows == 10_000
    assert cfg.data.task._target_.endswith("UltraFeedbackTask") and cfg.data.task.chat_template
    assert list(cfg.data.task.eval_task.sets) == ["humaneval", "humaneval_plus"]
    assert not cfg.data.task.eval_task.chat and cfg.eval.samples is None  # pass@1, greedy completion
    assert cfg.trainer.strategy._target_.endswith("FSDP2Strategy")


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_with_stand_ins(recipe, stand_ins, tmp_path, monkeypatch):
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    overrides = [
        f"experiment={recipe}",
        f"model.name_or_path={stand_ins / 'model'}",
        "model.gradient_checkpointing=false",
        f"data.task.path={stand_ins / 'ultrafeedback.jsonl'}",
        "debug=recipe",
        "data.task.max_rows=24",
        "data.micro_batch_size=4",
        "callbacks.eval_during_training.max_problems=2",
        "callbacks.eval_during_training.every_n_steps=1",
        f"data.task.eval_task.data_dir={stand_ins / 'code'}",
        "data.task.eval_task.max_new_tokens=8",
        f"data.task.eval_task.cache_dir={tmp_path / 'cache'}",
        f"paths.output_dir={tmp_path / 'run'}",
    ]
    summary = run(compose_config(overrides))
    assert summary["steps"] == 2
    assert set(summary["eval"]["finetuned"]) == set(summary["eval"]["base"]) == {"humaneval", "humaneval_plus"}
    assert all(v["n"] == len(PROBLEMS) for v in summary["eval"]["finetuned"].values())
    progress = (tmp_path / "run" / "eval_progress" / "points.csv").read_text()
    assert "humaneval_plus" in progress  # measured during training too
