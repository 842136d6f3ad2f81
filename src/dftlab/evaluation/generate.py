"""Batched generation with the KV cache and left padding; greedy or sampled, seeded."""

from __future__ import annotations

import torch
from transformers import GenerationConfig

from dftlab.data.encode import prompt_ids


@torch.no_grad()
def generate(
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
) -> list[list[str]]:
    """`n` completions per prompt (decoded, cut at EOS or at the first stop string).

    Prompts are encoded exactly as in training. Batches are formed from prompts of similar length
    to keep padding small; the RNG is forked, so generating does not perturb the caller's RNG.
    """
    device = next(lm.parameters()).device
    encoded = [prompt_ids(tokenizer, p, chat_template) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    sample = temperature > 0
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature if sample else None,
        top_p=top_p if sample else None,
        top_k=None,
        num_return_sequences=n,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    out: list[list[str]] = [[] for _ in prompts]
    was_training = lm.training
    lm.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for b, start in enumerate(range(0, len(order), max(1, batch_size // n))):
                idx = order[start : start + max(1, batch_size // n)]
                width = max(len(encoded[i]) for i in idx)
                ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for r, i in enumerate(idx):
                    ids[r, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                    mask[r, width - len(encoded[i]) :] = 1
                torch.manual_seed(seed * 1_000_003 + b)
                gen = lm.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
                new = gen[:, width:].cpu()
                for r, row in enumerate(new):
                    out[idx[r // n]].append(_decode(tokenizer, row, stop))
    finally:
        lm.train(was_training)
    return out


def _decode(tokenizer, ids: torch.Tensor, stop: list[str] | None) -> str:
    ids = ids.tolist()
    if tokenizer.eos_token_id in ids:
        ids = ids[: ids.index(tokenizer.eos_token_id)]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    for s in stop or []:
        if s in text:
            text = text[: text.index(s)]
    return text
