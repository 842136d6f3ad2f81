"""The paper's recipes compose, and run a few steps with the model and data swapped for tiny local
stand-ins (the same code path: a local model directory with a chat template, a local data file)."""

import json
import os

import pytest

from dftlab.config import CONFIG_DIR, compose_config
from dftlab.run import run
from tests.helpers.stand_ins import make_stand_ins

RECIPES = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*numina*.yaml"))
BENCHMARKS = os.environ.get("DFTLAB_BENCHMARKS_DIR")


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    return make_stand_ins(tmp_path_factory.mktemp("stand_ins"))


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


# --- the paper's RL baselines (Table 2) --------------------------------------------------------

RL_RECIPES = ["qwen2.5-math-1.5b_rft", "qwen2.5-math-1.5b_dpo", "qwen2.5-math-1.5b_grpo"]


def test_rl_recipes_compose_as_the_paper_says():
    rft = compose_config(["experiment=qwen2.5-math-1.5b_rft", "data.task.samples=/s"])
    assert rft.optim.lr == 5e-5 and rft.data.batch_size == 256 and rft.optim.warmup_ratio == 0.1
    assert rft.data.task.rows == "accepted" and rft.data.task.path == "AI-MO/NuminaMath-CoT"
    dpo = compose_config(["experiment=qwen2.5-math-1.5b_dpo", "data.task.samples=/s"])
    assert dpo.optim.lr == 1e-6 and dpo.data.batch_size == 128 and dpo.optim.warmup_ratio == 0.05
    assert dpo.loss.name == "dpo" and dpo.loss.beta == 0.1 and dpo.data.task.rows == "pairs"
    grpo = compose_config(["experiment=qwen2.5-math-1.5b_grpo"])
    assert grpo.optim.lr == 1e-6 and grpo.data.batch_size == 256 and grpo.optim.warmup_ratio == 0.1
    assert grpo.rollout.n == 4 and grpo.rollout.temperature == 1.0 and grpo.trainer.strategy == "ddp"
    sampling = compose_config(["sampling=qwen2.5-math-1.5b_numina"], config_name="generate")
    assert sampling.model.name_or_path == "Qwen/Qwen2.5-Math-1.5B" and sampling.n == 4
    assert sampling.temperature == 1.0 and sampling.data.task.max_rows == 100_000
    assert sampling.grader._target_.endswith("BoxedAnswer")


@pytest.fixture(scope="module")
def numina_samples(stand_ins, tmp_path_factory):
    """generate.py's recipe on the stand-ins, and a samples folder with pairs in it (a random model
    is rarely right)."""
    from dftlab.rl.generate_run import generate_from_config
    from dftlab.rl.rejection import COUNTS, PAIRS

    out = tmp_path_factory.mktemp("samples")
    cfg = compose_config(["sampling=qwen2.5-math-1.5b_numina", f"model.name_or_path={stand_ins / 'model'}",
                          "model.dtype=float32", f"data.task.path={stand_ins / 'numina.jsonl'}", "data.task.val_size=8",
                          "max_prompts=6", "max_new_tokens=8", "backend=hf", f"out={out}", f"paths.output_dir={out}"],
                         config_name="generate")
    counts = generate_from_config(cfg)
    assert counts["sampled_prompts"] == 6 and counts["samples"] == 24
    rows = [json.loads(line) for line in open(stand_ins / "numina.jsonl")][:16]
    pairs = [{"prompt": r["problem"], "chosen": r["solution"], "rejected": r["solution"][:-3] + "0}"} for r in rows]
    (out / PAIRS).write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (out / "accepted.jsonl").write_text("".join(json.dumps({"prompt": p["prompt"], "response": p["chosen"]}) + "\n"
                                                for p in pairs))
    assert (out / COUNTS).exists()
    return out


@pytest.mark.parametrize("recipe", RL_RECIPES)
def test_rl_recipe_runs_with_stand_ins(recipe, stand_ins, numina_samples, tmp_path, monkeypatch):
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    extra = ["rollout.max_new_tokens=8", "rollout.grader.max_new_tokens=8"] if "grpo" in recipe else [
        f"data.task.samples={numina_samples}"]
    summary = run(compose_config([*_overrides(recipe, stand_ins, tmp_path / "run"), *extra]))
    assert summary["steps"] == 2
