"""The instruction every prompt of a task starts with, encoded once per adapter and its KV cache
reused by every batch: each row continues from its own adapter's copy, so an example pays only for
its own input and the answer."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from adapter_hub.data.prompts import common_prefix_length
from adapter_hub.evaluation.forward import left_pad, maybe_route, run_model

MIN_SHARED_PREFIX = 4  # below this, copying the prefix cache costs about what it saves


def prefix_to_share(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each prompt at least one token of its own; 0 when
    too few to be worth caching."""
    n = common_prefix_length(prompts)
    return n if n >= MIN_SHARED_PREFIX else 0


@dataclass
class SharedPrefix:
    """The shared instruction, encoded once: one cache row per adapter used (None = no adapter)."""

    cache: object
    length: int
    names: list[str | None]
    device: torch.device

    def rows_for(self, row_states: Sequence[str | None] | None) -> list[int]:
        """Which cache row each batch row continues from."""
        if row_states is None:
            return [0]
        index = {name: i for i, name in enumerate(self.names)}
        return [index[name] for name in row_states]

    def expand(self, rows: list[int], batch_rows: int) -> object:
        """A fresh cache with one row per batch row, each a copy of the prefix under its adapter."""
        cache = copy.deepcopy(self.cache)  # the forward extends it in place: never touch the original
        if rows == [0]:
            cache.batch_repeat_interleave(batch_rows)
        else:
            cache.batch_select_indices(torch.tensor(rows, device=self.device))
        return cache


def encode_prefix(model: nn.Module, head: list[int], states: Sequence[str | None] | None) -> SharedPrefix:
    device = next(model.parameters()).device
    names = [None] if states is None else list(states)
    ids = torch.tensor([head] * len(names), device=device)
    mask = torch.ones_like(ids)
    positions = torch.arange(len(head), device=device).expand(len(names), -1)
    with maybe_route(model, states):
        _, cache = run_model(model, ids, mask, positions)
    return SharedPrefix(cache, len(head), names, device)


def prompt_pass(model, pad_id: int, prompts, prefix: SharedPrefix | None,
                 row_states: Sequence[str | None] | None = None):
    """Run the (left-padded) prompts after the shared prefix; hidden states, cache, mask, positions.

    With a prefix, a row reads [prefix][padding][own tokens]: the mask hides the padding in the
    middle and positions continue from the prefix, so each row sees exactly its own whole prompt.
    Call inside the routing block of the batch's rows.
    """
    device = next(model.parameters()).device
    ids, mask, positions = left_pad(prompts, pad_id, device)
    cache = None
    if prefix is not None:
        cache = prefix.expand(prefix.rows_for(row_states), ids.shape[0])
        mask = torch.cat([torch.ones((ids.shape[0], prefix.length), dtype=mask.dtype, device=device), mask], 1)
        positions = positions + prefix.length
    hidden, cache = run_model(model, ids, mask, positions, cache)
    return hidden, cache, mask, positions
