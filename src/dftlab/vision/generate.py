"""Generation from prompts with images: a prompt is a list of messages whose user turns hold image parts
(paths), encoded as in training (`vision.encode`), decoded by the shared loop of `evaluation.generate`."""

from __future__ import annotations

import torch

from dftlab.data.chat import Rendered, tokenize
from dftlab.evaluation.generate import generate_ids
from dftlab.vision.encode import expand, image_refs, image_token, n_image_tokens, open_image


def prompt_with_images(tokenizer, prompt) -> tuple[list[int], list[str]]:
    """The ids a generation starts from (image tokens expanded) and the prompt's images."""
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    refs = [str(r) for r in image_refs(messages)]
    sizes = [open_image(r).size for r in refs]
    text, _ = expand(text, [], [n_image_tokens(tokenizer.image_processor, s) for s in sizes], image_token(tokenizer))
    ids, _ = tokenize(tokenizer, Rendered(text, []))
    return ids, refs


def generate_with_images(lm, tokenizer, prompts: list, **kwargs) -> list:
    """`evaluation.generate.generate_completions` for prompts with images (same arguments)."""
    encoded, refs = zip(*(prompt_with_images(tokenizer, p) for p in prompts), strict=True) if prompts else ((), ())
    token_id = tokenizer.convert_tokens_to_ids(image_token(tokenizer))

    def inputs(idx: list[int]) -> dict[str, torch.Tensor]:
        images = [open_image(r) for i in idx for r in refs[i]]
        if not images:
            return {}
        out = tokenizer.image_processor(images=images, return_tensors="pt")
        width = max(len(encoded[i]) for i in idx)  # left-padded as generate_ids pads them
        types = torch.zeros((len(idx), width), dtype=torch.int)
        for r, i in enumerate(idx):
            types[r, width - len(encoded[i]):] = (torch.tensor(encoded[i]) == token_id).int()
        return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"],
                "mm_token_type_ids": types}

    return generate_ids(lm, tokenizer, list(encoded), inputs=inputs, **kwargs)
