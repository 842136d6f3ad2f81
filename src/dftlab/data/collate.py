"""Batches with shifted targets: `labels[b, t]` is the token that position t must predict.

Padded: one example per row, right-padded. Packed (padding-free): several examples per row, up to
`pack_length` tokens, with `position_ids` restarting at each example, so that the attention keeps
examples apart (Hugging Face models build a block-diagonal causal mask from restarting positions)
and nothing is computed for padding. Targets never cross from one example to the next.
"""

from __future__ import annotations

import math

import torch

from dftlab.data.encode import Encoded
from dftlab.losses import IGNORE_INDEX


def _targets(e: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, shifted targets) of one example; targets built from spans, not token ids."""
    ids = torch.tensor(e.input_ids, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for a, b in e.target_spans():  # position t predicts token t + 1
        labels[a - 1 : b - 1] = ids[a:b]
    return ids, labels


def _fields(e: Encoded, labels: torch.Tensor, names) -> dict[str, torch.Tensor]:
    """Per-target-token values (`Encoded.fields`) at the positions of their targets, 0 elsewhere; NaN at
    the targets of an example without them (beside examples that have them)."""
    out = {}
    where = labels != IGNORE_INDEX
    for name in names:
        row = torch.zeros(len(labels), dtype=torch.float32)
        values = e.fields.get(name)
        row[where] = math.nan if values is None else torch.tensor(values[: int(where.sum())], dtype=torch.float32)
        out[name] = row
    return out


def pack(lengths: list[int], pack_length: int) -> list[list[int]]:
    """First-fit decreasing: example indices grouped into rows of at most `pack_length` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(pack_length - lengths[i])
    return rows


def collate(
    items: list[tuple[int, Encoded | None, int]], pad_id: int, pack_length: int | None = None
) -> dict[str, torch.Tensor]:
    """A batch of (row id, example, step tokens) items, padded or packed.

    A micro-batch without examples (see `StepBatchSampler`) becomes one padding token with no
    target, so that the rank still runs its forward and backward pass.
    """
    examples = [(i, e) for i, e, _ in items if e is not None]
    if pack_length:
        groups = pack([len(e.input_ids) for _, e in examples], pack_length)
    else:
        groups = [[k] for k in range(len(examples))]
    width = max((sum(len(examples[k][1].input_ids) for k in g) for g in groups), default=1)
    n = max(len(groups), 1)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)  # 1 on real tokens (for counting)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    seq_ids = torch.zeros((n, width), dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    # values given with the data (`ref_logp`, for engine.reference=dataset), aligned with `labels`
    names = sorted({name for _, e in examples for name in e.fields})
    fields = {name: torch.zeros((n, width), dtype=torch.float32) for name in names}
    for b, group in enumerate(groups):
        start = 0
        for k in group:
            ids, targets = _targets(examples[k][1])
            end = start + len(ids)
            input_ids[b, start:end], labels[b, start:end] = ids, targets
            for name, values in _fields(examples[k][1], targets, names).items():
                fields[name][b, start:end] = values
            attention_mask[b, start:end] = 1
            seq_ids[b, start:end] = k
            positions[b, start:end] = torch.arange(len(ids))
            start = end
        seq_ids[b, start:] = len(examples) + b  # padding: its own (target-free) sequence
        positions[b, start:] = torch.arange(width - start)
    if not examples:
        attention_mask[0, 0] = 1
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "seq_ids": seq_ids,
        "row_ids": torch.tensor([examples[k][0] for g in groups for k in g], dtype=torch.long),
        "step_tokens": items[0][2] if items else 0,  # an int: reading it needs no device sync
        "n_seqs": len(examples) + n,  # sequence ids are below this (examples, then padding)
    }
    if pack_length:
        batch["position_ids"] = positions
    batch.update(fields)
    return batch
