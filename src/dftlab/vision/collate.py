"""Batches with images: the text batch of `dftlab.data.collate` (padded, shifted targets), plus the
pixel values of every image in the order of their tokens, their grids and the token types (M-RoPE)."""

from __future__ import annotations

import torch

from dftlab.data.collate import collate
from dftlab.vision.encode import image_token, open_image


def collate_with_images(items, tokenizer) -> dict[str, torch.Tensor]:
    batch = collate(items, pad_id=tokenizer.pad_token_id)  # one example per row, in the order of `items`
    refs = [ref for _, e, _ in items if e is not None for ref in e.images]
    if refs:
        out = tokenizer.image_processor(images=[open_image(r) for r in refs], return_tensors="pt")
        batch["pixel_values"], batch["image_grid_thw"] = out["pixel_values"], out["image_grid_thw"]
        token_id = tokenizer.convert_tokens_to_ids(image_token(tokenizer))
        batch["mm_token_type_ids"] = (batch["input_ids"] == token_id).int()  # 1: image, 0: text
    return batch
