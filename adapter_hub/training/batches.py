"""Batches for training: length-bucketed shuffling and right-padded collation with the answer positions."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from adapter_hub.data.prompts import Encoded, common_prefix_length

IGNORE = -100


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length examples: sort within windows of 50 batches, shuffle batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[Encoded], pad_id: int, device: torch.device) -> dict:
    """Right-padded input_ids/attention_mask, labels that are IGNORE outside the answer, and — built on
    the host, so no device sync is needed to find them — the flat (row, position) indices where an
    answer token is predicted, those tokens, and how many tokens all prompts start with."""
    width = max(len(e.prompt) + len(e.target) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    index, targets = [], []
    for row, e in enumerate(examples):
        seq = e.prompt + e.target
        ids[row, :len(seq)] = torch.tensor(seq)
        labels[row, len(e.prompt):len(seq)] = torch.tensor(e.target)
        mask[row, :len(seq)] = 1
        # token t+1 is predicted at position t; positions index the (B, width-1) grid of predictions
        index += [row * (width - 1) + t for t in range(len(e.prompt) - 1, len(seq) - 1)]
        targets += e.target
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device),
            "answer_index": torch.tensor(index, dtype=torch.long).to(device),
            "answer_targets": torch.tensor(targets, dtype=torch.long).to(device),
            "common_prefix": common_prefix_length([e.prompt for e in examples])}  # an int, for answer_logits
