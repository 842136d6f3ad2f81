"""Batched generation with the KV cache and left padding; greedy or sampled, seeded.

`generate` takes a Hugging Face model, or a vLLM engine loaded by `vllm_backend.load` (the same
prompts, settings and decoding, many times faster on a GPU).

A stop signal (`dftlab.stopping`) ends a Hugging Face generation within one decoding step: the
unfinished batch is dropped and `StopRequested` raised. With a `journal`, every finished batch is
kept as it ends, and a later call with the same model, prompts and settings generates only the
batches that are missing (each batch is seeded by its index, so the completions are the same).
"""

from __future__ import annotations

import logging

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from dftlab import stopping
from dftlab.data.encode import prompt_ids
from dftlab.evaluation import vllm_backend
from dftlab.evaluation.decoding import Completion, completion, stop_token_ids
from dftlab.evaluation.journal import Journal
from dftlab.models import eval_mode

log = logging.getLogger(__name__)


class _OnStopSignal(StoppingCriteria):
    """Ends `generate` at the next decoding step once a stop signal has arrived."""

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), stopping.requested() is not None, dtype=torch.bool,
                          device=input_ids.device)


class StopAtStrings(StoppingCriteria):
    """Ends a row once its last generated tokens show a stop string, so that generation does not run
    on to `max_new_tokens` (`decode` then cuts the text there). Works with any tokenizer: it decodes
    the last few tokens (each is at least one character), not a table of the vocabulary."""

    def __init__(self, tokenizer, stop: list[str], start: int):
        self.tokenizer, self.stop, self.start = tokenizer, stop, start
        self.window = max(map(len, stop)) + 2

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        tails = self.tokenizer.batch_decode(input_ids[:, max(self.start, input_ids.shape[1] - self.window) :],
                                            skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in tails], device=input_ids.device)


def generate(lm, tokenizer, prompts: list[str], **kwargs) -> list[list[str]]:
    """`n` completions per prompt, as text (see `generate_completions`)."""
    return [[c.text for c in outs] for outs in generate_completions(lm, tokenizer, prompts, **kwargs)]


@torch.no_grad()
def generate_completions(
    lm,
    tokenizer,
    prompts: list[str],
    *,
    chat_template: bool = False,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    n: int = 1,
    batch_size: int = 256,
    seed: int = 0,
    stop: list[str] | None = None,
    synced_gpus: bool = False,
    journal: Journal | None = None,
    interruptible: bool = True,
) -> list[list[Completion]]:
    """`n` completions per prompt: decoded (cut at EOS or at the first stop string), with their ids.

    Prompts are encoded exactly as in training. Batches are formed from prompts of similar length
    to keep padding small; the RNG is forked, so generating does not perturb the caller's RNG.
    `synced_gpus`: every rank keeps stepping until all ranks are done (a sharded model needs every
    rank in every forward pass). A vLLM engine schedules its own batches (`batch_size` unused).
    `journal`: where finished batches are kept (see the module's docstring). `interruptible`: stop on
    a signal (see the module's docstring); off where other ranks wait for this one's results.
    """
    interruptible = interruptible and not synced_gpus  # every rank of a sharded model takes every step
    check = stopping.check if interruptible else lambda: None
    check()
    if isinstance(lm, vllm_backend.VLLMModel):
        out = vllm_backend.generate_completions(
            lm, tokenizer, prompts, chat_template=chat_template, max_new_tokens=max_new_tokens,
            temperature=temperature, top_p=top_p, n=n, seed=seed, stop=stop,
        )
        check()
        return out
    common = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n, batch_size=batch_size,
                  seed=seed, stop=stop, synced_gpus=synced_gpus, journal=journal, key=[prompts, chat_template],
                  interruptible=interruptible)
    if getattr(tokenizer, "image_processor", None) is not None:  # prompts with images (dftlab.vision)
        from dftlab.vision.generate import generate_with_images

        return generate_with_images(lm, tokenizer, prompts, **common)
    encoded = [prompt_ids(tokenizer, p, chat_template) for p in prompts]
    return generate_ids(lm, tokenizer, encoded, **common)


@torch.no_grad()
def generate_ids(lm, tokenizer, encoded: list[list[int]], *, max_new_tokens: int, temperature: float, top_p: float,
                 n: int, batch_size: int, seed: int, stop: list[str] | None, synced_gpus: bool,
                 inputs=lambda idx: {}, journal: Journal | None = None, key=None,
                 interruptible: bool = False) -> list[list[Completion]]:
    """`generate_completions` from encoded prompts; `inputs(idx)`: more model inputs for the prompts `idx` of
    a batch (e.g. their images), on the CPU. `key`: what names the prompts in the `journal` (default: the ids)."""
    check = stopping.check if interruptible else lambda: None
    device = next(lm.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    config, eos = generation_config(lm, tokenizer, max_new_tokens, temperature, top_p, n)
    out: list[list[Completion]] = [[] for _ in encoded]
    per_batch = max(1, batch_size // n)
    spec = [config.to_dict(), per_batch, seed, stop]
    done = journal.batches(encoded if key is None else key, spec) if journal else {}
    if done:
        log.info("resuming a stopped generation: %d of %d batches already finished", len(done),
                 -(-len(order) // per_batch))

    def stoppers(width: int) -> StoppingCriteriaList | None:
        criteria = [_OnStopSignal()] if interruptible else []
        criteria += [StopAtStrings(tokenizer, stop, width)] if stop else []
        return StoppingCriteriaList(criteria) if criteria else None

    with eval_mode(lm), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for b, start in enumerate(range(0, len(order), per_batch)):
            idx = order[start : start + per_batch]
            if b in done:
                for r, kept in zip(idx, done[b], strict=True):
                    out[r] = list(kept)
                continue
            check()
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(idx):
                ids[r, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[r, width - len(encoded[i]) :] = 1
            torch.manual_seed(seed * 1_000_003 + b)
            extra = {k: v.to(device) for k, v in inputs(idx).items()}
            gen = lm.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
                synced_gpus=synced_gpus, stopping_criteria=stoppers(width), **extra,
            )
            check()  # a batch cut short by the signal is not kept
            new = gen[:, width:].cpu()
            for r, row in enumerate(new):
                out[idx[r // n]].append(completion(tokenizer, row.tolist(), eos, stop))
            if journal:
                journal.add(b, [out[i] for i in idx])
    return out


def generation_config(lm, tokenizer, max_new_tokens: int, temperature: float, top_p: float,
                      n: int) -> tuple[GenerationConfig, list[int]]:
    """The decoding settings (greedy when `temperature` is 0) and the tokens that end a completion."""
    sample = temperature > 0
    eos = stop_token_ids(getattr(lm, "generation_config", None), tokenizer)
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature if sample else None,
        top_p=top_p if sample else None,
        # explicit neutral values: a value left unset is taken from the model's own generation
        # config (an instruct model's top_k=20, repetition_penalty=1.05), which the paper's
        # sampling and the vLLM backend do not apply
        top_k=0 if sample else None,
        repetition_penalty=1.0,
        num_return_sequences=n,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    ), eos
