"""Batches with shifted targets: `labels[b, t]` is the token that position t must predict."""

from __future__ import annotations

import torch

from dftlab.data.encode import Encoded
from dftlab.losses import IGNORE_INDEX


def collate(items: list[tuple[int, Encoded | None, int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch of (row id, example, step tokens); targets and masks built from lengths.

    A micro-batch without examples (see `StepBatchSampler`) becomes one padding token with no
    target, so that the rank still runs its forward and backward pass.
    """
    rows = [(i, e) for i, e, _ in items if e is not None]
    width = max((len(e.input_ids) for _, e in rows), default=1)
    n = max(len(rows), 1)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    for b, (_, e) in enumerate(rows):
        ids = torch.tensor(e.input_ids, dtype=torch.long)
        length = len(ids)
        input_ids[b, :length] = ids
        attention_mask[b, :length] = 1
        first = max(e.prompt_len, 1) - 1  # the position that predicts the first target token
        labels[b, first : length - 1] = ids[first + 1 : length]
    if not rows:
        attention_mask[0, 0] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "seq_ids": torch.arange(n).unsqueeze(1).expand(n, width).contiguous(),
        "row_ids": torch.tensor([i for i, _ in rows], dtype=torch.long),
        "step_tokens": items[0][2] if items else 0,  # an int: reading it needs no device sync
    }
