"""vLLM as a backend of `generate`: the same prompt ids, sampling settings, end tokens and decoding.

Average@16 with 4,096 new tokens over the five math sets is hours with Hugging Face `generate` and
minutes with vLLM. vLLM is optional: `backend: auto` uses it when it is installed and a CUDA GPU
is visible, and Hugging Face `generate` otherwise.

vLLM loads a model from a directory (or hub name), not from a model in memory: it serves the
end-of-run evaluation and `eval.py`, which load exported models; evaluation during training uses
the model being trained, with Hugging Face `generate`.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import GenerationConfig

from dftlab.data.encode import prompt_ids
from dftlab.errors import ConfigError
from dftlab.evaluation.decoding import decode, stop_token_ids

log = logging.getLogger(__name__)

BACKENDS = ("auto", "hf", "vllm")


def available() -> bool:
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def resolve(backend: str, key: str = "eval.backend") -> str:
    """`hf` or `vllm`: what `backend` (auto | hf | vllm) means on this machine."""
    if backend not in BACKENDS:
        raise ConfigError(f"{key}={backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "hf":
        return "hf"
    if available():
        return "vllm"
    if backend == "vllm":
        log.warning("%s=vllm, but vLLM is not installed or no CUDA GPU is visible: using Hugging Face generate", key)
    return "hf"


@dataclass
class VLLMModel:
    """A vLLM engine and the model's Hugging Face generation config (its end tokens)."""

    engine: object  # vllm.LLM
    generation_config: GenerationConfig | None


def load(path: str | Path, *, dtype: str = "auto", trust_remote_code: bool = False, seed: int = 0,
         **engine_args) -> VLLMModel:
    """The model at `path` in a vLLM engine (prompts are given as ids: the tokenizer is ours).

    `engine_args`: any other argument of `vllm.LLM` (`gpu_memory_utilization`, `max_model_len`,
    `tensor_parallel_size`, `enforce_eager`, ...).
    """
    from vllm import LLM

    try:
        config = GenerationConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except OSError:  # no generation_config.json: the tokenizer's EOS alone ends a completion
        config = None
    engine = LLM(model=str(path), dtype=dtype, trust_remote_code=trust_remote_code, seed=seed, **engine_args)
    return VLLMModel(engine, config)


def release(model: VLLMModel) -> None:
    """Free the GPU memory an engine holds, so that another model can be loaded in this process."""
    model.engine = None
    gc.collect()
    try:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    except (ImportError, AssertionError, RuntimeError) as err:  # nothing to tear down in this vLLM version
        log.debug("vLLM teardown: %s", err)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def generate(
    model: VLLMModel,
    tokenizer,
    prompts: list[str],
    *,
    chat_template: bool,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    n: int,
    seed: int,
    stop: list[str] | None,
) -> list[list[str]]:
    """`n` completions per prompt, as `dftlab.evaluation.generate.generate` makes them: the same
    prompt ids, end tokens and decoding; vLLM's top-k and penalties are off by default."""
    from vllm import SamplingParams

    sample = temperature > 0
    eos = stop_token_ids(model.generation_config, tokenizer)
    params = SamplingParams(
        n=n,
        temperature=temperature if sample else 0.0,
        top_p=top_p if sample else 1.0,
        max_tokens=max_new_tokens,
        stop=list(stop) if stop else None,
        stop_token_ids=eos,
        seed=seed if sample else None,
    )
    requests = [{"prompt_token_ids": prompt_ids(tokenizer, p, chat_template)} for p in prompts]
    results = model.engine.generate(requests, params, use_tqdm=False)
    # decoded from the token ids (vLLM's own text drops nothing we keep, but one decoder is surer)
    return [[decode(tokenizer, list(c.token_ids), eos, stop) for c in r.outputs] for r in results]
