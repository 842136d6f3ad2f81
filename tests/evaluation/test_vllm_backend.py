"""The backend setting, and vLLM agreeing with Hugging Face generate on greedy completions (on a
machine with vLLM and a CUDA GPU; skipped elsewhere)."""

import logging

import pytest
import torch

from dftlab.data.tokenizer import char_tokenizer
from dftlab.errors import ConfigError
from dftlab.evaluation import vllm_backend
from dftlab.evaluation.generate import generate
from tests.conftest import tiny_lm

PROMPTS = ["1,2,3,4|24:", "J=8,Q=9,K=10|A,7,K,3|24:", "5|", "10*3=30;7-1=6;30-6=", "Q", "A,A,A,A,A|24:"]


def test_the_backend_setting(monkeypatch, caplog):
    assert vllm_backend.resolve("hf") == "hf"
    with pytest.raises(ConfigError, match="eval.backend='tpu'"):
        vllm_backend.resolve("tpu")
    monkeypatch.setattr(vllm_backend, "available", lambda: False)
    assert vllm_backend.resolve("auto") == "hf"
    with caplog.at_level(logging.WARNING):
        assert vllm_backend.resolve("vllm") == "hf"  # falls back, and says so
    assert "vLLM is not installed or no CUDA GPU" in caplog.text
    monkeypatch.setattr(vllm_backend, "available", lambda: True)
    assert vllm_backend.resolve("auto") == vllm_backend.resolve("vllm") == "vllm"


@pytest.mark.slow
@pytest.mark.skipif(not vllm_backend.available(), reason="needs vLLM and a CUDA GPU")
def test_vllm_agrees_with_hugging_face_on_greedy_completions(tmp_path):
    tok = char_tokenizer()
    ids = {f"{k}_token_id": getattr(tok, f"{k}_token_id") for k in ("pad", "bos", "eos")}
    # head_dim 64 (vLLM's attention kernels take few sizes); untied output layer scaled up, so that
    # the greedy choice has wide margins and bf16 rounding in either backend cannot flip it
    lm = tiny_lm(vocab=len(tok), tie=False, hidden_size=128, intermediate_size=256, num_attention_heads=2,
                 num_key_value_heads=2, **ids)
    with torch.no_grad():
        lm.lm_head.weight.mul_(20)
    lm.to(torch.bfloat16).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    hf = generate(lm.cuda(), tok, PROMPTS, max_new_tokens=24)
    model = vllm_backend.load(tmp_path, dtype="bfloat16", gpu_memory_utilization=0.3, enforce_eager=True)
    try:
        assert generate(model, tok, PROMPTS, max_new_tokens=24) == hf
        sampled = generate(model, tok, PROMPTS, max_new_tokens=24, temperature=1.0, n=4, seed=0)
        assert [len(c) for c in sampled] == [4] * len(PROMPTS)
        assert sampled == generate(model, tok, PROMPTS, max_new_tokens=24, temperature=1.0, n=4, seed=0)
    finally:
        vllm_backend.release(model)
